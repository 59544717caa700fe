//! A disk's own health: NVMe's SMART / Health Information log page (02h), read with the
//! admin pass-through ioctl; an ATA disk's SMART RETURN STATUS, sent as ATA PASS-THROUGH
//! (16) through the SCSI layer (SG_IO, as smartctl does; libata translates it for SATA
//! and AHCI, and most USB bridges do). What cannot be read is said as unknown, never as
//! good. By hand rather than a crate: no maintained crate sends either command.

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
        if !disk.name.starts_with("sd") {
            return Health::Unknown {
                why: format!("{} disk: no SMART to read", disk.transport),
            };
        }
        return ata_smart_status(&disk.path).unwrap_or_else(|e| Health::Unknown {
            why: format!("ATA SMART: {e}"),
        });
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

/// struct sg_io_hdr of scsi/sg.h.
#[repr(C)]
struct SgIoHdr {
    interface_id: libc::c_int,
    dxfer_direction: libc::c_int,
    cmd_len: u8,
    mx_sb_len: u8,
    iovec_count: u16,
    dxfer_len: u32,
    dxferp: *mut libc::c_void,
    cmdp: *const u8,
    sbp: *mut u8,
    timeout: u32,
    flags: u32,
    pack_id: libc::c_int,
    usr_ptr: *mut libc::c_void,
    status: u8,
    masked_status: u8,
    msg_status: u8,
    sb_len_wr: u8,
    host_status: u16,
    driver_status: u16,
    resid: libc::c_int,
    duration: u32,
    info: u32,
}

const SG_IO: libc::c_ulong = 0x2285;
const SG_DXFER_NONE: libc::c_int = -1;

/// SMART RETURN STATUS through SCSI/ATA translation (ATA PASS-THROUGH (16), non-data,
/// with the ATA registers asked back): the disk's own pass or fail.
fn ata_smart_status(path: &str) -> std::io::Result<Health> {
    let f = std::fs::File::open(path)?;
    // 85h; protocol 3 (non-data); CK_COND; features DAh; LBA mid 4Fh, high C2h; B0h.
    let cdb: [u8; 16] = [
        0x85,
        3 << 1,
        0x20,
        0,
        0xda,
        0,
        0,
        0,
        0,
        0,
        0x4f,
        0,
        0xc2,
        0,
        0xb0,
        0,
    ];
    let mut sense = [0u8; 32];
    let mut hdr = SgIoHdr {
        interface_id: b'S' as libc::c_int,
        dxfer_direction: SG_DXFER_NONE,
        cmd_len: cdb.len() as u8,
        mx_sb_len: sense.len() as u8,
        iovec_count: 0,
        dxfer_len: 0,
        dxferp: std::ptr::null_mut(),
        cmdp: cdb.as_ptr(),
        sbp: sense.as_mut_ptr(),
        timeout: 5000,
        flags: 0,
        pack_id: 0,
        usr_ptr: std::ptr::null_mut(),
        status: 0,
        masked_status: 0,
        msg_status: 0,
        sb_len_wr: 0,
        host_status: 0,
        driver_status: 0,
        resid: 0,
        duration: 0,
        info: 0,
    };
    // SAFETY: hdr points at a live CDB and sense buffer of the lengths it gives.
    if unsafe { libc::ioctl(f.as_raw_fd(), SG_IO as _, &mut hdr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(judge_ata_registers(
        &sense[..usize::from(hdr.sb_len_wr).min(sense.len())],
    ))
}

/// The ATA Status Return descriptor (09h) of descriptor-format sense: LBA mid and high
/// read 4Fh/C2h when the disk passes, F4h/2Ch when a threshold is exceeded.
pub fn judge_ata_registers(sense: &[u8]) -> Health {
    let regs = match sense.first() {
        Some(0x72) if sense.get(8) == Some(&0x09) => sense.get(8 + 9).zip(sense.get(8 + 11)),
        _ => None,
    };
    match regs {
        Some((0x4f, 0xc2)) => Health::Good {
            detail: "ATA SMART: passed".into(),
        },
        Some((0xf4, 0x2c)) => Health::Failing {
            why: "ATA SMART: a threshold is exceeded".into(),
        },
        _ => Health::Unknown {
            why: "ATA SMART: no status returned (not an ATA disk, or no SCSI/ATA translation)"
                .into(),
        },
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
