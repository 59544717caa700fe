//! Entry points for the fuzz targets (`fuzz/fuzz_targets/`) and for the replay of their
//! corpora in the test suite (`tests/fuzz_corpus.rs`): each feeds one parser of outside
//! input (a repository's files, a disk's tables and filesystems, a client of `serve`)
//! with arbitrary bytes. Whatever the bytes, none may panic, hang, or allocate beyond what
//! the format bounds; an error is the right answer to garbage.

use std::io::{Cursor, Read, Write};
use std::sync::{Arc, OnceLock};

use crate::disk::fs::{btrfs, ext4, fat, ntfs, swap, xfs, Reader};
use crate::disk::layout::{read_layout, read_mbr};
use crate::disk::SourceDisk;
use crate::repo::manifest::Manifest;
use crate::repo::{ChunkerParams, Config, Repository};
use crate::restore::plan::{Choices, DeferredLayout, Plan};

/// A fuzz target: its name (as under `fuzz/fuzz_targets/`) and its entry point.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

const fn target(name: &'static str, run: fn(&[u8])) -> Target {
    Target { name, run }
}

/// Every target: what `scripts/fuzz` runs and the replay test walks.
pub const TARGETS: &[Target] = &[
    target("manifest", manifest),
    target("config", config),
    target("disk_layout", disk_layout),
    target("ext4", ext4_reader),
    target("fat", fat_reader),
    target("swap", swap_reader),
    target("xfs", xfs_reader),
    target("btrfs", btrfs_reader),
    target("ntfs", ntfs_reader),
    target("lvm", lvm_reader),
    target("volumes", volumes),
    target("http_request", http_request),
    target("rescue_cmdline", rescue_cmdline),
    target("driver_index", driver_index),
    target("nvme_smart", nvme_smart),
    target("nbd_handshake", nbd_handshake),
    target("nbd_requests", nbd_requests),
    target("pack", pack),
    target("index", index),
    target("signature", signature),
    target("sealed", sealed),
    target("records", records),
];

/// A pack file as a repository or server hands it over: its trailer parsed and checked,
/// then every chunk it lists decompressed within its stated length and hashed.
pub fn pack(data: &[u8]) {
    use crate::repo::pack::parse_trailer;
    let max_plain = 1 << 20;
    use crate::repo::pack::Seal;
    let crypt = fuzz_crypt();
    // A sealed trailer, as a server (no key) and as a reader (the key) take it.
    let _ = parse_trailer(data, data.len() as u64, max_plain, 2 << 20, Seal::Keyless);
    let _ = parse_trailer(
        data,
        data.len() as u64,
        max_plain,
        2 << 20,
        Seal::Key(&crypt),
    );
    let Ok(Ok(entries)) = parse_trailer(data, data.len() as u64, max_plain, 2 << 20, Seal::Plain)
    else {
        return;
    };
    let mut d = zstd::bulk::Decompressor::new().expect("a zstd context");
    for e in entries {
        let frame = &data[e.offset as usize..e.end() as usize];
        if let Ok(plain) = d.decompress(frame, e.plain as usize) {
            let _ = crate::repo::ChunkId::of(&plain) == e.id;
        }
    }
}

/// The small records a repository holds besides its data: journal records (plain and
/// sealed), prune intents and leases, and the names they are listed under.
pub fn records(data: &[u8]) {
    use crate::crypt::Protection;
    let _ = crate::journal::parse(&Protection::Plain, data);
    let crypt = std::sync::Arc::new(fuzz_crypt());
    let _ = crate::journal::parse(&Protection::Unlocked(crypt), data);
    let _ = serde_json::from_slice::<crate::prune::intent::Intent>(data);
    if let Ok(l) = serde_json::from_slice::<crate::prune::lease::LeaseFile>(data) {
        let _ = l.is_stale(chrono::Utc::now());
        let _ = l.started_at();
    }
    if let Ok(name) = std::str::from_utf8(data) {
        let _ = crate::repo::object::TimeName::parse(name);
        let _ = crate::repo::Object::parse(name);
    }
}

/// The key every fuzz target that opens sealed objects uses.
fn fuzz_crypt() -> crate::crypt::Crypt {
    crate::crypt::Crypt::new(&crate::crypt::MasterKey::from_bytes([0x5a; 32]))
}

/// What an encrypted repository hands a reader: sealed metadata of each kind, a sealed
/// chunk, a key file, a recovery copy.
pub fn sealed(data: &[u8]) {
    use crate::crypt::Kind;
    let crypt = fuzz_crypt();
    for kind in [Kind::Manifest, Kind::Index, Kind::PackTrailer] {
        let _ = crate::crypt::check_envelope(kind, data);
        let _ = crypt.open(kind, data);
    }
    let id = crate::repo::ChunkId::of(data);
    let _ = crypt.open_chunk(&id.0, &mut data.to_vec());
    let _ = crate::repo::keyfile::KeyFile::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::repo::keyfile::parse_recovery(text);
    }
}

/// Seeds for `sealed`: real objects of an encrypted repository, sealed under the fuzz
/// key, made from the plain seeds of the manifest, index and pack targets (the key file
/// with cheap argon2 parameters, so that the fuzzer does not spend its time there).
pub fn sealed_seeds(manifest: &[u8], index: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    use crate::crypt::Kind;
    let crypt = fuzz_crypt();
    let packed = zstd::bulk::compress(manifest, 3).expect("compress");
    let master = crate::crypt::MasterKey::from_bytes([0x5a; 32]);
    let chunker = crate::repo::ChunkerParams::default();
    let key = crate::repo::keyfile::KeyFile::seal_at_cost(&master, "fuzz", &chunker, "fuzz", 8, 1)
        .expect("seal a key file");
    vec![
        ("manifest.sealed", crypt.seal(Kind::Manifest, &packed)),
        ("index.sealed", crypt.seal(Kind::Index, index)),
        (
            "trailer.sealed",
            crypt.seal(Kind::PackTrailer, &index[16..16 + 44]),
        ),
        ("key.json", key.to_bytes()),
        (
            "recovery.txt",
            crate::repo::keyfile::recovery_text("fuzz", &master).into_bytes(),
        ),
    ]
}

/// An index file: parsed, checked, and loaded into a chunk index that is then asked.
pub fn index(data: &[u8]) {
    use crate::repo::index::{parse, ChunkIndex};
    let Ok(packs) = parse(data, 1 << 20, 2 << 20, 0) else {
        return;
    };
    let mut idx = ChunkIndex::default();
    for p in &packs {
        idx.add(p);
    }
    for p in &packs {
        for e in &p.entries {
            assert!(idx.get(&e.id).is_some());
        }
    }
}

/// A snapshot manifest as a repository or server hands it over: parsed, validated, and,
/// when valid, planned for a restore.
pub fn manifest(data: &[u8]) {
    let Ok(m) = serde_json::from_slice::<Manifest>(data) else {
        return;
    };
    if m.validate().is_err() {
        return;
    }
    let _ = m.data_bytes();
    let _ = DeferredLayout::of(&m);
    let _ = Plan::new(
        &m,
        &Choices {
            reuse: true,
            ..Default::default()
        },
    );
}

/// A snapshot's signature object as a repository or server hands it over, checked for a
/// fixed snapshot and key; and the same bytes as a public key, a key id and a kernel
/// command line (`lifeboat.trust=`, `lifeboat.max-age=`).
pub fn signature(data: &[u8]) {
    use crate::trust::signature::SignatureFile;
    static KEY: OnceLock<crate::crypt::signing::PublicKey> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        "ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
            .parse()
            .expect("RFC 8032 test key")
    });
    let id = crate::repo::SnapshotId::of(b"fuzz");
    let _ = SignatureFile::parse_and_verify(data, &id, key);
    let text = String::from_utf8_lossy(data);
    let _ = text.parse::<crate::crypt::signing::PublicKey>();
    let _ = text.parse::<crate::crypt::signing::KeyId>();
    let _ = crate::rescue::cmdline::parse(&text);
}

/// A repository's config.json.
pub fn config(data: &[u8]) {
    let _ = Config::parse(data, "config.json", "fuzz");
}

/// A whole disk: its MBR, GPT and regions, at both sector sizes.
pub fn disk_layout(data: &[u8]) {
    if data.len() >= 512 {
        let _ = read_mbr(&data[..512], data.len() as u64 / 512);
    }
    let disk = SourceDisk::from_bytes("fuzz.img", data.to_vec());
    let _ = read_layout(&disk, None);
    let _ = read_layout(&disk, Some(4096));
}

fn filesystem(data: &[u8], scan: fn(&Reader, u64) -> anyhow::Result<crate::disk::fs::Usage>) {
    let disk = SourceDisk::from_bytes("fuzz.img", data.to_vec());
    let len = data.len() as u64;
    let _ = scan(&Reader::new(&disk, 0, len), len);
}

pub fn ext4_reader(data: &[u8]) {
    filesystem(data, ext4::scan)
}

pub fn fat_reader(data: &[u8]) {
    filesystem(data, fat::scan)
}

pub fn swap_reader(data: &[u8]) {
    filesystem(data, swap::scan)
}

pub fn xfs_reader(data: &[u8]) {
    sparse_filesystem(data, xfs::scan)
}

pub fn btrfs_reader(data: &[u8]) {
    sparse_filesystem(data, btrfs::scan)
}

pub fn ntfs_reader(data: &[u8]) {
    sparse_filesystem(data, ntfs::scan)
}

/// An LVM2 physical volume (its label, metadata areas and text, and the filesystems of
/// its logical volumes), and the metadata text parser alone on the same bytes.
pub fn lvm_reader(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::disk::lvm::parse(text);
    }
    sparse_filesystem(data, |r, len| {
        crate::disk::lvm::scan(r, len, &crate::disk::scan::filesystem)
    })
}

/// A partition as a capture looks at it: an md member or LVM physical volume and what
/// it holds, or a filesystem, found by its signature.
pub fn volumes(data: &[u8]) {
    if let Some(disk) = read_sparse_image(data) {
        let _ = crate::disk::scan::reader(&Reader::new(&disk, 0, disk.size));
    }
}

/// The most a sparse fuzz image may claim to be (its blocks are what it holds).
const MAX_SPARSE_IMAGE: u64 = 1 << 30;

/// A filesystem of blocks far apart, as a sparse image: its size in KiB (u32, LE),
/// then records of a block number (u32, LE, in KiB) and its 1,024 bytes; every other
/// block is zero. `sparse_image` writes a real image this way for the seeds.
fn sparse_filesystem(
    data: &[u8],
    scan: fn(&Reader, u64) -> anyhow::Result<crate::disk::fs::Usage>,
) {
    let Some(disk) = read_sparse_image(data) else {
        return;
    };
    let len = disk.size;
    let _ = scan(&Reader::new(&disk, 0, len), len);
}

/// The disk a sparse image describes (None when it is too short to say its size).
pub fn read_sparse_image(data: &[u8]) -> Option<SourceDisk> {
    use crate::disk::source::SPARSE_BLOCK;
    let size =
        (u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as u64 * 1024).min(MAX_SPARSE_IMAGE);
    let mut blocks = std::collections::BTreeMap::new();
    for rec in data[4..].chunks(4 + SPARSE_BLOCK) {
        if rec.len() < 4 {
            break;
        }
        let n = u32::from_le_bytes(rec[..4].try_into().unwrap()) as u64;
        let mut block = [0u8; SPARSE_BLOCK];
        block[..rec.len() - 4].copy_from_slice(&rec[4..]);
        blocks.insert(n, block);
    }
    Some(SourceDisk::sparse("fuzz.img", size, blocks))
}

/// A real image in the sparse form `sparse_filesystem` reads: its non-zero 1 KiB blocks.
pub fn sparse_image(image: &[u8]) -> Vec<u8> {
    let mut out = ((image.len() / 1024) as u32).to_le_bytes().to_vec();
    for (n, block) in image.chunks(1024).enumerate() {
        if block.iter().any(|&b| b != 0) {
            out.extend_from_slice(&(n as u32).to_le_bytes());
            out.extend_from_slice(block);
            out.resize(out.len() + 1024 - block.len(), 0);
        }
    }
    out
}

/// What a client of `lifeboat serve` sends: requests, one after another.
pub fn http_request(data: &[u8]) {
    let mut r = Cursor::new(data);
    while let Ok(Some(req)) = crate::serve::wire::read_request(&mut r, 1 << 20) {
        let _ = crate::serve::routes::parse_path(&req.path);
        let _ = crate::serve::wire::parse_range(req.range(), 1 << 30);
    }
}

/// A client's side of the NBD handshake: what it sends is `data`; what the server
/// answers goes nowhere.
struct Client<'a> {
    sent: Cursor<&'a [u8]>,
}

impl Read for Client<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.sent.read(buf)
    }
}

impl Write for Client<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An empty repository for the NBD server to export from, made once per process. Its
/// directory is removed at once: the server finds no snapshots in it either way, and
/// nothing is left behind.
fn empty_repository() -> Arc<Repository> {
    static REPO: OnceLock<Arc<Repository>> = OnceLock::new();
    REPO.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("lifeboat-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let repo = Repository::init(&dir, ChunkerParams::default(), 3)
            .expect("create a repository for the NBD targets");
        let _ = std::fs::remove_dir_all(&dir);
        Arc::new(repo)
    })
    .clone()
}

pub fn nbd_handshake(data: &[u8]) {
    let exports = crate::serve::nbd::Exports::new(empty_repository(), crate::trust::Policy::none());
    let mut client = Client {
        sent: Cursor::new(data),
    };
    let _ = exports.handshake(&mut client);
}

/// A client's requests once attached to a 1 MiB export of zeros: reads (in range or not),
/// writes (refused, their payload skipped), flushes, disconnects, garbage.
pub fn nbd_requests(data: &[u8]) {
    use crate::repo::manifest::{ChunkRef, DiskInfo, Region, RegionKind, SourceInfo, TableKind};
    const SIZE: u64 = 1 << 20;
    static DISK: OnceLock<crate::serve::nbd::SnapshotDisk> = OnceLock::new();
    let disk = DISK.get_or_init(|| {
        let m = Manifest {
            format: crate::repo::manifest::MANIFEST_FORMAT.into(),
            version: crate::repo::manifest::MANIFEST_VERSION,
            name: "zeros".into(),
            time: String::new(),
            hostname: String::new(),
            repository: None,
            parent: None,
            sequence: None,
            consistency: None,
            source: SourceInfo::default(),
            disk: DiskInfo {
                size: SIZE,
                logical_sector_size: 512,
                table: TableKind::None,
                gpt: None,
                mbr: None,
            },
            chunker: ChunkerParams::default(),
            regions: vec![Region {
                kind: RegionKind::Disk,
                partition: None,
                offset: 0,
                length: SIZE,
                blake3: String::new(),
                filesystem: None,
                chunks: vec![ChunkRef {
                    offset: 0,
                    length: SIZE as u32,
                    id: None,
                    free: false,
                }],
            }],
            more_disks: Vec::new(),
        };
        crate::serve::nbd::SnapshotDisk::new(empty_repository(), &m)
    });
    let _ = crate::serve::nbd::transmit(disk, Cursor::new(data), std::io::sink());
}

/// The rescue's orders, from a kernel command line (which a PXE server writes).
pub fn rescue_cmdline(data: &[u8]) {
    let _ = crate::rescue::cmdline::parse(&String::from_utf8_lossy(data));
}

/// The rescue's driver index: modules.alias and modules.dep (split at the first NUL),
/// then a modalias matched against it (the first line of the alias half).
pub fn driver_index(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (alias, dep) = text.split_once('\0').unwrap_or((&text, ""));
    let index = crate::rescue::modules::Index::parse(alias, dep);
    let probe = alias.lines().next().unwrap_or("");
    for m in index.matching(probe) {
        let _ = index.with_deps(&m);
    }
}

/// An NVMe SMART / Health Information log page, as a disk returns it; and the same bytes
/// as the sense data of an ATA SMART RETURN STATUS.
pub fn nvme_smart(data: &[u8]) {
    let mut log = [0u8; 512];
    let n = data.len().min(512);
    log[..n].copy_from_slice(&data[..n]);
    let _ = crate::diagnose::health::judge(&log).to_string();
    let _ = crate::diagnose::health::judge_ata_registers(data).to_string();
}
