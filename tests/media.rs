//! `lifeboat mkimage`: the initramfs holds this binary as /init and the listed modules
//! with their dependencies in load order; the USB image is a clean GPT with two FAT32
//! filesystems that pass fsck.fat, Debian's signed shim as the fallback loader with its
//! signed GRUB, the orders in grub.cfg, GRUB's BIOS boot code in the MBR and its core
//! image in a BIOS boot partition, and an exact copy of the repository; the ISO has both
//! El Torito entries and the same files; the PXE bundle carries the same.

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
    // The load order holds the modules loaded whatever the machine, each after its
    // dependencies.
    let in_archive =
        |rel: &str| files.contains(&format!("lib/modules/{}/{rel}", version.trim()).as_str());
    for want in [
        "ext4",
        "vfat",
        "isofs",
        "nls_cp437",
        "efivarfs",
        "sd_mod",
        "sr_mod",
        "8021q",
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
        assert!(in_archive(&order[at]));
    }
    // The drivers of real servers' disk controllers and NICs are there, with their
    // dependencies, and the cut-down modules.alias names the devices they answer.
    sh(&format!(
        "cd {} && zstd -dc {} | cpio -id --quiet 'lib/modules/*/modules.alias' 'lib/modules/*/modules.dep'",
        env.dir.path().display(),
        ird.display()
    ));
    let base = env.path(&format!("lib/modules/{}", version.trim()));
    let alias = std::fs::read_to_string(base.join("modules.alias")).unwrap();
    let dep = std::fs::read_to_string(base.join("modules.dep")).unwrap();
    for driver in [
        "megaraid_sas",
        "mpt3sas",
        "smartpqi",
        "hpsa",
        "vmw_pvscsi",
        "hv_storvsc",
        "sym53c8xx",
        "nvme",
        "ahci",
        "virtio_blk",
        "usb_storage",
        "xhci_pci",
        "tg3",
        "bnxt_en",
        "bnx2x",
        "i40e",
        "ice",
        "mlx5_core",
        "qede",
        "vmxnet3",
        "hv_netvsc",
        "e1000e",
        "virtio_net",
    ] {
        assert!(
            alias.lines().any(|l| l.ends_with(&format!(" {driver}"))),
            "no alias for {driver}"
        );
        let stem = |p: &str| {
            let file = p.rsplit('/').next().unwrap();
            file.trim_end_matches(".ko").replace('-', "_")
        };
        let line = dep
            .lines()
            .find(|l| stem(l.split(':').next().unwrap()) == *driver)
            .unwrap_or_else(|| panic!("{driver} not in modules.dep"));
        let (path, needs) = line.split_once(':').unwrap();
        assert!(in_archive(path), "{path}");
        for d in needs.split_whitespace() {
            assert!(in_archive(d), "{driver} needs {d}, not in the initramfs");
        }
    }
    // Every module in the archive is one the list selects or a dependency of one.
    let in_ird = files.iter().filter(|f| f.ends_with(".ko")).count();
    assert_eq!(s["initramfs"]["modules"], in_ird);
    assert_eq!(dep.lines().count(), in_ird);
    assert!(in_ird > 300, "{in_ird} modules");

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
    for (inside, cached) in [
        ("EFI/BOOT/BOOTX64.EFI", "boot/shimx64.efi"),
        ("EFI/BOOT/grubx64.efi", "boot/grubx64.efi"),
        ("EFI/BOOT/mmx64.efi", "boot/mmx64.efi"),
        ("lifeboat/vmlinuz", "vmlinuz"),
    ] {
        let copy = env.path("copied");
        m(&format!(
            "mcopy -o -i {} ::/{inside} {}",
            esp.display(),
            copy.display()
        ));
        assert_eq!(
            hash_file(&copy),
            hash_file(&kernel.join(cached)),
            "{inside}"
        );
    }
    // shim is the one signed by Microsoft's UEFI CA; GRUB the one Debian signed.
    let shim = std::fs::read(kernel.join("boot/shimx64.efi")).unwrap();
    assert!(contains(&shim, b"Microsoft Corporation UEFI CA"));
    let grub = std::fs::read(kernel.join("boot/grubx64.efi")).unwrap();
    assert!(contains(&grub, b"Debian Secure Boot Signer"));
    let cfg = m(&format!("mtype -i {} ::/EFI/BOOT/grub.cfg", esp.display()));
    let id = s["media_id"].as_str().unwrap();
    assert!(
        cfg.contains(&format!(
            "linux /lifeboat/vmlinuz {cmdline} lifeboat.media={id}"
        )),
        "{cfg}"
    );
    assert!(cfg.contains(&format!(
        "search --no-floppy --file --set=root /lifeboat/media-{id}"
    )));
    m(&format!(
        "mtype -i {} ::/lifeboat/media-{id}",
        esp.display()
    ));
    // BIOS: GRUB's boot code in the MBR names the BIOS boot partition's first sector,
    // which holds GRUB's core image; the partition table is left as it was.
    assert!(p.contains("EF02"), "{p}");
    let bios_first = sgdisk_sector(&usb, 3, "First sector");
    let image = std::fs::read(&usb).unwrap();
    let boot_img = std::fs::read(kernel.join("boot/bios/boot.img")).unwrap();
    assert_eq!(image[..0x5c], boot_img[..0x5c]);
    assert_eq!(
        u64::from_le_bytes(image[0x5c..0x64].try_into().unwrap()),
        bios_first
    );
    assert_eq!(image[0x1c2], 0xee, "the protective MBR's entry is kept");
    let core = std::fs::read(kernel.join("boot/bios/core.img")).unwrap();
    let at = bios_first as usize * 512;
    assert_eq!(image[at + 0x200..at + core.len()], core[0x200..]);
    assert_eq!(
        u64::from_le_bytes(image[at + 0x1f4..at + 0x1fc].try_into().unwrap()),
        bios_first + 1
    );

    // The ISO: El Torito for BIOS and for UEFI, the FAT image as a GPT partition too, the
    // kernel, grub.cfg and the repository in ISO 9660.
    let iso = out.join("lifeboat.iso");
    let report = sh(&format!(
        "xorriso -indev {} -report_el_torito plain -report_system_area plain 2>&1",
        iso.display()
    ));
    assert!(
        report.contains("BIOS") && report.contains("UEFI"),
        "{report}"
    );
    assert!(report.contains("/boot/efi.img"), "{report}");
    let from_iso = env.path("from-iso");
    sh(&format!(
        "osirrox -indev {} -extract / {} 2>/dev/null",
        iso.display(),
        from_iso.display()
    ));
    assert_eq!(
        hash_file(&from_iso.join("lifeboat/vmlinuz")),
        hash_file(&kernel.join("vmlinuz"))
    );
    assert_eq!(
        std::fs::read_to_string(from_iso.join("boot/grub/grub.cfg")).unwrap(),
        cfg
    );
    assert!(from_iso.join(format!("lifeboat/media-{id}")).is_file());
    sh(&format!(
        "diff -r {} {}",
        env.repo(),
        from_iso.join("repo").display()
    ));
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
    for (file, from) in [
        ("pxe/lifeboat/initramfs.cpio.zst", ird.clone()),
        ("pxe/lifeboat/vmlinuz", kernel.join("vmlinuz")),
        ("pxe/bootx64.efi", kernel.join("boot/shimx64.efi")),
        ("pxe/grubx64.efi", kernel.join("boot/grubnetx64.efi")),
    ] {
        assert_eq!(hash_file(&out.join(file)), hash_file(&from), "{file}");
    }
    let net_cfg = std::fs::read_to_string(out.join("pxe/grub/grub.cfg")).unwrap();
    assert_eq!(net_cfg, cfg);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
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

/// `mkimage --firmware DIR` adds the files the rescue's drivers name (`modinfo -F
/// firmware`) that DIR has, at lib/firmware/, and nothing else from DIR.
#[test]
fn mkimage_takes_the_firmware_its_drivers_name() {
    let env = Env::new();
    let kernel = kernel_dir();
    let version = std::fs::read_to_string(kernel.join("version")).unwrap();
    let tg3 = sh(&format!(
        "find {}/lib/modules/{}/kernel/drivers/net -name tg3.ko",
        kernel.display(),
        version.trim()
    ));
    let named = sh(&format!("modinfo -F firmware {}", tg3.trim()));
    let first = named
        .lines()
        .next()
        .expect("tg3 names firmware")
        .to_string();
    let fw = env.path("firmware");
    std::fs::create_dir_all(fw.join(&first).parent().unwrap()).unwrap();
    std::fs::write(fw.join(&first), b"tg3 firmware").unwrap();
    std::fs::create_dir_all(fw.join("other")).unwrap();
    std::fs::write(fw.join("other/unnamed.bin"), b"nobody asks for this").unwrap();
    let out = env.path("media");
    let o = ok(&[
        "mkimage",
        "--json",
        "--out",
        path_str(&out),
        "--kernel",
        path_str(&kernel),
        "--firmware",
        path_str(&fw),
    ]);
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["initramfs"]["firmware_files"], 1, "{s}");
    assert!(s["initramfs"]["firmware_missing"].as_u64().unwrap() > 0);
    let listing = sh(&format!(
        "zstd -dc {} | cpio -it --quiet",
        out.join("initramfs.cpio.zst").display()
    ));
    assert!(
        listing
            .lines()
            .any(|l| l == format!("lib/firmware/{first}")),
        "{first}"
    );
    assert!(!listing.contains("unnamed.bin"));
}
