//! UEFI boot variables through efivarfs: EFI_LOAD_OPTION encoding (a hard-drive device
//! path by partition GUID and a file path), Boot#### and BootOrder.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// EFI_GLOBAL_VARIABLE.
pub const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS.
const ATTRS: u32 = 0x7;

/// Where a loader is: a GPT partition (number, first LBA, size in LBAs, unique GUID as
/// stored on disk) and a path on it with backslashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderPath {
    pub partition: u32,
    pub start_lba: u64,
    pub size_lba: u64,
    pub guid_le: [u8; 16],
    pub path: String,
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// An EFI_LOAD_OPTION: active, with a description and the device path of `loader`.
pub fn load_option(description: &str, loader: &LoaderPath) -> Vec<u8> {
    let mut dp = Vec::new();
    // Hard drive media device path (type 4, subtype 1, 42 bytes).
    dp.extend_from_slice(&[4, 1, 42, 0]);
    dp.extend_from_slice(&loader.partition.to_le_bytes());
    dp.extend_from_slice(&loader.start_lba.to_le_bytes());
    dp.extend_from_slice(&loader.size_lba.to_le_bytes());
    dp.extend_from_slice(&loader.guid_le);
    dp.extend_from_slice(&[2, 2]); // GPT, GUID signature
                                   // File path media device path (type 4, subtype 4).
    let path = utf16z(&loader.path);
    dp.extend_from_slice(&[4, 4]);
    dp.extend_from_slice(&((4 + path.len()) as u16).to_le_bytes());
    dp.extend_from_slice(&path);
    dp.extend_from_slice(&[0x7f, 0xff, 4, 0]); // end of the whole path
    let mut out = Vec::new();
    out.extend_from_slice(&1u32.to_le_bytes()); // LOAD_OPTION_ACTIVE
    out.extend_from_slice(&(dp.len() as u16).to_le_bytes());
    out.extend_from_slice(&utf16z(description));
    out.extend_from_slice(&dp);
    out
}

/// The partition GUID and file path a load option points at, when it is a hard-drive
/// path followed by a file path.
pub fn parse_option(data: &[u8]) -> Option<([u8; 16], String)> {
    let dp_len = u16::from_le_bytes(data.get(4..6)?.try_into().ok()?) as usize;
    let mut i = 6;
    while u16::from_le_bytes(data.get(i..i + 2)?.try_into().ok()?) != 0 {
        i += 2;
    }
    i += 2;
    let dp = data.get(i..i + dp_len)?;
    let (mut guid, mut path) = (None, None);
    let mut j = 0;
    while j + 4 <= dp.len() {
        let (t, st) = (dp[j], dp[j + 1]);
        let len = u16::from_le_bytes([dp[j + 2], dp[j + 3]]) as usize;
        if len < 4 || j + len > dp.len() {
            return None;
        }
        let node = &dp[j..j + len];
        match (t, st) {
            (4, 1) if len == 42 => guid = Some(node[24..40].try_into().ok()?),
            (4, 4) => {
                let units: Vec<u16> = node[4..]
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .take_while(|&u| u != 0)
                    .collect();
                path = Some(String::from_utf16_lossy(&units));
            }
            (0x7f, 0xff) => break,
            _ => {}
        }
        j += len;
    }
    Some((guid?, path?))
}

pub struct Vars {
    dir: PathBuf,
}

// FS_IOC_GETFLAGS / FS_IOC_SETFLAGS: efivarfs marks variables immutable.
nix::ioctl_read!(get_flags, b'f', 1, libc::c_long);
nix::ioctl_write_ptr!(set_flags, b'f', 2, libc::c_long);
const IMMUTABLE: libc::c_long = 0x10;

impl Vars {
    /// The variables, when efivarfs is mounted at `dir`.
    pub fn open(dir: &Path) -> Result<Vars> {
        if !dir.join(format!("BootOrder-{GLOBAL}")).exists()
            && fs::read_dir(dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(true)
        {
            bail!(
                "no UEFI variables at {} (not booted by UEFI, or efivarfs not mounted)",
                dir.display()
            );
        }
        Ok(Vars {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-{GLOBAL}"))
    }

    pub fn get(&self, name: &str) -> Option<Vec<u8>> {
        let raw = fs::read(self.path(name)).ok()?;
        raw.get(4..).map(<[u8]>::to_vec)
    }

    fn mutable(&self, path: &Path) -> Result<()> {
        let Ok(f) = File::open(path) else {
            return Ok(());
        };
        let mut flags: libc::c_long = 0;
        // SAFETY: the ioctls read and write one c_long through a valid pointer.
        unsafe { get_flags(f.as_raw_fd(), &mut flags) }
            .with_context(|| format!("read the flags of {}", path.display()))?;
        if flags & IMMUTABLE != 0 {
            flags &= !IMMUTABLE;
            unsafe { set_flags(f.as_raw_fd(), &flags) }
                .with_context(|| format!("make {} writable", path.display()))?;
        }
        Ok(())
    }

    pub fn set(&self, name: &str, data: &[u8]) -> Result<()> {
        let path = self.path(name);
        self.mutable(&path)?;
        let mut buf = ATTRS.to_le_bytes().to_vec();
        buf.extend_from_slice(data);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        // efivarfs takes a variable in one write.
        f.write_all(&buf)
            .with_context(|| format!("write UEFI variable {name}"))
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        self.mutable(&path)?;
        fs::remove_file(&path).with_context(|| format!("delete UEFI variable {name}"))
    }

    /// The Boot#### numbers present.
    pub fn boot_entries(&self) -> Result<Vec<u16>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).with_context(|| format!("read {}", self.dir.display()))? {
            let name = e?.file_name().to_string_lossy().into_owned();
            if let Some(hex) = name
                .strip_prefix("Boot")
                .and_then(|n| n.strip_suffix(&format!("-{GLOBAL}")))
            {
                if hex.len() == 4 {
                    if let Ok(n) = u16::from_str_radix(hex, 16) {
                        out.push(n);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn boot_order(&self) -> Vec<u16> {
        self.get("BootOrder")
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    }
}

/// What `install` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Installed {
    pub entry: String,
    pub removed_duplicates: Vec<String>,
    pub boot_order: Vec<String>,
}

/// Create or update a Boot#### for `loader`, remove other entries pointing at the same
/// partition and file, and put it first in BootOrder.
pub fn install(vars: &Vars, description: &str, loader: &LoaderPath) -> Result<Installed> {
    let taken = vars.boot_entries()?;
    let mut same = Vec::new();
    for &n in &taken {
        let Some(data) = vars.get(&format!("Boot{n:04X}")) else {
            continue;
        };
        if let Some((guid, path)) = parse_option(&data) {
            if guid == loader.guid_le && path.eq_ignore_ascii_case(&loader.path) {
                same.push(n);
            }
        }
    }
    let number = match same.first() {
        Some(&n) => n,
        None => (0..=0xffffu16)
            .find(|n| !taken.contains(n))
            .context("no free Boot#### number")?,
    };
    vars.set(
        &format!("Boot{number:04X}"),
        &load_option(description, loader),
    )?;
    let mut removed = Vec::new();
    for &n in same.iter().filter(|&&n| n != number) {
        vars.remove(&format!("Boot{n:04X}"))?;
        removed.push(format!("Boot{n:04X}"));
    }
    let mut order: Vec<u16> = vars
        .boot_order()
        .into_iter()
        .filter(|n| *n != number && !same.contains(n))
        .collect();
    order.insert(0, number);
    let bytes: Vec<u8> = order.iter().flat_map(|n| n.to_le_bytes()).collect();
    vars.set("BootOrder", &bytes)?;
    Ok(Installed {
        entry: format!("Boot{number:04X}"),
        removed_duplicates: removed,
        boot_order: order.iter().map(|n| format!("Boot{n:04X}")).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_option_round_trips() {
        let l = LoaderPath {
            partition: 1,
            start_lba: 2048,
            size_lba: 131072,
            guid_le: *b"0123456789abcdef",
            path: "\\EFI\\systemd\\systemd-bootx64.efi".into(),
        };
        let o = load_option("Linux", &l);
        // attributes, path list length, "Linux\0" in UTF-16, then the hard-drive node (42),
        // the file node (4 + 33 UTF-16 units with the NUL) and the end node (4).
        assert_eq!(l.path.len(), 32);
        assert_eq!(&o[..4], &1u32.to_le_bytes());
        assert_eq!(
            u16::from_le_bytes([o[4], o[5]]) as usize,
            42 + 4 + 2 * 33 + 4
        );
        assert_eq!(o.len(), 6 + 12 + 42 + 4 + 2 * 33 + 4);
        assert_eq!(&o[18..22], &[4, 1, 42, 0]);
        assert_eq!(&o[22..26], &1u32.to_le_bytes());
        assert_eq!(&o[26..34], &2048u64.to_le_bytes());
        let (g, p) = parse_option(&o).unwrap();
        assert_eq!(&g, b"0123456789abcdef");
        assert_eq!(p, l.path);
    }
}
