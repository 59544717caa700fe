//! Prune: what forgotten snapshots alone used is deleted, while captures go on; a prune
//! killed at any step leaves a repository that check passes, and a rerun finishes.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

const MIB: usize = 1 << 20;

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Ten days of a 16 MiB disk, each day 2 MiB of it rewritten with new data; every day's
/// image is kept (day N in dayN.img). Returns the snapshot ids, oldest first.
fn ten_days(env: &Env, repo: &str) -> Vec<String> {
    ten_days_with(env, repo, &|args| ok(args))
}

/// `ten_days` with each capture run by `run` (which may add a store's settings).
fn ten_days_with(
    env: &Env,
    repo: &str,
    run: &dyn Fn(&[&str]) -> std::process::Output,
) -> Vec<String> {
    let disk = env.path("d.img");
    fs::write(&disk, random(16 * MIB, 1)).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&disk).unwrap();
    (1..=10u64)
        .map(|i| {
            let at = (i % 8) * 2 * MIB as u64;
            f.write_all_at(&random(2 * MIB, 100 + i), at).unwrap();
            fs::copy(&disk, env.path(&format!("day{i}.img"))).unwrap();
            let time = format!("2026-11-{:02}T01:00:00Z", 10 + i);
            let mut args = capture_args(repo, &disk, "web").to_vec();
            args.extend(["--time", &time]);
            let v: Value = serde_json::from_slice(&run(&args).stdout).unwrap();
            v["snapshot"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Every chunk's stored size, from the repository's index files (format 2, plain).
fn stored_sizes(env: &Env) -> HashMap<String, u64> {
    let mut sizes = HashMap::new();
    for e in fs::read_dir(env.path("repo/index")).unwrap() {
        let data = fs::read(e.unwrap().path()).unwrap();
        for p in lifeboat::repo::index::parse(&data, u32::MAX, u64::MAX, 0).unwrap() {
            for c in p.entries {
                sizes.insert(c.id.to_hex(), c.stored as u64);
            }
        }
    }
    sizes
}

/// The chunk ids the remaining snapshots use.
fn used_chunks(env: &Env) -> HashSet<String> {
    let mut used = HashSet::new();
    for e in fs::read_dir(env.path("repo/snapshots")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let m: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
            for r in m["regions"].as_array().unwrap() {
                for c in r["chunks"].as_array().unwrap() {
                    if let Some(id) = c["id"].as_str() {
                        used.insert(id.to_string());
                    }
                }
            }
        }
    }
    used
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        total += if p.is_dir() {
            dir_bytes(&p)
        } else {
            fs::metadata(&p).unwrap().len()
        };
    }
    total
}

fn prune(repo: &str, extra: &[&str]) -> Value {
    let mut args = vec!["prune", "--json", "-q", "--repo", repo];
    args.extend_from_slice(extra);
    serde_json::from_slice(&ok(&args).stdout).unwrap()
}

/// Every remaining snapshot restores exactly as its day's image.
fn assert_kept_restore(env: &Env, repo: &str, ids: &[String]) {
    let s: Value =
        serde_json::from_slice::<Value>(&ok(&["snapshots", "--json", "--repo", repo]).stdout)
            .unwrap()["snapshots"]
            .clone();
    for snap in s.as_array().unwrap() {
        let id = snap["id"].as_str().unwrap();
        let Some(day) = ids.iter().position(|i| i == id) else {
            continue;
        };
        let target = env.path(&format!("restored-{day}.img"));
        let _ = fs::remove_file(&target);
        ok(&restore_args(repo, id, &target));
        assert_eq!(
            hash_file(&target),
            hash_file(&env.path(&format!("day{}.img", day + 1))),
            "day {} restores exactly",
            day + 1
        );
    }
}

#[test]
fn prune_frees_what_forgotten_snapshots_alone_used() {
    let env = Env::new();
    let repo = env.init();
    let ids = ten_days(&env, &repo);
    ok(&["forget", "--repo", &repo, "--keep-last", "3"]);
    let sizes = stored_sizes(&env);
    let used = used_chunks(&env);
    let unused: u64 = sizes
        .iter()
        .filter(|(id, _)| !used.contains(*id))
        .map(|(_, s)| s)
        .sum();
    assert!(
        unused > 8 * MIB as u64,
        "the forgotten days left {unused} bytes"
    );
    let dry = prune(&repo, &["--dry-run", "--max-unused", "0"]);
    let before = dir_bytes(&env.path("repo"));
    let done = prune(&repo, &["--max-unused", "0"]);
    let after = dir_bytes(&env.path("repo"));
    assert_eq!(dry["bytes_freed"], done["bytes_freed"], "{dry}\n{done}");
    // Every unused chunk's stored bytes go, give or take the packs' trailers and the
    // index and journal files.
    let freed = before - after;
    let slack = 64 * 1024;
    assert!(
        freed + slack >= unused && freed <= unused + slack,
        "freed {freed}, the unused chunks hold {unused}"
    );
    let c = check_clean(&repo);
    assert_eq!(c["unreferenced_chunks"], 0, "{c}");
    ok(&["check", "--repo", &repo, "--read-data"]);
    // A share of the data, as a weekly job reads it: about a third each run, the next
    // third at the next run (the journal remembers), all of it in three runs.
    let share = |n: &str| -> Value {
        serde_json::from_slice(
            &ok(&["check", "--json", "--repo", &repo, "--read-data-subset", n]).stdout,
        )
        .unwrap()
    };
    let runs: Vec<Value> = (0..3).map(|_| share("34%")).collect();
    let stored = runs[0]["chunks_stored"].as_u64().unwrap();
    let mut total = 0;
    for r in &runs {
        let read = r["chunks_read"].as_u64().unwrap();
        assert!(read * 5 > stored && read * 5 < stored * 3, "{r}");
        total += read;
    }
    assert_eq!(total, stored, "three runs of a third read every chunk once");
    assert_eq!(share("100%")["chunks_read"].as_u64().unwrap(), stored);
    assert!(
        run(&["check", "--repo", &repo, "--read-data-subset", "0%"])
            .status
            .code()
            == Some(2)
    );
    assert_kept_restore(&env, &repo, &ids);
    // Nothing left to do.
    let again = prune(&repo, &[]);
    assert_eq!(again["bytes_freed"], 0, "{again}");
}

/// Run prune in the background, paused after `step`; returns once it says so.
fn paused_prune(repo: &str, step: &str) -> std::process::Child {
    let mut child = Command::new(bin())
        .args(["prune", "--repo", repo, "--max-unused", "0"])
        .env("LIFEBOAT_PRUNE_PAUSE", step)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "prune ended before {step}"
        );
        if line.contains(&format!("paused after {step}")) {
            break;
        }
    }
    child
}

#[test]
fn a_prune_killed_at_any_step_leaves_a_repository_that_check_passes() {
    let env = Env::new();
    let repo = env.init();
    let ids = ten_days(&env, &repo);
    ok(&["forget", "--repo", &repo, "--keep-last", "2"]);
    let prepared = env.path("prepared");
    sh(&format!(
        "cp -a {} {}",
        env.path("repo").display(),
        prepared.display()
    ));
    for step in ["intent", "rewritten", "indexed", "deleted"] {
        sh(&format!(
            "rm -rf {0} && cp -a {1} {0}",
            env.path("repo").display(),
            prepared.display()
        ));
        let mut child = paused_prune(&repo, step);
        // While it runs, a second prune refuses, naming the way out.
        let err = fails(&["prune", "--repo", &repo]);
        assert!(
            err.contains("another prune is running")
                && err.contains("lifeboat locks --break locks/"),
            "{err}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let c = check_clean(&repo);
        assert_eq!(c["ok"], true, "after a kill at {step}: {c}");
        ok(&["check", "--repo", &repo, "--read-data"]);
        // The dead prune's lease is left, and stale at once (its process, on this host,
        // is gone): the rerun goes ahead without `locks --break`.
        assert!(
            lease_in(&env.path("repo/locks")).is_some(),
            "the dead prune's lease"
        );
        let locks: Value =
            serde_json::from_slice(&ok(&["locks", "--json", "--repo", &repo]).stdout).unwrap();
        assert_eq!(locks["held"][0]["stale"], true, "{locks}");
        prune(&repo, &["--max-unused", "0"]);
        let c = check_clean(&repo);
        assert_eq!(c["unreferenced_chunks"], 0, "after a rerun ({step}): {c}");
        assert!(
            fs::read_dir(env.path("repo/prune"))
                .unwrap()
                .next()
                .is_none(),
            "intents left"
        );
        assert_kept_restore(&env, &repo, &ids);
    }
}

/// A capture that begins before a prune marks its data is waited for, and one that
/// begins after honours the prune's intent: both snapshots restore exactly, though
/// each reuses the data of a forgotten day.
#[test]
fn captures_running_during_a_prune_complete_and_restore_exactly() {
    let env = Env::new();
    let repo = env.init();
    let ids = ten_days(&env, &repo);
    ok(&["forget", "--repo", &repo, "--keep-last", "2"]);
    let big = big_day3(&env);
    let (capture, _) = capture_with_its_lease(&env, &repo, &big);
    let locks = env.path("repo/locks");
    let pruned = prune(&repo, &["--max-unused", "0"]);
    let out = capture.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the capture beside the prune: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pruned["captures_waited_for"], 1, "{pruned}");
    let big_id: Value = serde_json::from_slice(&out.stdout).unwrap();
    let big_id = big_id["snapshot"].as_str().unwrap().to_string();

    // A prune stopped after its intent; a capture of day 4 now stores what the intent
    // drops again, and the prune, rerun, keeps it.
    let mut child = paused_prune(&repo, "intent");
    let day4 = env.path("day4.img");
    let v: Value =
        serde_json::from_slice(&ok(&capture_args(&repo, &day4, "again")).stdout).unwrap();
    let again = v["snapshot"].as_str().unwrap().to_string();
    assert!(v["new_chunks"].as_u64().unwrap() > 0, "{v}");
    child.kill().unwrap();
    child.wait().unwrap();
    let lease = lease_in(&locks).expect("the dead prune's lease");
    ok(&["locks", "--repo", &repo, "--break", &lease]);
    prune(&repo, &["--max-unused", "0"]);
    ok(&["check", "--repo", &repo, "--read-data"]);
    let t = env.path("big-restored.img");
    ok(&restore_args(&repo, &big_id, &t));
    assert_eq!(hash_file(&t), hash_file(&big));
    let t = env.path("again-restored.img");
    ok(&restore_args(&repo, &again, &t));
    assert_eq!(hash_file(&t), hash_file(&day4));
    assert_kept_restore(&env, &repo, &ids);
}

/// Day 3's image followed by 600 MiB of new data: a capture that reuses forgotten data
/// and runs a while.
fn big_day3(env: &Env) -> PathBuf {
    let big = env.path("big.img");
    let mut data = fs::read(env.path("day3.img")).unwrap();
    data.extend(random(600 * MIB, 7));
    fs::write(&big, &data).unwrap();
    big
}

/// A capture of `disk` into the local `repo`, started in the background, once its lease
/// is there; with the lease's object name.
fn capture_with_its_lease(env: &Env, repo: &str, disk: &Path) -> (std::process::Child, String) {
    let mut capture = Command::new(bin())
        .args(capture_args(repo, disk, "big"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let locks = env.path("repo/locks");
    loop {
        assert!(
            capture.try_wait().unwrap().is_none(),
            "the capture ended before its lease was seen"
        );
        if let Some(lease) = lease_in(&locks) {
            return (capture, lease);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The object name of a lease in the directory `locks`, if one is there: a `.json` file
/// (a temporary file there is a lease still being written, not yet one a prune sees).
fn lease_in(locks: &Path) -> Option<String> {
    fs::read_dir(locks)
        .ok()?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".json"))
        .map(|n| format!("locks/{n}"))
}

/// A capture (by `capture`) runs while a prune (by `admin`) goes over the repository
/// `repo`: the prune waits for it, and its snapshot restores exactly.
fn prune_beside_a_capture(
    env: &Env,
    repo: &str,
    capture: &dyn Fn(&[&str]) -> Command,
    admin: &dyn Fn(&[&str]) -> std::process::Output,
) {
    let ok_ = |args: &[&str]| {
        let o = admin(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    };
    ok_(&["forget", "--repo", repo, "--keep-last", "2"]);
    let big = big_day3(env);
    let mut child = capture(&capture_args(repo, &big, "big"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the capture ended before its lease was seen"
        );
        let v: Value =
            serde_json::from_slice(&ok_(&["locks", "--json", "--repo", repo]).stdout).unwrap();
        if v["held"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["kind"] == "capture")
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pruned: Value = serde_json::from_slice(
        &ok_(&["prune", "--json", "-q", "--repo", repo, "--max-unused", "0"]).stdout,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pruned["captures_waited_for"], 1, "{pruned}");
    assert!(
        pruned["bytes_freed"].as_u64().unwrap() > MIB as u64,
        "{pruned}"
    );
    let id: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = id["snapshot"].as_str().unwrap();
    let c: Value =
        serde_json::from_slice(&ok_(&["check", "--json", "--repo", repo, "--read-data"]).stdout)
            .unwrap();
    assert_eq!(c["ok"], true, "{c}");
    let t = env.path("big-restored.img");
    ok_(&[
        "restore",
        "-q",
        "--repo",
        repo,
        "--snapshot",
        id,
        "--target",
        path_str(&t),
    ]);
    assert_eq!(hash_file(&t), hash_file(&big));
}

/// The same through `lifeboat serve`: the capture with the append token (its lease
/// added and removed), forget and prune with the admin token.
#[test]
fn a_capture_through_serve_runs_beside_a_prune_with_the_admin_token() {
    let env = Env::new();
    let repo = env.init();
    ten_days(&env, &repo);
    let append = env.path("append");
    fs::write(&append, "append-token-0123456789\n").unwrap();
    let admin = env.path("admin");
    fs::write(&admin, "admin-token-0123456789ab\n").unwrap();
    let mut serve = Command::new(bin())
        .args(["serve", "--repo", &repo, "--listen", "127.0.0.1:0"])
        .args([
            "--token-file",
            path_str(&append),
            "--admin-token-file",
            path_str(&admin),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = format!(
        "http://{}/",
        line.trim().strip_prefix("listening on ").unwrap()
    );
    let with = |token: &Path, args: &[&str]| {
        let mut c = Command::new(bin());
        c.args(args).arg("--token-file").arg(token);
        c
    };
    // The append token may not prune.
    let o = with(&append, &["prune", "--repo", &url]).output().unwrap();
    assert!(!o.status.success());
    prune_beside_a_capture(&env, &url, &|args| with(&append, args), &|args| {
        let mut c = with(&admin, args);
        c.output().unwrap()
    });
    serve.kill().unwrap();
    serve.wait().unwrap();
}

/// The same on the three-node Garage cluster.
#[test]
fn a_capture_on_garage_runs_beside_a_prune() {
    let env = Env::new();
    let g = common::garage::Garage::start(&env.path("garage"));
    let repo = "s3://lifeboat/prune";
    g.ok(&["init", "-q", "--repo", repo]);
    ten_days_with(&env, repo, &|args| g.ok(args));
    prune_beside_a_capture(&env, repo, &|args| g.command(args), &|args| {
        g.lifeboat(args, None)
    });
}

/// A capture whose lease is removed while it runs (`locks --break`, or whoever holds the
/// append token of `serve`) is not waited for; when the prune drops data it reused, the
/// capture fails instead of saving a snapshot with missing data.
#[test]
fn a_capture_whose_lease_was_broken_fails_rather_than_save_missing_data() {
    let env = Env::new();
    let repo = env.init();
    let ids = ten_days(&env, &repo);
    ok(&["forget", "--repo", &repo, "--keep-last", "2"]);
    let big = big_day3(&env);
    let (capture, lease) = capture_with_its_lease(&env, &repo, &big);
    ok(&["locks", "--repo", &repo, "--break", &lease]);
    let pruned = prune(&repo, &["--max-unused", "0"]);
    assert_eq!(pruned["captures_waited_for"], 0, "{pruned}");
    let out = capture.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the capture saved a snapshot over missing data"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is no longer in the repository"), "{err}");
    let s: Value =
        serde_json::from_slice::<Value>(&ok(&["snapshots", "--json", "--repo", &repo]).stdout)
            .unwrap()["snapshots"]
            .clone();
    assert_eq!(s.as_array().unwrap().len(), 2, "no snapshot was saved: {s}");
    ok(&["check", "--repo", &repo, "--read-data"]);
    assert_kept_restore(&env, &repo, &ids);
}
