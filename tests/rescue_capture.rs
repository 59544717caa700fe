//! Capture from the rescue, the consistent way to image a server: booted in QEMU with
//! `lifeboat.action=capture`, the rescue captures the machine's two disks (named by
//! serial, in order) into the repository on its stick as one snapshot, writes its report
//! and powers off; the snapshot, copied off the stick, restores both disks byte for byte.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

#[test]
fn the_rescue_captures_a_machine_of_two_disks_onto_its_stick() {
    let env = Env::new();
    let (a, b) = (env.disk("gpt", "a.img"), env.disk("mbr", "b.img"));
    // An empty repository on the stick, with room for the capture.
    env.init();
    let media = env.path("media");
    let cmdline = "console=ttyS0 panic=-1 quiet lifeboat.action=capture lifeboat.repo=usb \
                   lifeboat.target=serial:DISK-A,serial:DISK-B lifeboat.name=rescued \
                   lifeboat.after=poweroff";
    ok(&[
        "mkimage",
        "-q",
        "--out",
        path_str(&media),
        "--kernel",
        path_str(&kernel_dir()),
        "--cmdline",
        cmdline,
        "--with-repo",
        &env.repo(),
        "--data-mib",
        "160",
    ]);
    let stick = media.join("lifeboat-usb.img");
    let vars = env.path("vars.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
    let console = env.path("console.log");
    let o = Command::new("timeout")
        .args(["600", "qemu-system-x86_64", "-accel", "tcg", "-m", "1024"])
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
        .arg(format!(
            "if=none,id=stick,format=raw,file={}",
            stick.display()
        ))
        .args(["-device", "qemu-xhci", "-device", "usb-storage,drive=stick"])
        // The second disk first on the bus: the order comes from the command line.
        .arg("-drive")
        .arg(format!(
            "if=none,id=b,format=raw,readonly=on,file={}",
            b.display()
        ))
        .args(["-device", "virtio-blk-pci,drive=b,serial=DISK-B"])
        .arg("-drive")
        .arg(format!(
            "if=none,id=a,format=raw,readonly=on,file={}",
            a.display()
        ))
        .args(["-device", "virtio-blk-pci,drive=a,serial=DISK-A"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-display")
        .arg("none")
        .arg("-monitor")
        .arg("none")
        .output()
        .unwrap();
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(o.status.success(), "qemu: {}\n{log}", stderr(&o));
    let report = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("LIFEBOAT-REPORT "))
        .unwrap_or_else(|| panic!("no report on the console:\n{log}"));
    let report: Value = serde_json::from_str(report).unwrap();
    assert_eq!(report["result"], "ok", "{report:#}");
    assert_eq!(report["capture"]["disks"], 2, "{report:#}");

    // The repository, copied off the stick's data partition, holds the snapshot.
    let part = sgdisk_sector(&stick, 2, "First sector") * 512;
    let copy = env.path("stick-repo");
    sh(&format!(
        "mcopy -s -n -i '{}@@{part}' ::/repo {}",
        stick.display(),
        copy.display()
    ));
    let repo = copy.display().to_string();
    check_clean(&repo);
    let (x, y) = (env.path("x.img"), env.path("y.img"));
    ok(&[
        "restore",
        "-q",
        "--repo",
        &repo,
        "--snapshot",
        "rescued",
        "--target",
        path_str(&x),
        "--target",
        path_str(&y),
        "--verify",
    ]);
    assert_eq!(hash_file(&x), hash_file(&a));
    assert_eq!(hash_file(&y), hash_file(&b));
}
