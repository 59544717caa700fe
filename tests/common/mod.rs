//! Helpers for the integration tests: sample disks from scripts/make-disk, running the
//! binary, hashing files, and RAII guards for loop devices and mounts.
#![allow(dead_code)]

pub mod garage;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lifeboat")
}

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("lifeboat-test-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn repo(&self) -> String {
        self.path("repo").display().to_string()
    }

    /// A sample disk built by scripts/make-disk.
    pub fn disk(&self, kind: &str, name: &str) -> PathBuf {
        let out = self.path(name);
        make_disk(kind, &out);
        out
    }

    pub fn init(&self) -> String {
        let repo = self.repo();
        ok(&["init", "--repo", &repo]);
        repo
    }

    /// A repository of format `version` (2: pack files).
    pub fn init_version(&self, version: u32) -> String {
        let repo = self.repo();
        ok(&[
            "init",
            "--repo",
            &repo,
            "--format-version",
            &version.to_string(),
        ]);
        repo
    }

    /// Flip one bit in the middle of a chunk's stored bytes, wherever they are kept.
    pub fn flip_stored_byte(&self, id: &str) {
        use std::os::unix::fs::FileExt;
        let (file, offset, len) = self.stored_chunk(id);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(file)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, offset + len / 2).unwrap();
        f.write_all_at(&[b[0] ^ 0x40], offset + len / 2).unwrap();
    }

    /// A repository of format 1 holding one snapshot of a new sample disk of `kind`
    /// (for tests about chunk files themselves).
    pub fn with_snapshot_v1(&self, kind: &str, name: &str) -> (PathBuf, String) {
        let disk = self.disk(kind, &format!("{name}.img"));
        self.init_version(1);
        let id = self.capture(&disk, name)["snapshot"]
            .as_str()
            .unwrap()
            .to_string();
        (disk, id)
    }

    /// Where a chunk's stored bytes are: its own file (format 1), or a pack (format 2)
    /// found through the repository's index files; (file, offset, length).
    pub fn stored_chunk(&self, id: &str) -> (PathBuf, u64, u64) {
        let file = self.chunk_path(id);
        if file.exists() {
            let len = std::fs::metadata(&file).unwrap().len();
            return (file, 0, len);
        }
        for e in std::fs::read_dir(self.path("repo/index")).unwrap() {
            let data = std::fs::read(e.unwrap().path()).unwrap();
            for p in lifeboat::repo::index::parse(&data, u32::MAX, u64::MAX, 0).unwrap() {
                if let Some(c) = p.entries.iter().find(|c| c.id.to_hex() == id) {
                    let hex = p.id.to_hex();
                    let pack = self.path(&format!("repo/packs/{}/{hex}.pack", &hex[..2]));
                    return (pack, c.offset as u64, c.stored as u64);
                }
            }
        }
        panic!("chunk {id} is stored nowhere");
    }

    /// A repository holding one snapshot of a new sample disk of `kind`: the disk and the
    /// snapshot's id.
    pub fn with_snapshot(&self, kind: &str, name: &str) -> (PathBuf, String) {
        let disk = self.disk(kind, &format!("{name}.img"));
        self.init();
        let id = self.capture(&disk, name)["snapshot"]
            .as_str()
            .unwrap()
            .to_string();
        (disk, id)
    }

    /// Capture and return the JSON summary.
    pub fn capture(&self, source: &Path, name: &str) -> Value {
        let out = ok(&capture_args(&self.repo(), source, name));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn restore(&self, snapshot: &str, target: &Path, extra: &[&str]) -> Output {
        let repo = self.repo();
        let mut args = restore_args(&repo, snapshot, target);
        args.extend_from_slice(extra);
        run(&args)
    }

    /// The manifest JSON of a snapshot, by full id.
    pub fn manifest(&self, id: &str) -> Value {
        let p = self.path(&format!("repo/snapshots/{id}.json"));
        serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
    }

    pub fn chunk_path(&self, id: &str) -> PathBuf {
        self.path(&format!("repo/chunks/{}/{}", &id[..2], id))
    }
}

/// `capture --json -q` of `source` into `repo` as `name`.
pub fn capture_args<'a>(repo: &'a str, source: &'a Path, name: &'a str) -> [&'a str; 9] {
    [
        "capture",
        "--json",
        "-q",
        "--repo",
        repo,
        "--source",
        path_str(source),
        "--name",
        name,
    ]
}

/// `restore --json -q` of `snapshot` from `repo` onto `target` (more arguments may follow).
pub fn restore_args<'a>(repo: &'a str, snapshot: &'a str, target: &'a Path) -> Vec<&'a str> {
    vec![
        "restore",
        "--json",
        "-q",
        "--repo",
        repo,
        "--snapshot",
        snapshot,
        "--target",
        path_str(target),
    ]
}

pub fn make_disk(kind: &str, out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-disk");
    let o = Command::new(script).arg(kind).arg(out).output().unwrap();
    assert!(
        o.status.success(),
        "make-disk {kind} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        // What restores remember of the names they saw (trust::heads), kept out of $HOME.
        .env(
            "LIFEBOAT_STATE_DIR",
            std::env::temp_dir().join("lifeboat-test-state"),
        )
        .output()
        .expect("run lifeboat")
}

pub fn ok(args: &[&str]) -> Output {
    let o = run(args);
    assert!(
        o.status.success(),
        "lifeboat {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Run, expect failure, return stderr.
pub fn fails(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        !o.status.success(),
        "lifeboat {args:?} should have failed:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn hash_file(p: &Path) -> String {
    let mut h = blake3::Hasher::new();
    h.update_reader(fs::File::open(p).unwrap()).unwrap();
    h.finalize().to_hex().to_string()
}

pub fn hash_range(p: &Path, offset: u64, len: u64) -> String {
    let f = fs::File::open(p).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset).unwrap();
    blake3::hash(&buf).to_hex().to_string()
}

pub fn read_at(p: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = fs::File::open(p).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

pub fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A loop device, detached on drop.
pub struct Loop {
    pub dev: String,
}

impl Loop {
    pub fn attach(file: &Path, sector_size: u32) -> Loop {
        let dev = sh(&format!(
            "losetup -f --show --sector-size {sector_size} '{}'",
            file.display()
        ));
        Loop {
            dev: dev.trim().to_string(),
        }
    }

    /// A loop device over `len` bytes of `file` from `offset` (a partition of an image).
    pub fn attach_range(file: &Path, offset: u64, len: u64) -> Loop {
        let dev = sh(&format!(
            "losetup -f --show -o {offset} --sizelimit {len} '{}'",
            file.display()
        ));
        Loop {
            dev: dev.trim().to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        Path::new(&self.dev)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A mount, unmounted on drop.
pub struct Mount {
    pub point: PathBuf,
}

impl Mount {
    pub fn new(dev: &str, point: &Path) -> Mount {
        fs::create_dir_all(point).unwrap();
        sh(&format!("mount '{dev}' '{}'", point.display()));
        Mount {
            point: point.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.point).status();
    }
}

/// `lifeboat check --read-data --json` of a repository that must check clean; the report.
pub fn check_clean(repo: &str) -> Value {
    let o = ok(&["check", "--read-data", "--json", "--quiet", "--repo", repo]);
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    r
}

/// A number from `sgdisk -i PART IMAGE`, such as "First sector" or "Last sector".
pub fn sgdisk_sector(img: &Path, part: u32, field: &str) -> u64 {
    let info = sh(&format!("sgdisk -i {part} {}", img.display()));
    info.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field:?} in:\n{info}"))
}

/// Regions of a manifest as (kind, partition, offset, length).
pub fn regions(m: &Value) -> Vec<(String, Option<u64>, u64, u64)> {
    m["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_string(),
                r["partition"].as_u64(),
                r["offset"].as_u64().unwrap(),
                r["length"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The first stored chunk id of partition `n`.
pub fn first_chunk_of_partition(m: &Value, n: u64) -> String {
    let r = m["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["partition"].as_u64() == Some(n))
        .unwrap();
    r["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|c| c["id"].as_str())
        .unwrap()
        .to_string()
}

/// The Debian kernel cache made by scripts/fetch-kernel ($LIFEBOAT_KERNEL or .cache/kernel).
pub fn kernel_dir() -> PathBuf {
    let dir = std::env::var_os("LIFEBOAT_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/kernel"));
    assert!(
        dir.join("version").is_file(),
        "no kernel in {}: run scripts/fetch-kernel (scripts/test does)",
        dir.display()
    );
    dir
}

/// Run `script` as root in a QEMU guest with the Debian kernel (scripts/guest-run) on
/// `disks`, with this lifeboat as /bin/lifeboat; its output (the test fails with the
/// output when the script does).
pub fn guest(env: &Env, script: &str, disks: &[&Path]) -> String {
    guest_with(env, script, disks, "")
}

/// The same, with `devices` (QEMU options) added to the guest's machine.
pub fn guest_with(env: &Env, script: &str, disks: &[&Path], devices: &str) -> String {
    let job = env.path("job.sh");
    fs::write(&job, script).unwrap();
    let o = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/guest-run"))
        .arg(&job)
        .args(disks)
        .env("GUEST_DEVICES", devices)
        .env("LIFEBOAT_KERNEL", kernel_dir())
        .env("LIFEBOAT", bin())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "guest job failed:\n{out}\n{}",
        stderr(&o)
    );
    out
}
