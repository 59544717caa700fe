//! The rescue initramfs: a newc cpio, zstd-compressed, holding this very binary as /init,
//! the kernel modules listed in initramfs/modules.txt with their dependencies (resolved
//! from the kernel's modules.dep), and the load order for the rescue to follow.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::cpio::CpioWriter;

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

fn norm(name: &str) -> String {
    name.replace('-', "_")
}

fn stem(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let base = file.split(".ko").next().unwrap_or(file);
    norm(base)
}

/// The modules named in `list` (one per line, '#' comments), with their dependencies, as
/// paths relative to the modules directory in load order (dependencies first); and the
/// names not found as modules, with why.
pub fn resolve(kernel: &Kernel, list: &str) -> Result<(Vec<String>, Vec<String>)> {
    let dep_text = fs::read_to_string(kernel.modules.join("modules.dep"))
        .with_context(|| format!("read {}/modules.dep", kernel.modules.display()))?;
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in dep_text.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let d = rest.split_whitespace().map(str::to_string).collect();
        deps.insert(stem(path), (path.to_string(), d));
    }
    let builtin: HashSet<String> = fs::read_to_string(kernel.modules.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(stem)
        .collect();
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    let mut skipped = Vec::new();
    fn visit(
        path: &str,
        by_path: &BTreeMap<String, (String, Vec<String>)>,
        seen: &mut HashSet<String>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(path.to_string()) {
            return;
        }
        if let Some((_, d)) = by_path.get(&stem(path)) {
            for dep in d {
                visit(dep, by_path, seen, order);
            }
        }
        order.push(path.to_string());
    }
    for name in list
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
    {
        match deps.get(&norm(name)) {
            Some((path, _)) => visit(&path.clone(), &deps, &mut seen, &mut order),
            None if builtin.contains(&norm(name)) => {
                skipped.push(format!("{name}: built into the kernel"))
            }
            None => skipped.push(format!("{name}: not in this kernel")),
        }
    }
    Ok((order, skipped))
}

#[derive(Debug, Serialize)]
pub struct Built {
    pub path: String,
    pub kernel_version: String,
    pub modules: usize,
    pub skipped_modules: Vec<String>,
    pub uncompressed_bytes: u64,
    pub bytes: u64,
}

/// Where a rescue finds the public keys baked into it (`mkimage --trust`).
pub const TRUSTED_KEYS: &str = "etc/lifeboat/trusted.pub";

/// Write the initramfs to `out`, with `init` (normally this running binary) as /init and
/// the `trusted` keys, if any, as the only ones its restores accept.
pub fn build(
    kernel: &Kernel,
    init: &Path,
    out: &Path,
    trusted: &[crate::crypt::signing::PublicKey],
) -> Result<Built> {
    let (order, skipped) = resolve(kernel, MODULE_LIST)?;
    let mut w = CpioWriter::new(Vec::with_capacity(64 << 20));
    for d in [
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
    ] {
        w.dir(d)?;
    }
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.char_dev("dev/null", 0o666, 1, 3)?;
    let exe = fs::read(init).with_context(|| format!("read {}", init.display()))?;
    w.file("init", 0o755, &exe)?;
    let base = format!("lib/modules/{}", kernel.version);
    let mut dirs = HashSet::new();
    dirs.insert(base.clone());
    w.dir(&base)?;
    for rel in &order {
        let mut parent = String::new();
        for part in rel
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, d)| d)
            .unwrap_or(&[])
        {
            parent = if parent.is_empty() {
                part.to_string()
            } else {
                format!("{parent}/{part}")
            };
            let full = format!("{base}/{parent}");
            if dirs.insert(full.clone()) {
                w.dir(&full)?;
            }
        }
        let from = kernel.modules.join(rel);
        let data = fs::read(&from).with_context(|| format!("read {}", from.display()))?;
        w.file(&format!("{base}/{rel}"), 0o644, &data)?;
    }
    let listing: String = order.iter().map(|r| format!("{base}/{r}\n")).collect();
    w.file(LOAD_ORDER, 0o644, listing.as_bytes())?;
    w.file(
        "etc/lifeboat/kernel-version",
        0o644,
        format!("{}\n", kernel.version).as_bytes(),
    )?;
    if !trusted.is_empty() {
        let keys: String = trusted
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
        modules: order.len(),
        skipped_modules: skipped,
        uncompressed_bytes: raw.len() as u64,
        bytes: packed.len() as u64,
    })
}
