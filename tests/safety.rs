//! Nothing lost: bad inputs are refused before any write with the target unchanged, a
//! corrupt chunk found mid-restore leaves the target's table wiped, and `check` names
//! every damaged chunk.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;

use common::*;

fn flip_byte(path: &std::path::Path) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = f.metadata().unwrap().len();
    let mut b = [0u8];
    f.read_exact_at(&mut b, len / 2).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, len / 2).unwrap();
}

/// A repository with one snapshot of a GPT disk, and a target that holds a valid copy of
/// that disk (so a wiped table is observable).
fn setup() -> (Env, std::path::PathBuf, String, std::path::PathBuf) {
    setup_version(2)
}

/// The same in a repository of format `version` (1 for tests about chunk files).
fn setup_version(version: u32) -> (Env, std::path::PathBuf, String, std::path::PathBuf) {
    let env = Env::new();
    let src = env.disk("gpt", "src.img");
    env.init_version(version);
    let id = env.capture(&src, "web01")["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let target = env.path("target.img");
    fs::copy(&src, &target).unwrap();
    (env, src, id, target)
}

#[test]
fn corrupt_chunk_fails_restore_names_it_and_wipes_the_table() {
    let (env, _src, id, target) = setup();
    // The target holds another installation (its own random data partition), so the
    // restore must fetch the chunk rather than find it already in place.
    make_disk("gpt", &target);
    let m = env.manifest(&id);
    let bad = first_chunk_of_partition(&m, 3);
    env.flip_stored_byte(&bad);
    assert_eq!(&read_at(&target, 512, 8), b"EFI PART");

    let o = env.restore("web01", &target, &["--yes"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&bad), "error does not name chunk {bad}: {err}");
    assert!(err.contains("corrupt"), "{err}");
    assert!(
        err.contains("partition table on") && err.contains("was wiped"),
        "{err}"
    );
    // Neither the primary nor the backup GPT header survives; the MBR is gone too.
    let size = fs::metadata(&target).unwrap().len();
    assert_ne!(&read_at(&target, 512, 8), b"EFI PART");
    assert_ne!(&read_at(&target, size - 512, 8), b"EFI PART");
    assert_eq!(read_at(&target, 510, 2), [0, 0]);
}

#[test]
fn check_read_data_names_corrupt_and_missing_chunks() {
    // Chunk files (format 1): one deleted is one missing. (tests/packs.rs does packs.)
    let (env, _src, id, _target) = setup_version(1);
    let m = env.manifest(&id);
    let flipped = first_chunk_of_partition(&m, 2);
    let deleted = first_chunk_of_partition(&m, 1);
    let repo = env.repo();
    // Healthy first.
    let r = check_clean(&repo);
    assert!(r["chunks_read"].as_u64().unwrap() > 50);

    flip_byte(&env.chunk_path(&flipped));
    fs::remove_file(env.chunk_path(&deleted)).unwrap();
    // Without --read-data only the missing chunk can be seen.
    let o = run(&["check", "--json", "--quiet", "--repo", &repo]);
    assert!(!o.status.success());
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["missing"][0]["chunk"], deleted.as_str());
    assert_eq!(r["corrupt"].as_array().unwrap().len(), 0);

    let o = run(&["check", "--read-data", "--json", "--quiet", "--repo", &repo]);
    assert!(!o.status.success());
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["missing"].as_array().unwrap().len(), 1);
    assert_eq!(r["corrupt"].as_array().unwrap().len(), 1);
    assert_eq!(r["missing"][0]["chunk"], deleted.as_str());
    assert_eq!(r["corrupt"][0]["chunk"], flipped.as_str());
    assert!(r["corrupt"][0]["snapshots"][0]
        .as_str()
        .unwrap()
        .contains("web01"));
    // And in words.
    let err = stderr(&run(&["check", "--read-data", "--quiet", "--repo", &repo]));
    assert!(err.contains("1 missing chunks, 1 corrupt chunks"), "{err}");
}

/// Run a restore that must be refused before writing; the target must be unchanged.
fn refused(env: &Env, target: &std::path::Path, snapshot: &str, extra: &[&str], expect: &str) {
    let before = hash_file(target);
    let o = env.restore(snapshot, target, extra);
    let err = stderr(&o);
    assert!(!o.status.success(), "restore should have been refused");
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(hash_file(target), before, "the target changed");
}

#[test]
fn deleted_chunk_is_refused_before_any_write() {
    let (env, _src, id, target) = setup_version(1);
    let m = env.manifest(&id);
    let gone = first_chunk_of_partition(&m, 3);
    fs::remove_file(env.chunk_path(&gone)).unwrap();
    refused(&env, &target, "web01", &["--yes"], "1 of its");
    let err = stderr(&env.restore("web01", &target, &["--yes"]));
    assert!(err.contains(&gone), "{err}");
}

#[test]
fn truncated_manifest_is_refused_before_any_write() {
    let (env, _src, id, target) = setup();
    let p = env.path(&format!("repo/snapshots/{id}.json"));
    let len = fs::metadata(&p).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    refused(&env, &target, &id, &["--yes"], "truncated or altered");
    refused(&env, &target, "web01", &["--yes"], "damaged manifests");
}

#[test]
fn too_small_target_is_refused_with_the_minimum_size() {
    let (env, _src, _id, _target) = setup();
    let small = env.path("small.img");
    sh(&format!("truncate -s 64M {}", small.display()));
    refused(
        &env,
        &small,
        "web01",
        &["--yes"],
        "captured from a disk of 96.0 MiB (100663296 bytes), and cannot be shrunk",
    );
}

#[test]
fn mounted_target_is_refused() {
    let (env, _src, _id, _target) = setup();
    // A disk image with an ext4 filesystem, mounted through a loop device.
    let img = env.path("mounted.img");
    sh(&format!(
        "truncate -s 128M {0} && mkfs.ext4 -q -F {0}",
        img.display()
    ));
    let lo = Loop::attach(&img, 512);
    let _m = Mount::new(&lo.dev, &env.path("mnt"));
    // Both the block device and the image file behind it are refused.
    let before = hash_file(&img);
    let o = env.restore("web01", lo.path(), &["--yes"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is mounted read-write at"),
        "{}",
        stderr(&o)
    );
    refused(&env, &img, "web01", &["--yes"], "is mounted read-write at");
    assert_eq!(hash_file(&img), before);
}

#[test]
fn no_confirmation_without_a_terminal_or_yes() {
    let (env, _src, _id, target) = setup();
    refused(&env, &target, "web01", &[], "pass --yes");
}

#[test]
fn target_inside_the_repository_is_refused() {
    let (env, _src, id, _target) = setup();
    let inside = env.path(&format!("repo/snapshots/{id}.json"));
    refused(&env, &inside, "web01", &["--yes"], "inside the repository");
}

#[test]
fn foreign_and_future_repositories_are_refused() {
    let env = Env::new();
    let dir = env.path("notrepo");
    fs::create_dir_all(&dir).unwrap();
    let err = fails(&["snapshots", "--repo", dir.to_str().unwrap()]);
    assert!(
        err.contains("not a lifeboat repository") && err.contains("lifeboat init --repo"),
        "{err}"
    );
    let err = fails(&["snapshots", "--repo", env.path("absent").to_str().unwrap()]);
    assert!(
        err.contains("there is no repository at") && err.contains("typo"),
        "{err}"
    );
    // A file is said to be one, not to be missing.
    fs::write(env.path("afile"), b"x").unwrap();
    let err = fails(&[
        "restore",
        "--repo",
        env.path("afile").to_str().unwrap(),
        "--snapshot",
        "x",
        "--target",
        "/dev/null",
    ]);
    assert!(err.contains("is a file, not a repository"), "{err}");
    // Init refuses a non-empty directory.
    fs::write(dir.join("x"), b"x").unwrap();
    let err = fails(&["init", "--repo", dir.to_str().unwrap()]);
    assert!(err.contains("not empty"), "{err}");

    let repo = env.init();
    let cfg = env.path("repo/config.json");
    let text = fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"version\": 2", "\"version\": 3");
    fs::write(&cfg, text).unwrap();
    let err = fails(&["snapshots", "--repo", &repo]);
    assert!(err.contains("format version 3"), "{err}");
}

/// Run a restore under a pseudo-terminal (util-linux `script`), typing `answer`.
fn restore_on_a_terminal(
    env: &Env,
    target: &std::path::Path,
    answer: &str,
) -> std::process::Output {
    use std::io::Write;
    let cmd = format!(
        "{} restore --quiet --repo {} --snapshot web01 --target {}",
        bin(),
        env.repo(),
        target.display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Type once the prompt is up (script passes input through as it comes).
    std::thread::sleep(std::time::Duration::from_millis(500));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{answer}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_terminal_user_confirms_by_typing_the_target_name() {
    let (env, src, _id, target) = setup();
    // Make the target differ from the snapshot, so a restore is observable.
    sh(&format!(
        "truncate -s 0 {0} && truncate -s 96M {0}",
        target.display()
    ));
    let before = hash_file(&target);
    let o = restore_on_a_terminal(&env, &target, "not-the-name");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("Type target.img to continue"), "{out}");
    assert!(out.contains("confirmation did not match"), "{out}");
    assert_eq!(hash_file(&target), before);

    // Ctrl-C at the prompt stops it there, saying nothing was written.
    let o = restore_on_a_terminal(&env, &target, "\x03");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(130), "{out}");
    assert!(
        out.contains("stopped by SIGINT") && out.contains("nothing was written"),
        "{out}"
    );
    assert_eq!(hash_file(&target), before);

    let o = restore_on_a_terminal(&env, &target, "target.img");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(hash_file(&target), hash_file(&src));
}

/// Files of a repository that hold data or name it (everything but the journal and the
/// leases, which record attempts).
fn stored_files(repo: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir(repo)
        .into_iter()
        .filter(|p| !p.starts_with("journal/") && !p.starts_with("locks/"))
        .collect();
    out.sort();
    out
}

fn walkdir(root: &std::path::Path) -> Vec<String> {
    sh(&format!("cd {} && find . -type f", root.display()))
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect()
}

#[test]
fn a_source_in_use_is_refused_unless_a_crash_consistent_image_is_asked_for() {
    let env = Env::new();
    let repo = env.init();
    // A disk whose root partition (an ext4 make-disk fills) is mounted read-write
    // through a loop device over its byte range, as a running machine's would be.
    let src = env.disk("gpt", "src.img");
    let start = sgdisk_sector(&src, 2, "First sector") * 512;
    let end = (sgdisk_sector(&src, 2, "Last sector") + 1) * 512;
    let lo = Loop::attach_range(&src, start, end - start);
    let mnt = env.path("mnt");
    let m = Mount::new(&lo.dev, &mnt);
    let before = stored_files(&env.path("repo"));

    // The image file and the loop device of its partition are refused alike, naming
    // the mount and the ways out, and nothing is stored.
    let err = fails(&capture_args(&repo, &src, "web01"));
    let mount = format!("{} is mounted read-write at {}", lo.dev, mnt.display());
    assert!(err.contains(&mount), "{err}");
    for way in ["lifeboat.action=capture", "--crash-consistent"] {
        assert!(err.contains(way), "{err}");
    }
    let err = fails(&capture_args(&repo, lo.path(), "part"));
    assert!(err.contains(&mount), "{err}");
    assert_eq!(stored_files(&env.path("repo")), before);

    // Read-only, nothing can change it: captured, with nothing to say.
    sh(&format!("mount -o remount,ro {}", mnt.display()));
    let s = env.capture(&src, "web01");
    let plain = env.manifest(s["snapshot"].as_str().unwrap());
    assert!(plain.get("consistency").is_none(), "{plain}");

    // Read-write again and just written to, knowingly: captured, and the manifest and
    // listing say how. The journal is still to be checkpointed (the on-disk bitmaps lag
    // behind), so the free space comes from the kernel, and the new file comes back.
    sh(&format!("mount -o remount,rw {}", mnt.display()));
    sh(&format!(
        "head -c 6M /dev/urandom > {0}/new-file && sync -f {0}/new-file",
        mnt.display()
    ));
    let new_file = sh(&format!("sha256sum < {}/new-file", mnt.display()));
    let mut args = capture_args(&repo, &src, "web01").to_vec();
    args.push("--crash-consistent");
    let s: serde_json::Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    let id = s["snapshot"].as_str().unwrap();
    let n = s["notes"].to_string();
    assert!(
        n.contains(&format!(
            "partition 2: mounted read-write at {}: its free space as the kernel reports it (FS_IOC_GETFSMAP)",
            mnt.display()
        )),
        "{n}"
    );
    assert!(s["free_bytes_skipped"].as_u64().unwrap() > 16 << 20, "{s}");
    eprintln!(
        "ext4 mounted read-write, FS_IOC_GETFSMAP: read {} B, skipped {} B",
        s["bytes_read"], s["free_bytes_skipped"]
    );
    let dst = env.path("crash.img");
    ok(&restore_args(&repo, id, &dst));
    let back = Loop::attach_range(&dst, start, end - start);
    // e2fsck replays the journal, as after a crash (exit 1: it changed something).
    let fsck = std::process::Command::new("e2fsck")
        .args(["-fy", &back.dev])
        .output()
        .unwrap();
    assert!(fsck.status.code().unwrap_or(8) <= 1, "{fsck:?}");
    sh(&format!("e2fsck -fn {}", back.dev));
    let cat = sh(&format!(
        "debugfs -R 'dump /new-file {0}' {1} >/dev/null 2>&1; sha256sum < {0}",
        env.path("new-file").display(),
        back.dev
    ));
    assert_eq!(cat, new_file);
    drop(back);
    let c = &env.manifest(id)["consistency"];
    assert_eq!(c["kind"], "crash-consistent", "{c}");
    assert!(c["reasons"][0].as_str().unwrap().contains(&mount), "{c}");
    let listing = ok(&["snapshots", "--repo", &repo]);
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(
        text.contains("CRASH-CONSISTENT: read while in use"),
        "{text}"
    );
    drop(m);
    drop(lo);
}
