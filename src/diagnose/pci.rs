//! PCI devices from sysfs: ids, class, the driver bound, and for a disk controller or NIC
//! with none, what that means.

use std::fs;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PciDevice {
    /// Domain:bus:slot.function.
    pub slot: String,
    /// In hex, as lspci and modaliases write them ("8086").
    #[serde(with = "hex")]
    pub vendor: u16,
    #[serde(with = "hex")]
    pub device: u16,
    /// Class, subclass and interface (24 bits), in hex ("010601").
    #[serde(with = "hex")]
    pub class: u32,
    pub driver: Option<String>,
}

/// Ids as hex strings in JSON: "8086", "010601".
mod hex {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, T: Into<u64> + Copy>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        // A u16 id in four digits; a 24-bit class (held in a u32) in six.
        let width = if std::mem::size_of::<T>() == 2 { 4 } else { 6 };
        let v: u64 = (*v).into();
        s.serialize_str(&format!("{v:0width$x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
        let text = String::deserialize(d)?;
        let v = u64::from_str_radix(&text, 16).map_err(D::Error::custom)?;
        T::try_from(v).map_err(|_| D::Error::custom(format!("{text} is out of range")))
    }
}

pub fn devices() -> Vec<PciDevice> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/sys/bus/pci/devices") else {
        return out;
    };
    for e in dir.flatten() {
        let p = e.path();
        let hex = |f: &str| {
            fs::read_to_string(p.join(f))
                .ok()
                .and_then(|v| u32::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())
        };
        let (Some(vendor), Some(device), Some(class)) =
            (hex("vendor"), hex("device"), hex("class"))
        else {
            continue;
        };
        out.push(PciDevice {
            slot: e.file_name().to_string_lossy().into_owned(),
            vendor: vendor as u16,
            device: device as u16,
            class,
            driver: fs::read_link(p.join("driver"))
                .ok()
                .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned())),
        });
    }
    out.sort_by(|a, b| a.slot.cmp(&b.slot));
    out
}

impl PciDevice {
    pub fn id(&self) -> String {
        format!("{:04x}:{:04x}", self.vendor, self.device)
    }

    fn base_class(&self) -> u8 {
        (self.class >> 16) as u8
    }

    /// A disk controller or a NIC: what a rescue needs a driver for.
    pub fn is_controller(&self) -> bool {
        matches!(self.base_class(), 0x01 | 0x02)
    }

    pub fn class_name(&self) -> String {
        let sub = (self.class >> 8) as u8;
        let name = match (self.base_class(), sub) {
            (0x01, 0x00) => "SCSI controller",
            (0x01, 0x01) => "IDE controller",
            (0x01, 0x04) => "RAID controller",
            (0x01, 0x06) => "SATA controller",
            (0x01, 0x07) => "SAS controller",
            (0x01, 0x08) => "NVMe controller",
            (0x01, _) => "storage controller",
            (0x02, _) => "network controller",
            (0x03, _) => "display controller",
            (0x06, _) => "bridge",
            (0x0c, 0x03) => "USB controller",
            _ => "device",
        };
        format!("{} {}", vendor_name(self.vendor), name)
    }

    /// What a controller without a driver costs.
    pub fn problem(&self) -> Option<String> {
        if self.driver.is_some() || !self.is_controller() {
            return None;
        }
        let cost = match self.base_class() {
            0x01 => "this disk controller's disks are not visible",
            _ => "this NIC cannot reach the network",
        };
        Some(format!(
            "no driver for {} {} at {}: {cost}",
            self.id(),
            self.class_name(),
            self.slot
        ))
    }
}

/// The vendors of server disk controllers and NICs (the rescue carries no pci.ids).
fn vendor_name(id: u16) -> &'static str {
    match id {
        0x1000 => "Broadcom/LSI",
        0x1028 => "Dell",
        0x103c => "HPE",
        0x9005 => "Adaptec/Microchip",
        0x11f8 => "Microchip (PMC-Sierra)",
        0x8086 => "Intel",
        0x14e4 => "Broadcom",
        0x15b3 => "Mellanox",
        0x1077 => "QLogic",
        0x10ec => "Realtek",
        0x15ad => "VMware",
        0x1af4 => "Red Hat (virtio)",
        0x1b36 => "Red Hat (QEMU)",
        0x1414 => "Microsoft",
        0x5853 => "XenSource",
        0x144d => "Samsung",
        0x1022 => "AMD",
        _ => "vendor",
    }
}
