//! Restore drills in QEMU (software emulation), end to end: the demo machine from
//! scripts/make-machine is captured, then `lifeboat drill` boots the rescue media with a
//! blank disk, restores onto it by USB stick, HTTP or PXE (from S3), and boots the restored disk
//! under OVMF until the machine prints its own marker. And one drill that must fail: a
//! corrupt chunk stops the rescue with the error on its console, and the disk never boots.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// A captured demo machine with a marker of its own.
fn machine(env: &Env, marker: &str) -> String {
    let img = machine_image(env, marker);
    env.init();
    env.capture(&img, "demo")["snapshot"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A captured demo machine in an encrypted repository (passphrase in `pw`).
fn machine_encrypted(env: &Env, marker: &str, pw: &Path) -> String {
    let img = machine_image(env, marker);
    std::fs::write(pw, "drill passphrase 42\n").unwrap();
    ok(&[
        "init",
        "-q",
        "--repo",
        &env.repo(),
        "--encrypt",
        "--password-file",
        path_str(pw),
    ]);
    let repo = env.repo();
    let mut args = capture_args(&repo, &img, "demo").to_vec();
    args.extend(["--password-file", path_str(pw)]);
    serde_json::from_slice::<Value>(&ok(&args).stdout).unwrap()["snapshot"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The rescue asked for the passphrase on its console, and it never reached the log.
fn assert_asked_for_the_passphrase(console: &Path) {
    let console = std::fs::read_to_string(console).unwrap();
    assert!(
        console.contains("the repository is encrypted; type its passphrase"),
        "{console}"
    );
    assert!(console.contains("repository unlocked"), "{console}");
    assert!(
        !console.contains("drill passphrase 42"),
        "the passphrase was echoed"
    );
}

/// The demo machine's disk image, with a marker of its own.
fn machine_image(env: &Env, marker: &str) -> std::path::PathBuf {
    let img = env.path("machine.img");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-machine");
    let o = Command::new(script)
        .arg(&img)
        .arg(marker)
        .env("LIFEBOAT_KERNEL", kernel_dir())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "make-machine: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    img
}

fn drill(env: &Env, via: &str, marker: &str, boot_timeout: &str) -> (bool, Value) {
    drill_from(env, &env.repo(), &[], via, marker, boot_timeout, &[])
}

/// A drill of the snapshot named demo in `repo`, with `vars` in the environment and
/// `extra` arguments (such as `--trust KEY.pub`).
fn drill_from(
    env: &Env,
    repo: &str,
    vars: &[(String, String)],
    via: &str,
    marker: &str,
    boot_timeout: &str,
    extra: &[&str],
) -> (bool, Value) {
    let work = env.path(&format!("drill-{via}"));
    let o = Command::new(bin())
        .args([
            "drill",
            "--json",
            "-q",
            "--repo",
            repo,
            "--snapshot",
            "demo",
        ])
        .args([
            "--via",
            via,
            "--marker",
            marker,
            "--boot-timeout",
            boot_timeout,
        ])
        .args(["--rescue-timeout", "420", "--work", path_str(&work)])
        .args(extra)
        .env("LIFEBOAT_KERNEL", kernel_dir())
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("drill --json: {e}\n{}", stderr(&o)));
    eprintln!(
        "drill via {via}: {}",
        serde_json::to_string(&v["phases"]).unwrap()
    );
    (o.status.success(), v)
}

fn phase<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no phase {name}: {v}"))
}

/// What every passing drill shows: the rescue restored the whole snapshot, made it
/// bootable, and the restored machine printed its own marker.
fn assert_passed(ok: bool, v: &Value, id: &str, marker: &str) {
    assert!(ok && v["pass"] == true, "drill failed: {v:#}");
    let r = &v["rescue_report"];
    assert_eq!(r["result"], "ok");
    assert_eq!(r["restore"]["snapshot"], id);
    assert_eq!(r["restore"]["fetched_chunks"], r["restore"]["chunks"]);
    assert!(phase(v, "boot")["detail"]
        .as_str()
        .unwrap()
        .contains(&format!("LIFEBOAT-MARKER {marker}")));
    // The demo machine has no fallback loader: the rescue must have installed one.
    assert_eq!(
        r["bootloader"]["fallback"],
        "installed from EFI/systemd/systemd-bootx64.efi"
    );
}

/// The two-disk demo machine (the ESP on disk 0, the root on disk 1, each found by the
/// other only at boot), captured as one snapshot.
fn two_disk_machine(env: &Env, marker: &str) -> String {
    let (esp, root) = (env.path("machine.img"), env.path("machine-root.img"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-machine");
    let o = Command::new(script)
        .arg(&esp)
        .arg(marker)
        .env("LIFEBOAT_KERNEL", kernel_dir())
        .env("ROOT_DISK", &root)
        .output()
        .unwrap();
    assert!(o.status.success(), "make-machine: {}", stderr(&o));
    env.init();
    let repo = env.repo();
    let mut args = capture_args(&repo, &esp, "demo").to_vec();
    args.extend(["--source", path_str(&root)]);
    let s: Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    assert_eq!(s["disks"], 2, "{s}");
    s["snapshot"].as_str().unwrap().to_string()
}

#[test]
fn a_two_disk_machine_with_its_root_on_the_second_disk_comes_back() {
    let env = Env::new();
    let id = two_disk_machine(&env, "two-disk-marker");
    let (ok, v) = drill(&env, "http", "LIFEBOAT-MARKER", "180");
    assert_passed(ok, &v, &id, "two-disk-marker");
    // Each disk of the snapshot went to the blank disk of its size: disk 0 (66 MiB) to
    // the first, disk 1 (74 MiB) to the second.
    let r = &v["rescue_report"];
    let disks = r["restore"]["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 2, "{r:#}");
    for (i, d) in disks.iter().enumerate() {
        assert_eq!(d["disk"], i);
        assert_eq!(d["target_size"], d["disk_size"], "{d}");
    }
    assert_eq!(r["targets"].as_array().unwrap().len(), 2, "{r:#}");
}

#[test]
fn a_rhel_like_server_on_md_mirrors_and_lvm_comes_back_and_boots() {
    let env = Env::new();
    let (d0, d1) = (env.path("server0.img"), env.path("server1.img"));
    let o = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-server"))
        .args([&d0, &d1])
        .arg("rhel-marker")
        .env("LIFEBOAT_KERNEL", kernel_dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "make-server: {}", stderr(&o));
    env.init();
    let repo = env.repo();
    let mut args = capture_args(&repo, &d0, "demo").to_vec();
    args.extend(["--source", path_str(&d1)]);
    let s: Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    let n = s["notes"].to_string();
    for want in [
        "disk 0: partition 2: md RAID1 member (superblock 1.0, 2 devices) holding ext4",
        "disk 1: partition 3: md RAID1 member (superblock 1.2, 2 devices) holding LVM2_member; LV root: xfs",
    ] {
        assert!(n.contains(want), "{n}");
    }
    eprintln!(
        "rhel-like server: {} B of 2 x 550 MiB read, {} B stored",
        s["bytes_read"], s["new_stored_bytes"]
    );
    let id = s["snapshot"].as_str().unwrap().to_string();
    let (ok, v) = drill(
        &env,
        "http",
        "LIFEBOAT-MARKER rhel-marker boot=rhel-marker",
        "240",
    );
    assert_passed(ok, &v, &id, "rhel-marker boot=rhel-marker");
    assert_eq!(
        v["rescue_report"]["restore"]["disks"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_restore_onto_a_smaller_disk_shrinks_the_root_and_boots() {
    let env = Env::new();
    // The demo machine (122 MiB: ESP, then an ext4 root of 56 MiB holding a few MiB),
    // with a fallback loader: fresh firmware boots it without the rescue's NVRAM entry.
    let img = env.path("machine.img");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-machine");
    let o = Command::new(script)
        .arg(&img)
        .arg("small-disk-marker")
        .env("LIFEBOAT_KERNEL", kernel_dir())
        .env("FALLBACK", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "make-machine: {}", stderr(&o));
    env.init();
    env.capture(&img, "demo");
    // A 100 MiB disk that held something else.
    let target = env.path("small.img");
    std::fs::write(&target, vec![0x5a; 100 << 20]).unwrap();
    let o = env.restore("demo", &target, &["--yes", "--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    let resize = s["filesystem_resize"].as_str().unwrap();
    assert!(
        resize.starts_with("partition 2 shrunk from 56.0 MiB to")
            && resize.contains("its ext4 shrunk"),
        "{s}"
    );
    // The summary says it was shrunk, and how (not that it was grown).
    assert_eq!(
        (s["shrunk"].clone(), s["grown"].clone()),
        (true.into(), false.into()),
        "{s}"
    );
    assert_eq!(s["resized"][0], resize, "{s}");
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 100 << 20);
    sh(&format!("sgdisk -v {}", target.display()));
    // It boots under OVMF to its marker.
    let vars = env.path("vars.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
    let console = env.path("console.log");
    let o = Command::new("timeout")
        .args(["300", "qemu-system-x86_64", "-accel", "tcg", "-m", "512"])
        .args([
            "-nographic",
            "-no-reboot",
            "-machine",
            "q35",
            "-net",
            "none",
        ])
        .args([
            "-drive",
            "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        ])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", target.display()))
        .args(["-serial", &format!("file:{}", console.display())])
        .args(["-display", "none", "-monitor", "none"])
        .output()
        .unwrap();
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(
        log.contains("LIFEBOAT-MARKER small-disk-marker"),
        "qemu {:?}; console:\n{log}",
        o.status
    );
}

#[test]
fn drill_over_http_restores_and_boots() {
    let env = Env::new();
    let id = machine(&env, "http-marker-1");
    let (ok, v) = drill(&env, "http", "LIFEBOAT-MARKER", "180");
    assert_passed(ok, &v, &id, "http-marker-1");
    // Drill-aware retention: a newer snapshot of the name that was never drilled does not
    // push the drilled one out ("last known bootable"), and `snapshots` shows the drill.
    let img = env.path("machine.img");
    let newer = env.capture(&img, "demo")["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let repo = env.repo();
    let f: Value = serde_json::from_slice(
        &common::ok(&[
            "forget",
            "--json",
            "--dry-run",
            "--repo",
            &repo,
            "--keep-last",
            "1",
        ])
        .stdout,
    )
    .unwrap();
    let decided = |id: &str| -> Value {
        f["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(decided(&newer)["reasons"][0], "last snapshot", "{f}");
    let drilled = decided(&id);
    assert_eq!(drilled["keep"], true, "{f}");
    assert!(
        drilled["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("last known bootable"),
        "{f}"
    );
    let s: Value = serde_json::from_slice::<Value>(
        &common::ok(&["snapshots", "--json", "--repo", &repo]).stdout,
    )
    .unwrap()["snapshots"]
        .clone();
    assert_eq!(s[0]["id"], id.as_str());
    assert_eq!(s[0]["last_drill"]["passed"], true, "{s}");
    assert!(s[1]["last_drill"].is_null());
    // Captured, drilled and checked just now: protected.
    common::ok(&["check", "--repo", &repo]);
    let st: Value =
        serde_json::from_slice(&common::ok(&["status", "--json", "--repo", &repo]).stdout).unwrap();
    assert_eq!(st["ok"], true, "{st}");
    let r = &v["rescue_report"];
    // DHCP from QEMU's user-mode network, and a Boot#### first in BootOrder under OVMF.
    assert_eq!(r["network"]["address"], "10.0.2.15");
    assert_eq!(r["bootloader"]["nvram_ok"], true, "{r:#}");
    assert!(r["bootloader"]["nvram"]
        .as_str()
        .unwrap()
        .contains("first in BootOrder"));
}

/// The stick holds an encrypted repository: the rescue asks for its passphrase on the
/// console (the drill types it).
#[test]
fn drill_from_the_usb_stick_restores_boots_and_leaves_a_report_on_it() {
    let env = Env::new();
    let pw = env.path("pw");
    let id = machine_encrypted(&env, "usb-marker-2", &pw);
    let extra = ["--password-file", path_str(&pw)];
    let (ok, v) = drill_from(
        &env,
        &env.repo(),
        &[],
        "usb",
        "LIFEBOAT-MARKER",
        "180",
        &extra,
    );
    assert_passed(ok, &v, &id, "usb-marker-2");
    assert_asked_for_the_passphrase(&env.path("drill-usb/console-rescue.log"));
    let r = &v["rescue_report"];
    assert_eq!(r["repo"], "/mnt/usb/repo");
    assert!(r["network"].is_null(), "no network needed: {r:#}");
    // The stick was never a target, and the report landed on its data partition.
    assert_eq!(r["target"]["path"], "/dev/vda");
    let stick = env.path("drill-usb/media/lifeboat-usb.img");
    let start = sgdisk_sector(&stick, 2, "First sector");
    let listing = sh(&format!(
        "MTOOLS_SKIP_CHECK=1 mdir -b -i {}@@{} ::/repo/reports",
        stick.display(),
        start * 512
    ));
    assert!(listing.contains("-ok.json"), "{listing}");
}

/// `lifeboat keygen --out DIR/NAME`: NAME.key and NAME.pub.
fn keygen(env: &Env, name: &str) -> std::path::PathBuf {
    ok(&["keygen", "-q", "--out", path_str(&env.path(name))]);
    env.path(&format!("{name}.pub"))
}

/// The fleet's case: a network boot, and the repository in an S3 bucket (a three-node
/// Garage cluster), reached with the endpoint and key given on the kernel command line;
/// the repository is encrypted (the passphrase typed on the rescue's console) and the
/// snapshot signed, with the key baked into the rescue.
#[test]
fn drill_by_pxe_restores_a_signed_snapshot_from_an_encrypted_s3_repository_and_boots() {
    let env = Env::new();
    let img = machine_image(&env, "pxe-marker-3");
    let key = keygen(&env, "fleet");
    let g = common::garage::Garage::start(&env.path("garage"));
    let repo = "s3://lifeboat/drill";
    let pw = env.path("pw");
    std::fs::write(&pw, "drill passphrase 42\n").unwrap();
    g.ok(&[
        "init",
        "-q",
        "--repo",
        repo,
        "--encrypt",
        "--password-file",
        path_str(&pw),
    ]);
    let mut capture = capture_args(repo, &img, "demo").to_vec();
    let secret = env.path("fleet.key");
    capture.extend([
        "--sign",
        path_str(&secret),
        "--password-file",
        path_str(&pw),
    ]);
    let o = g.ok(&capture);
    let id = serde_json::from_slice::<Value>(&o.stdout).unwrap()["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let trust = ["--trust", path_str(&key), "--password-file", path_str(&pw)];
    let (ok, v) = drill_from(
        &env,
        repo,
        g.vars(),
        "pxe",
        "LIFEBOAT-MARKER",
        "180",
        &trust,
    );
    assert_passed(ok, &v, &id, "pxe-marker-3");
    assert_asked_for_the_passphrase(&env.path("drill-pxe/console-rescue.log"));
    let signature = v["rescue_report"]["restore"]["signature"].as_str().unwrap();
    assert!(
        signature.starts_with("signed by trusted key"),
        "{signature}"
    );
    let console = std::fs::read_to_string(env.path("drill-pxe/console-rescue.log")).unwrap();
    assert!(console.contains("(baked into this rescue)"), "{console}");
    let orders = &v["rescue_report"]["orders"];
    assert!(
        orders["repo"]
            .as_str()
            .unwrap()
            .starts_with("s3://lifeboat/drill"),
        "{orders}"
    );
    assert!(
        orders["s3"]["endpoint"]
            .as_str()
            .unwrap()
            .contains("10.0.2.2"),
        "{orders}"
    );
    // The secret is on the command line, never in the report.
    let secret = g.var("AWS_SECRET_ACCESS_KEY");
    assert!(!v.to_string().contains(secret));
    // BIOS network boot: no UEFI variables, so the fallback loader is what boots it.
    let b = &v["rescue_report"]["bootloader"];
    assert_eq!(b["nvram_ok"], false);
    assert!(b["nvram"].as_str().unwrap().contains("fallback"), "{b}");
}

#[test]
fn a_corrupt_chunk_stops_the_rescue_and_the_disk_does_not_boot() {
    let env = Env::new();
    let id = machine(&env, "never-seen-4");
    let m = env.manifest(&id);
    let chunk = first_chunk_of_partition(&m, 2);
    env.flip_stored_byte(&chunk);
    let (ok, v) = drill(&env, "http", "LIFEBOAT-MARKER", "45");
    assert!(!ok && v["pass"] == false, "{v:#}");
    let rescue = phase(&v, "rescue");
    assert_eq!(rescue["ok"], false);
    let err = v["rescue_error"].as_str().unwrap();
    assert!(err.contains(&chunk), "the error names the chunk: {err}");
    let console = std::fs::read_to_string(env.path("drill-http/console-rescue.log")).unwrap();
    assert!(console.contains("LIFEBOAT-FAILED"), "{console}");
    assert!(!console.contains("rebooting") && !console.contains("powering off"));
    // The disk was left unbootable: the boot phase never saw the marker.
    assert_eq!(phase(&v, "boot")["ok"], false);
    let boot = std::fs::read_to_string(env.path("drill-http/console-boot.log")).unwrap();
    assert!(!boot.contains("never-seen-4"), "{boot}");
    // The journal has the failed drill, linked to its snapshot.
    let s: Value = serde_json::from_slice::<Value>(
        &common::ok(&["snapshots", "--json", "--repo", &env.repo()]).stdout,
    )
    .unwrap()["snapshots"]
        .clone();
    assert_eq!(s[0]["last_drill"]["passed"], false, "{s}");
    let o = run(&["status", "--json", "--repo", &env.repo()]);
    assert!(!o.status.success());
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        st["names"][0]["problems"]
            .to_string()
            .contains("the last drill"),
        "{st}"
    );
}

/// A rescue that trusts key A, booted by PXE, is served a snapshot signed by key B: it
/// stops before writing, says why on its console, and the blank disk never boots.
#[test]
fn a_rescue_that_trusts_one_key_refuses_a_snapshot_signed_by_another() {
    let env = Env::new();
    let img = machine_image(&env, "never-seen-5");
    let trusted = keygen(&env, "a");
    keygen(&env, "b");
    env.init();
    let repo = env.repo();
    let mut capture = capture_args(&repo, &img, "demo").to_vec();
    let other = env.path("b.key");
    capture.extend(["--sign", path_str(&other)]);
    ok(&capture);
    let trust = ["--trust", path_str(&trusted)];
    let (ok, v) = drill_from(&env, &repo, &[], "pxe", "LIFEBOAT-MARKER", "45", &trust);
    assert!(!ok && v["pass"] == false, "{v:#}");
    assert_eq!(phase(&v, "rescue")["ok"], false);
    let err = v["rescue_error"].as_str().unwrap();
    assert!(err.contains("which is not trusted"), "{err}");
    let console = std::fs::read_to_string(env.path("drill-pxe/console-rescue.log")).unwrap();
    assert!(console.contains("which is not trusted"), "{console}");
    assert!(console.contains("nothing was written"), "{console}");
    assert_eq!(phase(&v, "boot")["ok"], false);
    let boot = std::fs::read_to_string(env.path("drill-pxe/console-boot.log")).unwrap();
    assert!(!boot.contains("never-seen-5"), "{boot}");
}
