//! `lifeboat diagnose`: what the machine is, before anything is written to it (seed 000's
//! "gather fault information"): its firmware (BIOS or UEFI, Secure Boot on or off), CPU
//! and memory, every PCI device with the driver bound to it (and, for a disk controller or
//! a NIC with none, its vendor:device id named as the reason its disks or network are
//! missing), the disks with model, serial, size, partition table, filesystems and health
//! (NVMe's SMART log, read by an ioctl), the NICs with link and addresses, and the kernel
//! log. In the rescue it runs before every restore and lands in its report.

pub mod health;
mod pci;

use std::fs;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::ui::{bytes, Outcome};
pub use health::Health;
pub use pci::PciDevice;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Diagnosis {
    pub firmware: Firmware,
    pub cpu: Cpu,
    pub memory_bytes: u64,
    pub pci: Vec<PciDevice>,
    /// Each controller the machine has that no driver drives, and what that costs.
    pub problems: Vec<String>,
    pub disks: Vec<DiskInfo>,
    pub nics: Vec<Nic>,
    /// The end of the kernel's log (at most 64 KiB).
    pub kernel_log: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Firmware {
    /// "uefi" or "bios".
    pub mode: String,
    /// Under UEFI: whether Secure Boot is on (None when it cannot be read).
    pub secure_boot: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cpu {
    pub model: String,
    pub count: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskInfo {
    pub path: String,
    pub size: u64,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub transport: String,
    /// "gpt", "msdos" or none.
    pub table: Option<String>,
    /// Filesystems (or volume members) found on it and on its partitions.
    pub filesystems: Vec<String>,
    pub health: Health,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub mac: String,
    pub driver: Option<String>,
    /// Carrier: a cable, and a link partner.
    pub link: bool,
    pub addresses: Vec<String>,
}

/// Everything above, read now.
pub fn run() -> Result<Diagnosis> {
    let pci = pci::devices();
    let problems = pci.iter().filter_map(PciDevice::problem).collect();
    Ok(Diagnosis {
        firmware: firmware(),
        cpu: cpu(),
        memory_bytes: memory(),
        pci,
        problems,
        disks: disks()?,
        nics: nics(),
        kernel_log: kernel_log(),
    })
}

fn firmware() -> Firmware {
    if !Path::new("/sys/firmware/efi").exists() {
        return Firmware {
            mode: "bios".into(),
            secure_boot: None,
        };
    }
    // SecureBoot-8be4df61-...: four bytes of attributes, then 1 when on.
    let var = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";
    Firmware {
        mode: "uefi".into(),
        secure_boot: fs::read(var).ok().and_then(|v| v.get(4).map(|b| *b == 1)),
    }
}

fn cpu() -> Cpu {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Cpu {
        model: info
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_string())
            .unwrap_or_default(),
        count: info.lines().filter(|l| l.starts_with("processor")).count(),
    }
}

fn memory() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn disks() -> Result<Vec<DiskInfo>> {
    Ok(crate::disk::detect::list_disks()?
        .into_iter()
        .map(|d| {
            let table = partition_table(Path::new(&d.path));
            let mut filesystems: Vec<String> = d.fstype.iter().map(|f| f.to_string()).collect();
            for p in &d.partitions {
                if let Some(f) = &p.fstype {
                    filesystems.push(format!("{}: {f}", p.name));
                }
            }
            DiskInfo {
                health: health::read(&d),
                path: d.path,
                size: d.size,
                model: d.model,
                serial: d.serial,
                transport: d.transport,
                table,
                filesystems,
            }
        })
        .collect())
}

/// "gpt" when a GPT header sits at LBA 1 (512- or 4096-byte sectors), "msdos" when the
/// first sector has the boot signature and a partition entry; read-only.
fn partition_table(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(path).ok()?;
    let mut b = [0u8; 4104];
    f.read_exact_at(&mut b, 0).ok()?;
    if &b[512..520] == b"EFI PART" || &b[4096..4104] == b"EFI PART" {
        return Some("gpt".into());
    }
    let typed = (0..4).any(|i| b[0x1be + 16 * i + 4] != 0);
    (b[510] == 0x55 && b[511] == 0xaa && typed).then(|| "msdos".into())
}

fn nics() -> Vec<Nic> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/sys/class/net") else {
        return out;
    };
    let addrs: Vec<(String, String)> = nix::ifaddrs::getifaddrs()
        .map(|i| {
            i.filter_map(|a| {
                let addr = a.address?;
                let ip = addr
                    .as_sockaddr_in()
                    .map(|s| s.ip().to_string())
                    .or_else(|| addr.as_sockaddr_in6().map(|s| s.ip().to_string()))?;
                Some((a.interface_name, ip))
            })
            .collect()
        })
        .unwrap_or_default();
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "lo" {
            continue;
        }
        let p = e.path();
        let read = |f: &str| fs::read_to_string(p.join(f)).map(|s| s.trim().to_string());
        out.push(Nic {
            mac: read("address").unwrap_or_default(),
            driver: fs::read_link(p.join("device/driver"))
                .ok()
                .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned())),
            link: read("carrier").is_ok_and(|c| c == "1"),
            addresses: addrs
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, a)| a.clone())
                .collect(),
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The kernel's log buffer, its last 64 KiB (klogctl's READ_ALL).
fn kernel_log() -> String {
    const MAX: usize = 64 << 10;
    let mut buf = vec![0u8; 1 << 20];
    // SAFETY: the buffer is valid for its length; READ_ALL (3) only writes into it.
    let n = unsafe { libc::klogctl(3, buf.as_mut_ptr().cast(), buf.len() as libc::c_int) };
    if n <= 0 {
        return String::new();
    }
    let n = n as usize;
    let start = n.saturating_sub(MAX);
    redact(&String::from_utf8_lossy(&buf[start..n]))
}

/// The log with the value of every secret-bearing word hidden: the kernel logs its
/// command line, which may carry `lifeboat.s3-secret=` or `lifeboat.token=`.
pub fn redact(log: &str) -> String {
    const SECRET: &[&str] = &["secret=", "token=", "password=", "passphrase="];
    log.lines()
        .map(|line| {
            line.split(' ')
                .map(
                    |w| match SECRET.iter().find_map(|k| w.find(k).map(|at| at + k.len())) {
                        Some(end) if end < w.len() => format!("{}(hidden)", &w[..end]),
                        _ => w.to_string(),
                    },
                )
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Diagnosis {
    /// The readable summary, one line each.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![
            format!(
                "firmware  {}{}",
                self.firmware.mode,
                match self.firmware.secure_boot {
                    Some(true) => ", Secure Boot on",
                    Some(false) => ", Secure Boot off",
                    None => "",
                }
            ),
            format!(
                "cpu       {} x {}; memory {}",
                self.cpu.count,
                self.cpu.model,
                bytes(self.memory_bytes)
            ),
        ];
        for d in self.pci.iter().filter(|d| d.is_controller()) {
            out.push(format!(
                "pci       {} {} {}: {}",
                d.slot,
                d.id(),
                d.class_name(),
                d.driver.as_deref().unwrap_or("NO DRIVER")
            ));
        }
        for d in &self.disks {
            out.push(format!(
                "disk      {} {} {} {} ({}) table {}; {}; health {}",
                d.path,
                bytes(d.size),
                d.model.as_deref().unwrap_or("-"),
                d.serial.as_deref().unwrap_or("-"),
                d.transport,
                d.table.as_deref().unwrap_or("none"),
                match d.filesystems.is_empty() {
                    true => "no filesystem".to_string(),
                    false => d.filesystems.join(", "),
                },
                d.health
            ));
        }
        if self.disks.is_empty() {
            out.push("disk      none visible".into());
        }
        for n in &self.nics {
            out.push(format!(
                "nic       {} {} {} link {} {}",
                n.name,
                n.mac,
                n.driver.as_deref().unwrap_or("-"),
                if n.link { "up" } else { "down" },
                n.addresses.join(" ")
            ));
        }
        out.extend(self.problems.iter().map(|p| format!("PROBLEM   {p}")));
        out
    }
}

impl Outcome for Diagnosis {
    fn print(&self) {
        for l in self.lines() {
            crate::outln!("{l}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_on_the_logged_command_line_are_hidden() {
        let log = "Kernel command line: lifeboat.s3-key=GK1 lifeboat.s3-secret=abc123 lifeboat.token=t0k quiet";
        let r = super::redact(log);
        assert!(!r.contains("abc123") && !r.contains("t0k"), "{r}");
        assert!(r.contains("lifeboat.s3-secret=(hidden)") && r.contains("lifeboat.s3-key=GK1"));
    }
}
