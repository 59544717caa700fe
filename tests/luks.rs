//! LUKS containers: kept whole when closed (a restore gives back the same container,
//! which opens with its passphrase; no key is needed to restore it), and, when open on
//! the machine through dm-crypt with nothing using the mapping, read by the used blocks
//! of the filesystem inside (in a QEMU guest with the Debian kernel: this host has no
//! device mapper).

mod common;

use common::*;
use serde_json::Value;

/// A GPT disk of `mib` MiB whose partition 1 is garbage.
fn disk(env: &Env, name: &str, mib: u64) -> std::path::PathBuf {
    let d = env.path(name);
    sh(&format!(
        "truncate -s {mib}M {0} && sgdisk -o -n 1:2048:0 -t 1:8309 {0} >/dev/null && \
         dd if=/dev/urandom of={0} bs=1M seek=1 count={1} conv=notrunc status=none",
        d.display(),
        mib - 2
    ));
    d
}

/// A 64 MiB disk whose partition 1 is a LUKS2 container (passphrase in the file it
/// returns) over garbage, then given to `then KEYFILE DEV` unless empty; the disk, the key
/// file, and the partition's start and end.
fn luks_disk(env: &Env, then: &str) -> (std::path::PathBuf, std::path::PathBuf, (u64, u64)) {
    let src = disk(env, "src.img", 64);
    let pw = env.path("pw");
    std::fs::write(&pw, "luks pass").unwrap();
    let start = sgdisk_sector(&src, 1, "First sector") * 512;
    let end = (sgdisk_sector(&src, 1, "Last sector") + 1) * 512;
    let lo = Loop::attach_range(&src, start, end - start);
    sh(&format!(
        "cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file {0} {1}",
        pw.display(),
        lo.dev
    ));
    if !then.is_empty() {
        sh(&format!("{then} {} {}", pw.display(), lo.dev));
    }
    (src, pw, (start, end))
}

#[test]
fn a_closed_luks2_container_restores_byte_for_byte_and_opens() {
    let env = Env::new();
    let (src, pw, (start, end)) = luks_disk(&env, "");
    env.init();
    let s = env.capture(&src, "vault");
    let n = s["notes"].to_string();
    assert!(n.contains("LUKS2 (aes-xts-plain64) kept whole"), "{n}");
    let dst = env.path("dst.img");
    assert!(env.restore("vault", &dst, &["--verify"]).status.success());
    assert_eq!(hash_file(&dst), hash_file(&src));
    let lo = Loop::attach_range(&dst, start, end - start);
    sh(&format!(
        "cryptsetup open --test-passphrase --key-file {} {}",
        pw.display(),
        lo.dev
    ));
}

/// A container in the middle of a re-encryption (two keys over its sectors; its LUKS2
/// header requires `online-reencrypt`) is read whole even when a key file is given: it is
/// not opened at all, and comes back byte for byte.
#[test]
fn a_luks2_container_in_reencryption_is_read_whole_even_with_its_key() {
    let env = Env::new();
    let (src, pw, _) = luks_disk(
        &env,
        "cryptsetup reencrypt --init-only -q --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file",
    );
    let repo = env.init();
    let mut args = capture_args(&repo, &src, "moving").to_vec();
    args.extend(["--luks-keyfile", path_str(&pw)]);
    let s: Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    let n = s["notes"].to_string();
    assert!(
        n.contains("partition 1: LUKS2 (aes-xts-plain64): it is in the middle of a re-encryption, so the key file is not used; read in full"),
        "{n}"
    );
    let dst = env.path("dst.img");
    assert!(env.restore("moving", &dst, &[]).status.success());
    assert_eq!(hash_file(&dst), hash_file(&src));
}

const DIGEST: &str =
    "(cd /mnt && find . -type f | sort | xargs sha256sum | sha256sum | sed 's/^/digest /')";

#[test]
fn an_open_luks_container_is_read_by_the_used_blocks_inside() {
    let env = Env::new();
    let src = disk(&env, "src.img", 200);
    let repo_disk = env.path("repo-disk.img");
    sh(&format!(
        "truncate -s 200M {0} && mkfs.ext4 -q {0}",
        repo_disk.display()
    ));
    let made = guest(
        &env,
        &format!(
            "export LIFEBOAT_STATE_DIR=/tmp/state
printf 'luks pass' >/tmp/pw
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /tmp/pw /dev/vda1
cryptsetup open --key-file /tmp/pw /dev/vda1 vault
mkfs.ext4 -q -E nodiscard /dev/mapper/vault
mount /dev/mapper/vault /mnt && cp -a /sbin /lib /mnt/
{DIGEST}
umount /mnt
mkdir -p /r && mount /dev/vdb /r
lifeboat init -q --repo /r/repo
lifeboat capture -q --json --repo /r/repo --source /dev/vda --name vault >/r/summary.json
cryptsetup close vault
printf 'not it' >/tmp/wrong
lifeboat capture -q --repo /r/repo --source /dev/vda --name keyed --luks-keyfile /tmp/wrong 2>/r/wrong.err && echo captured with the wrong key
lifeboat capture -q --json --repo /r/repo --source /dev/vda --name keyed --luks-keyfile /tmp/wrong --luks-keyfile /tmp/pw >/r/keyed.json
ls /dev/mapper | sed 's/^/mapping /'
umount /r"
        ),
        &[&src, &repo_disk],
    );
    let digest = made.lines().find(|l| l.starts_with("digest")).unwrap();
    assert!(!made.contains("captured with the wrong key"), "{made}");
    let mappings: Vec<&str> = made.lines().filter(|l| l.starts_with("mapping ")).collect();
    assert_eq!(mappings, ["mapping control"], "no mapping is left open");

    let lo = Loop::attach(&repo_disk, 512);
    let mnt = Mount::new(&lo.dev, &env.path("r"));
    let s: Value =
        serde_json::from_slice(&std::fs::read(mnt.point.join("summary.json")).unwrap()).unwrap();
    let n = s["notes"].to_string();
    assert!(
        n.contains("LUKS2 (aes-xts-plain64) open as /dev/dm-0, holding ext4"),
        "{n}"
    );
    // Some 170 MiB of the container's plaintext is free: its ciphertext is not read.
    let skipped = s["free_bytes_skipped"].as_u64().unwrap();
    assert!(skipped > 120 << 20, "{s}");
    eprintln!("open LUKS: read {} B, skipped {skipped} B", s["bytes_read"]);
    // Closed, and opened for the capture with the second of two key files given (the
    // first, wrong, alone is refused, naming the container and the key file).
    let wrong = std::fs::read_to_string(mnt.point.join("wrong.err")).unwrap();
    assert!(
        wrong.contains("partition 1: --luks-keyfile: the LUKS container at byte 1048576 of /dev/vda opens with none of the key files given (/tmp/wrong)"),
        "{wrong}"
    );
    let k: Value =
        serde_json::from_slice(&std::fs::read(mnt.point.join("keyed.json")).unwrap()).unwrap();
    let n = k["notes"].to_string();
    assert!(n.contains("open as /dev/mapper/lifeboat-luks-"), "{n}");
    assert!(k["free_bytes_skipped"].as_u64().unwrap() > 120 << 20, "{k}");
    eprintln!(
        "LUKS opened with --luks-keyfile: read {} B, skipped {} B",
        k["bytes_read"], k["free_bytes_skipped"]
    );
    let repo = mnt.point.join("repo").display().to_string();
    let restored: Vec<_> = ["vault", "keyed"]
        .iter()
        .map(|name| {
            let dst = env.path(&format!("{name}.img"));
            ok(&restore_args(&repo, name, &dst));
            dst
        })
        .collect();
    drop(mnt);
    drop(lo);
    // Restored, with no key: each opens with its passphrase and holds the same files.
    let checked = guest(
        &env,
        &format!(
            "printf 'luks pass' >/tmp/pw
for d in vda vdb; do
cryptsetup open --key-file /tmp/pw /dev/${{d}}1 vault
e2fsck -fn /dev/mapper/vault >/dev/null && echo $d checks clean
mount -o ro /dev/mapper/vault /mnt
{DIGEST}
umount /mnt
cryptsetup close vault
done"
        ),
        &[&restored[0], &restored[1]],
    );
    assert_eq!(
        checked.matches(digest).count(),
        2,
        "{checked}\nexpected {digest}"
    );
    for d in ["vda", "vdb"] {
        assert!(checked.contains(&format!("{d} checks clean")), "{checked}");
    }
}

/// A LUKS2 container with integrity protection (dm-integrity keeps tags between the
/// sectors, so the plaintext's blocks are not the ciphertext's one to one) is read whole
/// though its key file is given, and comes back byte for byte (in a guest: dm-integrity).
#[test]
fn a_luks2_container_with_integrity_is_read_whole_and_comes_back() {
    let env = Env::new();
    let src = disk(&env, "src.img", 64);
    let dst = env.path("dst.img");
    sh(&format!("truncate -s 64M {}", dst.display()));
    let out = guest(
        &env,
        "printf 'luks pass' >/tmp/pw
cryptsetup luksFormat -q --type luks2 --integrity hmac-sha256 --integrity-no-wipe \
  --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /tmp/pw /dev/vda1
lifeboat init -q --repo /tmp/repo
lifeboat capture -q --json --repo /tmp/repo --source /dev/vda --name keyed --luks-keyfile /tmp/pw | sed 's/^/keyed: /'
lifeboat restore -q --repo /tmp/repo --snapshot keyed --target /dev/vdb --yes
sha256sum /dev/vda /dev/vdb | sed 's/^/sum /'",
        &[&src, &dst],
    );
    let keyed = out.lines().find(|l| l.starts_with("keyed: ")).unwrap_or("");
    assert!(
        keyed.contains("it has integrity protection (dm-integrity tags between sectors), so the key file is not used; read in full"),
        "{out}"
    );
    let sums: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("sum "))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(sums.len(), 2, "{out}");
    assert_eq!(sums[0], sums[1], "{out}");
}
