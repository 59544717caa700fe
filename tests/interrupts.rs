//! SIGINT and SIGTERM (issue 23): a capture, a restore and a prune stopped by a signal
//! clear their lease and temporary files, leave a journal record `interrupted`, say in one
//! line what is left and that the same command resumes, and exit 130 (143). Leases of dead
//! processes on this host are stale at once, and prune frees the packs of killed captures.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A file of `mib` MiB of random bytes (nothing in it dedups or compresses).
fn random_image(path: &Path, mib: usize) {
    sh(&format!(
        "head -c {}M /dev/urandom > {}",
        mib,
        path.display()
    ));
}

fn spawn(args: &[&str]) -> Child {
    Command::new(bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Wait for `cond`, at most a minute.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Files under `dir` (recursively), none when it does not exist.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// The child's end: exit code, and stderr.
fn finish(child: Child) -> (Option<i32>, String) {
    let o = child.wait_with_output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn journal(repo: &str) -> Vec<Value> {
    let v: Value =
        serde_json::from_slice(&ok(&["journal", "--json", "--repo", repo]).stdout).unwrap();
    v["records"].as_array().unwrap().clone()
}

#[test]
fn an_interrupted_capture_keeps_what_it_stored_and_the_same_command_resumes() {
    let env = Env::new();
    let repo = env.init();
    let src = env.path("src.img");
    random_image(&src, 384);
    let args = [
        "capture",
        "--repo",
        &repo,
        "--source",
        path_str(&src),
        "--name",
        "big",
    ];
    let child = spawn(&args);
    let packs = env.path("repo/packs");
    wait_until("two packs", || files(&packs).len() >= 2);
    signal(&child, libc::SIGINT);
    let (code, err) = finish(child);
    assert_eq!(code, Some(130), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("lifeboat: capture of big stopped by SIGINT")
            && last.contains("no snapshot was saved")
            && last.contains("Run the same command again: it resumes"),
        "{err}"
    );
    // Its lease released, no temporary file left, and a record that says so.
    assert_eq!(files(&env.path("repo/locks")), Vec::<String>::new());
    assert_eq!(files(&env.path("repo/tmp")), Vec::<String>::new());
    let last = journal(&repo).last().unwrap().clone();
    assert_eq!(last["operation"], "capture");
    assert_eq!(last["result"], "interrupted");
    assert_eq!(last["name"], "big");
    // What it stored is indexed: the rerun sends only the rest, and the result is exact.
    let check: Value =
        serde_json::from_slice(&ok(&["check", "--json", "--repo", &repo]).stdout).unwrap();
    assert_eq!(check["unindexed_packs"], serde_json::json!([]), "{check}");
    let kept = check["unreferenced_chunks"].as_u64().unwrap();
    assert!(kept > 0, "{check}");
    let v = env.capture(&src, "big");
    assert_eq!(
        v["new_chunks"].as_u64().unwrap() + kept,
        v["chunks"].as_u64().unwrap(),
        "{v}"
    );
    let out = env.path("out.img");
    ok(&[
        "restore",
        "-q",
        "--repo",
        &repo,
        "--snapshot",
        "big",
        "--target",
        path_str(&out),
    ]);
    assert_eq!(hash_file(&out), hash_file(&src));
}

#[test]
fn an_interrupted_restore_says_what_it_left_and_a_rerun_completes() {
    let env = Env::new();
    let repo = env.init();
    let src = env.path("src.img");
    random_image(&src, 96);
    env.capture(&src, "web");
    // Over HTTP at 8 MiB/s: long enough to be stopped mid-way.
    let token = env.path("token");
    fs::write(&token, "a-token-of-at-least-16-chars\n").unwrap();
    let mut server = Command::new(bin())
        .args([
            "serve",
            "--repo",
            &repo,
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            path_str(&token),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = format!(
        "http://{}/",
        line.trim().trim_start_matches("listening on ")
    );
    let target = env.path("t.img");
    let child = spawn(&[
        "restore",
        "--repo",
        &url,
        "--token-file",
        path_str(&token),
        "--snapshot",
        "web",
        "--target",
        path_str(&target),
        "--limit-download",
        "8192",
    ]);
    wait_until("the target", || target.exists());
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, libc::SIGTERM);
    let (code, err) = finish(child);
    assert_eq!(code, Some(143), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("stopped by SIGTERM")
            && last.contains("were wiped")
            && last.contains("Run the same command again"),
        "{err}"
    );
    let record = journal(&repo).last().unwrap().clone();
    assert_eq!(record["operation"], "restore");
    assert_eq!(record["result"], "interrupted");
    assert_eq!(record["name"], "web", "{record}");
    // The rerun keeps what is in place and fetches the rest.
    let v: Value = serde_json::from_slice(
        &ok(&[
            "restore",
            "--json",
            "-q",
            "--repo",
            &url,
            "--snapshot",
            "web",
            "--target",
            path_str(&target),
            "--yes",
        ])
        .stdout,
    )
    .unwrap();
    assert!(v["kept_chunks"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(hash_file(&target), hash_file(&src));
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn an_interrupted_prune_releases_its_lease_and_a_killed_ones_is_stale_at_once() {
    let env = Env::new();
    let repo = env.init();
    let src = env.path("src.img");
    random_image(&src, 8);
    env.capture(&src, "a");
    // Paused after its intent, then SIGINT: exit 130, its lease gone, a record.
    let mut cmd = Command::new(bin());
    cmd.args(["prune", "--repo", &repo])
        .env("LIFEBOAT_PRUNE_PAUSE", "intent")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("paused after intent"), "{line}");
    signal(&child, libc::SIGINT);
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(
        rest.contains("prune stopped by SIGINT") && rest.contains("Run prune again"),
        "{rest}"
    );
    assert_eq!(files(&env.path("repo/locks")), Vec::<String>::new());
    assert_eq!(journal(&repo).last().unwrap()["result"], "interrupted");
    // A prune killed outright leaves its lease; the next sees its process is gone.
    let mut cmd = Command::new(bin());
    cmd.args(["prune", "--repo", &repo])
        .env("LIFEBOAT_PRUNE_PAUSE", "intent")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    assert_eq!(files(&env.path("repo/locks")).len(), 1);
    let locks: Value =
        serde_json::from_slice(&ok(&["locks", "--json", "--repo", &repo]).stdout).unwrap();
    assert_eq!(locks["held"][0]["kind"], "prune");
    assert_eq!(locks["held"][0]["stale"], true, "{locks}");
    ok(&["prune", "--repo", &repo]);
}

#[test]
fn prune_frees_the_packs_of_a_killed_capture_without_waiting_for_it() {
    let env = Env::new();
    let repo = env.init();
    let src = env.path("src.img");
    random_image(&src, 256);
    let child = spawn(&[
        "capture",
        "--repo",
        &repo,
        "--source",
        path_str(&src),
        "--name",
        "k",
    ]);
    let packs = env.path("repo/packs");
    wait_until("a pack", || {
        files(&packs).iter().any(|f| f.ends_with(".pack"))
    });
    signal(&child, libc::SIGKILL);
    let (code, _) = finish(child);
    assert_eq!(code, None);
    // Its lease is there, and stale at once: this host, a process that is gone.
    let locks: Value =
        serde_json::from_slice(&ok(&["locks", "--json", "--repo", &repo]).stdout).unwrap();
    assert_eq!(locks["held"][0]["kind"], "capture", "{locks}");
    assert_eq!(locks["held"][0]["stale"], true, "{locks}");
    let check: Value =
        serde_json::from_slice(&ok(&["check", "--json", "--repo", &repo]).stdout).unwrap();
    let left = check["unindexed_packs"].as_array().unwrap().len();
    assert!(left > 0, "{check}");
    let o = ok(&["prune", "--json", "--repo", &repo]);
    assert!(!stderr(&o).contains("waiting for"), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["unindexed_packs_deleted"], left, "{v}");
    assert_eq!(v["captures_waited_for"], 0, "{v}");
    let check: Value =
        serde_json::from_slice(&ok(&["check", "--json", "--repo", &repo]).stdout).unwrap();
    assert_eq!(check["unindexed_packs"], serde_json::json!([]), "{check}");
    assert_eq!(
        files(&packs).len(),
        0,
        "every pack was the killed capture's"
    );
}

/// A command started with SIGINT ignored (a background job of a script, `nohup`) keeps
/// ignoring it, as it did before it caught the signal.
#[test]
fn a_capture_started_ignoring_sigint_keeps_ignoring_it() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    let repo = env.init();
    let src = env.path("src.img");
    random_image(&src, 256);
    let mut cmd = Command::new(bin());
    cmd.args([
        "capture",
        "-q",
        "--repo",
        &repo,
        "--source",
        path_str(&src),
        "--name",
        "bg",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    // SAFETY: signal(2) between fork and exec, as a shell does for a background job.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let packs = env.path("repo/packs");
    wait_until("a pack", || {
        files(&packs).iter().any(|f| f.ends_with(".pack"))
    });
    signal(&child, libc::SIGINT);
    let (code, err) = finish(child);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(journal(&repo).last().unwrap()["result"], "ok");
}
