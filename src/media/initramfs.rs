//! The rescue initramfs: a newc cpio, zstd-compressed, holding this very binary as /init,
//! the kernel modules `modules` selects from initramfs/modules.txt with the cut-down
//! modules.dep and modules.alias the rescue loads hardware drivers by, the load order of
//! the modules loaded whatever the hardware, and the firmware files asked for.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::cpio::CpioWriter;
use super::modules;

/// The module list, kept as data under initramfs/.
pub const MODULE_LIST: &str = include_str!("../../initramfs/modules.txt");
/// Where the rescue finds the load order inside the initramfs.
pub const LOAD_ORDER: &str = "etc/lifeboat/modules";

/// A stock kernel unpacked by `lifeboat fetch-kernel`: DIR/vmlinuz, DIR/lib/modules/VERSION.
pub struct Kernel {
    pub dir: PathBuf,
    pub version: String,
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
}

impl Kernel {
    pub fn open(dir: &Path) -> Result<Kernel> {
        let version = match fs::read_to_string(dir.join("version")) {
            Ok(v) => v.trim().to_string(),
            Err(_) => {
                let mut found: Vec<String> = fs::read_dir(dir.join("lib/modules"))
                    .with_context(|| {
                        format!(
                            "no kernel in {} (`lifeboat fetch-kernel` gets one, or give --kernel DIR)",
                            dir.display()
                        )
                    })?
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect();
                found.sort();
                found
                    .pop()
                    .with_context(|| format!("no modules under {}/lib/modules", dir.display()))?
            }
        };
        let vmlinuz = dir.join("vmlinuz");
        if !vmlinuz.is_file() {
            bail!("no kernel image at {}", vmlinuz.display());
        }
        let modules = dir.join("lib/modules").join(&version);
        if !modules.join("modules.dep").is_file() {
            bail!("{}/modules.dep is missing (run depmod)", modules.display());
        }
        Ok(Kernel {
            dir: dir.to_path_buf(),
            version,
            vmlinuz,
            modules,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct Built {
    pub path: String,
    pub kernel_version: String,
    /// Modules included (drivers and their dependencies, filesystems, ...).
    pub modules: usize,
    /// Of which loaded at start whatever the hardware.
    pub modules_always: usize,
    /// Device ids (modules.alias lines) the included drivers answer.
    pub aliases: usize,
    pub skipped_modules: Vec<String>,
    /// Firmware files included (`mkimage --firmware`), and the names the included
    /// modules ask for that the folder did not have.
    pub firmware_files: usize,
    pub firmware_missing: usize,
    pub uncompressed_bytes: u64,
    pub bytes: u64,
}

/// Where a rescue finds the public keys baked into it (`mkimage --trust`).
pub const TRUSTED_KEYS: &str = "etc/lifeboat/trusted.pub";

/// The folders every rescue has.
const TOP_DIRS: &[&str] = &[
    "dev",
    "proc",
    "sys",
    "run",
    "tmp",
    "mnt",
    "etc",
    "etc/lifeboat",
    "lib",
    "lib/modules",
];

/// What the initramfs is made of.
pub struct Contents<'a> {
    pub kernel: &'a Kernel,
    /// /init: normally this running binary.
    pub init: &'a Path,
    /// The only keys its restores accept, if any.
    pub trusted: &'a [crate::crypt::signing::PublicKey],
    /// A folder of firmware files (as /lib/firmware) to take the modules' from.
    pub firmware: Option<&'a Path>,
    /// Modules left out by name.
    pub omit: &'a [String],
}

/// Write the initramfs to `out`.
pub fn build(c: &Contents, out: &Path) -> Result<Built> {
    let kernel = c.kernel;
    let deps = modules::Deps::read(&kernel.modules)?;
    let chosen = modules::select(&deps, &modules::List::parse(MODULE_LIST)?, c.omit);
    let (dep_index, alias_index) = modules::cut_indexes(&kernel.modules, &chosen.all)?;
    let firmware = match c.firmware {
        Some(dir) => Some(modules::firmware(&kernel.modules, &chosen.all, dir)?),
        None => None,
    };
    let mut w = CpioWriter::new(Vec::with_capacity(128 << 20));
    for d in TOP_DIRS {
        w.dir(d)?;
    }
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.char_dev("dev/null", 0o666, 1, 3)?;
    let exe = fs::read(c.init).with_context(|| format!("read {}", c.init.display()))?;
    w.file("init", 0o755, &exe)?;
    let base = format!("lib/modules/{}", kernel.version);
    let mut dirs: HashSet<String> = TOP_DIRS.iter().map(|d| d.to_string()).collect();
    dirs.insert(base.clone());
    w.dir(&base)?;
    for rel in &chosen.all {
        let from = kernel.modules.join(rel);
        let data = fs::read(&from).with_context(|| format!("read {}", from.display()))?;
        put_file(&mut w, &mut dirs, &format!("{base}/{rel}"), &data)?;
    }
    w.file(&format!("{base}/modules.dep"), 0o644, dep_index.as_bytes())?;
    w.file(
        &format!("{base}/modules.alias"),
        0o644,
        alias_index.as_bytes(),
    )?;
    let listing: String = chosen
        .always
        .iter()
        .map(|r| format!("{base}/{r}\n"))
        .collect();
    w.file(LOAD_ORDER, 0o644, listing.as_bytes())?;
    for (name, file) in firmware.iter().flat_map(|f| &f.found) {
        let data = fs::read(file).with_context(|| format!("read {}", file.display()))?;
        put_file(&mut w, &mut dirs, &format!("lib/firmware/{name}"), &data)?;
    }
    w.file(
        "etc/lifeboat/kernel-version",
        0o644,
        format!("{}\n", kernel.version).as_bytes(),
    )?;
    if !c.trusted.is_empty() {
        let keys: String = c
            .trusted
            .iter()
            .map(|k| format!("# key {}\n{k}\n", k.id()))
            .collect();
        w.file(TRUSTED_KEYS, 0o644, keys.as_bytes())?;
    }
    let raw = w.finish()?;
    let packed = zstd::bulk::compress(&raw, 9).context("compress the initramfs")?;
    crate::repo::atomic::write_file(out, &packed)
        .with_context(|| format!("write {}", out.display()))?;
    Ok(Built {
        path: out.display().to_string(),
        kernel_version: kernel.version.clone(),
        modules: chosen.all.len(),
        modules_always: chosen.always.len(),
        aliases: alias_index.lines().count(),
        skipped_modules: chosen.skipped,
        firmware_files: firmware.as_ref().map_or(0, |f| f.found.len()),
        firmware_missing: firmware.as_ref().map_or(0, |f| f.missing.len()),
        uncompressed_bytes: raw.len() as u64,
        bytes: packed.len() as u64,
    })
}

/// A file at `path` in the archive, after the folders leading to it (each once).
fn put_file(
    w: &mut CpioWriter<Vec<u8>>,
    dirs: &mut HashSet<String>,
    path: &str,
    data: &[u8],
) -> Result<()> {
    let mut parent = String::new();
    let parts: Vec<&str> = path.split('/').collect();
    for part in parts.split_last().map(|(_, d)| d).unwrap_or(&[]) {
        parent = match parent.is_empty() {
            true => part.to_string(),
            false => format!("{parent}/{part}"),
        };
        if dirs.insert(parent.clone()) {
            w.dir(&parent)?;
        }
    }
    w.file(path, 0o644, data)?;
    Ok(())
}
