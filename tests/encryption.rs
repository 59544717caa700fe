//! Encrypted repositories: nothing of a disk's content is stored in the clear, the
//! passphrase opens it (a wrong one is refused clearly, before a byte is written), key
//! files are added, changed, removed and recovered, and tampering is found.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const MARKER: &[u8] = b"LIFEBOAT-MARKER-7f3a9c-the-quick-brown-fox-jumps";

/// A sample disk with the marker written into its data partition (partition 3, read
/// whole by a capture), many times over, between random bytes.
fn disk_with_marker(env: &Env) -> PathBuf {
    let disk = env.disk("gpt", "m.img");
    let start = sgdisk_sector(&disk, 3, "First sector") * 512;
    let f = fs::OpenOptions::new().write(true).open(&disk).unwrap();
    for i in 0..64u64 {
        f.write_all_at(MARKER, start + 4096 + i * 70_001).unwrap();
    }
    disk
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The files under `dir` that hold `needle`.
fn holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| {
            fs::read(p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .collect()
}

fn dir_bytes(dir: &Path) -> u64 {
    files(dir)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

fn password(env: &Env, name: &str, text: &str) -> String {
    let p = env.path(name);
    fs::write(&p, format!("{text}\n")).unwrap();
    p.display().to_string()
}

fn init_encrypted(env: &Env, dir: &str, pw: &str) -> String {
    let repo = env.path(dir).display().to_string();
    ok(&["init", "--repo", &repo, "--encrypt", "--password-file", pw]);
    repo
}

fn capture(repo: &str, disk: &Path, name: &str, pw: &str) -> Value {
    let mut args = capture_args(repo, disk, name).to_vec();
    args.extend(["--password-file", pw]);
    serde_json::from_slice(&ok(&args).stdout).unwrap()
}

#[test]
fn an_encrypted_repository_holds_nothing_in_the_clear_and_opens_with_its_passphrase() {
    let env = Env::new();
    let disk = disk_with_marker(&env);
    let pw = password(&env, "pw", "correct horse battery staple");
    let bad = password(&env, "bad", "correct horse battery stapler");

    // The control: a plain repository of the same disk holds the marker.
    let plain = env.path("plain").display().to_string();
    ok(&["init", "--repo", &plain]);
    let p = serde_json::from_slice::<Value>(&ok(&capture_args(&plain, &disk, "m")).stdout).unwrap();
    assert!(
        !holding(Path::new(&plain), MARKER).is_empty(),
        "the marker is not found even in a plain repository: the check below would prove nothing"
    );

    let repo = init_encrypted(&env, "enc", &pw);
    let config: Value =
        serde_json::from_slice(&fs::read(env.path("enc/config.json")).unwrap()).unwrap();
    assert_eq!(config["encryption"]["algorithm"], "aes-256-gcm-siv");
    let c = capture(&repo, &disk, "m", &pw);
    assert!(c["snapshot"].is_string());
    let found = holding(Path::new(&repo), MARKER);
    assert!(
        found.is_empty(),
        "the marker is stored in the clear in {found:?}"
    );
    // Nor is any piece of it that a reader could look for: the name or the source path.
    let found = holding(Path::new(&repo), b"m.img");
    assert!(
        found.is_empty(),
        "the source's path is in the clear in {found:?}"
    );
    // (That the keyed gear table cuts elsewhere is the chunker's unit test: chunk counts
    // of the two repositories may happen to agree.)
    let _ = (&c, &p);

    // Encryption costs (almost) no space.
    let (plain_bytes, enc_bytes) = (dir_bytes(Path::new(&plain)), dir_bytes(Path::new(&repo)));
    let ratio = enc_bytes as f64 / plain_bytes as f64;
    assert!(
        (0.98..=1.02).contains(&ratio),
        "encrypted {enc_bytes} vs plain {plain_bytes} bytes"
    );

    // A second capture of the disk, changed a little, deduplicates within the repository.
    let f = fs::OpenOptions::new().write(true).open(&disk).unwrap();
    let data_part = sgdisk_sector(&disk, 3, "First sector") * 512;
    f.write_all_at(b"changed", data_part + (1 << 20)).unwrap();
    let c2 = capture(&repo, &disk, "m", &pw);
    assert!(c2["new_chunks"].as_u64().unwrap() <= 3, "{c2}");
    let id = c2["snapshot"].as_str().unwrap().to_string();

    // A wrong passphrase, and none: one clear error each, and the target untouched.
    let target = env.path("t.img");
    fs::write(
        &target,
        vec![7u8; fs::metadata(&disk).unwrap().len() as usize],
    )
    .unwrap();
    let before = hash_file(&target);
    let mut args = restore_args(&repo, &id, &target);
    args.extend(["--password-file", &bad]);
    let err = fails(&args);
    assert!(err.contains("wrong passphrase"), "{err}");
    let err = fails(&restore_args(&repo, &id, &target));
    assert!(err.contains("LIFEBOAT_PASSWORD_FILE"), "{err}");
    assert_eq!(hash_file(&target), before);
    // A passphrase given for a plain repository is refused (its config may have been
    // stripped of its encryption to make a writer store data in the clear).
    let mut args = capture_args(&plain, &disk, "m").to_vec();
    args.extend(["--password-file", &pw]);
    let err = fails(&args);
    assert!(err.contains("not encrypted"), "{err}");

    // With the passphrase (here from the environment): exact, and verified by keyed
    // region hashes.
    let good = env.path("good.img");
    let mut args = restore_args(&repo, &id, &good);
    args.extend(["--verify", "--yes"]);
    let o = std::process::Command::new(bin())
        .args(&args)
        .env("LIFEBOAT_PASSWORD_FILE", &pw)
        .env("LIFEBOAT_STATE_DIR", env.path("state"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(hash_file(&good), hash_file(&disk));
    let o = ok(&[
        "check",
        "--json",
        "--repo",
        &repo,
        "--password-file",
        &pw,
        "--read-data",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["snapshots"], 2, "{v}");
}

#[test]
fn key_files_are_added_changed_removed_and_recovered() {
    let env = Env::new();
    let disk = env.disk("gpt", "d.img");
    let one = password(&env, "one", "first passphrase");
    let two = password(&env, "two", "second passphrase");
    let three = password(&env, "three", "third passphrase");
    let repo = init_encrypted(&env, "enc", &one);
    capture(&repo, &disk, "d", &one);
    let list = |pw: &str| -> Vec<Value> {
        let o = ok(&[
            "key",
            "list",
            "--json",
            "--repo",
            &repo,
            "--password-file",
            pw,
        ]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["keys"].as_array().unwrap().clone()
    };
    let snapshots_with = |pw: &str| {
        run(&[
            "snapshots",
            "--json",
            "--repo",
            &repo,
            "--password-file",
            pw,
        ])
        .status
        .success()
    };
    let first = list(&one)[0]["name"].as_str().unwrap().to_string();

    ok(&[
        "key",
        "add",
        "--repo",
        &repo,
        "--password-file",
        &one,
        "--new-password-file",
        &two,
    ]);
    let keys = list(&two);
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.iter().filter(|k| k["current"] == true).count(), 1);
    assert!(snapshots_with(&one) && snapshots_with(&two));

    // passwd: the key file the old passphrase opened is replaced by one for the new.
    ok(&[
        "key",
        "passwd",
        "--repo",
        &repo,
        "--password-file",
        &two,
        "--new-password-file",
        &three,
    ]);
    assert!(!snapshots_with(&two));
    assert!(snapshots_with(&three) && snapshots_with(&one));

    // Remove the first; the last one left cannot be removed.
    ok(&[
        "key",
        "remove",
        "--repo",
        &repo,
        "--password-file",
        &three,
        &first,
    ]);
    assert!(!snapshots_with(&one));
    let last = list(&three)[0]["name"].as_str().unwrap().to_string();
    let err = fails(&[
        "key",
        "remove",
        "--repo",
        &repo,
        "--password-file",
        &three,
        &last,
    ]);
    assert!(err.contains("only key file"), "{err}");

    // The recovery copy: exported once, it makes a new key file when every passphrase
    // is lost; a mistyped or foreign copy is refused.
    let rec = env.path("recovery.txt");
    ok(&[
        "key",
        "export",
        "--repo",
        &repo,
        "--password-file",
        &three,
        "--out",
        path_str(&rec),
    ]);
    let text = fs::read_to_string(&rec).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("LBR1-"))
        .unwrap()
        .to_string();
    fs::remove_file(env.path(&format!("enc/keys/{last}.json"))).unwrap();
    assert!(!snapshots_with(&three));
    let err = fails(&["snapshots", "--repo", &repo, "--password-file", &three]);
    assert!(err.contains("no usable key file"), "{err}");
    let typo = env.path("typo.txt");
    let mut bytes = line.clone().into_bytes();
    let at = line.len() - 12;
    bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
    fs::write(&typo, bytes).unwrap();
    let add = |rec: &Path| {
        run(&[
            "key",
            "add",
            "--repo",
            &repo,
            "--recovery",
            path_str(rec),
            "--new-password-file",
            &one,
        ])
    };
    let o = add(&typo);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("mistyped"), "{}", stderr(&o));
    let other = Env::new();
    let pw = password(&other, "pw", "x passphrase");
    let other_repo = init_encrypted(&other, "enc", &pw);
    let foreign = other.path("rec.txt");
    ok(&[
        "key",
        "export",
        "--repo",
        &other_repo,
        "--password-file",
        &pw,
        "--out",
        path_str(&foreign),
    ]);
    let o = add(&foreign);
    assert!(stderr(&o).contains("not of"), "{}", stderr(&o));
    let o = add(&rec);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(snapshots_with(&one));
    let target = env.path("t.img");
    let mut args = restore_args(&repo, "d", &target);
    args.extend(["--password-file", &one]);
    ok(&args);
    assert_eq!(hash_file(&target), hash_file(&disk));
}

#[test]
fn tampering_with_an_encrypted_repository_is_found() {
    let env = Env::new();
    let disk = env.disk("gpt", "d.img");
    let pw = password(&env, "pw", "tamper test");
    let repo = init_encrypted(&env, "enc", &pw);
    let id = capture(&repo, &disk, "d", &pw)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let target = env.path("t.img");
    fs::write(
        &target,
        vec![9u8; fs::metadata(&disk).unwrap().len() as usize],
    )
    .unwrap();
    let before = hash_file(&target);
    let restore = |extra: &[&str]| {
        let mut args = restore_args(&repo, &id, &target);
        args.extend(["--password-file", &pw, "--yes"]);
        args.extend_from_slice(extra);
        run(&args)
    };

    // A byte of a pack's data flipped: check names the chunk as corrupt.
    let pack = files(&env.path("enc/packs"))
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let original = fs::read(&pack).unwrap();
    let mut damaged = original.clone();
    damaged[1000] ^= 0x10;
    fs::write(&pack, &damaged).unwrap();
    let o = run(&[
        "check",
        "--json",
        "--repo",
        &repo,
        "--password-file",
        &pw,
        "--read-data",
    ]);
    assert!(!o.status.success());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!v["corrupt"].as_array().unwrap().is_empty(), "{v}");
    assert!(v.to_string().contains("fails authentication"), "{v}");
    fs::write(&pack, &original).unwrap();

    // A manifest replaced by another's bytes under its name: refused (hash), target
    // untouched.
    let manifest = env.path(&format!("enc/snapshots/{id}.json"));
    let sealed = fs::read(&manifest).unwrap();
    let mut forged = sealed.clone();
    let n = forged.len();
    forged[n - 3] ^= 1;
    fs::write(&manifest, &forged).unwrap();
    let o = restore(&[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("damaged"), "{}", stderr(&o));
    assert_eq!(hash_file(&target), before);
    fs::write(&manifest, &sealed).unwrap();

    // config.json altered: another chunker, or its encryption removed.
    let config_path = env.path("enc/config.json");
    let config = fs::read(&config_path).unwrap();
    let mut v: Value = serde_json::from_slice(&config).unwrap();
    v["chunker"]["avg_size"] = 32768.into();
    fs::write(&config_path, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = restore(&[]);
    assert!(
        stderr(&o).contains("config.json has been altered"),
        "{}",
        stderr(&o)
    );
    let mut v: Value = serde_json::from_slice(&config).unwrap();
    v.as_object_mut().unwrap().remove("encryption");
    fs::write(&config_path, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = restore(&[]);
    assert!(stderr(&o).contains("not encrypted"), "{}", stderr(&o));
    assert_eq!(hash_file(&target), before);
    fs::write(&config_path, &config).unwrap();
    let good = env.path("good.img");
    let mut args = restore_args(&repo, &id, &good);
    args.extend(["--password-file", &pw]);
    ok(&args);
    assert_eq!(hash_file(&good), hash_file(&disk));
}
