//! `capture --live` on a running machine, in a QEMU guest with the Debian kernel (this
//! host has no device mapper): the disk's logical volumes are read from LVM snapshots
//! while a writer keeps writing, the hooks run around the snapshots, the snapshots are
//! gone afterwards, and the restored filesystem checks clean.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn a_live_capture_reads_logical_volumes_from_snapshots_while_a_writer_runs() {
    let env = Env::new();
    let disk = env.path("server.img");
    sh(&format!(
        "truncate -s 700M {0} && sgdisk -o -n 1:2048:0 -t 1:8e00 {0} >/dev/null",
        disk.display()
    ));
    let repo_disk = env.path("repo-disk.img");
    sh(&format!(
        "truncate -s 300M {0} && mkfs.ext4 -q -L repo {0}",
        repo_disk.display()
    ));
    let job = r#"
export LIFEBOAT_STATE_DIR=/tmp/state
pvcreate -q /dev/vda1
vgcreate -q vgl /dev/vda1
lvcreate -q -L 96M -n root vgl
lvcreate -q -L 16M -n swap vgl
lvcreate -q -L 300M -n srv vgl
mkfs.ext4 -q -L root /dev/vgl/root
mkfs.xfs -q -L srv /dev/vgl/srv
mkdir -p /srv && mount /dev/vgl/srv /srv && cp -a /lib /srv/
mkswap /dev/vgl/swap >/dev/null && swapon /dev/vgl/swap
mount /dev/vgl/root /mnt
cp -a /sbin /lib /mnt/
mkdir -p /r && mount /dev/vdb /r
lifeboat init -q --repo /r/repo
# In use, and not asked for --live: refused.
if lifeboat capture -q --repo /r/repo --source /dev/vda --name web 2>/r/refused; then
  echo "UNEXPECTED: captured"
fi
( i=0; while :; do dd if=/dev/urandom of=/mnt/w$((i % 40)) bs=64k count=8 2>/dev/null; dd if=/dev/urandom of=/srv/w$((i % 40)) bs=64k count=8 2>/dev/null; sync; i=$((i + 1)); done ) &
writer=$!
lifeboat capture -q --json --repo /r/repo --source /dev/vda --name web --live \
  --pre-hook 'echo pre >/r/pre' --post-hook 'echo post >/r/post' >/r/summary.json
kill $writer
echo "snapshots left: $(lvs --noheadings -o lv_name vgl | grep -c lifeboat-live || true)"
cat /r/pre /r/post
umount /mnt /srv
swapoff /dev/vgl/swap
umount /r
vgchange -q -an vgl
"#;
    let out = guest(&env, job, &[&disk, &repo_disk]);
    assert!(!out.contains("UNEXPECTED"), "{out}");
    assert!(out.contains("snapshots left: 0"), "{out}");
    assert!(out.contains("pre\npost"), "{out}");

    // The repository, from its disk.
    let lo = Loop::attach(&repo_disk, 512);
    let mnt = Mount::new(&lo.dev, &env.path("r"));
    let refused = std::fs::read_to_string(mnt.point.join("refused")).unwrap();
    assert!(
        refused.contains("is held by dm-") && refused.contains("--crash-consistent"),
        "{refused}"
    );
    let s: Value =
        serde_json::from_slice(&std::fs::read(mnt.point.join("summary.json")).unwrap()).unwrap();
    let repo = mnt.point.join("repo").display().to_string();
    let m: Value = serde_json::from_slice(
        &std::fs::read(mnt.point.join(format!(
            "repo/snapshots/{}.json",
            s["snapshot"].as_str().unwrap()
        )))
        .unwrap(),
    )
    .unwrap();
    let c = &m["consistency"];
    assert_eq!(c["kind"], "live", "{c}");
    assert!(
        c.to_string()
            .contains("LV vgl/root read from an LVM snapshot"),
        "{c}"
    );
    assert!(c.to_string().contains("active swap"), "{c}");
    // The XFS snapshot's log was replayed into it, so it is read by its used blocks.
    assert!(
        c.to_string().contains("LV vgl/srv: its xfs log replayed"),
        "{c}"
    );
    let n = s["notes"].to_string();
    assert!(n.contains("LV srv: xfs,"), "{n}");

    // Restored: the volume group has no trace of the snapshot, and the filesystem the
    // writer was writing to checks clean.
    let dst = env.path("dst.img");
    ok(&[
        "restore",
        "-q",
        "--repo",
        &repo,
        "--snapshot",
        "web",
        "--target",
        path_str(&dst),
    ]);
    drop(mnt);
    drop(lo);
    let start = sgdisk_sector(&dst, 1, "First sector") * 512;
    let end = (sgdisk_sector(&dst, 1, "Last sector") + 1) * 512;
    let pv = Loop::attach_range(&dst, start, end - start);
    let conf = format!(
        "devices {{ filter=[\"a|^{}$|\",\"r|.*|\"] }} global {{ activation=0 }}",
        pv.dev
    );
    let lvs = sh(&format!(
        "LVM_SUPPRESS_FD_WARNINGS=1 lvs --noheadings --segments -o lv_name,seg_pe_ranges --config '{conf}' 2>/dev/null"
    ));
    assert!(
        lvs.contains("root") && !lvs.contains("lifeboat-live"),
        "{lvs}"
    );
    let line = lvs.lines().find(|l| l.trim().starts_with("root")).unwrap();
    let range = line.split(':').next_back().unwrap().trim();
    let (a, _) = range.split_once('-').unwrap();
    let pe_start: u64 = sh(&format!(
        "LVM_SUPPRESS_FD_WARNINGS=1 pvs --noheadings --units b --nosuffix -o pe_start --config '{conf}' 2>/dev/null"
    ))
    .trim()
    .parse()
    .unwrap();
    let extent = 4u64 << 20;
    let root_at = start + pe_start + a.parse::<u64>().unwrap() * extent;
    drop(pv);
    let root = Loop::attach_range(&dst, root_at, 96 << 20);
    sh(&format!("e2fsck -fn {}", root.dev));
}

#[test]
fn a_live_capture_refuses_what_it_cannot_snapshot_and_says_why() {
    let env = Env::new();
    let disk = env.path("server.img");
    sh(&format!(
        "truncate -s 400M {0} && sgdisk -o -n 1:2048:+64M -t 1:8300 -n 2:0:0 -t 2:8e00 {0} >/dev/null",
        disk.display()
    ));
    let job = r#"
export LIFEBOAT_STATE_DIR=/tmp/state
mkdir -p /r && mount -t tmpfs r /r
lifeboat init -q --repo /r/repo
mkfs.ext4 -q /dev/vda1
mkdir -p /boot && mount /dev/vda1 /boot
pvcreate -q /dev/vda2 && vgcreate -q vgb /dev/vda2
lvcreate -q -L 200M -n data vgb
mkfs.btrfs -q /dev/vgb/data >/dev/null && mount /dev/vgb/data /mnt
# A plain partition mounted read-write: no copy-on-write view of it.
lifeboat capture -q --repo /r/repo --source /dev/vda --name s --live 2>&1 | sed 's/^/ONE: /' || true
umount /boot
# btrfs on a logical volume: never a second device with its id.
lifeboat capture -q --repo /r/repo --source /dev/vda --name s --live 2>&1 | sed 's/^/TWO: /' || true
echo "snapshots: $(lvs --noheadings -o lv_name vgb | grep -c lifeboat || true)"
echo "captured: $(ls /r/repo/snapshots | wc -l)"
umount /mnt
vgchange -q -an vgb
"#;
    let out = guest(&env, job, &[&disk]);
    assert!(
        out.contains("ONE: lifeboat: error: --live on /dev/vda: /dev/vda1 is mounted read-write at /boot directly, not on LVM"),
        "{out}"
    );
    assert!(
        out.contains(
            "TWO: lifeboat: error: --live on /dev/vda: logical volume vgb/data holds btrfs"
        ),
        "{out}"
    );
    assert!(
        out.contains("snapshots: 0") && out.contains("captured: 0"),
        "{out}"
    );
}
