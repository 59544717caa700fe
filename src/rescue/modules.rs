//! Loading the initramfs's kernel modules in the order mkimage wrote (each after its
//! dependencies), with finit_module.

use std::ffi::CString;
use std::fs::{self, File};

use anyhow::{Context, Result};
use nix::kmod::{finit_module, ModuleInitFlags};

use crate::media::initramfs::LOAD_ORDER;

/// Load every module; returns (loaded, failed with why). A module for absent hardware
/// loads anyway; one that fails is reported, not fatal.
pub fn load_all() -> Result<(usize, Vec<String>)> {
    let list = fs::read_to_string(format!("/{LOAD_ORDER}"))
        .with_context(|| format!("read /{LOAD_ORDER}"))?;
    let empty = CString::default();
    let mut loaded = 0;
    let mut failed = Vec::new();
    for path in list.lines().filter(|l| !l.is_empty()) {
        let path = format!("/{path}");
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                failed.push(format!("{path}: {e}"));
                continue;
            }
        };
        match finit_module(&f, &empty, ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => loaded += 1,
            Err(e) => failed.push(format!("{path}: {e}")),
        }
    }
    Ok((loaded, failed))
}
