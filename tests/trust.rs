//! Signed snapshots: a restore that is given a trust anchor uses only snapshots signed by
//! it, refuses everything else before writing a byte, and says which key signed what.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

/// `lifeboat keygen --out DIR/NAME`; returns the key id.
fn keygen(env: &Env, name: &str) -> String {
    let out = ok(&["keygen", "--json", "--out", path_str(&env.path(name))]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["key_id"].as_str().unwrap().to_string()
}

/// Capture `disk` as `name`, signed with `key` (NAME.key in the env) if given.
fn capture(env: &Env, repo: &str, disk: &Path, name: &str, key: Option<&str>) -> (String, Value) {
    let key_file = key.map(|k| env.path(&format!("{k}.key")));
    let mut args = capture_args(repo, disk, name).to_vec();
    if let Some(k) = &key_file {
        args.extend(["--sign", path_str(k)]);
    }
    let v: Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    (v["snapshot"].as_str().unwrap().to_string(), v)
}

/// A target that already holds something: its hash shows whether a refused restore
/// wrote anything.
fn reset_target(target: &Path, size: u64) -> String {
    let pattern: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    fs::write(target, pattern).unwrap();
    hash_file(target)
}

#[test]
fn only_snapshots_signed_by_a_trusted_key_are_restored() {
    let env = Env::new();
    let disk = env.disk("gpt", "m.img");
    let size = fs::metadata(&disk).unwrap().len();
    let repo = env.init();
    let a = keygen(&env, "a");
    let b = keygen(&env, "b");
    assert_ne!(a, b);
    let (signed, summary) = capture(&env, &repo, &disk, "m", Some("a"));
    assert_eq!(summary["signed_by"], a.as_str());
    let (unsigned, _) = capture(&env, &repo, &disk, "u", None);
    let (other, _) = capture(&env, &repo, &disk, "o", Some("b"));
    let manifest = env.manifest(&signed);
    assert_eq!(manifest["sequence"], 1);
    let config: Value =
        serde_json::from_slice(&fs::read(env.path("repo/config.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["repository"], config["id"],
        "bound to its repository"
    );

    let a_pub = env.path("a.pub");
    let trust_a = ["--trust", path_str(&a_pub), "--yes"];
    let target = env.path("t.img");

    // Signed by the trusted key: restored exactly, and the report says by which key.
    let o = env.restore("m", &target, &trust_a);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["snapshot"], signed.as_str());
    assert!(r["signature"].as_str().unwrap().contains(&a), "{r}");
    assert_eq!(hash_file(&target), hash_file(&disk));

    // Everything else is refused before writing, naming why.
    let refused = |spec: &str, extra: &[&str], expect: &str| {
        let before = reset_target(&target, size);
        let mut args = trust_a.to_vec();
        args.extend_from_slice(extra);
        let o = env.restore(spec, &target, &args);
        let e = stderr(&o);
        assert!(!o.status.success(), "{spec} {extra:?} was restored");
        assert!(e.contains(expect), "{spec} {extra:?}: {e}");
        assert!(e.contains("nothing was written"), "{e}");
        assert_eq!(hash_file(&target), before, "{spec}: the target was touched");
    };
    refused("u", &[], "is not signed, and signatures are required");
    refused(&unsigned, &[], "is not signed");
    refused(
        "o",
        &[],
        &format!("signed only by key {b}, which is not trusted"),
    );
    refused(&other, &["--allow-unsigned"], "which is not trusted");
    refused(&signed[..12], &[], "give the whole id");
    refused("m", &["--max-age", "1ms"], "more than --max-age");
    let revoked = env.path("revoked");
    fs::write(&revoked, format!("# lost with its laptop\n{a}\n")).unwrap();
    refused(
        "m",
        &["--revoked", path_str(&revoked)],
        &format!("signed only by revoked key {a}"),
    );

    // --allow-unsigned lets a missing signature through, and says so.
    fs::remove_file(&target).unwrap();
    let o = env.restore(
        "u",
        &target,
        &[&trust_a[..], &["--allow-unsigned"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["signature"].as_str().unwrap().contains("UNSIGNED"), "{r}");

    // A signature altered by one digit is bad, even with --allow-unsigned.
    let sig = env.path(&format!("repo/snapshots/{signed}.{a}.sig"));
    let text = fs::read_to_string(&sig).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    let s = v["signature"].as_str().unwrap().to_string();
    let flipped = if s.starts_with('0') { "1" } else { "0" };
    v["signature"] = format!("{flipped}{}", &s[1..]).into();
    fs::write(&sig, serde_json::to_vec(&v).unwrap()).unwrap();
    refused(
        &signed,
        &["--allow-unsigned"],
        &format!("carries a bad signature by key {a}"),
    );
    fs::write(&sig, text).unwrap();

    // A manifest altered after signing no longer hashes to its name.
    let m_path = env.path(&format!("repo/snapshots/{signed}.json"));
    let original = fs::read(&m_path).unwrap();
    let tampered = String::from_utf8(original.clone()).unwrap().replacen(
        "\"name\":\"m\"",
        "\"name\":\"n\"",
        1,
    );
    fs::write(&m_path, tampered).unwrap();
    refused(&signed, &[], "damaged");
    fs::write(&m_path, original).unwrap();

    // check and snapshots with the anchor name what is not trusted.
    let o = run(&[
        "check",
        "--json",
        "--repo",
        &repo,
        "--trust",
        path_str(&a_pub),
    ]);
    assert!(!o.status.success(), "check passed untrusted snapshots");
    let c: Value = serde_json::from_slice(&o.stdout).unwrap();
    let untrusted: Vec<&str> = c["untrusted_snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(untrusted.len(), 2, "{c}");
    assert!(untrusted.contains(&unsigned.as_str()) && untrusted.contains(&other.as_str()));
    let l: Value = serde_json::from_slice::<Value>(
        &ok(&[
            "snapshots",
            "--json",
            "--repo",
            &repo,
            "--trust",
            path_str(&a_pub),
        ])
        .stdout,
    )
    .unwrap()["snapshots"]
        .clone();
    for e in l.as_array().unwrap() {
        // Stored bytes come from the index (format 2), not from a chunk file per chunk.
        assert!(e["stored_bytes"].as_u64().unwrap() > 0, "{e}");
        let sig = e["signature"].as_str().unwrap();
        if e["id"] == signed.as_str() {
            assert!(sig.contains(&a), "{sig}");
        } else {
            assert!(sig.starts_with("NOT TRUSTED"), "{sig}");
        }
    }

    // A signed snapshot copied into another repository is refused there.
    let other_repo = env.path("other");
    ok(&["init", "--repo", path_str(&other_repo)]);
    for dir in ["packs", "index", "snapshots"] {
        sh(&format!(
            "cp -r {}/{dir}/. {}/{dir}/",
            env.path("repo").display(),
            other_repo.display()
        ));
    }
    let before = reset_target(&target, size);
    let mut args = restore_args(path_str(&other_repo), &signed, &target);
    args.extend_from_slice(&trust_a);
    let e = fails(&args);
    assert!(e.contains("not this one"), "{e}");
    assert_eq!(hash_file(&target), before);
}

#[test]
fn a_repository_can_require_signatures_of_readers_that_bring_no_key() {
    let env = Env::new();
    let disk = env.disk("gpt", "m.img");
    keygen(&env, "a");
    let repo = env.repo();
    ok(&[
        "init",
        "--repo",
        &repo,
        "--require-signed",
        path_str(&env.path("a.pub")),
    ]);
    capture(&env, &repo, &disk, "m", Some("a"));
    capture(&env, &repo, &disk, "u", None);
    let target = env.path("t.img");
    let o = env.restore("m", &target, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = fs::remove_file(&target);
    let o = env.restore("u", &target, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not signed"), "{}", stderr(&o));
    assert!(!target.exists(), "a refused restore created its target");
    let o = run(&["check", "--json", "--repo", &repo]);
    assert!(!o.status.success());
    // A key sealed under a passphrase signs only with it; nothing is captured without.
    let pass = env.path("pass");
    fs::write(&pass, "correct horse battery\n").unwrap();
    let sealed = env.path("sealed");
    ok(&[
        "keygen",
        "-q",
        "--out",
        path_str(&sealed),
        "--password-file",
        path_str(&pass),
    ]);
    let text = fs::read_to_string(env.path("sealed.key")).unwrap();
    assert!(
        text.contains("ed25519-secret-argon2id:m=65536,t=3,p=1:"),
        "{text}"
    );
    let sealed_key = env.path("sealed.key");
    let sign = |extra: &[&str]| {
        let mut args = capture_args(&repo, &disk, "sealed").to_vec();
        args.extend(["--sign", path_str(&sealed_key)]);
        args.extend_from_slice(extra);
        run(&args)
    };
    let before = fs::read_dir(env.path("repo/snapshots")).unwrap().count();
    let o = sign(&[]);
    assert!(
        stderr(&o).contains("give --sign-password-file"),
        "{}",
        stderr(&o)
    );
    let wrong = env.path("wrong");
    fs::write(&wrong, "wrong horse\n").unwrap();
    let o = sign(&["--sign-password-file", path_str(&wrong)]);
    assert!(stderr(&o).contains("wrong passphrase"), "{}", stderr(&o));
    assert_eq!(
        fs::read_dir(env.path("repo/snapshots")).unwrap().count(),
        before
    );
    let o = sign(&["--sign-password-file", path_str(&pass)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["signed_by"].is_string(), "{v}");

    // A key that does not parse is refused before anything is captured.
    fs::write(env.path("bad.key"), "ed25519-secret:zz\n").unwrap();
    let e = fails(&[
        "capture",
        "-q",
        "--repo",
        &repo,
        "--source",
        path_str(&disk),
        "--name",
        "x",
        "--sign",
        path_str(&env.path("bad.key")),
    ]);
    assert!(e.contains("is not a Lifeboat signing key"), "{e}");
}

/// A server that hides the newest signed snapshot of a name and serves the one before
/// is refused by a machine that has seen the newest; a full id still restores the older.
#[test]
fn an_older_signed_snapshot_served_in_place_of_the_newest_is_refused() {
    let env = Env::new();
    let disk = env.disk("gpt", "m.img");
    let repo = env.init();
    let a = keygen(&env, "a");
    let (first, _) = capture(&env, &repo, &disk, "m", Some("a"));
    let (second, _) = capture(&env, &repo, &disk, "m", Some("a"));
    assert_eq!(env.manifest(&second)["sequence"], 2);
    assert_eq!(env.manifest(&second)["parent"], first.as_str());
    let state = env.path("state");
    let restore = |spec: &str| {
        let target = env.path("t.img");
        let _ = fs::remove_file(&target);
        let mut args = restore_args(&repo, spec, &target);
        let a_pub = env.path("a.pub");
        args.extend(["--trust", path_str(&a_pub)]);
        std::process::Command::new(bin())
            .args(&args)
            .env("LIFEBOAT_STATE_DIR", &state)
            .output()
            .unwrap()
    };
    let o = restore("m");
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["snapshot"], second.as_str());
    let heads = fs::read_to_string(state.join("heads.json")).unwrap();
    assert!(heads.contains("/m\": 2"), "{heads}");
    // The newest is hidden (its manifest and signature moved away).
    let hidden = env.path("hidden");
    fs::create_dir(&hidden).unwrap();
    for f in [format!("{second}.json"), format!("{second}.{a}.sig")] {
        fs::rename(env.path(&format!("repo/snapshots/{f}")), hidden.join(&f)).unwrap();
    }
    let o = restore("m");
    assert!(
        !o.status.success(),
        "the older snapshot was restored in place of the newest"
    );
    let e = stderr(&o);
    assert!(e.contains("an older snapshot is being served"), "{e}");
    assert!(!env.path("t.img").exists(), "nothing was written");
    // Pinned by its full id, the older one restores.
    let o = restore(&first);
    assert!(o.status.success(), "{}", stderr(&o));
}
