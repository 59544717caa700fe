//! The operator's everyday experience (issue 23): one duration syntax, one JSON object per
//! command, output that survives a closed pipe, Nagios's exit codes, summaries that say
//! what their JSON says, a journal that records failures with their snapshot, messages
//! that point the right way, restore --dry-run and --partition.

mod common;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// A repository with one snapshot `web01` of a sample GPT disk.
fn with_web01() -> (Env, std::path::PathBuf, String) {
    let env = Env::new();
    let (src, id) = env.with_snapshot("gpt", "web01");
    (env, src, id)
}

/// What `ui::bytes` prints: 1536 -> "1.5 KiB".
fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut u) = (n as f64, 0);
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    match u {
        0 => format!("{n} B"),
        _ => format!("{v:.1} {}", units[u]),
    }
}

#[test]
fn every_option_reads_durations_one_way_and_refuses_a_bare_m() {
    let (env, src, _) = with_web01();
    let repo = env.repo();
    let target = env.path("t.img");
    let refused: [Vec<&str>; 6] = [
        vec!["journal", "--repo", &repo, "--since", "1m"],
        vec![
            "forget",
            "--repo",
            &repo,
            "--dry-run",
            "--keep-within",
            "1m",
        ],
        vec!["status", "--repo", &repo, "--capture-max-age", "1m"],
        vec!["prune", "--repo", &repo, "--dry-run", "--wait", "1m"],
        vec![
            "restore",
            "--repo",
            &repo,
            "--snapshot",
            "web01",
            "--target",
            path_str(&target),
            "--max-age",
            "1m",
        ],
        vec![
            "drill",
            "--repo",
            &repo,
            "--snapshot",
            "web01",
            "--boot-timeout",
            "1m",
        ],
    ];
    for args in &refused {
        let o = run(args);
        let err = stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(if args[0] == "status" { 3 } else { 2 }),
            "{args:?}: {err}"
        );
        assert!(err.contains("write 1min or 1mo"), "{args:?}: {err}");
    }
    // The same units everywhere: weeks, months, minutes, and dates for --since.
    ok(&["journal", "--repo", &repo, "--since", "2w"]);
    ok(&["journal", "--repo", &repo, "--since", "2026-01-01"]);
    ok(&[
        "forget",
        "--repo",
        &repo,
        "--dry-run",
        "--keep-within",
        "1y6mo",
    ]);
    ok(&["prune", "--repo", &repo, "--dry-run", "--wait", "10min"]);
    let o = ok(&[
        "restore",
        "--json",
        "-q",
        "--repo",
        &repo,
        "--snapshot",
        "web01",
        "--target",
        path_str(&target),
        "--max-age",
        "1w",
    ]);
    assert!(o.status.success());
    assert_eq!(hash_file(&target), hash_file(&src));
}

/// Every command's output, its reader gone at once: no panic, the command's own exit code.
#[test]
fn every_printer_survives_a_closed_pipe() {
    let (env, _src, id) = with_web01();
    let repo = env.repo();
    for _ in 0..3 {
        ok(&["check", "--repo", &repo]);
    }
    let commands: Vec<Vec<&str>> = vec![
        vec!["journal", "--repo", &repo],
        vec!["journal", "--json", "--repo", &repo],
        vec!["snapshots", "--repo", &repo],
        vec!["snapshots", "--json", "--repo", &repo],
        vec!["check", "--repo", &repo],
        vec!["forget", "--repo", &repo, "--dry-run", "--keep-last", "1"],
        vec!["prune", "--repo", &repo, "--dry-run"],
        vec!["locks", "--repo", &repo],
        vec!["disks"],
        vec!["version"],
        vec!["completions", "bash"],
        vec![
            "restore",
            "--repo",
            &repo,
            "--snapshot",
            &id,
            "--target",
            "/nonexistent/x.img",
            "--dry-run",
        ],
        vec!["--help"],
    ];
    for args in &commands {
        let mut child = Command::new(bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the pipe's reading end before the command prints.
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        assert!(
            status.code().is_some(),
            "{args:?} died of a signal: {status:?}"
        );
        let expect_ok = args[0] != "restore";
        assert_eq!(status.success(), expect_ok, "{args:?}: {status:?} {err}");
    }
    // `status` keeps its Nagios code with its reader gone (no drill: WARNING).
    let mut child = Command::new(bin())
        .args(["status", "--repo", &repo])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(1));
}

/// Parse stdout as exactly one JSON object carrying `ok`.
fn one_object(args: &[&str], out: &[u8]) -> Value {
    let text = String::from_utf8_lossy(out);
    assert_eq!(
        text.lines().count(),
        1,
        "{args:?}: one line of JSON, got: {text}"
    );
    let v: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"));
    assert!(v.is_object(), "{args:?}: not an object: {v}");
    assert!(v["ok"].is_boolean(), "{args:?}: no ok: {v}");
    if v["ok"] == false {
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{args:?}: {v}"
        );
    }
    v
}

#[test]
fn every_command_prints_one_json_object_and_an_error_as_one_too() {
    let env = Env::new();
    let repo = env.repo();
    let src = env.disk("gpt", "src.img");
    let target = env.path("t.img");
    let units = env.path("units");
    let man = env.path("man");
    let key = env.path("signer");
    let kernel = kernel_dir();
    let media = env.path("media");
    let old = env.path("old").display().to_string();
    let enc = env.path("enc").display().to_string();
    let pw = env.path("pw");
    fs::write(&pw, "a passphrase\n").unwrap();
    ok(&["init", "--repo", &old, "--format-version", "1"]);
    ok(&[
        "init",
        "--repo",
        &enc,
        "--encrypt",
        "--password-file",
        path_str(&pw),
    ]);
    let succeed: Vec<Vec<&str>> = vec![
        vec!["init", "--repo", &repo],
        vec!["keygen", "--out", path_str(&key)],
        vec![
            "capture",
            "-q",
            "--repo",
            &repo,
            "--source",
            path_str(&src),
            "--name",
            "web01",
        ],
        vec!["snapshots", "--repo", &repo],
        vec![
            "restore",
            "--repo",
            &repo,
            "--snapshot",
            "web01",
            "--target",
            path_str(&target),
            "--dry-run",
        ],
        vec![
            "restore",
            "-q",
            "--repo",
            &repo,
            "--snapshot",
            "web01",
            "--target",
            path_str(&target),
        ],
        vec!["check", "-q", "--repo", &repo],
        vec!["journal", "--repo", &repo],
        vec!["status", "--repo", &repo, "--drill-max-age", "off"],
        vec!["protect", "--repo", &repo, "web01"],
        vec!["forget", "--repo", &repo, "--keep-last", "1", "--dry-run"],
        vec!["prune", "--repo", &repo, "--dry-run"],
        vec!["locks", "--repo", &repo],
        vec!["disks"],
        vec!["version"],
        vec!["man", path_str(&man)],
        vec!["fetch-kernel", path_str(&kernel)],
        vec!["migrate", "--repo", &old],
        vec![
            "key",
            "list",
            "--repo",
            &enc,
            "--password-file",
            path_str(&pw),
        ],
        vec![
            "mkimage",
            "--out",
            path_str(&media),
            "--kernel",
            path_str(&kernel),
        ],
        vec![
            "schedule",
            "--name",
            "web01",
            "--source",
            "/dev/sda",
            "--repo",
            "/srv/repo",
            "--dir",
            path_str(&units),
        ],
    ];
    let mut seen = Vec::new();
    for args in &succeed {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let o = run(&with_json);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let v = one_object(args, &o.stdout);
        assert_eq!(v["ok"], true, "{args:?}: {v}");
        seen.push((args[0], v));
    }
    // Field names shared across commands: the snapshot's disk size is disk_size, its id
    // snapshot (or id in a listing), durations duration_s.
    // (The last of a command's runs: restore's real one, after its dry run.)
    let of = |cmd: &str| &seen.iter().rev().find(|(c, _)| *c == cmd).unwrap().1;
    let size = fs::metadata(&src).unwrap().len();
    assert_eq!(of("capture")["disk_size"], size);
    assert_eq!(of("restore")["disk_size"], size);
    assert_eq!(of("snapshots")["snapshots"][0]["disk_size"], size);
    assert_eq!(of("capture")["snapshot"], of("restore")["snapshot"]);
    assert_eq!(
        of("capture")["snapshot"],
        of("snapshots")["snapshots"][0]["id"]
    );
    for cmd in ["capture", "restore", "check", "prune"] {
        assert!(of(cmd)["duration_s"].is_number(), "{cmd}: {}", of(cmd));
    }
    // Failures: one object with ok false and the error, on stdout; stderr says it too.
    let fail: Vec<Vec<&str>> = vec![
        vec!["snapshots", "--repo", "/nonexistent/repo"],
        vec![
            "restore",
            "--repo",
            &repo,
            "--snapshot",
            "nothing",
            "--target",
            path_str(&target),
        ],
        vec!["check", "--repo", "/nonexistent/repo"],
        vec!["status", "--repo", "/nonexistent/repo"],
        vec!["keygen", "--out", "/nonexistent/dir/k"],
    ];
    for args in &fail {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let o = run(&with_json);
        assert!(!o.status.success(), "{args:?}");
        let v = one_object(args, &o.stdout);
        assert_eq!(v["ok"], false, "{args:?}: {v}");
        assert_eq!(v["exit_code"], o.status.code().unwrap(), "{args:?}: {v}");
        assert!(stderr(&o).contains("error"), "{args:?}");
    }
    // A command that ran to its end and failed prints its own result, once, with ok false.
    let o = run(&[
        "--json",
        "status",
        "--repo",
        &repo,
        "--capture-max-age",
        "1ms",
    ]);
    let v = one_object(&["status"], &o.stdout);
    assert_eq!(
        (v["ok"].clone(), v["state"].clone()),
        (false.into(), "WARNING".into())
    );
}

#[test]
fn status_exits_as_nagios_reads_it_and_a_failed_restore_is_journaled_with_its_snapshot() {
    let (env, _src, id) = with_web01();
    let repo = env.repo();
    ok(&["check", "--repo", &repo]);
    let code = |extra: &[&str]| {
        let mut args = vec!["status", "--repo", &repo];
        args.extend_from_slice(extra);
        run(&args).status.code()
    };
    // Never drilled: WARNING; drills off (for all, or for the name, remembered): OK.
    assert_eq!(code(&[]), Some(1));
    assert_eq!(code(&["--drill-max-age", "off"]), Some(0));
    let o = ok(&["status", "--repo", &repo, "--no-drill", "web01"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("not drilled"));
    assert_eq!(code(&[]), Some(0));
    // Overdue: WARNING.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(code(&["--capture-max-age", "1s"]), Some(1));
    assert_eq!(
        code(&["--max-age", "1s"]),
        Some(1),
        "the old name still reads"
    );
    // A restore that fails (a target too small) is journaled with the snapshot it was
    // of, and makes the name CRITICAL.
    let small = env.path("small.img");
    fs::write(&small, vec![0u8; 1 << 20]).unwrap();
    let err = fails(&[
        "restore",
        "--repo",
        &repo,
        "--snapshot",
        "web01",
        "--target",
        path_str(&small),
        "--yes",
    ]);
    assert!(err.contains("too small"), "{err}");
    let journal: Value =
        serde_json::from_slice(&ok(&["journal", "--json", "--repo", &repo]).stdout).unwrap();
    let last = journal["records"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["operation"], "restore");
    assert_eq!(last["result"], "failed");
    assert_eq!(last["name"], "web01", "{last}");
    assert_eq!(last["snapshot"], id.as_str());
    let o = run(&["status", "--repo", &repo]);
    assert_eq!(o.status.code(), Some(2));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("the last restore ("), "{out}");
    // Times for people are in UTC and say so, never lower-cased.
    assert!(out.contains(" UTC) failed"), "{out}");
    assert!(!out.contains("t0") && !out.contains("z)"), "{out}");
    // Unreadable: UNKNOWN; a wrong command line too (Nagios's convention).
    assert_eq!(
        run(&["status", "--repo", "/nonexistent"]).status.code(),
        Some(3)
    );
    assert_eq!(run(&["status", "--bogus"]).status.code(), Some(3));
    assert_eq!(run(&["snapshots", "--bogus"]).status.code(), Some(2));
    // --drill NAME asks for its drills again.
    let o = run(&["status", "--repo", &repo, "--drill", "web01"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("drills asked for again"));
    let o = run(&["status", "--json", "--repo", &repo]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["names"][0]["drill_off"], false, "{v}");
}

#[test]
fn summaries_say_what_their_json_says() {
    let (env, src, _) = with_web01();
    let repo = env.repo();
    let target = env.path("t.img");
    ok(&[
        "restore",
        "-q",
        "--repo",
        &repo,
        "--snapshot",
        "web01",
        "--target",
        path_str(&target),
    ]);
    // A rerun over the restored image: little written, most kept; the human summary and
    // the JSON agree.
    let args = [
        "restore",
        "-q",
        "--repo",
        &repo,
        "--snapshot",
        "web01",
        "--target",
        path_str(&target),
        "--yes",
    ];
    let text = String::from_utf8(ok(&args).stdout).unwrap();
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let v: Value = serde_json::from_slice(&ok(&with_json).stdout).unwrap();
    let written = v["written_bytes"].as_u64().unwrap();
    let kept = v["kept_chunks"].as_u64().unwrap();
    assert!(
        kept > 0 && written < v["data_bytes"].as_u64().unwrap() / 4,
        "{v}"
    );
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .to_string()
    };
    assert!(line("written").contains(&human(written)), "{text}\n{v}");
    assert!(
        line("chunks").contains(&format!(
            "{kept} ({}) already in place",
            human(v["kept_bytes"].as_u64().unwrap())
        )),
        "{text}\n{v}"
    );
    assert!(
        line("chunks").contains(&format!("{} fetched", v["fetched_chunks"])),
        "{text}"
    );
    assert_eq!(line("table"), "table      as captured");
    assert_eq!(hash_file(&target), hash_file(&src));
    // Onto a larger disk: the table line says so, and the JSON too.
    let big = env.path("big.img");
    fs::File::create(&big)
        .unwrap()
        .set_len(fs::metadata(&src).unwrap().len() * 2)
        .unwrap();
    let v: Value = serde_json::from_slice(
        &ok(&[
            "restore",
            "--json",
            "-q",
            "--repo",
            &repo,
            "--snapshot",
            "web01",
            "--target",
            path_str(&big),
            "--yes",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(
        (v["grown"].clone(), v["shrunk"].clone()),
        (true.into(), false.into())
    );
    // snapshots: what each added, what it uses, times in UTC.
    ok(&[
        "capture",
        "-q",
        "--repo",
        &repo,
        "--source",
        path_str(&src),
        "--name",
        "web01",
    ]);
    let listing = String::from_utf8(ok(&["snapshots", "--repo", &repo]).stdout).unwrap();
    let v: Value =
        serde_json::from_slice(&ok(&["snapshots", "--json", "--repo", &repo]).stdout).unwrap();
    let s = v["snapshots"].as_array().unwrap();
    assert_eq!(
        s[1]["added_bytes"], 0,
        "the same disk again adds nothing: {v}"
    );
    assert_eq!(s[0]["added_bytes"], s[0]["stored_bytes"]);
    assert_eq!(s[1]["stored_bytes"], s[0]["stored_bytes"]);
    let header = listing.lines().next().unwrap();
    assert!(
        header.contains("TIME (UTC)") && header.contains("ADDED") && header.contains("USES"),
        "{listing}"
    );
    let second = listing.lines().nth(2).unwrap();
    assert!(
        second.contains(" UTC ") && second.contains("0 B"),
        "{listing}"
    );
}

#[test]
fn messages_point_the_right_way() {
    let (env, _src, id) = with_web01();
    let repo = env.repo();
    // An id prefix under four digits is said to be one.
    let err = fails(&[
        "restore",
        "--repo",
        &repo,
        "--snapshot",
        &id[..3],
        "--target",
        path_str(&env.path("t.img")),
    ]);
    assert!(
        err.contains("an id prefix needs at least 4 hex digits"),
        "{err}"
    );
    // keygen into a folder that does not exist.
    let err = fails(&["keygen", "--out", path_str(&env.path("no/such/k"))]);
    assert!(
        err.contains("does not exist (create it first)") && !err.contains("must not exist"),
        "{err}"
    );
    // A password file given for a plain repository: a reader goes on with a note; a
    // writer refuses to store in the clear.
    let pw = env.path("pw");
    fs::write(&pw, "secret\n").unwrap();
    let o = Command::new(bin())
        .args(["snapshots", "--repo", &repo])
        .env("LIFEBOAT_PASSWORD_FILE", &pw)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is not encrypted: the passphrase given"),
        "{}",
        stderr(&o)
    );
    // LIFEBOAT_REPO for init too.
    let other = env.path("other");
    let o = Command::new(bin())
        .arg("init")
        .env("LIFEBOAT_REPO", &other)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(other.join("config.json").is_file());
    // The same name rule in capture and schedule; --name defaults to the host name.
    let disk = env.path("d.img");
    fs::write(&disk, vec![7u8; 1 << 20]).unwrap();
    for bad in ["web 01", "-web", "a/b"] {
        let name = format!("--name={bad}");
        let err = fails(&[
            "capture",
            "--repo",
            &repo,
            "--source",
            path_str(&disk),
            &name,
        ]);
        assert!(err.contains("is not a snapshot name"), "{err}");
        let err = fails(&["schedule", &name, "--source", "/dev/sda", "--repo", "/r"]);
        assert!(err.contains("is not a snapshot name"), "{err}");
    }
    let v: Value = serde_json::from_slice(
        &ok(&[
            "capture",
            "--json",
            "-q",
            "--repo",
            &repo,
            "--source",
            path_str(&disk),
        ])
        .stdout,
    )
    .unwrap();
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(v["name"], host.trim().split('.').next().unwrap());
    // --insecure still reads, as --allow-unsigned.
    ok(&[
        "restore",
        "-q",
        "--repo",
        &repo,
        "--snapshot",
        &id,
        "--target",
        path_str(&env.path("u.img")),
        "--insecure",
    ]);
    // A refused connection fails at once with the reason, not after silent retries.
    let err = fails(&["snapshots", "--repo", "http://127.0.0.1:9/"]);
    assert!(
        err.contains("connection refused") && !err.contains("retrying"),
        "{err}"
    );
}

#[test]
fn a_dry_run_writes_nothing_and_plans_what_the_restore_then_does() {
    let (env, src, _) = with_web01();
    let repo = env.repo();
    // Onto a copy with a few blocks changed: the plan reads it as the restore will.
    let target = env.path("t.img");
    fs::copy(&src, &target).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&target).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0xAB; 65536], 40 << 20).unwrap();
    drop(f);
    let before = hash_file(&target);
    let plan: Value = serde_json::from_slice(
        &ok(&[
            "restore",
            "--json",
            "--repo",
            &repo,
            "--snapshot",
            "web01",
            "--target",
            path_str(&target),
            "--dry-run",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(hash_file(&target), before, "a dry run wrote to the target");
    assert_eq!(plan["dry_run"], true);
    let d = &plan["disks"][0];
    assert!(
        d["write_chunks"].as_u64().unwrap() > 0 && d["kept_chunks"].as_u64().unwrap() > 0,
        "{plan}"
    );
    let absent = env.path("new.img");
    ok(&[
        "restore",
        "--repo",
        &repo,
        "--snapshot",
        "web01",
        "--target",
        path_str(&absent),
        "--dry-run",
    ]);
    assert!(!absent.exists(), "a dry run created the image");
    // The restore then does what the plan said.
    let done: Value = serde_json::from_slice(
        &ok(&[
            "restore",
            "--json",
            "-q",
            "--repo",
            &repo,
            "--snapshot",
            "web01",
            "--target",
            path_str(&target),
            "--yes",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(
        done["kept_chunks"], d["kept_chunks"],
        "plan {plan}\ndone {done}"
    );
    assert_eq!(done["fetched_chunks"], d["write_chunks"]);
    assert_eq!(hash_file(&target), hash_file(&src));
    let journal: Value =
        serde_json::from_slice(&ok(&["journal", "--json", "--repo", &repo]).stdout).unwrap();
    let restores = journal["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["operation"] == "restore")
        .count();
    assert_eq!(restores, 1, "a dry run is not journaled");
}

/// The byte range of GPT partition `n` of an image, from sgdisk.
fn partition(img: &Path, n: u32) -> (u64, u64) {
    let first = sgdisk_sector(img, n, "First sector");
    let last = sgdisk_sector(img, n, "Last sector");
    (first * 512, (last - first + 1) * 512)
}

#[test]
fn chosen_partitions_go_back_into_the_targets_own_table() {
    let (env, src, _) = with_web01();
    let repo = env.repo();
    let target = env.path("t.img");
    fs::copy(&src, &target).unwrap();
    let (p2, p2_len) = partition(&src, 2);
    let (p3, p3_len) = partition(&src, 3);
    let f = fs::OpenOptions::new().write(true).open(&target).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0x5A; 1 << 20], p2 + (4 << 20)).unwrap();
    f.write_all_at(&[0x5A; 4096], p3).unwrap();
    drop(f);
    let p3_damaged = hash_range(&target, p3, p3_len);
    let v: Value = serde_json::from_slice(
        &ok(&[
            "restore",
            "--json",
            "-q",
            "--repo",
            &repo,
            "--snapshot",
            "web01",
            "--target",
            path_str(&target),
            "--partition",
            "2",
            "--yes",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(v["partitions"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(
        hash_range(&target, p2, p2_len),
        hash_range(&src, p2, p2_len),
        "partition 2 restored"
    );
    assert_eq!(
        hash_range(&target, p3, p3_len),
        p3_damaged,
        "partition 3 left as it was"
    );
    assert_eq!(
        hash_range(&target, 0, 1 << 20),
        hash_range(&src, 0, 1 << 20),
        "the table left as it was"
    );
    // A target whose table places partition 2 elsewhere is refused, untouched.
    let other = env.path("other.img");
    fs::File::create(&other)
        .unwrap()
        .set_len(fs::metadata(&src).unwrap().len())
        .unwrap();
    sh(&format!(
        "sgdisk -n 1:2048:+8M -n 2:0:+8M {} >/dev/null",
        other.display()
    ));
    let before = hash_file(&other);
    let err = fails(&[
        "restore",
        "--repo",
        &repo,
        "--snapshot",
        "web01",
        "--target",
        path_str(&other),
        "--partition",
        "2",
        "--yes",
    ]);
    assert!(
        err.contains("the tables differ") && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(hash_file(&other), before);
}

/// `lifeboat diagnose` reports this machine as the kernel sees it: its CPUs, memory,
/// firmware mode, every PCI device with the driver sysfs says is bound, and its disks.
#[test]
fn diagnose_reports_the_machine_as_the_kernel_sees_it() {
    let v: Value = serde_json::from_slice(&ok(&["diagnose", "--json"]).stdout).unwrap();
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    assert_eq!(v["cpu"]["count"], cpus);
    assert!(v["memory_bytes"].as_u64().unwrap() > 0);
    let uefi = std::path::Path::new("/sys/firmware/efi").exists();
    assert_eq!(v["firmware"]["mode"], if uefi { "uefi" } else { "bios" });
    let pci = v["pci"].as_array().unwrap();
    let on_sysfs = std::fs::read_dir("/sys/bus/pci/devices").map_or(0, |d| d.count());
    assert_eq!(pci.len(), on_sysfs);
    for d in pci {
        let slot = d["slot"].as_str().unwrap();
        let bound = std::fs::read_link(format!("/sys/bus/pci/devices/{slot}/driver"))
            .ok()
            .map(|l| l.file_name().unwrap().to_string_lossy().into_owned());
        assert_eq!(d["driver"].as_str().map(str::to_string), bound, "{d}");
    }
    let disks = v["disks"].as_array().unwrap();
    let listed: Value = serde_json::from_slice(&ok(&["disks", "--json"]).stdout).unwrap();
    assert_eq!(disks.len(), listed["disks"].as_array().unwrap().len());
    let text = String::from_utf8(ok(&["diagnose"]).stdout).unwrap();
    assert!(text.starts_with("firmware  "), "{text}");
}

/// An NVMe disk whose SMART log carries a critical warning (QEMU's
/// smart_critical_warning: "reliability degraded"): `diagnose` says it is failing, and a
/// restore onto it is refused before anything is written (and goes ahead with --force).
#[test]
fn a_disk_that_says_it_is_failing_is_reported_and_refused_as_a_target() {
    let env = Env::new();
    let src = env.disk("gpt", "src.img");
    env.init();
    env.capture(&src, "web");
    let repo_disk = env.path("repo.img");
    sh(&format!(
        "mkfs.ext4 -q -d {} {} 64M",
        env.repo(),
        repo_disk.display()
    ));
    let size = fs::metadata(&src).unwrap().len();
    let target = env.path("nvme.img");
    fs::File::create(&target).unwrap().set_len(size).unwrap();
    let devices = format!(
        "-drive file={},if=none,id=n0,format=raw -device nvme,drive=n0,serial=failing1,smart_critical_warning=4",
        target.display()
    );
    let out = guest_with(
        &env,
        "mkdir /r && mount -t ext4 /dev/vda /r\n\
         for i in $(seq 50); do [ -e /dev/nvme0n1 ] && break; sleep 0.2; done\n\
         lifeboat diagnose --json\n\
         echo ===\n\
         lifeboat restore --repo /r --snapshot web --target /dev/nvme0n1 --yes 2>&1 || echo \"exit $?\"\n\
         echo ===\n",
        &[&repo_disk],
        &devices,
    );
    let parts: Vec<&str> = out.split("===").collect();
    let d: Value = serde_json::from_str(parts[0].trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let nvme = d["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["path"] == "/dev/nvme0n1")
        .unwrap_or_else(|| panic!("no NVMe disk: {d:#}"));
    assert_eq!(nvme["health"]["state"], "failing", "{nvme}");
    assert!(nvme["health"]["why"]
        .as_str()
        .unwrap()
        .contains("reliability degraded"));
    assert_eq!(nvme["serial"], "failing1");
    let restore = parts[1];
    assert!(restore.contains("says it is failing"), "{restore}");
    assert!(restore.contains("nothing was written"), "{restore}");
    assert!(restore.contains("exit "), "{restore}");
    let written = fs::read(&target).unwrap();
    assert!(
        written.iter().all(|b| *b == 0),
        "the failing disk was written"
    );
}
