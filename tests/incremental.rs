//! A second capture of a slightly changed disk stores only the change, and both snapshots
//! restore exactly.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            if e.file_name() != "lost+found" {
                files_under(&e.path(), out);
            }
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

#[test]
fn second_capture_stores_only_the_change() {
    let env = Env::new();
    let src = env.disk("gpt", "src.img");
    let original = env.path("original.img");
    fs::copy(&src, &original).unwrap();
    env.init();
    let first = env.capture(&src, "host");

    // A day's change: 5% of the files in the ext4 root, through the kernel's own ext4 on a
    // loop device over partition 2; half rewritten in place, half replaced by new files.
    let m = env.manifest(first["snapshot"].as_str().unwrap());
    let (_, _, off, len) = regions(&m).into_iter().find(|r| r.1 == Some(2)).unwrap();
    let changed;
    {
        let lo = Loop::attach_range(&src, off, len);
        let mnt = Mount::new(&lo.dev, &env.path("mnt"));
        let mut files = Vec::new();
        files_under(&mnt.point, &mut files);
        files.sort();
        let chosen: Vec<&PathBuf> = files.iter().step_by(20).collect();
        changed = (chosen.len(), files.len());
        for (i, f) in chosen.iter().enumerate() {
            let mut data = fs::read(f).unwrap();
            data.extend_from_slice(format!("\nchanged on day two ({i})\n").as_bytes());
            if i % 2 == 0 {
                fs::write(f, &data).unwrap();
            } else {
                let tmp = f.with_extension("lifeboat-new");
                fs::write(&tmp, &data).unwrap();
                fs::rename(&tmp, f).unwrap();
            }
        }
        drop(mnt);
    }
    assert!(
        changed.1 > 500,
        "the sample tree is too small: {} files",
        changed.1
    );
    assert_ne!(hash_file(&src), hash_file(&original));

    let second = env.capture(&src, "host");
    let s1 = first["new_stored_bytes"].as_u64().unwrap();
    let s2 = second["new_stored_bytes"].as_u64().unwrap();
    let ratio = s2 as f64 / s1 as f64;
    eprintln!(
        "incremental: changed {} of {} files; first capture stored {s1} bytes, second {s2} bytes ({:.1}%), {} of {} chunks new",
        changed.0,
        changed.1,
        ratio * 100.0,
        second["new_chunks"],
        second["chunks"]
    );
    assert!(
        ratio < 0.15,
        "second capture stored {:.1}% of the first",
        ratio * 100.0
    );
    assert!(s2 > 0, "the change must cost something");

    // Both snapshots restore exactly: the newest by name, the first by id.
    let d2 = env.path("day2.img");
    assert!(env.restore("host", &d2, &[]).status.success());
    assert_eq!(hash_file(&d2), hash_file(&src));
    let d1 = env.path("day1.img");
    assert!(env
        .restore(first["snapshot"].as_str().unwrap(), &d1, &[])
        .status
        .success());
    assert_eq!(hash_file(&d1), hash_file(&original));
    // The restored filesystem checks clean.
    let lo = Loop::attach_range(&d2, off, len);
    sh(&format!("e2fsck -fn {}", lo.dev));
}
