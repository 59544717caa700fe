//! Restore drills: boot the rescue media in QEMU with a blank disk of the snapshot's size
//! and the repository on a USB stick, over HTTP, or by PXE; wait for the rescue's report
//! on the serial console; then boot the restored disk under OVMF and wait for the
//! restored system's own boot marker.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::repo::{RepoSpec, Repository};
use crate::rescue::{FAILED_PREFIX, REPORT_PREFIX};

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The rescue stick (systemd-boot under OVMF) with the repository on its data partition.
    Usb,
    /// The rescue kernel booted directly under OVMF, the repository over HTTP.
    Http,
    /// Network boot (iPXE from QEMU's TFTP server), the repository over HTTP.
    Pxe,
}

pub struct Options {
    pub repo: RepoSpec,
    pub snapshot: String,
    pub via: Via,
    pub kernel: PathBuf,
    pub marker: String,
    pub verify: bool,
    pub rescue_timeout: Duration,
    pub boot_timeout: Duration,
    pub work: Option<PathBuf>,
    pub accel: String,
    pub quiet: bool,
}

#[derive(Debug, Serialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub pass: bool,
    pub via: Via,
    pub snapshot: String,
    pub name: String,
    pub disk_size: u64,
    pub phases: Vec<Phase>,
    /// The rescue's own report, as it printed it.
    pub rescue_report: Option<serde_json::Value>,
    pub rescue_error: Option<String>,
    pub work_dir: String,
    pub seconds: f64,
}

impl Summary {
    pub fn print(&self) {
        println!(
            "drill     {} via {}",
            self.name,
            serde_json::to_string(&self.via)
                .unwrap_or_default()
                .trim_matches('"')
        );
        println!(
            "snapshot  {} ({})",
            &self.snapshot[..8.min(self.snapshot.len())],
            crate::report::bytes(self.disk_size)
        );
        for p in &self.phases {
            println!(
                "{:<9} {:>6.1} s  {}  {}",
                p.name,
                p.seconds,
                if p.ok { "ok  " } else { "FAIL" },
                p.detail
            );
        }
        if let Some(e) = &self.rescue_error {
            println!("error     {e}");
        }
        println!(
            "result    {} in {:.1} s (console logs in {})",
            if self.pass { "PASS" } else { "FAIL" },
            self.seconds,
            self.work_dir
        );
    }
}

/// A QEMU guest whose serial console arrives line by line, and is logged to a file.
struct Guest {
    child: Child,
    lines: Receiver<String>,
}

impl Guest {
    fn start(args: &[String], log: &Path, echo: bool) -> Result<Guest> {
        let mut child = Command::new("qemu-system-x86_64")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let mut log = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("qemu: {line}"));
            }
        });
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let _ = log.write_all(&buf);
                // Serial consoles carry escape sequences and carriage returns.
                let text: String = String::from_utf8_lossy(&buf)
                    .chars()
                    .filter(|c| *c != '\r' && *c != '\u{1b}')
                    .collect();
                if echo {
                    eprint!("  | {text}");
                }
                if tx.send(text.trim_end().to_string()).is_err() {
                    break;
                }
            }
        });
        Ok(Guest { child, lines: rx })
    }

    /// Wait for a line containing one of `patterns`; returns (pattern index, line), or
    /// None when QEMU ended or the time ran out (and why).
    fn wait_for(
        &mut self,
        patterns: &[&str],
        timeout: Duration,
    ) -> std::result::Result<(usize, String), String> {
        let deadline = Instant::now() + timeout;
        let mut last_qemu = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if line.starts_with("qemu: ") {
                        last_qemu = line.clone();
                    }
                    if let Some(i) = patterns.iter().position(|p| line.contains(p)) {
                        return Ok((i, line));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("nothing after {} s", timeout.as_secs()))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!("the guest ended ({status}) {last_qemu}")
                        .trim()
                        .to_string());
                }
            }
        }
    }

    /// Let the guest power off by itself for a while, then stop it.
    fn end(mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `lifeboat serve` of a local repository for the guest, on an ephemeral port.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(dir: &Path) -> Result<Server> {
        let exe = std::env::current_exe().context("find the running lifeboat binary")?;
        let mut child = Command::new(exe)
            .args(["serve", "-q", "--listen", "127.0.0.1:0", "--repo"])
            .arg(dir)
            .env("LIFEBOAT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start lifeboat serve")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .context("read the address of lifeboat serve")?;
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("lifeboat serve said {line:?}"))?;
        Ok(Server { child, port })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn s(v: &str) -> String {
    v.to_string()
}

pub fn run(opts: &Options) -> Result<Summary> {
    let start = Instant::now();
    let repo = Repository::open(&opts.repo)?;
    let snap = repo.resolve(&opts.snapshot)?;
    let size = snap.manifest.disk.size;
    let work = match &opts.work {
        Some(w) => {
            fs::create_dir_all(w).with_context(|| format!("create {}", w.display()))?;
            w.clone()
        }
        None => tempdir()?,
    };
    for f in [OVMF_CODE, OVMF_VARS] {
        if !Path::new(f).exists() {
            bail!("{f} is missing (apt-get install ovmf)");
        }
    }
    let mut phases = Vec::new();
    let echo = !opts.quiet;

    // The repository as the guest will see it.
    let local = opts.repo.local_dir().map(Path::to_path_buf);
    let mut _server = None;
    let repo_order = match (opts.via, &local) {
        (Via::Usb, Some(_)) => s("usb"),
        (Via::Usb, None) => bail!(
            "--via usb copies the repository onto the stick: give a local repository directory"
        ),
        (_, Some(dir)) => {
            let srv = Server::start(dir)?;
            let url = format!("http://10.0.2.2:{}/", srv.port);
            _server = Some(srv);
            url
        }
        (_, None) => opts
            .repo
            .location
            .replace("://127.0.0.1", "://10.0.2.2")
            .replace("://localhost", "://10.0.2.2"),
    };
    let cmdline =
        format!(
        "console=ttyS0,115200 panic=-1 quiet lifeboat.action=restore lifeboat.repo={repo_order} \
         lifeboat.snapshot={} lifeboat.target=largest-empty lifeboat.after=poweroff{}",
        snap.id,
        if opts.verify { " lifeboat.verify=1" } else { "" }
    );

    let t = Instant::now();
    let media_dir = work.join("media");
    let media = crate::media::run(&crate::media::Options {
        out: media_dir.clone(),
        kernel: opts.kernel.clone(),
        cmdline: cmdline.clone(),
        loader: PathBuf::from(crate::media::SYSTEMD_BOOT),
        repo: if opts.via == Via::Usb {
            local.clone()
        } else {
            None
        },
        data_mib: 8,
    })?;
    phases.push(Phase {
        name: s("media"),
        seconds: t.elapsed().as_secs_f64(),
        ok: true,
        detail: format!(
            "initramfs {}, stick {}",
            crate::report::bytes(media.initramfs.bytes),
            crate::report::bytes(media.usb.bytes)
        ),
    });

    let disk = work.join("disk.img");
    let _ = fs::remove_file(&disk);
    File::create(&disk)
        .and_then(|f| f.set_len(size))
        .with_context(|| format!("create the blank disk {}", disk.display()))?;
    let vars = work.join("OVMF_VARS.fd");
    fs::copy(OVMF_VARS, &vars).with_context(|| format!("copy {OVMF_VARS}"))?;

    let mut base = vec![
        s("-accel"),
        opts.accel.clone(),
        s("-m"),
        s("1024"),
        s("-nographic"),
        s("-no-reboot"),
        s("-machine"),
        s("q35"),
    ];
    let ovmf = vec![
        s("-drive"),
        format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
        s("-drive"),
        format!("if=pflash,format=raw,file={}", vars.display()),
    ];
    let target = vec![
        s("-drive"),
        format!("file={},format=raw,if=virtio", disk.display()),
    ];
    let mut args = base.clone();
    match opts.via {
        Via::Usb => {
            args.extend(ovmf.clone());
            args.extend([
                s("-drive"),
                format!("if=none,id=stick,format=raw,file={}", media.usb.path),
                s("-device"),
                s("qemu-xhci"),
                s("-device"),
                s("usb-storage,drive=stick,removable=on"),
                s("-net"),
                s("none"),
            ]);
        }
        Via::Http => {
            args.extend(ovmf.clone());
            args.extend([
                s("-kernel"),
                opts.kernel.join("vmlinuz").display().to_string(),
                s("-initrd"),
                media.initramfs.path.clone(),
                s("-append"),
                cmdline.clone(),
                s("-netdev"),
                s("user,id=n0"),
                s("-device"),
                s("virtio-net-pci,netdev=n0"),
            ]);
        }
        Via::Pxe => {
            // SeaBIOS and QEMU's iPXE option ROM: DHCP and TFTP from user-mode networking.
            args.extend([
                s("-boot"),
                s("n"),
                s("-netdev"),
                format!("user,id=n0,tftp={},bootfile=boot.ipxe", media.pxe),
                s("-device"),
                s("virtio-net-pci,netdev=n0"),
            ]);
        }
    }
    args.extend(target.clone());

    let t = Instant::now();
    let mut rescue_report = None;
    let mut rescue_error = None;
    let mut guest = Guest::start(&args, &work.join("console-rescue.log"), echo)?;
    let outcome = guest.wait_for(&[REPORT_PREFIX, FAILED_PREFIX], opts.rescue_timeout);
    let rescue_ok = match outcome {
        Ok((0, line)) => {
            let json = &line[line.find(REPORT_PREFIX).unwrap_or(0) + REPORT_PREFIX.len()..];
            let v: serde_json::Value =
                serde_json::from_str(json).context("parse the rescue's report")?;
            let ok = v["result"] == "ok";
            if !ok {
                rescue_error = v["error"].as_str().map(str::to_string);
                // The failure line follows the report.
                if let Ok((_, l)) = guest.wait_for(&[FAILED_PREFIX], Duration::from_secs(10)) {
                    rescue_error = Some(
                        l[l.find(FAILED_PREFIX).unwrap_or(0) + FAILED_PREFIX.len()..].to_string(),
                    );
                }
            }
            rescue_report = Some(v);
            ok
        }
        Ok((_, line)) => {
            rescue_error = Some(
                line[line.find(FAILED_PREFIX).unwrap_or(0) + FAILED_PREFIX.len()..].to_string(),
            );
            false
        }
        Err(why) => {
            rescue_error = Some(format!("no report from the rescue: {why}"));
            false
        }
    };
    if rescue_ok {
        guest.end(Duration::from_secs(30));
    } else {
        drop(guest);
    }
    let detail = match &rescue_report {
        Some(r) if rescue_ok => {
            let secs = |name: &str| {
                r["phases"]
                    .as_array()
                    .and_then(|a| a.iter().find(|p| p[0] == name))
                    .and_then(|p| p[1].as_f64())
                    .unwrap_or(0.0)
            };
            format!(
                "restored {} in {:.1} s in the guest (repository reached in {:.1} s); bootloader: {}",
                crate::report::bytes(r["restore"]["disk_size"].as_u64().unwrap_or(0)),
                secs("restore") + secs("restore+verify"),
                secs("network") + secs("repository"),
                r["bootloader"]["nvram"].as_str().unwrap_or("-")
            )
        }
        _ => rescue_error.clone().unwrap_or_default(),
    };
    phases.push(Phase {
        name: s("rescue"),
        seconds: t.elapsed().as_secs_f64(),
        ok: rescue_ok,
        detail,
    });

    // Boot what is on the disk now, whatever the rescue said: a failed restore must not boot.
    let t = Instant::now();
    base.extend(ovmf);
    base.extend(target);
    base.extend([s("-net"), s("none")]);
    let mut guest = Guest::start(&base, &work.join("console-boot.log"), echo)?;
    let booted = guest.wait_for(&[&opts.marker], opts.boot_timeout);
    drop(guest);
    phases.push(Phase {
        name: s("boot"),
        seconds: t.elapsed().as_secs_f64(),
        ok: booted.is_ok(),
        detail: match &booted {
            Ok((_, line)) => format!("marker: {}", line.trim()),
            Err(why) => format!("marker {:?} not seen: {why}", opts.marker),
        },
    });
    let pass = rescue_ok && booted.is_ok();
    if opts.work.is_none() {
        // Keep only the console logs of a drill run in a folder of its own.
        let _ = fs::remove_dir_all(&media_dir);
        let _ = fs::remove_file(&disk);
        let _ = fs::remove_file(&vars);
    }
    Ok(Summary {
        pass,
        via: opts.via,
        snapshot: snap.id.clone(),
        name: snap.manifest.name.clone(),
        disk_size: size,
        phases,
        rescue_report,
        rescue_error,
        work_dir: work.display().to_string(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn tempdir() -> Result<PathBuf> {
    let base = std::env::var_os("TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let dir = base.join(format!("lifeboat-drill-{}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}
