//! Which kernel modules and firmware files go into the rescue: the list in
//! initramfs/modules.txt (names and folders), closed over the kernel's modules.dep; the
//! kernel's modules.alias and modules.dep cut down to what is included (the rescue loads
//! hardware drivers by them); and the firmware files the included modules name
//! (`modinfo -F firmware`, read from each module's .modinfo section) found in a folder.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// One entry of the list: a module by name, or every module below a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Name(String),
    Folder(String),
}

/// The list's two sections.
#[derive(Debug, Default)]
pub struct List {
    always: Vec<Entry>,
    hardware: Vec<Entry>,
}

impl List {
    pub fn parse(text: &str) -> Result<List> {
        let mut list = List::default();
        let mut section: Option<&mut Vec<Entry>> = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            match line {
                "" => {}
                "[always]" => section = Some(&mut list.always),
                "[hardware]" => section = Some(&mut list.hardware),
                _ => {
                    let Some(s) = section.as_deref_mut() else {
                        bail!("modules list line {}: {line:?} before a [section]", n + 1);
                    };
                    s.push(match line.strip_suffix('/') {
                        Some(folder) => Entry::Folder(folder.to_string()),
                        None => Entry::Name(norm(line)),
                    });
                }
            }
        }
        Ok(list)
    }
}

fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// A module's name from its path in modules.dep.
pub fn stem(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    norm(file.split(".ko").next().unwrap_or(file))
}

/// The kernel's modules.dep: each module's path and its dependencies' paths, by name.
pub struct Deps {
    by_name: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
}

impl Deps {
    /// From a kernel's modules folder (lib/modules/VERSION).
    pub fn read(modules: &Path) -> Result<Deps> {
        let text = fs::read_to_string(modules.join("modules.dep"))
            .with_context(|| format!("read {}/modules.dep", modules.display()))?;
        let mut by_name = BTreeMap::new();
        for line in text.lines() {
            let Some((path, rest)) = line.split_once(':') else {
                continue;
            };
            let d = rest.split_whitespace().map(str::to_string).collect();
            by_name.insert(stem(path), (path.to_string(), d));
        }
        let builtin = fs::read_to_string(modules.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .map(stem)
            .collect();
        Ok(Deps { by_name, builtin })
    }

    /// `path` after its dependencies, each once, into `order`.
    fn visit(&self, path: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(path.to_string()) {
            return;
        }
        if let Some((_, d)) = self.by_name.get(&stem(path)) {
            for dep in d {
                self.visit(dep, seen, order);
            }
        }
        order.push(path.to_string());
    }

    /// The paths an entry names, or why it names none.
    fn paths_of(&self, entry: &Entry) -> std::result::Result<Vec<String>, String> {
        match entry {
            Entry::Name(name) => match self.by_name.get(name) {
                Some((path, _)) => Ok(vec![path.clone()]),
                None if self.builtin.contains(name) => {
                    Err(format!("{name}: built into the kernel"))
                }
                None => Err(format!("{name}: not in this kernel")),
            },
            Entry::Folder(folder) => {
                let prefix = format!("kernel/{folder}/");
                let found: Vec<String> = self
                    .by_name
                    .values()
                    .map(|(p, _)| p)
                    .filter(|p| p.starts_with(&prefix))
                    .cloned()
                    .collect();
                match found.is_empty() {
                    true => Err(format!("{folder}/: no modules there in this kernel")),
                    false => Ok(found),
                }
            }
        }
    }
}

/// What goes into the rescue.
#[derive(Debug)]
pub struct Selection {
    /// The [always] modules with their dependencies, in load order.
    pub always: Vec<String>,
    /// Every module included (always, hardware and their dependencies), sorted.
    pub all: Vec<String>,
    /// Names of the list that are not modules of this kernel, with why.
    pub skipped: Vec<String>,
}

/// The modules of `list` with their dependencies, less those `omit` names (by name, as
/// dracut's omit_drivers: a driver that breaks a machine, or a test of a missing one).
pub fn select(deps: &Deps, list: &List, omit: &[String]) -> Selection {
    let omitted: BTreeSet<String> = omit.iter().map(|n| norm(n)).collect();
    let mut skipped: Vec<String> = omitted.iter().map(|n| format!("{n}: omitted")).collect();
    let mut resolve = |entries: &[Entry]| {
        let mut seen = BTreeSet::new();
        let mut order = Vec::new();
        for e in entries {
            match deps.paths_of(e) {
                Ok(paths) => paths
                    .iter()
                    .for_each(|p| deps.visit(p, &mut seen, &mut order)),
                Err(why) => skipped.push(why),
            }
        }
        order
    };
    let always = resolve(&list.always);
    let hardware = resolve(&list.hardware);
    let kept = |p: &String| !omitted.contains(&stem(p));
    let always: Vec<String> = always.into_iter().filter(kept).collect();
    let all: BTreeSet<String> = always
        .iter()
        .chain(&hardware)
        .filter(|p| kept(p))
        .cloned()
        .collect();
    Selection {
        always,
        all: all.into_iter().collect(),
        skipped,
    }
}

/// The lines of the kernel's modules.dep and modules.alias that concern the included
/// modules (what the rescue matches devices against and loads dependencies by).
pub fn cut_indexes(modules: &Path, included: &[String]) -> Result<(String, String)> {
    let names: BTreeSet<String> = included.iter().map(|p| stem(p)).collect();
    let read = |f: &str| {
        fs::read_to_string(modules.join(f))
            .with_context(|| format!("read {}/{f}", modules.display()))
    };
    let dep: String = read("modules.dep")?
        .lines()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(p, _)| names.contains(&stem(p)))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let alias: String = read("modules.alias")?
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(2)
                .is_some_and(|m| names.contains(&norm(m)))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    Ok((dep, alias))
}

/// The firmware files the included modules name, found under `dir`: (name, file) of each
/// found, and the names not found.
pub struct Firmware {
    pub found: Vec<(String, PathBuf)>,
    pub missing: Vec<String>,
}

pub fn firmware(modules: &Path, included: &[String], dir: &Path) -> Result<Firmware> {
    let mut named = BTreeSet::new();
    for rel in included {
        let path = modules.join(rel);
        let data = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        named.extend(firmware_names(&data).with_context(|| format!("read {}", path.display()))?);
    }
    let mut out = Firmware {
        found: Vec::new(),
        missing: Vec::new(),
    };
    for name in named {
        // A name is a relative path; one that climbs out of the folder is not taken.
        let safe = !name.split('/').any(|p| p == ".." || p.is_empty());
        let file = dir.join(&name);
        match safe && file.is_file() {
            true => out.found.push((name, file)),
            false => out.missing.push(name),
        }
    }
    Ok(out)
}

/// `firmware=` entries of a module's .modinfo section.
fn firmware_names(module: &[u8]) -> Result<Vec<String>> {
    use object::{Object, ObjectSection};
    let elf = object::File::parse(module).context("not an ELF module")?;
    let Some(section) = elf.section_by_name(".modinfo") else {
        return Ok(Vec::new());
    };
    let data = section.data().context("read .modinfo")?;
    Ok(data
        .split(|b| *b == 0)
        .filter_map(|e| e.strip_prefix(b"firmware="))
        .filter_map(|n| std::str::from_utf8(n).ok())
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_has_sections_names_and_folders() {
        let l = List::parse("# c\n[always]\next4 # fs\n[hardware]\ndrivers/scsi/\nxen-blkfront\n")
            .unwrap();
        assert_eq!(l.always, vec![Entry::Name("ext4".into())]);
        assert_eq!(
            l.hardware,
            vec![
                Entry::Folder("drivers/scsi".into()),
                Entry::Name("xen_blkfront".into())
            ]
        );
        assert!(List::parse("ext4\n").is_err());
    }
}
