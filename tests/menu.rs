//! The rescue's console menu, driven through QEMU's serial console: with no orders on the
//! kernel command line it lists the disks (the stick marked as never a target) and the
//! snapshots on the stick, refuses a wrong serial without writing, and restores after the
//! target's serial is typed.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

struct Console {
    text: Arc<Mutex<String>>,
    seen: usize,
}

impl Console {
    /// Wait until `what` appears after what was already consumed.
    fn expect(&mut self, what: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            {
                let t = self.text.lock().unwrap();
                if let Some(at) = t[self.seen..].find(what) {
                    let upto = self.seen + at + what.len();
                    let part = t[self.seen..upto].to_string();
                    self.seen = upto;
                    return part;
                }
            }
            if Instant::now() > deadline {
                let t = self.text.lock().unwrap();
                panic!(
                    "{what:?} not seen within {secs} s; console:\n{}",
                    &t[self.seen..]
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn the_console_menu_restores_only_after_the_serial_is_typed() {
    let env = Env::new();
    let src = env.disk("gpt", "src.img");
    env.init();
    env.capture(&src, "web");
    let media = env.path("media");
    ok(&[
        "mkimage",
        "-q",
        "--out",
        path_str(&media),
        "--kernel",
        path_str(&kernel_dir()),
        "--cmdline",
        "console=ttyS0 panic=-1 quiet",
        "--with-repo",
        &env.repo(),
    ]);
    let target = env.path("target.img");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(std::fs::metadata(&src).unwrap().len())
        .unwrap();
    let vars = env.path("vars.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-nographic",
            "-no-reboot",
            "-machine",
            "q35",
        ])
        .args([
            "-drive",
            "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        ])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .arg("-drive")
        .arg(format!(
            "if=none,id=stick,format=raw,file={}",
            media.join("lifeboat-usb.img").display()
        ))
        .args(["-device", "qemu-xhci", "-device", "usb-storage,drive=stick"])
        .arg("-drive")
        .arg(format!("if=none,id=t,format=raw,file={}", target.display()))
        .args([
            "-device",
            "virtio-blk-pci,drive=t,serial=TGT-0042",
            "-net",
            "none",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = qemu.stdin.take().unwrap();
    let mut out = qemu.stdout.take().unwrap();
    let text = Arc::new(Mutex::new(String::new()));
    let t2 = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            let s: String = String::from_utf8_lossy(&buf[..n])
                .chars()
                .filter(|c| *c != '\r' && *c != '\u{1b}')
                .collect();
            t2.lock().unwrap().push_str(&s);
        }
    });
    let mut con = Console { text, seen: 0 };
    let mut say = |s: &str| {
        stdin.write_all(format!("{s}\r").as_bytes()).unwrap();
        stdin.flush().unwrap();
    };

    let disks = con.expect("repository (usb", 240);
    assert!(
        disks.contains("/dev/sda") && disks.contains("never a target"),
        "{disks}"
    );
    assert!(disks.contains("serial TGT-0042"), "{disks}");
    con.expect("]: ", 10);
    say("");
    let snaps = con.expect("snapshot [1-1]: ", 60);
    assert!(snaps.contains(" web "), "{snaps}");
    say("1");
    let targets = con.expect("target [1-1]: ", 30);
    assert!(
        targets.contains("/dev/vda") && !targets.contains("/dev/sda"),
        "{targets}"
    );
    say("1");
    con.expect("to confirm: ", 30);
    say("TGT-0041");
    let refused = con.expect("lifeboat> ", 30);
    assert!(
        refused.contains("LIFEBOAT-FAILED not confirmed: nothing was written"),
        "{refused}"
    );
    assert!(std::fs::read(&target).unwrap().iter().all(|&b| b == 0));

    say("menu");
    con.expect("]: ", 60);
    say("");
    con.expect("snapshot [1-1]: ", 60);
    say("1");
    con.expect("target [1-1]: ", 30);
    say("1");
    con.expect("to confirm: ", 30);
    say("TGT-0042");
    con.expect("verify afterwards? [Y/n]: ", 30);
    say("y");
    let report = con.expect("\"result\":\"ok\"", 240);
    assert!(report.contains("LIFEBOAT-REPORT"), "{report}");
    let _ = qemu.kill();
    let _ = qemu.wait();
    assert_eq!(hash_file(&target), hash_file(&src));
}
