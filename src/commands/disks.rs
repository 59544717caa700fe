//! `lifeboat disks`: the machine's disks as a table.

use anyhow::Result;
use serde::Serialize;

use crate::disk::detect::{list_disks, Disk};
use crate::ui::{bytes, Outcome};

#[derive(Debug, Serialize)]
pub struct Disks {
    pub disks: Vec<Disk>,
}

pub fn run() -> Result<Disks> {
    Ok(Disks {
        disks: list_disks()?,
    })
}

fn or_dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "-".into())
}

fn mounts(points: &[String]) -> String {
    if points.is_empty() {
        "-".into()
    } else {
        points.join(",")
    }
}

impl Outcome for Disks {
    fn print(&self) {
        crate::outln!(
            "{:<10} {:>10} {:>9} {:<8} {:<20} {:<20} {:<8} MOUNTED",
            "NAME",
            "SIZE",
            "SECTORS",
            "TRAN",
            "MODEL",
            "SERIAL",
            "FSTYPE"
        );
        for d in &self.disks {
            crate::outln!(
                "{:<10} {:>10} {:>9} {:<8} {:<20} {:<20} {:<8} {}",
                d.name,
                bytes(d.size),
                format!("{}/{}", d.logical_sector_size, d.physical_sector_size),
                d.transport,
                or_dash(&d.model),
                or_dash(&d.serial),
                or_dash(&d.fstype),
                mounts(&d.mountpoints)
            );
            for p in &d.partitions {
                crate::outln!(
                    "  {:<8} {:>10} {:>9} {:<8} {:<20} {:<20} {:<8} {}",
                    p.name,
                    bytes(p.size),
                    "",
                    "",
                    "",
                    "",
                    or_dash(&p.fstype),
                    mounts(&p.mountpoints)
                );
            }
        }
    }
}
