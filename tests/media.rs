//! `lifeboat mkimage`: the initramfs holds this binary as /init and the listed modules
//! with their dependencies in load order; the USB image is a clean GPT with two FAT32
//! filesystems that pass fsck.fat, systemd-boot as the fallback loader, the orders in the
//! loader entry and an exact copy of the repository; the PXE bundle carries the same.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use serde_json::Value;

fn extract(img: &Path, part: u32, out: &Path) {
    let first = sgdisk_sector(img, part, "First sector");
    let last = sgdisk_sector(img, part, "Last sector");
    sh(&format!(
        "dd if={} of={} bs=512 skip={first} count={} status=none",
        img.display(),
        out.display(),
        last - first + 1
    ));
}

#[test]
fn mkimage_builds_initramfs_usb_image_and_pxe_bundle() {
    let env = Env::new();
    let src = env.disk("gpt", "src.img");
    env.init();
    env.capture(&src, "web");
    let kernel = kernel_dir();
    let out = env.path("media");
    let cmdline = "console=ttyS0 lifeboat.action=restore lifeboat.repo=usb lifeboat.snapshot=web lifeboat.target=largest-empty";
    let o = ok(&[
        "mkimage",
        "--json",
        "--out",
        path_str(&out),
        "--kernel",
        path_str(&kernel),
        "--cmdline",
        cmdline,
        "--with-repo",
        &env.repo(),
    ]);
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();

    // The initramfs: /init is this binary; every listed module is there, after its
    // dependencies.
    let ird = out.join("initramfs.cpio.zst");
    let listing = sh(&format!("zstd -dc {} | cpio -it --quiet", ird.display()));
    let files: Vec<&str> = listing.lines().collect();
    for f in ["init", "dev/console", "etc/lifeboat/modules"] {
        assert!(files.contains(&f), "{f} missing from the initramfs");
    }
    sh(&format!(
        "cd {} && zstd -dc {} | cpio -id --quiet init etc/lifeboat/modules",
        env.dir.path().display(),
        ird.display()
    ));
    assert_eq!(hash_file(&env.path("init")), hash_file(Path::new(bin())));
    let version = std::fs::read_to_string(kernel.join("version")).unwrap();
    let mods = kernel.join("lib/modules").join(version.trim());
    let deps: HashMap<String, Vec<String>> = std::fs::read_to_string(mods.join("modules.dep"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| {
            (
                m.to_string(),
                d.split_whitespace().map(str::to_string).collect(),
            )
        })
        .collect();
    let order: Vec<String> = std::fs::read_to_string(env.path("etc/lifeboat/modules"))
        .unwrap()
        .lines()
        .map(|l| {
            l.split_once(version.trim())
                .unwrap()
                .1
                .trim_start_matches('/')
                .to_string()
        })
        .collect();
    for want in [
        "virtio_blk",
        "virtio_pci",
        "nvme",
        "ahci",
        "sd_mod",
        "usb-storage",
        "uas",
        "xhci-pci",
        "ehci-pci",
        "ext4",
        "vfat",
        "nls_cp437",
        "efivarfs",
        "virtio_net",
        "e1000",
        "e1000e",
        "igb",
        "ixgbe",
        "r8169",
    ] {
        let hit = order
            .iter()
            .position(|m| m.ends_with(&format!("/{want}.ko")));
        let at = hit.unwrap_or_else(|| panic!("{want} not in the load order"));
        for d in &deps[&order[at]] {
            let dat = order
                .iter()
                .position(|m| m == d)
                .unwrap_or_else(|| panic!("{want} needs {d}"));
            assert!(dat < at, "{d} must load before {want}");
        }
        assert!(files.contains(&format!("lib/modules/{}/{}", version.trim(), order[at]).as_str()));
    }
    // Nothing but the listed modules and their dependencies.
    assert_eq!(s["initramfs"]["modules"], order.len());
    assert!(order.len() < 120, "{} modules", order.len());

    // The USB image: a valid GPT, an ESP and the data partition, both clean FAT32.
    let usb = out.join("lifeboat-usb.img");
    let v = sh(&format!("sgdisk -v {}", usb.display()));
    assert!(v.contains("No problems found"), "{v}");
    let p = sh(&format!("sgdisk -p {}", usb.display()));
    assert!(p.contains("EF00") && p.contains("lifeboat-data"), "{p}");
    for (n, name) in [(1, "esp.img"), (2, "data.img")] {
        let part = env.path(name);
        extract(&usb, n, &part);
        let f = std::process::Command::new("fsck.fat")
            .arg("-n")
            .arg(&part)
            .output()
            .unwrap();
        assert!(
            f.status.success(),
            "fsck.fat {name}: {}",
            String::from_utf8_lossy(&f.stdout)
        );
        assert!(
            String::from_utf8_lossy(&f.stdout).lines().count() <= 2,
            "{}",
            String::from_utf8_lossy(&f.stdout)
        );
    }
    let esp = env.path("esp.img");
    let m = |cmd: &str| sh(&format!("MTOOLS_SKIP_CHECK=1 {cmd}"));
    m(&format!(
        "mcopy -i {} ::/EFI/BOOT/BOOTX64.EFI {}",
        esp.display(),
        env.path("BOOTX64.EFI").display()
    ));
    assert_eq!(
        hash_file(&env.path("BOOTX64.EFI")),
        hash_file(Path::new("/usr/lib/systemd/boot/efi/systemd-bootx64.efi"))
    );
    let entry = m(&format!(
        "mtype -i {} ::/loader/entries/lifeboat.conf",
        esp.display()
    ));
    assert!(entry.contains(&format!("options {cmdline}")), "{entry}");
    m(&format!(
        "mcopy -i {} ::/lifeboat/vmlinuz {}",
        esp.display(),
        env.path("vmlinuz").display()
    ));
    assert_eq!(
        hash_file(&env.path("vmlinuz")),
        hash_file(&kernel.join("vmlinuz"))
    );
    m(&format!(
        "mcopy -s -i {} ::/repo {}",
        env.path("data.img").display(),
        env.path("copy").display()
    ));
    sh(&format!(
        "diff -r {} {}",
        env.repo(),
        env.path("copy").display()
    ));

    // The PXE bundle.
    let script = std::fs::read_to_string(out.join("pxe/boot.ipxe")).unwrap();
    assert!(script.starts_with("#!ipxe"));
    assert!(
        script.contains(&format!("initrd=initramfs.cpio.zst {cmdline}")),
        "{script}"
    );
    assert_eq!(
        hash_file(&out.join("pxe/initramfs.cpio.zst")),
        hash_file(&ird)
    );
    assert_eq!(
        hash_file(&out.join("pxe/vmlinuz")),
        hash_file(&kernel.join("vmlinuz"))
    );
}

#[test]
fn mkimage_without_a_kernel_says_where_to_get_one() {
    let env = Env::new();
    let err = fails(&[
        "mkimage",
        "--out",
        path_str(&env.path("m")),
        "--kernel",
        path_str(&env.path("none")),
    ]);
    assert!(err.contains("lifeboat fetch-kernel"), "{err}");
}
