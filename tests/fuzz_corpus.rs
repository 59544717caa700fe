//! Replays every fuzz target's committed seeds and regression inputs (crashes found by
//! `scripts/fuzz`, kept after their fix) through the same entry points the fuzzers call:
//! deterministic, on the stable toolchain, in seconds. Any panic fails the test and names
//! the input.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use lifeboat::disk::fs::{btrfs, ext4, fat, ntfs, swap, xfs, Reader};
use lifeboat::disk::layout::read_layout;
use lifeboat::disk::SourceDisk;
use lifeboat::repo::manifest::TableKind;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_seed_and_regression_input_runs_without_a_panic() {
    let mut failed = Vec::new();
    let mut ran = 0;
    for t in lifeboat::fuzz::TARGETS {
        let (target, run) = (t.name, t.run);
        let seeds = inputs("seeds", target);
        assert!(!seeds.is_empty(), "fuzz/seeds/{target} has no seed");
        for input in seeds.iter().chain(&inputs("regressions", target)) {
            let data = std::fs::read(input).unwrap();
            ran += 1;
            if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failed.push(input.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "panicked on: {failed:?}");
    println!("{ran} inputs replayed");
}

fn seed(target: &str, name: &str) -> SourceDisk {
    let data = std::fs::read(fuzz_dir().join("seeds").join(target).join(name)).unwrap();
    SourceDisk::from_bytes(name, data)
}

/// The seeds are real examples, which the readers understand: fuzzing starts from
/// inputs that reach deep into each parser.
#[test]
fn the_seeds_are_understood_by_their_readers() {
    let layout = read_layout(&seed("disk_layout", "gpt-256k.img"), None).unwrap();
    assert_eq!(layout.disk.table, TableKind::Gpt);
    assert_eq!(layout.disk.gpt.unwrap().partitions.len(), 2);
    let mbr = read_layout(&seed("disk_layout", "mbr-64k.img"), None).unwrap();
    assert_eq!(mbr.disk.table, TableKind::Mbr);
    for (target, name, scan) in [
        ("ext4", "ext4-256k.img", ext4::scan as fn(&Reader, u64) -> _),
        ("fat", "fat12-64k.img", fat::scan),
        ("swap", "swap-40k.img", swap::scan),
    ] {
        let d = seed(target, name);
        let usage = scan(&Reader::new(&d, 0, d.size), d.size)
            .unwrap_or_else(|e| panic!("{target} seed: {e:#}"));
        assert!(usage.used_bytes() > 0 && usage.used_bytes() <= d.size);
    }
    // Sparse images: a size and the blocks that are not zero.
    let sparse = |target: &str, name: &str| {
        let data = std::fs::read(fuzz_dir().join("seeds").join(target).join(name)).unwrap();
        lifeboat::fuzz::read_sparse_image(&data).unwrap()
    };
    let d = sparse("xfs", "xfs-32m.sparse");
    let usage = xfs::scan(&Reader::new(&d, 0, d.size), d.size)
        .unwrap_or_else(|e| panic!("xfs seed: {e:#}"));
    assert!(usage.used_bytes() > 0 && usage.used_bytes() < d.size / 2);
    let d = sparse("btrfs", "btrfs-128m.sparse");
    let usage = btrfs::scan(&Reader::new(&d, 0, d.size), d.size)
        .unwrap_or_else(|e| panic!("btrfs seed: {e:#}"));
    assert!(usage.note.is_none(), "{:?}", usage.note);
    assert!(usage.used_bytes() > 0 && usage.used_bytes() < d.size / 4);
    let d = sparse("lvm", "pv-32m.sparse");
    let usage = lifeboat::disk::lvm::scan(
        &Reader::new(&d, 0, d.size),
        d.size,
        &lifeboat::disk::scan::filesystem,
    )
    .unwrap_or_else(|e| panic!("lvm seed: {e:#}"));
    assert!(usage
        .note
        .unwrap()
        .contains("LV b: no filesystem recognised"));
    let d = sparse("volumes", "md-1.0-16m.sparse");
    match lifeboat::disk::scan::reader(&Reader::new(&d, 0, d.size)) {
        lifeboat::disk::fs::Scan::Used(u) => {
            let note = u.note.unwrap();
            assert!(note.contains("md RAID1 member (superblock 1.0"), "{note}");
            // The superblock at the end is read.
            assert!(u.used.last().unwrap().end() == d.size, "{:?}", u.used);
        }
        lifeboat::disk::fs::Scan::Whole(why) => panic!("md seed: {why}"),
    }
    let d = sparse("volumes", "luks2-20m.sparse");
    let c = lifeboat::disk::luks::header(&Reader::new(&d, 0, d.size)).unwrap();
    assert_eq!((c.version, c.data_offset), (2, 16 << 20), "{c:?}");
    let d = sparse("ntfs", "ntfs-16m.sparse");
    let usage = ntfs::scan(&Reader::new(&d, 0, d.size), d.size)
        .unwrap_or_else(|e| panic!("ntfs seed: {e:#}"));
    assert!(usage.used_bytes() > 0 && usage.used_bytes() < d.size);
    let m = std::fs::read(fuzz_dir().join("seeds/manifest/gpt-256k.json")).unwrap();
    let m: lifeboat::repo::Manifest = serde_json::from_slice(&m).unwrap();
    m.validate().unwrap();
    let pack = std::fs::read(fuzz_dir().join("seeds/pack/gpt-256k.pack")).unwrap();
    let entries = lifeboat::repo::pack::parse_trailer(
        &pack,
        pack.len() as u64,
        1 << 20,
        2 << 20,
        lifeboat::repo::pack::Seal::Plain,
    )
    .unwrap()
    .unwrap();
    let index = std::fs::read(fuzz_dir().join("seeds/index/gpt-256k.idx")).unwrap();
    let packs = lifeboat::repo::index::parse(&index, 1 << 20, 2 << 20, 0).unwrap();
    assert!(
        packs.iter().any(|p| p.entries == entries),
        "the index names the pack's chunks"
    );
}

/// The seeds of the `sealed` target are objects sealed under the fuzz key: they open, so
/// the fuzzer starts past authentication. `LIFEBOAT_WRITE_SEEDS=1` writes them anew from
/// the plain seeds.
#[test]
fn the_sealed_seeds_open_under_the_fuzz_key() {
    let dir = fuzz_dir().join("seeds/sealed");
    if std::env::var_os("LIFEBOAT_WRITE_SEEDS").is_some() {
        let manifest = std::fs::read(fuzz_dir().join("seeds/manifest/gpt-256k.json")).unwrap();
        let index = std::fs::read(fuzz_dir().join("seeds/index/gpt-256k.idx")).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in lifeboat::fuzz::sealed_seeds(&manifest, &index) {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
    let crypt = lifeboat::crypt::Crypt::new(&lifeboat::crypt::MasterKey::from_bytes([0x5a; 32]));
    use lifeboat::crypt::Kind;
    for (name, kind) in [
        ("manifest.sealed", Kind::Manifest),
        ("index.sealed", Kind::Index),
        ("trailer.sealed", Kind::PackTrailer),
    ] {
        let data = std::fs::read(dir.join(name)).unwrap();
        crypt
            .open(kind, &data)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let key = std::fs::read(dir.join("key.json")).unwrap();
    let opened = lifeboat::repo::keyfile::KeyFile::parse(&key)
        .unwrap()
        .open("fuzz")
        .unwrap_or_else(|e| panic!("key.json: {e}"));
    assert_eq!(opened.repository, "fuzz");
    let text = std::fs::read_to_string(dir.join("recovery.txt")).unwrap();
    assert_eq!(
        lifeboat::repo::keyfile::parse_recovery(&text).unwrap().0,
        "fuzz"
    );
}
