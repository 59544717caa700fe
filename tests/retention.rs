//! Backups over time: captures at chosen times, retention by restic's rules, protected
//! snapshots, and the journal of every operation.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::FileExt;

use common::*;
use serde_json::Value;

/// The first day's 8 MiB disk: pseudo-random bytes.
fn first_day() -> Vec<u8> {
    let mut data = vec![0u8; 8 << 20];
    let mut x = 0x9e3779b97f4a7c15u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    data
}

/// Ten captures of a changing disk, one a day from 2026-11-11, at 01:00, 02:00, 00:00,
/// ... (UTC); returns their ids, oldest first.
fn ten_days(env: &Env, repo: &str) -> Vec<String> {
    let disk = env.path("d.img");
    fs::write(&disk, first_day()).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&disk).unwrap();
    (1..=10)
        .map(|i: u64| {
            f.write_all_at(format!("day {i}").as_bytes(), i * 700_001)
                .unwrap();
            let time = format!("2026-11-{:02}T{:02}:00:00Z", 10 + i, i % 3);
            let mut args = capture_args(repo, &disk, "web").to_vec();
            args.extend(["--time", &time]);
            let v: Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
            v["snapshot"].as_str().unwrap().to_string()
        })
        .collect()
}

/// The days (1 to 10) of the snapshots a policy keeps.
fn kept(repo: &str, ids: &[String], policy: &[&str]) -> BTreeSet<usize> {
    let mut args = vec!["forget", "--json", "--dry-run", "--repo", repo];
    args.extend_from_slice(policy);
    let v: Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == true)
        .map(|d| ids.iter().position(|i| d["id"] == i.as_str()).unwrap() + 1)
        .collect()
}

#[test]
fn forget_keeps_what_restics_rules_keep_and_never_a_protected_snapshot() {
    let env = Env::new();
    let repo = env.init();
    let ids = ten_days(&env, &repo);
    let m: Value = env.manifest(&ids[4]);
    assert_eq!(
        m["time"], "2026-11-15T02:00:00.000000Z",
        "--time is recorded"
    );

    // Written from restic's documented rules. Days 11-15 are ISO week 46 (Sunday the
    // 15th), 16-20 week 47.
    let table: &[(&[&str], &[usize])] = &[
        (&["--keep-last", "3"], &[8, 9, 10]),
        (&["--keep-daily", "3", "--keep-weekly", "2"], &[5, 8, 9, 10]),
        // A counter with counts left also keeps the oldest snapshot.
        (&["--keep-weekly", "4"], &[1, 5, 10]),
        // Strictly within 3 days of the newest (20th 01:00): the 17th at 01:00 is not.
        (&["--keep-within", "3d"], &[8, 9, 10]),
        (&["--keep-monthly", "1", "--keep-daily", "1"], &[10]),
        (&["--keep-hourly", "2"], &[9, 10]),
        (&["--keep-daily", "-1"], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
    ];
    for (policy, want) in table {
        let got = kept(&repo, &ids, policy);
        assert_eq!(got, want.iter().copied().collect(), "{policy:?}");
    }
    let err = fails(&["forget", "--repo", &repo]);
    assert!(err.contains("no policy"), "{err}");

    // A protected snapshot survives a policy that would drop it, and says why.
    ok(&["protect", "--repo", &repo, &ids[1]]);
    let s: Value =
        serde_json::from_slice::<Value>(&ok(&["snapshots", "--json", "--repo", &repo]).stdout)
            .unwrap()["snapshots"]
            .clone();
    assert_eq!(s[1]["protected"], true);
    let out = ok(&["forget", "--json", "--repo", &repo, "--keep-last", "1"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["removed"], 8, "{v}");
    let day2 = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == ids[1].as_str())
        .unwrap();
    assert_eq!(day2["keep"], true);
    assert_eq!(day2["reasons"][0], "protected");
    let left: Value =
        serde_json::from_slice::<Value>(&ok(&["snapshots", "--json", "--repo", &repo]).stdout)
            .unwrap()["snapshots"]
            .clone();
    let left: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(left, [ids[1].as_str(), ids[9].as_str()]);
    // What is kept restores exactly (nothing it needs was touched).
    let target = env.path("t.img");
    ok(&restore_args(&repo, &ids[1], &target));
    let mut want = fs::read(env.path("d.img")).unwrap();
    let original = first_day();
    for i in 3..=10u64 {
        let at = (i * 700_001) as usize;
        let n = format!("day {i}").len();
        want[at..at + n].copy_from_slice(&original[at..at + n]);
    }
    assert_eq!(
        fs::read(&target).unwrap(),
        want,
        "day 2 restores as captured"
    );
    check_clean(&repo);
    // Unprotected, it goes with the next forget.
    ok(&["protect", "--repo", &repo, "--remove", &ids[1]]);
    let v: Value = serde_json::from_slice(
        &ok(&["forget", "--json", "--repo", &repo, "--keep-last", "1"]).stdout,
    )
    .unwrap();
    assert_eq!(v["removed"], 1, "{v}");
}

#[test]
fn the_journal_records_every_operation_with_its_result() {
    let env = Env::new();
    let repo = env.init();
    let ids = ten_days(&env, &repo);
    let target = env.path("t.img");
    ok(&restore_args(&repo, &ids[9], &target));
    // A restore refused by its preflight (the target is too small) is recorded as failed.
    let small = env.path("small.img");
    fs::write(&small, vec![1u8; 4096]).unwrap();
    let mut args = restore_args(&repo, &ids[9], &small);
    args.push("--yes");
    fails(&args);
    ok(&["check", "--repo", &repo, "--read-data"]);
    ok(&["protect", "--repo", &repo, &ids[0]]);
    ok(&["forget", "--repo", &repo, "--keep-last", "5"]);
    let v: Value =
        serde_json::from_slice::<Value>(&ok(&["journal", "--json", "--repo", &repo]).stdout)
            .unwrap()["records"]
            .clone();
    let ops: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().unwrap().to_string(),
                r["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut want: Vec<(String, String)> = (0..10)
        .map(|_| ("capture".to_string(), "ok".to_string()))
        .collect();
    for (op, result) in [
        ("restore", "ok"),
        ("restore", "failed"),
        ("check", "ok"),
        ("protect", "ok"),
        ("forget", "ok"),
    ] {
        want.push((op.into(), result.into()));
    }
    assert_eq!(ops, want);
    let records = v.as_array().unwrap();
    assert_eq!(records[0]["snapshot"], ids[0].as_str());
    assert_eq!(records[0]["name"], "web");
    assert!(records[0]["details"]["new_chunks"].as_u64().unwrap() > 100);
    assert_eq!(records[10]["snapshot"], ids[9].as_str());
    assert!(
        records[11]["error"].as_str().unwrap().contains("too small"),
        "{}",
        records[11]
    );
    assert_eq!(
        records[14]["details"]["removed"].as_array().unwrap().len(),
        4
    );
    // --name and --since filter.
    let since: Value = serde_json::from_slice::<Value>(
        &ok(&[
            "journal", "--json", "--repo", &repo, "--since", "1h", "--name", "nothing",
        ])
        .stdout,
    )
    .unwrap()["records"]
        .clone();
    assert_eq!(since.as_array().unwrap().len(), 0);
    let since: Value = serde_json::from_slice::<Value>(
        &ok(&[
            "journal",
            "--json",
            "--repo",
            &repo,
            "--since",
            "2020-01-01T00:00:00Z",
        ])
        .stdout,
    )
    .unwrap()["records"]
        .clone();
    assert_eq!(since.as_array().unwrap().len(), 15);

    // Status: the captures stand for last month, and nothing was ever drilled: not
    // protected, and it says why, per name.
    let o = run(&["status", "--json", "--repo", &repo]);
    assert!(!o.status.success());
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    let problems = s["names"][0]["problems"].to_string();
    assert!(problems.contains("last capture"), "{s}");
    assert!(problems.contains("never drilled"), "{s}");
    assert!(stderr(&o).contains("web: last capture"), "{}", stderr(&o));
}

/// `schedule` writes units that systemd accepts, running real commands.
#[test]
fn schedule_writes_units_systemd_verifies() {
    let env = Env::new();
    let dir = env.path("units");
    let o = ok(&[
        "schedule",
        "--json",
        "--name",
        "web01",
        "--source",
        "/dev/nvme0n1",
        "--repo",
        "s3://backups/fleet",
        "--every",
        "*-*-* 02:30",
        "--dir",
        path_str(&dir),
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let units: Vec<String> = v["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    assert_eq!(units.len(), 6, "{v}");
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let capture = fs::read_to_string(dir.join("lifeboat-capture-web01.service")).unwrap();
    assert!(
        capture.contains(&format!(
            "ExecStart={} capture --repo s3://backups/fleet --source /dev/nvme0n1 --name web01",
            bin()
        )),
        "{capture}"
    );
    assert!(
        capture.contains("forget --repo s3://backups/fleet --name web01 --keep-daily 7"),
        "{capture}"
    );
    let timer = fs::read_to_string(dir.join("lifeboat-capture-web01.timer")).unwrap();
    assert!(timer.contains("OnCalendar=*-*-* 02:30"), "{timer}");
    let check = fs::read_to_string(dir.join("lifeboat-check-web01.service")).unwrap();
    assert!(
        check.contains("check --repo s3://backups/fleet --read-data-subset 15%%"),
        "{check}"
    );
    // A name systemd could not carry is refused.
    let err = fails(&[
        "schedule",
        "--name",
        "web 01",
        "--source",
        "/dev/sda",
        "--repo",
        "/srv",
        "--dir",
        path_str(&dir),
    ]);
    assert!(err.contains("is not a snapshot name"), "{err}");
}
