//! `lifeboat fetch-kernel`: a stock Debian kernel (the newest linux-image-*-amd64 that
//! linux-image-amd64 depends on, signed for Secure Boot by Debian), busybox-static and
//! Debian's boot chain (shim signed by the Microsoft UEFI CA, GRUB signed by Debian, and
//! GRUB for BIOS) unpacked into a folder, without installing anything on the host
//! (`apt-get download`, then `dpkg-deb -x`; module dependencies from `depmod`; the BIOS
//! GRUB images made by the host's `grub-mkimage` from the fetched modules). What `mkimage`
//! and `drill` build the rescue around; one with only the binary needs no source tree.
//! Nothing is done when the folder holds a complete kernel already; a new one is
//! assembled beside it and renamed into place.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::ui::{print_table, Outcome};

#[derive(Debug, Clone, Args)]
pub struct FetchKernelArgs {
    /// Where to unpack it (default: the folder mkimage and drill look in when no
    /// --kernel is given: $XDG_CACHE_HOME/lifeboat/kernel or ~/.cache/lifeboat/kernel).
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct Fetched {
    pub dir: PathBuf,
    pub version: String,
    /// False when the folder held it already.
    pub fetched: bool,
}

impl Outcome for Fetched {
    fn print(&self) {
        print_table(&[
            ("kernel", self.version.clone()),
            ("in", self.dir.display().to_string()),
            (
                "fetched",
                match self.fetched {
                    true => "now".into(),
                    false => "no: it was there already".to_string(),
                },
            ),
        ]);
    }
}

/// The folder a kernel is looked for in when no `--kernel` is given: the source tree's
/// `.cache/kernel` when there is one (scripts/fetch-kernel), else the user's cache.
pub fn default_dir() -> PathBuf {
    let tree = PathBuf::from(".cache/kernel");
    if tree.join("version").is_file() {
        return tree;
    }
    user_cache()
}

/// `$XDG_CACHE_HOME/lifeboat/kernel`, or `~/.cache/lifeboat/kernel`.
fn user_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("lifeboat/kernel")
}

/// The version of a complete kernel in `dir`, if it holds one.
pub fn complete(dir: &Path) -> Option<String> {
    let v = std::fs::read_to_string(dir.join("version")).ok()?;
    let v = v.trim().to_string();
    let whole = dir.join("vmlinuz").is_file()
        && dir.join("busybox").is_file()
        && super::chain::BootFiles::in_cache(dir).is_complete()
        && dir
            .join("lib/modules")
            .join(&v)
            .join("modules.dep")
            .is_file();
    whole.then_some(v)
}

pub fn run(args: &FetchKernelArgs) -> Result<Fetched> {
    let dir = args.dir.clone().unwrap_or_else(user_cache);
    if let Some(version) = complete(&dir) {
        return Ok(Fetched {
            dir,
            version,
            fetched: false,
        });
    }
    for tool in ["apt-cache", "apt-get", "dpkg-deb", "depmod"] {
        if crate::cmd::which(tool).is_none() {
            bail!("fetch-kernel needs {tool} (a Debian or Ubuntu system: apt, dpkg, kmod)");
        }
    }
    if crate::cmd::which("grub-mkimage").is_none() {
        bail!("fetch-kernel needs grub-mkimage to make GRUB's BIOS images (apt-get install grub-common)");
    }
    let package = kernel_package()?;
    let version = package.trim_start_matches("linux-image-").to_string();
    let work = Scratch(dir.with_extension(format!("fetch-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&work.0);
    std::fs::create_dir_all(work.0.join("debs"))
        .with_context(|| format!("create {}", work.0.display()))?;
    download(
        &work.0.join("debs"),
        &[
            &package,
            "busybox-static",
            SHIM,
            SHIM_HELPERS,
            GRUB_EFI,
            GRUB_BIOS,
        ],
    )?;
    let root = work.0.join("root");
    for deb in std::fs::read_dir(work.0.join("debs")).context("list the downloads")? {
        let deb = deb.context("list the downloads")?.path();
        crate::cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    }
    let new = work.0.join("kernel");
    assemble(&root, &new, &version)?;
    super::chain::assemble(&root, &new)?;
    replace(&new, &dir)?;
    Ok(Fetched {
        dir,
        version,
        fetched: true,
    })
}

/// Debian's shim, signed by the Microsoft UEFI CA (shimx64.efi).
const SHIM: &str = "shim-signed";
/// Its MokManager and fallback (mmx64.efi, fbx64.efi), signed the same way.
const SHIM_HELPERS: &str = "shim-helpers-amd64-signed";
/// GRUB for UEFI, signed by Debian (grubx64.efi), which shim trusts.
const GRUB_EFI: &str = "grub-efi-amd64-signed";
/// GRUB's modules for BIOS (i386-pc), from which the BIOS boot images are made.
const GRUB_BIOS: &str = "grub-pc-bin";

/// The kernel package linux-image-amd64 depends on (the package lists read again once
/// when they do not know it).
fn kernel_package() -> Result<String> {
    let find = || -> Result<Option<String>> {
        let out = crate::cmd::run(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))
            .unwrap_or_default();
        Ok(out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| {
                p.starts_with("linux-image-")
                    && p.as_bytes().get(12).is_some_and(u8::is_ascii_digit)
            })
            .map(str::to_string))
    };
    if let Some(p) = find()? {
        return Ok(p);
    }
    crate::cmd::run(Command::new("apt-get").args(["update", "-qq"]))
        .context("read the package lists (apt-get update needs root)")?;
    find()?.context("linux-image-amd64 depends on no kernel package here (not Debian amd64?)")
}

/// `apt-get download` into `dir`, the package lists read again once on failure.
fn download(dir: &Path, packages: &[&str]) -> Result<()> {
    let get = || {
        crate::cmd::run(
            Command::new("apt-get")
                .arg("download")
                .args(packages)
                .current_dir(dir),
        )
    };
    if get().is_ok() {
        return Ok(());
    }
    crate::cmd::run(Command::new("apt-get").args(["update", "-qq"]))
        .context("read the package lists (apt-get update needs root)")?;
    get().map(|_| ())
}

/// `new`: vmlinuz, busybox, lib/modules/VERSION with its depmod files, and `version`.
fn assemble(root: &Path, new: &Path, version: &str) -> Result<()> {
    let modules = new.join("lib/modules");
    std::fs::create_dir_all(&modules).with_context(|| format!("create {}", modules.display()))?;
    let copy = |from: PathBuf, to: PathBuf| {
        std::fs::copy(&from, &to)
            .with_context(|| format!("copy {} to {}", from.display(), to.display()))
    };
    copy(
        root.join(format!("boot/vmlinuz-{version}")),
        new.join("vmlinuz"),
    )?;
    let busybox = [root.join("bin/busybox"), root.join("usr/bin/busybox")]
        .into_iter()
        .find(|p| p.is_file())
        .context("busybox-static holds no busybox")?;
    copy(busybox, new.join("busybox"))?;
    let from = [root.join("lib/modules"), root.join("usr/lib/modules")]
        .into_iter()
        .map(|d| d.join(version))
        .find(|d| d.is_dir())
        .with_context(|| format!("the kernel package holds no modules for {version}"))?;
    crate::cmd::run(Command::new("cp").arg("-a").arg(&from).arg(&modules))?;
    crate::cmd::run(Command::new("depmod").arg("-b").arg(new).arg(version))?;
    std::fs::write(new.join("version"), format!("{version}\n")).context("write the version")?;
    Ok(())
}

/// Put `new` where `dir` is (an old one removed first).
fn replace(new: &Path, dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("remove the old {}", dir.display()))?;
    }
    std::fs::rename(new, dir).with_context(|| format!("move the kernel to {}", dir.display()))
}

/// A work folder, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
