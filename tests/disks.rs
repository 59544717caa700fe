//! `lifeboat disks` lists block devices from sysfs with their sector sizes, filesystems and
//! mounts.

mod common;

use common::*;

fn find(disks: &serde_json::Value, dev: &str) -> serde_json::Value {
    disks
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == dev)
        .cloned()
        .unwrap_or_else(|| panic!("{dev} not listed: {disks}"))
}

#[test]
fn lists_loop_disks_with_sector_size_filesystem_and_mounts() {
    let env = Env::new();
    let img = env.path("fs.img");
    sh(&format!(
        "truncate -s 64M {0} && mkfs.ext4 -q -F -b 4096 {0}",
        img.display()
    ));
    let lo = Loop::attach(&img, 4096);
    let disks: serde_json::Value =
        serde_json::from_slice::<serde_json::Value>(&ok(&["disks", "--json"]).stdout).unwrap()
            ["disks"]
            .clone();
    let d = find(&disks, &lo.dev);
    assert_eq!(d["size"], 64 << 20);
    assert_eq!(d["logical_sector_size"], 4096);
    assert_eq!(d["transport"], "loop");
    assert_eq!(d["fstype"], "ext4");
    assert_eq!(d["mountpoints"].as_array().unwrap().len(), 0);

    let mnt = Mount::new(&lo.dev, &env.path("mnt"));
    let disks: serde_json::Value =
        serde_json::from_slice::<serde_json::Value>(&ok(&["disks", "--json"]).stdout).unwrap()
            ["disks"]
            .clone();
    let d = find(&disks, &lo.dev);
    assert_eq!(d["mountpoints"][0], mnt.point.to_str().unwrap());
    // The human table shows it too.
    let text = String::from_utf8(ok(&["disks"]).stdout).unwrap();
    let name = lo.dev.trim_start_matches("/dev/");
    assert!(
        text.lines()
            .any(|l| l.starts_with(name) && l.contains("ext4")),
        "{text}"
    );
}
