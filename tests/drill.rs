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
    let img = signed_machine_image(env, marker);
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
    machine_image_with(env, marker, &[])
}

/// The demo machine that boots as an installed Debian does, through Debian's signed shim
/// and GRUB, under Secure Boot and on BIOS too (`make-machine --secure-boot --bios`).
fn signed_machine_image(env: &Env, marker: &str) -> std::path::PathBuf {
    machine_image_with(env, marker, &["--secure-boot", "--bios"])
}

fn machine_image_with(env: &Env, marker: &str, flags: &[&str]) -> std::path::PathBuf {
    let img = env.path("machine.img");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-machine");
    let o = Command::new(script)
        .args(flags)
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

/// A drill over HTTP of the machine on `hardware` (--disk-bus, --nic, ...).
fn drill(env: &Env, hardware: &[&str], marker: &str, boot_timeout: &str) -> (bool, Value) {
    let mut args = vec!["--via", "http"];
    args.extend(hardware);
    drill_from(env, &env.repo(), &[], "http", marker, boot_timeout, &args)
}

/// A drill of the snapshot named demo in `repo`, with `vars` in the environment and
/// `args` (how it boots, on what hardware, `--trust KEY.pub`, ...); its files in
/// drill-LABEL.
fn drill_from(
    env: &Env,
    repo: &str,
    vars: &[(String, String)],
    label: &str,
    marker: &str,
    boot_timeout: &str,
    args: &[&str],
) -> (bool, Value) {
    let work = env.path(&format!("drill-{label}"));
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
        .args(["--marker", marker, "--boot-timeout", boot_timeout])
        .args(["--rescue-timeout", "420", "--work", path_str(&work)])
        .args(args)
        .env("LIFEBOAT_KERNEL", kernel_dir())
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("drill --json: {e}\n{}", stderr(&o)));
    eprintln!(
        "drill {label}: {}",
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
    assert_passed_with(ok, v, id, marker, "EFI/systemd/systemd-bootx64.efi");
}

/// The same, for a machine whose own loader is `loader` (the rescue copies it to the
/// fallback path).
fn assert_passed_with(ok: bool, v: &Value, id: &str, marker: &str, loader: &str) {
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
        format!("installed from {loader}").as_str()
    );
    // Every module the rescue loaded, loaded (under Secure Boot: signed, as lockdown wants).
    assert_eq!(r["modules"]["failed"], serde_json::json!([]), "{r:#}");
}

/// The rescue loaded these drivers because the machine's devices asked for them.
fn assert_drivers(v: &Value, drivers: &[&str]) {
    let loaded = &v["rescue_report"]["modules"]["drivers"];
    for d in drivers {
        assert!(loaded.get(*d).is_some(), "{d} not loaded: {loaded}");
    }
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
    // Both blank disks on USB, a Realtek 8139 NIC.
    let (ok, v) = drill(
        &env,
        &["--disk-bus", "usb", "--nic", "rtl8139"],
        "LIFEBOAT-MARKER",
        "180",
    );
    assert_passed(ok, &v, &id, "two-disk-marker");
    assert_drivers(&v, &["xhci_pci", "usb_storage", "8139cp"]);
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
        &["--disk-bus", "lsi"],
        "LIFEBOAT-MARKER rhel-marker boot=rhel-marker",
        "240",
    );
    assert_passed(ok, &v, &id, "rhel-marker boot=rhel-marker");
    assert_drivers(&v, &["sym53c8xx"]);
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
    // A Dell PERC-like MegaRAID behind which the target sits, over VMware's vmxnet3,
    // addressed statically in dracut's spelling.
    let (ok, v) = drill(
        &env,
        &[
            "--disk-bus",
            "megasas",
            "--nic",
            "vmxnet3",
            "--rescue-arg",
            "ip=10.0.2.77::10.0.2.2:24:web01:eth0:none",
        ],
        "LIFEBOAT-MARKER",
        "180",
    );
    assert_passed(ok, &v, &id, "http-marker-1");
    assert_drivers(&v, &["megaraid_sas", "vmxnet3"]);
    let hw = &v["rescue_report"]["hardware"];
    assert_eq!(hw["problems"], serde_json::json!([]), "{hw:#}");
    assert_eq!(hw["firmware"]["mode"], "uefi");
    assert_eq!(v["disk_bus"], "megasas");
    let net = &v["rescue_report"]["network"];
    assert_eq!(net["how"], "static", "{net}");
    assert_eq!(net["address"], "10.0.2.77", "{net}");
    let nics = v["rescue_report"]["hardware"]["nics"].to_string();
    assert!(nics.contains("vmxnet3"), "{nics}");
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
    // The static address of `ip=`, and a Boot#### first in BootOrder under OVMF.
    assert_eq!(r["network"]["address"], "10.0.2.77");
    assert_eq!(r["bootloader"]["nvram_ok"], true, "{r:#}");
    assert!(r["bootloader"]["nvram"]
        .as_str()
        .unwrap()
        .contains("first in BootOrder"));
}

/// The stick holds an encrypted repository: the rescue asks for its passphrase on the
/// console (the drill types it). On BIOS firmware: the stick boots by GRUB for BIOS, the
/// target sits on AHCI, and the restored machine boots by its own BIOS GRUB.
#[test]
fn a_bios_drill_from_the_usb_stick_restores_boots_and_leaves_a_report_on_it() {
    let env = Env::new();
    let pw = env.path("pw");
    let id = machine_encrypted(&env, "usb-marker-2", &pw);
    let args = [
        "--via",
        "usb",
        "--firmware",
        "bios",
        "--disk-bus",
        "ahci",
        "--password-file",
        path_str(&pw),
    ];
    let (ok, v) = drill_from(
        &env,
        &env.repo(),
        &[],
        "usb",
        "LIFEBOAT-MARKER",
        "180",
        &args,
    );
    assert_passed_with(ok, &v, &id, "usb-marker-2", "EFI/debian/shimx64.efi");
    assert_drivers(&v, &["ahci", "xhci_pci", "usb_storage"]);
    let r = &v["rescue_report"];
    assert_eq!(r["hardware"]["firmware"]["mode"], "bios", "{r:#}");
    // The AHCI disk's own SMART status, read through SCSI/ATA translation.
    let sata = r["hardware"]["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["transport"] == "sata")
        .unwrap_or_else(|| panic!("no SATA disk: {r:#}"));
    assert_eq!(sata["health"]["state"], "good", "{sata}");
    assert_eq!(sata["health"]["detail"], "ATA SMART: passed", "{sata}");
    let b = &r["bootloader"];
    assert_eq!(b["nvram_ok"], false);
    assert!(
        b["nvram"].as_str().unwrap().contains("BIOS firmware"),
        "{b}"
    );
    assert_asked_for_the_passphrase(&env.path("drill-usb/console-rescue.log"));
    let r = &v["rescue_report"];
    assert_eq!(r["repo"], "/mnt/usb/repo");
    assert!(r["network"].is_null(), "no network needed: {r:#}");
    // The stick was never a target (the AHCI disk was), and the report landed on its
    // data partition.
    assert_eq!(r["target"]["transport"], "sata", "{r:#}");
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
    let img = signed_machine_image(&env, "pxe-marker-3");
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
    // iPXE on BIOS firmware, an NVMe target, an Intel 82574 NIC.
    let trust = [
        "--via",
        "pxe",
        "--firmware",
        "bios",
        "--disk-bus",
        "nvme",
        "--nic",
        "e1000e",
        "--trust",
        path_str(&key),
        "--password-file",
        path_str(&pw),
    ];
    let (ok, v) = drill_from(
        &env,
        repo,
        g.vars(),
        "pxe",
        "LIFEBOAT-MARKER",
        "180",
        &trust,
    );
    assert_passed_with(ok, &v, &id, "pxe-marker-3", "EFI/debian/shimx64.efi");
    assert_drivers(&v, &["nvme", "e1000e"]);
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
    // DHCP from QEMU's user-mode network (no ip= given).
    assert_eq!(v["rescue_report"]["network"]["how"], "dhcp");
    assert_eq!(v["rescue_report"]["network"]["address"], "10.0.2.15");
    // BIOS network boot: no UEFI variables; the restored BIOS GRUB boots it.
    let b = &v["rescue_report"]["bootloader"];
    assert_eq!(b["nvram_ok"], false);
    assert!(
        b["nvram"].as_str().unwrap().contains("BIOS firmware"),
        "{b}"
    );
}

#[test]
fn a_corrupt_chunk_stops_the_rescue_and_the_disk_does_not_boot() {
    let env = Env::new();
    let id = machine(&env, "never-seen-4");
    let m = env.manifest(&id);
    let chunk = first_chunk_of_partition(&m, 2);
    env.flip_stored_byte(&chunk);
    // The target behind VMware's paravirtual SCSI: found, written, stopped.
    let (ok, v) = drill(&env, &["--disk-bus", "pvscsi"], "LIFEBOAT-MARKER", "45");
    assert!(!ok && v["pass"] == false, "{v:#}");
    assert_drivers(&v, &["vmw_pvscsi"]);
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
    let trust = [
        "--via",
        "pxe",
        "--firmware",
        "bios",
        "--trust",
        path_str(&trusted),
    ];
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

/// Secure Boot, from the ISO as a BMC's virtual CD with the repository on it: the
/// Microsoft-signed shim, Debian's GRUB and kernel boot the rescue under OVMF's Secure Boot
/// with Microsoft's keys; the kernel locks down and loads only its signed modules; the
/// restored machine (which boots through its own shim) gets shim as its fallback loader
/// with its GRUB beside it and a Boot#### entry for its shim, and boots under Secure Boot.
/// And the firmware refuses an unsigned loader: the check is real.
#[test]
fn a_secure_boot_drill_from_the_iso_restores_a_shim_booted_machine() {
    let env = Env::new();
    let img = signed_machine_image(&env, "sb-marker-6");
    env.init();
    let id = env.capture(&img, "demo")["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let args = [
        "--media",
        "iso",
        "--repo-on",
        "media",
        "--firmware",
        "secure-boot",
    ];
    let (ok, v) = drill_from(
        &env,
        &env.repo(),
        &[],
        "iso",
        "LIFEBOAT-MARKER",
        "240",
        &args,
    );
    assert_passed_with(ok, &v, &id, "sb-marker-6", "EFI/debian/shimx64.efi");
    let r = &v["rescue_report"];
    assert_eq!(r["hardware"]["firmware"]["secure_boot"], true, "{r:#}");
    assert_eq!(r["repo"], "/mnt/cdrom/repo");
    let b = &r["bootloader"];
    assert_eq!(b["loader"], "\\EFI\\debian\\shimx64.efi", "{b}");
    assert_eq!(b["nvram_ok"], true, "{b}");
    let console = std::fs::read_to_string(env.path("drill-iso/console-rescue.log")).unwrap();
    assert!(
        console.contains("Secure boot enabled"),
        "not under Secure Boot"
    );
    assert!(console.contains("Kernel is locked down"), "no lockdown");
    assert!(console.contains("repository on the boot ISO"), "{console}");
    assert_eq!(v["firmware"], "secure-boot");

    // The same firmware refuses the plain demo machine, whose systemd-boot is unsigned.
    let plain = env.path("plain.img");
    let o = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-machine"))
        .arg(&plain)
        .arg("never-seen-7")
        .env("LIFEBOAT_KERNEL", kernel_dir())
        .env("FALLBACK", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "make-machine: {}", stderr(&o));
    let vars = env.path("ms-vars.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.ms.fd", &vars).unwrap();
    // The same console reader as drills: it stops at the firmware's verdict.
    let code =
        "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
    let args: Vec<String> = [
        "-accel",
        "tcg",
        "-m",
        "512",
        "-nographic",
        "-no-reboot",
        "-machine",
        "q35,smm=on",
        "-net",
        "none",
        "-global",
        "driver=cfi.pflash01,property=secure,value=on",
        "-drive",
        code,
        "-drive",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain([
        format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
        "-drive".to_string(),
        format!("file={},format=raw,if=virtio,snapshot=on", plain.display()),
    ])
    .collect();
    let mut guest =
        lifeboat::drill::guest::Guest::start(&args, &env.path("console-plain.log"), false).unwrap();
    let seen = guest.wait_for(
        &["Access Denied", "never-seen-7"],
        std::time::Duration::from_secs(120),
    );
    drop(guest);
    let console = std::fs::read_to_string(env.path("console-plain.log")).unwrap();
    assert!(matches!(seen, Ok((0, _))), "{seen:?}\n{console}");
    assert!(!console.contains("never-seen-7"), "{console}");
}

/// A machine whose only disk controller the rescue has no driver for: the rescue says
/// which controller (its vendor:device id) and that its disks are not visible, and
/// writes nothing.
#[test]
fn a_rescue_without_the_disk_controllers_driver_names_it_and_writes_nothing() {
    let env = Env::new();
    machine(&env, "never-seen-8");
    let (ok, v) = drill(
        &env,
        &["--disk-bus", "megasas", "--omit-driver", "megaraid_sas"],
        "LIFEBOAT-MARKER",
        "30",
    );
    assert!(!ok && v["pass"] == false, "{v:#}");
    let err = v["rescue_error"].as_str().unwrap();
    assert!(err.contains("no driver for 1000:0079"), "{err}");
    assert!(err.contains("disks are not visible"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    let problems = v["rescue_report"]["hardware"]["problems"].to_string();
    assert!(
        problems.contains("Broadcom/LSI RAID controller"),
        "{problems}"
    );
    let disk = std::fs::read(env.path("drill-http/disk.img")).unwrap();
    assert!(disk.iter().all(|b| *b == 0), "the blank disk was written");
}
