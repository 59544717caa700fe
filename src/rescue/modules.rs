//! Loading the initramfs's kernel modules: first those loaded whatever the machine (in the
//! order mkimage wrote, each after its dependencies), then the drivers the machine's
//! devices ask for: each device's modalias under /sys/bus is matched against the
//! initramfs's modules.alias, as udev does, and the modules it names are loaded with
//! their dependencies (from modules.dep); again while new buses bring new devices.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::{self, File};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::kmod::{finit_module, ModuleInitFlags};
use serde::Serialize;

use crate::media::initramfs::LOAD_ORDER;
use crate::media::modules::stem;

/// What was loaded, for what, and what failed.
#[derive(Debug, Default, Clone, Serialize, serde::Deserialize)]
pub struct Loaded {
    /// Modules loaded at start whatever the hardware.
    pub always: usize,
    /// Drivers loaded because a device asked for them: module, and the devices.
    pub drivers: BTreeMap<String, Vec<String>>,
    /// Modules that would not load, with why.
    pub failed: Vec<String>,
    /// Modules that found nothing of theirs here (ENODEV: efivarfs on BIOS firmware).
    #[serde(default)]
    pub not_needed: Vec<String>,
}

/// Load every [always] module, then the drivers of the devices present.
pub fn load_all() -> Result<Loaded> {
    let mut loaded = Loaded::default();
    let list = fs::read_to_string(format!("/{LOAD_ORDER}"))
        .with_context(|| format!("read /{LOAD_ORDER}"))?;
    for path in list.lines().filter(|l| !l.is_empty()) {
        match insert(Path::new(&format!("/{path}"))) {
            Ok(true) => loaded.always += 1,
            Ok(false) => loaded.not_needed.push(stem(path)),
            Err(e) => loaded.failed.push(e),
        }
    }
    let base = Path::new("/lib/modules").join(kernel_version());
    let index = Index::read(&base)?;
    load_for_devices(&index, &base, &mut loaded);
    Ok(loaded)
}

fn kernel_version() -> String {
    fs::read_to_string("/etc/lifeboat/kernel-version")
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// Rounds of: read every device's modalias, load what matches and is not loaded yet. A
/// round that loads nothing new ends it (a bus driver such as a USB host controller or
/// Hyper-V's VMBus brings devices of its own, found by the next round).
fn load_for_devices(index: &Index, base: &Path, loaded: &mut Loaded) {
    let mut done: BTreeSet<String> = BTreeSet::new();
    for _round in 0..6 {
        let mut new = 0;
        for (device, alias) in device_aliases() {
            for module in index.matching(&alias) {
                let entry = loaded.drivers.entry(module.clone()).or_default();
                if !entry.contains(&device) {
                    entry.push(device.clone());
                }
                if !done.insert(module.clone()) {
                    continue;
                }
                new += 1;
                for path in index.with_deps(&module) {
                    match insert(&base.join(&path)) {
                        Ok(true) => {}
                        Ok(false) => loaded.not_needed.push(stem(&path)),
                        Err(e) => loaded.failed.push(e),
                    }
                }
            }
        }
        if new == 0 {
            break;
        }
        // Let new devices appear (USB enumeration, VMBus offers).
        std::thread::sleep(Duration::from_millis(1500));
    }
}

/// finit_module of one file: loaded (or already), or false when it found nothing of its
/// own here (ENODEV).
fn insert(path: &Path) -> std::result::Result<bool, String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    match finit_module(&f, &CString::default(), ModuleInitFlags::empty()) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(true),
        Err(nix::errno::Errno::ENODEV) => Ok(false),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Every device under /sys/bus/*/devices with a modalias: (bus/device, modalias).
pub fn device_aliases() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(buses) = fs::read_dir("/sys/bus") else {
        return out;
    };
    for bus in buses.flatten() {
        let Ok(devices) = fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for d in devices.flatten() {
            if let Ok(alias) = fs::read_to_string(d.path().join("modalias")) {
                let alias = alias.trim();
                if !alias.is_empty() {
                    out.push((
                        format!(
                            "{}/{}",
                            bus.file_name().to_string_lossy(),
                            d.file_name().to_string_lossy()
                        ),
                        alias.to_string(),
                    ));
                }
            }
        }
    }
    out.sort();
    out
}

/// The initramfs's modules.alias (patterns to module names) and modules.dep.
pub struct Index {
    aliases: Vec<(glob::Pattern, String)>,
    deps: BTreeMap<String, (String, Vec<String>)>,
}

impl Index {
    pub fn read(base: &Path) -> Result<Index> {
        let read = |f: &str| {
            fs::read_to_string(base.join(f)).with_context(|| format!("read {}/{f}", base.display()))
        };
        Ok(Index::parse(&read("modules.alias")?, &read("modules.dep")?))
    }

    pub fn parse(alias_text: &str, dep_text: &str) -> Index {
        let aliases = alias_text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                match (w.next(), w.next(), w.next()) {
                    (Some("alias"), Some(p), Some(m)) => {
                        Some((glob::Pattern::new(p).ok()?, m.replace('-', "_")))
                    }
                    _ => None,
                }
            })
            .collect();
        let deps = dep_text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(p, d)| {
                (
                    stem(p),
                    (
                        p.to_string(),
                        d.split_whitespace().map(str::to_string).collect(),
                    ),
                )
            })
            .collect();
        Index { aliases, deps }
    }

    /// The modules whose aliases match a device's modalias (each once).
    pub fn matching(&self, modalias: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .aliases
            .iter()
            .filter(|(p, _)| p.matches(modalias))
            .map(|(_, m)| m.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// A module's file after its dependencies' files (paths under the modules folder).
    pub fn with_deps(&self, module: &str) -> Vec<String> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        self.visit(module, &mut seen, &mut order);
        order
    }

    fn visit(&self, name: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(name.to_string()) {
            return;
        }
        if let Some((path, deps)) = self.deps.get(name) {
            for d in deps {
                self.visit(&stem(d), seen, order);
            }
            order.push(path.clone());
        }
    }

    /// Whether any included driver answers a modalias.
    pub fn has_driver_for(&self, modalias: &str) -> bool {
        self.aliases.iter().any(|(p, _)| p.matches(modalias))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_matched_as_modprobe_would_and_loads_after_its_dependencies() {
        let index = Index::parse(
            "alias pci:v00001000d0000005Dsv*sd*bc*sc*i* megaraid_sas\n\
             alias pci:v000015ADd000007B0sv*sd*bc*sc*i* vmxnet3\n\
             alias scsi:t-0x00* sd_mod\n",
            "kernel/drivers/scsi/megaraid/megaraid_sas.ko: kernel/drivers/scsi/scsi_mod.ko\n\
             kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko\n\
             kernel/drivers/scsi/scsi_common.ko:\n",
        );
        let perc = "pci:v00001000d0000005Dsv00001028sd00001F4Dbc01sc04i00";
        assert_eq!(index.matching(perc), vec!["megaraid_sas".to_string()]);
        assert!(index
            .matching("pci:v00001000d000010E2sv0sd0bc01sc04i00")
            .is_empty());
        assert_eq!(
            index.with_deps("megaraid_sas"),
            vec![
                "kernel/drivers/scsi/scsi_common.ko",
                "kernel/drivers/scsi/scsi_mod.ko",
                "kernel/drivers/scsi/megaraid/megaraid_sas.ko"
            ]
        );
    }
}
