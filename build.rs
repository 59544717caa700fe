//! The commit the binary is built from, for `lifeboat version` (and `--version`): `git
//! describe`'s hash with `-dirty` when the tree has changes; `unknown` outside a git
//! checkout (a source tarball).

use std::process::Command;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let commit = if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    };
    println!("cargo:rustc-env=LIFEBOAT_COMMIT={commit}");
    println!(
        "cargo:rustc-env=LIFEBOAT_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    // Again when HEAD moves or the index changes (a commit, a checkout).
    for f in [".git/HEAD", ".git/index"] {
        if std::path::Path::new(f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
