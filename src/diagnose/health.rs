//! A disk's own health: NVMe's SMART / Health Information log page (02h), read with the
//! admin pass-through ioctl. ATA and SCSI disks are not read (their SMART needs ATA
//! pass-through through the SCSI layer, which smartctl does; the rescue carries none):
//! said as unknown, never as good.

use std::fmt;
use std::os::fd::AsRawFd;

use serde::{Deserialize, Serialize};

use crate::disk::detect::Disk;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Health {
    /// The disk says nothing is wrong.
    Good { detail: String },
    /// The disk says it is failing: a restore onto it is refused unless forced.
    Failing { why: String },
    /// Not read, and why.
    Unknown { why: String },
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Good { detail } => write!(f, "good ({detail})"),
            Health::Failing { why } => write!(f, "FAILING ({why})"),
            Health::Unknown { why } => write!(f, "unknown ({why})"),
        }
    }
}

impl Health {
    pub fn is_failing(&self) -> bool {
        matches!(self, Health::Failing { .. })
    }
}

/// struct nvme_passthru_cmd of linux/nvme_ioctl.h.
#[repr(C)]
#[derive(Default)]
struct NvmeAdminCmd {
    opcode: u8,
    flags: u8,
    rsvd1: u16,
    nsid: u32,
    cdw2: u32,
    cdw3: u32,
    metadata: u64,
    addr: u64,
    metadata_len: u32,
    data_len: u32,
    cdw10: u32,
    cdw11: u32,
    cdw12: u32,
    cdw13: u32,
    cdw14: u32,
    cdw15: u32,
    timeout_ms: u32,
    result: u32,
}

nix::ioctl_readwrite!(nvme_admin_cmd, b'N', 0x41, NvmeAdminCmd);

pub fn read(disk: &Disk) -> Health {
    if disk.transport != "nvme" && !disk.name.starts_with("nvme") {
        return Health::Unknown {
            why: format!("{} disk: SMART is not read by the rescue", disk.transport),
        };
    }
    match nvme_smart_log(&disk.path) {
        Ok(log) => judge(&log),
        Err(e) => Health::Unknown {
            why: format!("NVMe SMART log: {e}"),
        },
    }
}

fn nvme_smart_log(path: &str) -> std::io::Result<[u8; 512]> {
    let f = std::fs::File::open(path)?;
    let mut log = [0u8; 512];
    let mut cmd = NvmeAdminCmd {
        opcode: 0x02,
        nsid: 0xffff_ffff,
        addr: log.as_mut_ptr() as u64,
        data_len: log.len() as u32,
        // Log page 02h, (512 / 4) - 1 dwords.
        cdw10: (127 << 16) | 0x02,
        timeout_ms: 5000,
        ..Default::default()
    };
    // SAFETY: cmd points at a live log buffer of data_len bytes for the call's length.
    unsafe { nvme_admin_cmd(f.as_raw_fd(), &mut cmd) }.map_err(std::io::Error::from)?;
    Ok(log)
}

/// The SMART log judged: any critical warning bit is failing.
pub fn judge(log: &[u8; 512]) -> Health {
    let warning = log[0];
    let kelvin = u16::from_le_bytes([log[1], log[2]]);
    let spare = log[3];
    let used = log[5];
    let media_errors = u64::from_le_bytes(log[160..168].try_into().unwrap_or([0; 8]));
    let detail = format!(
        "NVMe: {}% used, {spare}% spare, {} C, {media_errors} media errors",
        used,
        i32::from(kelvin) - 273
    );
    if warning == 0 {
        return Health::Good { detail };
    }
    let bits = [
        (0x01, "spare capacity below its threshold"),
        (0x02, "temperature out of range"),
        (0x04, "reliability degraded"),
        (0x08, "media read-only"),
        (0x10, "volatile memory backup failed"),
        (0x20, "persistent memory region read-only"),
    ];
    let said: Vec<&str> = bits
        .iter()
        .filter(|(b, _)| warning & b != 0)
        .map(|(_, s)| *s)
        .collect();
    Health::Failing {
        why: format!(
            "NVMe critical warning {warning:#04x}: {}; {detail}",
            said.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_critical_warning_is_failing_and_none_is_good() {
        let mut log = [0u8; 512];
        log[1..3].copy_from_slice(&310u16.to_le_bytes());
        log[3] = 100;
        assert!(matches!(judge(&log), Health::Good { .. }));
        log[0] = 0x04;
        let h = judge(&log);
        assert!(
            h.is_failing() && h.to_string().contains("reliability degraded"),
            "{h}"
        );
    }
}
