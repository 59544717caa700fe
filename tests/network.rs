//! Repositories over HTTP, on 127.0.0.1 only: `lifeboat serve` and a plain static server,
//! concurrent restores, token-guarded writes, cut connections, corrupt chunks.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use serde_json::Value;

/// `lifeboat serve` on an ephemeral port; stopped with SIGTERM on drop, which must end it
/// cleanly.
struct Served {
    child: Child,
    url: String,
    /// host:port of the NBD export, when started with --nbd.
    nbd: Option<String>,
}

impl Served {
    fn start(repo: &str, token_file: Option<&std::path::Path>) -> Served {
        let mut extra = Vec::new();
        if let Some(t) = token_file {
            extra.push("--token-file".to_string());
            extra.push(t.display().to_string());
        }
        Self::start_with(repo, &extra, "http")
    }

    fn start_with(repo: &str, extra: &[String], scheme: &str) -> Served {
        Self::start_wrapped(&[], repo, extra, scheme, Stdio::null())
    }

    /// Started through `wrapper` (a command that execs the rest, as prlimit does).
    fn start_wrapped(
        wrapper: &[&str],
        repo: &str,
        extra: &[String],
        scheme: &str,
        stderr: Stdio,
    ) -> Served {
        let mut cmd = match wrapper {
            [] => Command::new(bin()),
            [first, rest @ ..] => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin());
                c
            }
        };
        cmd.args(["serve", "--repo", repo, "--listen", "127.0.0.1:0"])
            .args(extra);
        let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        let mut nbd = String::new();
        if extra.iter().any(|a| a == "--nbd") {
            out.read_line(&mut nbd).unwrap();
        }
        let nbd = nbd
            .trim()
            .strip_prefix("nbd listening on ")
            .map(str::to_string);
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{line:?}"))
            .to_string();
        Served {
            child,
            url: format!("{scheme}://{addr}/"),
            nbd,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let status = self.child.wait().unwrap();
        if !std::thread::panicking() {
            assert!(
                status.success(),
                "serve did not stop cleanly on SIGTERM: {status}"
            );
        }
    }
}

/// Wait (up to 5 s) until something listens on 127.0.0.1:`port`.
fn wait_for_port(port: u16) {
    for _ in 0..50 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A server process of a test's own, killed when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Python's http.server over a directory (directory listings, no ranges); stopped when
/// dropped.
struct StaticServer;

impl StaticServer {
    fn start(dir: &std::path::Path) -> (KillOnDrop, String) {
        Self::start_logging(dir, Stdio::null())
    }

    /// The same, with its log of requests (one line per request) going to `log`.
    fn start_logging(dir: &std::path::Path, log: impl Into<Stdio>) -> (KillOnDrop, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let py = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for_port(port);
        (KillOnDrop(py), format!("http://127.0.0.1:{port}/"))
    }
}

fn restore_from(url: &str, snapshot: &str, target: &std::path::Path) -> std::process::Output {
    let mut args = restore_args(url, snapshot, target);
    args.push("--verify");
    run(&args)
}

fn setup() -> (Env, std::path::PathBuf, String) {
    let env = Env::new();
    let (src, id) = env.with_snapshot("gpt", "web");
    (env, src, id)
}

#[test]
fn four_clients_restore_at_once_exactly() {
    let (env, src, _id) = setup();
    let served = Served::start(&env.repo(), None);
    let list: Value = serde_json::from_slice::<Value>(
        &ok(&["snapshots", "--json", "--repo", &served.url]).stdout,
    )
    .unwrap()["snapshots"]
        .clone();
    assert_eq!(list[0]["name"], "web");
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let url = served.url.clone();
            let target = env.path(&format!("c{i}.img"));
            std::thread::spawn(move || (restore_from(&url, "web", &target), target))
        })
        .collect();
    let want = hash_file(&src);
    for h in handles {
        let (o, target) = h.join().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(hash_file(&target), want);
    }
    let r = check_clean(&served.url);
    assert!(r["chunks_read"].as_u64().unwrap() > 100);
}

fn count_files(dir: &std::path::Path) -> usize {
    sh(&format!("find {} -type f | wc -l", dir.display()))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn writes_need_the_token_and_are_checked() {
    let (env, src, _id) = setup();
    let token = env.path("token");
    std::fs::write(&token, "s3cret-token-0123456789\n").unwrap();
    let served = Served::start(&env.repo(), Some(&token));
    let repo_dir = env.path("repo");
    let before = count_files(&repo_dir);
    let body = zstd::bulk::compress(b"a new chunk", 3).unwrap();
    let id = blake3::hash(b"a new chunk").to_hex().to_string();
    let url = format!("{}chunks/{}/{id}", served.url, &id[..2]);
    // No token, and a wrong one: 401, nothing stored.
    for auth in [None, Some("Bearer wrong-token-0123456789")] {
        assert_eq!(put(&url, auth, &body).0, 401);
    }
    assert_eq!(
        count_files(&repo_dir),
        before,
        "a refused write stored something"
    );
    // A chunk whose content does not match its name is refused even with the token.
    let bad = format!("{}chunks/ab/ab{}", served.url, &id[2..]);
    assert_eq!(put(&bad, Some(TOKEN), &body).0, 422);
    // A capture without a token is refused; with it, it lands and restores exactly.
    let err = fails(&[
        "capture",
        "-q",
        "--repo",
        &served.url,
        "--source",
        path_str(&src),
        "--name",
        "pushed",
    ]);
    assert!(
        err.contains("read-only for this client") && err.contains("--token-file"),
        "{err}"
    );
    let disk2 = env.disk("garbage", "second.img");
    let o = ok(&[
        "capture",
        "--json",
        "-q",
        "--repo",
        &served.url,
        "--token-file",
        path_str(&token),
        "--source",
        path_str(&disk2),
        "--name",
        "pushed",
    ]);
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(s["new_chunks"].as_u64().unwrap() > 10);
    let out = env.path("pushed.img");
    let o = restore_from(&served.url, "pushed", &out);
    assert!(o.status.success(), "{}", stderr(&o));
    check_clean(&env.repo());
}

/// A TCP proxy that cuts each of its first `cuts` connections after `after` bytes from the
/// server; returns its address and how many it cut.
fn cutting_proxy(upstream: String, cuts: usize, after: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let done = Arc::new(AtomicUsize::new(0));
    let counter = done.clone();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(mut client) = client else { break };
            let Ok(mut server) = TcpStream::connect(&upstream) else {
                break;
            };
            let cut = n < cuts;
            let counter = counter.clone();
            let mut c2 = client.try_clone().unwrap();
            let mut s2 = server.try_clone().unwrap();
            std::thread::spawn(move || std::io::copy(&mut c2, &mut s2));
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let mut sent = 0;
                loop {
                    let n = match server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let n = if cut { n.min(after - sent) } else { n };
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                    if cut && sent >= after {
                        counter.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
                let _ = server.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (addr, done)
}

#[test]
fn a_connection_cut_mid_restore_is_retried_to_an_exact_result() {
    let (env, src, _id) = setup();
    let served = Served::start(&env.repo(), None);
    let upstream = served
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (proxy, cut) = cutting_proxy(upstream, 6, 300_000);
    let target = env.path("dst.img");
    let o = restore_from(&format!("http://{proxy}/"), "web", &target);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(hash_file(&target), hash_file(&src));
    assert!(
        cut.load(Ordering::Relaxed) >= 3,
        "the proxy cut only {} connections",
        cut.load(Ordering::Relaxed)
    );
}

#[test]
fn a_corrupt_chunk_served_over_http_is_named() {
    let (env, _src, id) = setup();
    let m = env.manifest(&id);
    let bad = first_chunk_of_partition(&m, 3);
    env.flip_stored_byte(&bad);
    let served = Served::start(&env.repo(), None);
    let o = restore_from(&served.url, "web", &env.path("dst.img"));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&bad) && err.contains("corrupt") && err.contains(&served.url),
        "{err}"
    );
}

#[test]
fn a_static_web_server_serves_a_repository_for_restore() {
    let (env, src, id) = setup();
    let (py, url) = StaticServer::start(&env.path("repo"));
    // By name (which needs the directory listing) and by id (which needs nothing else).
    let a = env.path("by-name.img");
    let o = restore_from(&url, "web", &a);
    let b = env.path("by-id.img");
    let o2 = restore_from(&url, &id, &b);
    drop(py);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o2.status.success(), "{}", stderr(&o2));
    assert_eq!(hash_file(&a), hash_file(&src));
    assert_eq!(hash_file(&b), hash_file(&src));
}

#[test]
fn https_with_a_private_ca() {
    let (env, src, _id) = setup();
    let d = env.dir.path().display().to_string();
    // A CA, and a server certificate for 127.0.0.1 signed by it.
    sh(&format!(
        "cd {d} && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=lifeboat-test-ca 2>/dev/null \
         && openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=127.0.0.1 2>/dev/null \
         && printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext.cnf \
         && openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext.cnf 2>/dev/null"
    ));
    let extra = [
        "--tls-cert".to_string(),
        format!("{d}/srv.pem"),
        "--tls-key".into(),
        format!("{d}/srv.key"),
    ];
    let served = Served::start_with(&env.repo(), &extra, "https");
    let target = env.path("tls.img");
    let o = run(&[
        "restore",
        "-q",
        "--repo",
        &served.url,
        "--cacert",
        &format!("{d}/ca.pem"),
        "--snapshot",
        "web",
        "--target",
        path_str(&target),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(hash_file(&target), hash_file(&src));
    // Without the CA the server is not trusted.
    let err = fails(&["snapshots", "--repo", &served.url]);
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
}

#[test]
fn snapshots_are_exported_over_nbd_to_real_clients() {
    let (env, src, _id) = setup();
    let extra = ["--nbd".to_string(), "127.0.0.1:0".to_string()];
    let served = Served::start_with(&env.repo(), &extra, "http");
    let nbd = served.nbd.clone().expect("an NBD address");
    // qemu-img reads the whole export: byte-equal to the captured disk.
    let out = env.path("nbd.raw");
    sh(&format!(
        "qemu-img convert -f raw -O raw nbd://{nbd}/web {}",
        out.display()
    ));
    assert_eq!(hash_file(&out), hash_file(&src));
    let info = sh(&format!("qemu-img info --output=json nbd://{nbd}/web"));
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["virtual-size"], 96 << 20);
    // libnbd's nbdinfo lists the snapshot and sees a read-only disk.
    let list = sh(&format!("nbdinfo --list nbd://{nbd}/"));
    assert!(list.contains("export=\"web\""), "{list}");
    let one = sh(&format!("nbdinfo --json nbd://{nbd}/web"));
    let one: Value = serde_json::from_str(&one).unwrap();
    assert_eq!(one["exports"][0]["is_read_only"], true);
    assert_eq!(one["exports"][0]["export-size"], 96 << 20);
    // An unknown name is refused, not served.
    let o = Command::new("qemu-img")
        .args(["info", &format!("nbd://{nbd}/nope")])
        .output()
        .unwrap();
    assert!(!o.status.success());
    // A machine of two disks: disk 0 by the name, disk 1 as NAME/disk1.
    let second = env.disk("mbr", "second.img");
    let repo = env.repo();
    let mut args = capture_args(&repo, &src, "pair").to_vec();
    args.extend(["--source", path_str(&second)]);
    ok(&args);
    let list = sh(&format!("nbdinfo --list nbd://{nbd}/"));
    assert!(list.contains("export=\"pair/disk1\""), "{list}");
    let out = env.path("nbd-disk1.raw");
    sh(&format!(
        "qemu-img convert -f raw -O raw nbd://{nbd}/pair/disk1 {}",
        out.display()
    ));
    assert_eq!(hash_file(&out), hash_file(&second));
}

#[test]
fn capture_from_qemu_nbd_exporting_a_qcow2_image() {
    let env = Env::new();
    let src = env.disk("gpt", "src.img");
    let qcow = env.path("golden.qcow2");
    sh(&format!(
        "qemu-img convert -f raw -O qcow2 {} {}",
        src.display(),
        qcow.display()
    ));
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut nbd = Command::new("qemu-nbd")
        .args([
            "--read-only",
            "--persistent",
            "--shared=4",
            "--export-name=golden",
            "--bind=127.0.0.1",
            "--format=qcow2",
        ])
        .arg(format!("--port={port}"))
        .arg(&qcow)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port);
    env.init();
    let url = format!("nbd://127.0.0.1:{port}/golden");
    let o = run(&[
        "capture",
        "--json",
        "-q",
        "--repo",
        &env.repo(),
        "--source",
        &url,
        "--name",
        "golden",
    ]);
    let bad = run(&[
        "capture",
        "-q",
        "--repo",
        &env.repo(),
        "--source",
        &format!("nbd://127.0.0.1:{port}/nope"),
        "--name",
        "x",
    ]);
    let _ = nbd.kill();
    let _ = nbd.wait();
    assert!(o.status.success(), "{}", stderr(&o));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["table"], "gpt");
    assert!(s["notes"].to_string().contains("partition 2: ext4"), "{s}");
    assert!(
        !bad.status.success() && stderr(&bad).contains("nope"),
        "{}",
        stderr(&bad)
    );
    let dst = env.path("dst.img");
    assert!(env.restore("golden", &dst, &["--verify"]).status.success());
    assert_eq!(hash_file(&dst), hash_file(&src));
}

/// A QEMU guest (Debian kernel, busybox initramfs, software emulation) reads the NBD export
/// as its virtio disk: the sector count and the SHA-256 of the whole disk it sees equal
/// the captured image's.
#[test]
fn a_qemu_guest_reads_the_nbd_export_as_a_disk() {
    let (env, src, _id) = setup();
    let kernel = kernel_dir();
    let version = std::fs::read_to_string(kernel.join("version")).unwrap();
    let modules = kernel.join("lib/modules").join(version.trim());
    // The probe: busybox as /init's shell, the virtio block driver and its dependencies.
    let root = env.path("probe");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("m")).unwrap();
    std::fs::copy(kernel.join("busybox"), root.join("bin/busybox")).unwrap();
    let mods = [
        "drivers/virtio/virtio_ring",
        "drivers/virtio/virtio",
        "drivers/virtio/virtio_pci_legacy_dev",
        "drivers/virtio/virtio_pci_modern_dev",
        "drivers/virtio/virtio_pci",
        "drivers/block/virtio_blk",
    ];
    let mut load = String::new();
    for (i, m) in mods.iter().enumerate() {
        let from = modules.join(format!("kernel/{m}.ko"));
        std::fs::copy(&from, root.join(format!("m/{i}.ko")))
            .unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        load.push_str(&format!("insmod /m/{i}.ko\n"));
    }
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n\
         mkdir -p /proc /sys /dev\nmount -t proc proc /proc\nmount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\n{load}\
         for i in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.2; done\n\
         echo LIFEBOAT-PROBE sectors=$(cat /sys/block/vda/size) \
         sha=$(sha256sum /dev/vda | cut -d' ' -f1)\npoweroff -f\n"
    );
    std::fs::write(root.join("init"), init).unwrap();
    sh(&format!(
        "cd {} && chmod +x init && find . | cpio -o -H newc --quiet >../probe.cpio",
        root.display()
    ));

    let extra = ["--nbd".to_string(), "127.0.0.1:0".to_string()];
    let served = Served::start_with(&env.repo(), &extra, "http");
    let nbd = served.nbd.clone().expect("an NBD address");
    let out = Command::new("timeout")
        .args(["300", "qemu-system-x86_64", "-accel", "tcg", "-m", "512"])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(kernel.join("vmlinuz"))
        .arg("-initrd")
        .arg(env.path("probe.cpio"))
        .args(["-append", "console=ttyS0 panic=-1 quiet", "-drive"])
        .arg(format!(
            "file=nbd://{nbd}/web,format=raw,if=virtio,readonly=on"
        ))
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&out.stdout);
    let line = console
        .lines()
        .find_map(|l| l.find("LIFEBOAT-PROBE").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no probe line on the guest's console:\n{console}"));
    let want = format!(
        "LIFEBOAT-PROBE sectors={} sha={}",
        std::fs::metadata(&src).unwrap().len() / 512,
        sh(&format!("sha256sum {} | cut -d' ' -f1", src.display())).trim()
    );
    assert_eq!(line.trim(), want, "guest console:\n{console}");
    assert!(out.status.success(), "qemu: {}", out.status);
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn addr_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

#[test]
fn serve_stays_up_under_abuse() {
    let (env, src, _) = setup();
    let token = env.path("token");
    std::fs::write(&token, "0123456789abcdef0123").unwrap();
    let served = Served::start(&env.repo(), Some(&token));
    let addr = addr_of(&served.url);
    let pid = served.child.id();
    let timeout = Some(std::time::Duration::from_secs(10));

    // A request line of 20 MiB: cut at 64 KiB, never held whole.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_write_timeout(timeout).unwrap();
    let _ = s.write_all(b"GET /");
    let junk = vec![b'a'; 1 << 20];
    for _ in 0..20 {
        if s.write_all(&junk).is_err() {
            break;
        }
    }
    drop(s);

    // A 1 GiB PUT without the token: 401 at once, the body never asked for.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(timeout).unwrap();
    let put = format!(
        "PUT /chunks/ab/{} HTTP/1.1\r\nContent-Length: 1073741824\r\n\r\n",
        "ab".repeat(32)
    );
    s.write_all(put.as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");

    // HTTP/1.0 without keep-alive: the reply, then the connection closes.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(timeout).unwrap();
    s.write_all(b"GET /config.json HTTP/1.0\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(
        all.starts_with("HTTP/1.1 200") && all.contains("lifeboat-repository"),
        "{all}"
    );
    assert!(all.contains("Connection: close"), "{all}");

    // 200 slow clients, each trickling a request head a byte a second, while a real
    // restore runs: the restore completes and is exact.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow: Vec<_> = (0..200)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(&addr) else {
                    return;
                };
                let _ = s.write_all(b"GET /config.json HTTP/1.1\r\n");
                while !stop.load(Ordering::Relaxed) && s.write_all(b"X").is_ok() {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let target = env.path("under-load.img");
    let start = std::time::Instant::now();
    let o = restore_from(&served.url, "web", &target);
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in slow {
        let _ = t.join();
    }
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(hash_file(&target), hash_file(&src));
    println!("restore under 200 slow clients: {took:?}");
    // Slow clients wait in the poller, not in workers: no request of the restore waited
    // for one of them to reach its 15 s head deadline.
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");

    // Four clients read a 512 MiB file at once: streamed from disk, never held whole.
    let big = format!(
        "{}/snapshots/{}.json",
        env.path("repo").display(),
        "ab".repeat(32)
    );
    sh(&format!("truncate -s 512M {big}"));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (addr, name) = (addr.clone(), "ab".repeat(32));
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                let get =
                    format!("GET /snapshots/{name}.json HTTP/1.1\r\nConnection: close\r\n\r\n");
                s.write_all(get.as_bytes()).unwrap();
                std::io::copy(&mut s, &mut std::io::sink()).unwrap()
            })
        })
        .collect();
    for r in readers {
        assert!(r.join().unwrap() > 512 << 20, "the whole file was sent");
    }
    let rss = peak_rss_kib(pid);
    assert!(rss < 256 << 10, "serve peaked at {rss} KiB");
}

/// An NBD client, attached to `export` (fixed newstyle, NBD_OPT_EXPORT_NAME, no zeroes).
fn nbd_attach(addr: &str, export: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).unwrap();
    s.write_all(&3u32.to_be_bytes()).unwrap();
    let mut opt = 0x4948_4156_454f_5054u64.to_be_bytes().to_vec();
    opt.extend_from_slice(&1u32.to_be_bytes());
    opt.extend_from_slice(&(export.len() as u32).to_be_bytes());
    opt.extend_from_slice(export.as_bytes());
    s.write_all(&opt).unwrap();
    let mut size_and_flags = [0u8; 10];
    s.read_exact(&mut size_and_flags).unwrap();
    s
}

#[test]
fn nbd_clients_that_never_read_their_replies_cannot_exhaust_serve() {
    let (env, src, _) = setup();
    let served = Served::start_with(&env.repo(), &["--nbd".into(), "127.0.0.1:0".into()], "http");
    let nbd = served.nbd.clone().unwrap();
    let pid = served.child.id();
    // Six clients each ask for the whole disk, again and again, in 4 MiB reads, and
    // never read a reply.
    let greedy: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut s = nbd_attach(&nbd, "web");
            s.set_write_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            for i in 0..400u64 {
                let mut req = 0x2560_9513u32.to_be_bytes().to_vec();
                req.extend_from_slice(&[0, 0, 0, 0]);
                req.extend_from_slice(&i.to_be_bytes());
                req.extend_from_slice(&((i % 24) * (4 << 20)).to_be_bytes());
                req.extend_from_slice(&(4u32 << 20).to_be_bytes());
                if s.write_all(&req).is_err() {
                    break;
                }
            }
            s
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_secs(3));
    // Another client is still served, exactly.
    let out = env.path("nbd.img");
    sh(&format!(
        "qemu-img convert -f raw -O raw nbd://{nbd}/web {}",
        out.display()
    ));
    assert_eq!(hash_file(&out), hash_file(&src));
    let rss = peak_rss_kib(pid);
    drop(greedy);
    // Each connection holds at most its workers' reads (4 x 4 MiB) and its chunk cache
    // (8 MiB): seven connections, allocator slack and the debug binary stay under 320 MiB
    // (unbounded before: 1.7 GiB for six such clients).
    assert!(
        rss < 320 << 10,
        "serve peaked at {rss} KiB with six greedy NBD clients"
    );
    println!("serve peaked at {} MiB", rss >> 10);
}

/// Whether the server has closed `s` (a read ends or fails at once, with nothing sent
/// beyond what `skip` bytes of greeting the server sends first).
fn closed_by_server(s: &mut TcpStream, skip: usize) -> bool {
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let mut greeting = vec![0u8; skip];
    if s.read_exact(&mut greeting).is_err() {
        return true;
    }
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[test]
fn nbd_handshakes_have_a_deadline_and_one_address_a_share() {
    let (env, src, _) = setup();
    let served = Served::start_with(&env.repo(), &["--nbd".into(), "127.0.0.1:0".into()], "http");
    let nbd = served.nbd.clone().unwrap();
    // Eight connections that never finish the handshake take this address's share; a
    // ninth is turned away at once.
    let mut silent: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&nbd).unwrap()).collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut ninth = TcpStream::connect(&nbd).unwrap();
    assert!(
        closed_by_server(&mut ninth, 0),
        "a ninth connection from one address"
    );
    // The handshake's 10 s deadline frees them.
    std::thread::sleep(std::time::Duration::from_secs(11));
    for s in &mut silent {
        assert!(
            closed_by_server(s, 18),
            "a handshake past its deadline is cut"
        );
    }
    let out = env.path("nbd.img");
    sh(&format!(
        "qemu-img convert -f raw -O raw nbd://{nbd}/web {}",
        out.display()
    ));
    assert_eq!(hash_file(&out), hash_file(&src));
}

/// A cgroup (v1 pids controller) limiting its members to `max` tasks; removed when dropped
/// (after its members have ended).
struct PidsCgroup(std::path::PathBuf);

impl PidsCgroup {
    fn new(max: u32) -> PidsCgroup {
        let dir = std::path::PathBuf::from(format!(
            "/sys/fs/cgroup/pids/lifeboat-test-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pids.max"), max.to_string()).unwrap();
        PidsCgroup(dir)
    }
}

impl PidsCgroup {
    fn current(&self) -> u32 {
        std::fs::read_to_string(self.0.join("pids.current"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Once the members have started their threads (the count has not changed for half
    /// a second), allow the tasks there are and `more`.
    fn allow_more(&self, more: u32) {
        let mut now = self.current();
        let mut same = 0;
        while same < 5 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let n = self.current();
            same = if n == now { same + 1 } else { 0 };
            now = n;
        }
        std::fs::write(self.0.join("pids.max"), (now + more).to_string()).unwrap();
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn serve_that_cannot_start_a_thread_refuses_one_client_and_stays_up() {
    let (env, _, _) = setup();
    // serve runs in a pids cgroup of its own that, once it has started, allows it two
    // more tasks.
    let cgroup = PidsCgroup::new(64);
    let enter = format!(
        "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
        cgroup.0.display()
    );
    let log = env.path("serve.log");
    let served = Served::start_wrapped(
        &["sh", "-c", &enter],
        &env.repo(),
        &[
            "--nbd".into(),
            "127.0.0.1:0".into(),
            "--threads".into(),
            "4".into(),
        ],
        "http",
        std::fs::File::create(&log).unwrap().into(),
    );
    let nbd = served.nbd.clone().unwrap();
    cgroup.allow_more(2);
    let clients: Vec<TcpStream> = (0..8)
        .filter_map(|_| TcpStream::connect(&nbd).ok())
        .collect();
    // Under load the refusals may take a moment to be logged.
    let mut log_text = String::new();
    for _ in 0..100 {
        log_text = std::fs::read_to_string(&log).unwrap();
        if log_text.contains("refused: no thread for it") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(log_text.contains("refused: no thread for it"), "{log_text}");
    // The process is up, and HTTP still answers.
    let mut s = TcpStream::connect(addr_of(&served.url)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"GET /config.json HTTP/1.0\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert!(
        all.starts_with("HTTP/1.1 200") && all.contains("lifeboat-repository"),
        "{all}"
    );
    drop(clients);
}

#[test]
fn a_packed_repository_over_http_captures_restores_and_checks() {
    let env = Env::new();
    let src = env.disk("gpt", "src.img");
    env.init_version(2);
    let token = env.path("token");
    std::fs::write(&token, "s3cret-token-0123456789\n").unwrap();
    let served = Served::start(&env.repo(), Some(&token));
    // A capture pushes packs and an index file, then its manifest; serve checks each.
    let o = ok(&[
        "capture",
        "--json",
        "-q",
        "--repo",
        &served.url,
        "--token-file",
        path_str(&token),
        "--source",
        path_str(&src),
        "--name",
        "web",
    ]);
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(s["new_chunks"].as_u64().unwrap() > 100, "{s}");
    assert!(env.path("repo/index").read_dir().unwrap().count() == 1);
    assert!(!env.path("repo/chunks").exists());
    let r: Value = serde_json::from_slice(
        &ok(&[
            "check",
            "--read-data",
            "--json",
            "-q",
            "--repo",
            &served.url,
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let a = env.path("served.img");
    let o = restore_from(&served.url, "web", &a);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(hash_file(&a), hash_file(&src));
    // Packs are served in part, and as content that never changes.
    let pack = std::fs::read_dir(env.path("repo/packs"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    let name = pack.file_name().unwrap().to_string_lossy().to_string();
    let mut r = ureq::get(&format!("{}packs/{}/{name}", served.url, &name[..2]))
        .header("Range", "bytes=10-19")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    let total = std::fs::metadata(&pack).unwrap().len();
    let header = |r: &ureq::http::Response<ureq::Body>, n: &str| {
        r.headers().get(n).map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(
        header(&r, "Content-Range"),
        Some(format!("bytes 10-19/{total}"))
    );
    assert_eq!(
        header(&r, "ETag"),
        Some(format!("\"{}\"", name.trim_end_matches(".pack")))
    );
    assert!(header(&r, "Cache-Control").unwrap().contains("immutable"));
    let part = r.body_mut().read_to_vec().unwrap();
    assert_eq!(part, std::fs::read(&pack).unwrap()[10..20]);
    // A pack whose content is not its name, and an index naming a pack never sent, are
    // refused.
    let fake = format!("{}packs/ab/ab{}.pack", served.url, "0".repeat(62));
    assert_eq!(put(&fake, Some(TOKEN), b"not a pack").0, 422);
    // Named by its own hash, but no pack: its trailer is checked, and it is refused.
    let junk = b"not a pack, but named by its hash".to_vec();
    let junk_id = blake3::hash(&junk).to_hex().to_string();
    let (code, why) = put(
        &format!("{}packs/{}/{junk_id}.pack", served.url, &junk_id[..2]),
        Some(TOKEN),
        &junk,
    );
    assert_eq!(code, 422);
    assert!(why.contains("malformed"), "{why}");
    let idx_dir = env.path("repo/index");
    let idx = std::fs::read(idx_dir.read_dir().unwrap().next().unwrap().unwrap().path()).unwrap();
    let mut orphan = idx.clone();
    orphan[16] ^= 1; // the first pack's id: a pack that does not exist
    let name = blake3::hash(&orphan).to_hex().to_string();
    assert_eq!(
        put(
            &format!("{}index/{name}.idx", served.url),
            Some(TOKEN),
            &orphan
        )
        .0,
        409
    );

    // A static web server that ignores Range: every chunk still restores exactly, each
    // pack is read whole about once (not once per run of chunks), and the client says why.
    let log = env.path("static.log");
    let (py, url) =
        StaticServer::start_logging(&env.path("repo"), std::fs::File::create(&log).unwrap());
    let b = env.path("static.img");
    // (Warnings are printed with -q too.)
    let o = run(&restore_args(&url, "web", &b));
    drop(py);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(hash_file(&b), hash_file(&src));
    assert!(
        stderr(&o).contains("ignores Range requests"),
        "{}",
        stderr(&o)
    );
    let packs = sh(&format!(
        "find {} -name '*.pack' | wc -l",
        env.path("repo/packs").display()
    ));
    let packs: usize = packs.trim().parse().unwrap();
    let gets = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"GET /packs/"))
        .count();
    // Before the server is found out, each restore worker (8) may have asked once.
    assert!(gets <= packs + 8, "{gets} pack reads for {packs} packs");
}

/// A fleet restores at once: 50 clients against `serve --threads 4`, whose requests wait
/// their turn in its queue (and clients wait when told to) instead of failing. Each
/// restore asks the server a bounded number of times: the index, not a question per chunk.
#[test]
fn fifty_restores_at_once_through_serve_all_finish_exactly() {
    let (env, src, _) = setup();
    let want = hash_file(&src);
    let served = Served::start_with(&env.repo(), &["--threads".into(), "4".into()], "http");
    let start = std::time::Instant::now();
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let url = served.url.clone();
            let target = env.path(&format!("fleet{i}.img"));
            std::thread::spawn(move || {
                let t = std::time::Instant::now();
                let o = restore_from(&url, "web", &target);
                (target, o, t.elapsed().as_secs_f64())
            })
        })
        .collect();
    let mut times = Vec::new();
    let mut requests = Vec::new();
    for c in clients {
        let (target, o, secs) = c.join().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(hash_file(&target), want);
        std::fs::remove_file(&target).unwrap();
        let s: Value = serde_json::from_slice(&o.stdout).unwrap();
        requests.push(s["requests"].as_u64().unwrap());
        times.push(secs);
    }
    times.sort_by(f64::total_cmp);
    requests.sort();
    let chunks = serde_json::from_slice::<Value>(
        &restore_from(&served.url, "web", &env.path("one.img")).stdout,
    )
    .unwrap()["chunks"]
        .as_u64()
        .unwrap();
    eprintln!(
        "50 restores in {:.1} s: median {:.1} s, p95 {:.1} s, max {:.1} s; requests per restore {}..{} (median {}) for {chunks} chunks",
        start.elapsed().as_secs_f64(),
        times[25],
        times[47],
        times[49],
        requests[0],
        requests[49],
        requests[25]
    );
    assert!(
        times[49] < 240.0,
        "the slowest restore took {:.0} s",
        times[49]
    );
    assert!(
        requests[49] < chunks / 4,
        "{} requests for {chunks} chunks: ranged reads of runs, not a request per chunk",
        requests[49]
    );
}

/// nginx serving a repository directory as static files (its own process, on a port of
/// its own); stopped when dropped.
struct Nginx;

impl Nginx {
    fn start(env: &Env, root: &std::path::Path) -> (KillOnDrop, String) {
        let dir = env.path("nginx");
        std::fs::create_dir_all(&dir).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let d = dir.display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;\n\
             error_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
               access_log {d}/access.log;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               server {{ listen 127.0.0.1:{port}; root {}; autoindex on; }}\n\
             }}\n",
            root.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (scripts/test installs it)");
        wait_for_port(port);
        (KillOnDrop(child), format!("http://127.0.0.1:{port}/"))
    }
}

/// A repository needs no Lifeboat on the server: nginx serves its files with ranges, and
/// restores, checks and listings work through it, each pack read in ranged parts.
#[test]
fn nginx_serves_a_packed_repository_with_ranges() {
    let (env, src, id) = setup();
    let (nginx, url) = Nginx::start(&env, &env.path("repo"));
    let b = env.path("nginx.img");
    let o = restore_from(&url, "web", &b);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(hash_file(&b), hash_file(&src));
    assert!(!stderr(&o).contains("ignores Range"), "{}", stderr(&o));
    let log = std::fs::read_to_string(env.path("nginx/access.log")).unwrap();
    let pack_reads: Vec<&str> = log.lines().filter(|l| l.contains("GET /packs/")).collect();
    assert!(!pack_reads.is_empty(), "{log}");
    assert!(
        pack_reads.iter().all(|l| l.contains("\" 206 ")),
        "every pack read of the restore is a ranged one: {pack_reads:?}"
    );
    let list: Value =
        serde_json::from_slice::<Value>(&ok(&["snapshots", "--json", "--repo", &url]).stdout)
            .unwrap()["snapshots"]
            .clone();
    assert!(list.to_string().contains(&id), "{list}");
    let r: Value = serde_json::from_slice(
        &ok(&["check", "--read-data", "--json", "-q", "--repo", &url]).stdout,
    )
    .unwrap();
    assert_eq!(r["ok"], true, "{r}");
    drop(nginx);
}

const TOKEN: &str = "Bearer s3cret-token-0123456789";

/// PUT `body` to `url` (with an Authorization header if given): the status and the
/// answer's text, whatever the status.
fn put(url: &str, auth: Option<&str>, body: &[u8]) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.put(url);
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let mut r = req.send(body).unwrap();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (r.status().as_u16(), text)
}

/// A capture through `serve` pushes its signature too; a restore over HTTP checks it. The
/// write token can only add: nothing is replaced or deleted, whatever is sent.
#[test]
fn signed_captures_go_through_serve_and_the_append_token_only_adds() {
    let env = Env::new();
    let src = env.disk("gpt", "web.img");
    env.init();
    let token = env.path("token");
    std::fs::write(&token, "s3cret-token-0123456789\n").unwrap();
    let served = Served::start(&env.repo(), Some(&token));
    let key = env.path("web");
    let k: Value =
        serde_json::from_slice(&ok(&["keygen", "--json", "--out", path_str(&key)]).stdout).unwrap();
    let kid = k["key_id"].as_str().unwrap();
    let mut args = capture_args(&served.url, &src, "web").to_vec();
    let secret = env.path("web.key");
    args.extend([
        "--token-file",
        path_str(&token),
        "--sign",
        path_str(&secret),
    ]);
    let c: Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    let id = c["snapshot"].as_str().unwrap().to_string();
    let sig_path = env.path(&format!("repo/snapshots/{id}.{kid}.sig"));
    let sig = std::fs::read(&sig_path).unwrap();
    // Restored over HTTP with the key as the trust anchor.
    let target = env.path("t.img");
    let public = env.path("web.pub");
    let mut args = restore_args(&served.url, "web", &target);
    args.extend(["--trust", path_str(&public)]);
    let r: Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    assert!(r["signature"].as_str().unwrap().contains(kid), "{r}");
    assert_eq!(hash_file(&target), hash_file(&src));

    // Sending the same signature again changes nothing; another body for its name is
    // refused and the stored one stays.
    let sig_url = format!("{}snapshots/{id}.{kid}.sig", served.url);
    assert_eq!(put(&sig_url, Some(TOKEN), &sig).0, 200);
    let mut other: Value = serde_json::from_slice(&sig).unwrap();
    other["version"] = 1.into();
    let mut reformatted = serde_json::to_vec_pretty(&other).unwrap();
    reformatted.push(b'\n');
    let (code, why) = put(&sig_url, Some(TOKEN), &reformatted);
    assert_eq!(code, 409, "{why}");
    assert_eq!(std::fs::read(&sig_path).unwrap(), sig);
    // A signature for a snapshot that is not there, or that does not verify, is refused.
    let missing = format!("{}snapshots/{}.{kid}.sig", served.url, "0".repeat(64));
    assert_eq!(put(&missing, Some(TOKEN), &sig).0, 422);
    // Nothing is deleted, and config.json is not written.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let manifest_url = format!("{}snapshots/{id}.json", served.url);
    let del = agent
        .delete(&manifest_url)
        .header("Authorization", TOKEN)
        .call()
        .unwrap();
    assert_eq!(
        del.status().as_u16(),
        403,
        "the append token does not delete"
    );
    assert!(env.path(&format!("repo/snapshots/{id}.json")).exists());
    let config = format!("{}config.json", served.url);
    assert_eq!(put(&config, Some(TOKEN), b"{}").0, 405);
}

/// An encrypted repository behind `serve`: the server holds no key yet takes a capture
/// (checking names and shapes) and serves a restore; the append token adds and nothing
/// more; the admin token adds key files and deletes.
#[test]
fn an_encrypted_repository_is_served_without_its_key_and_tokens_have_roles() {
    let env = Env::new();
    let src = env.disk("gpt", "web.img");
    let pw = env.path("pw");
    std::fs::write(&pw, "served passphrase\n").unwrap();
    ok(&[
        "init",
        "--repo",
        &env.repo(),
        "--encrypt",
        "--password-file",
        path_str(&pw),
    ]);
    let append = env.path("append");
    std::fs::write(&append, "s3cret-token-0123456789\n").unwrap();
    let admin = env.path("admin");
    std::fs::write(&admin, "admin-token-9876543210xyz\n").unwrap();
    let served = Served::start_with(
        &env.repo(),
        &[
            "--token-file".into(),
            append.display().to_string(),
            "--admin-token-file".into(),
            admin.display().to_string(),
        ],
        "http",
    );
    let mut args = capture_args(&served.url, &src, "web").to_vec();
    args.extend([
        "--token-file",
        path_str(&append),
        "--password-file",
        path_str(&pw),
    ]);
    let c: Value = serde_json::from_slice(&ok(&args).stdout).unwrap();
    let id = c["snapshot"].as_str().unwrap().to_string();
    let target = env.path("t.img");
    let mut args = restore_args(&served.url, &id, &target);
    args.extend(["--password-file", path_str(&pw)]);
    ok(&args);
    assert_eq!(hash_file(&target), hash_file(&src));

    // What the server can check without the key: a manifest that hashes to its name but
    // is not sealed is refused.
    let junk = b"{\"not\": \"sealed\"}\n";
    let junk_id = blake3::hash(junk).to_hex().to_string();
    let (code, why) = put(
        &format!("{}snapshots/{junk_id}.json", served.url),
        Some(TOKEN),
        junk,
    );
    assert_eq!(code, 422, "{why}");

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let delete = |url: &str, token: &str| {
        agent
            .delete(url)
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    let manifest_url = format!("{}snapshots/{id}.json", served.url);
    assert_eq!(delete(&manifest_url, "s3cret-token-0123456789"), 403);
    assert_eq!(delete(&manifest_url, "wrong-token-0123456789"), 401);
    assert!(env.path(&format!("repo/snapshots/{id}.json")).exists());
    // Key files: only with the admin token, through the same client.
    let pw2 = env.path("pw2");
    std::fs::write(&pw2, "second passphrase\n").unwrap();
    let add = |token: &std::path::Path| {
        run(&[
            "key",
            "add",
            "--repo",
            &served.url,
            "--token-file",
            path_str(token),
            "--password-file",
            path_str(&pw),
            "--new-password-file",
            path_str(&pw2),
        ])
    };
    let o = add(&append);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("admin token"), "{}", stderr(&o));
    assert_eq!(count_files(&env.path("repo/keys")), 1);
    let o = add(&admin);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(count_files(&env.path("repo/keys")), 2);
    // The admin token deletes (the coming prune's right).
    assert_eq!(delete(&manifest_url, "admin-token-9876543210xyz"), 200);
    assert!(!env.path(&format!("repo/snapshots/{id}.json")).exists());
}

/// `GET /metrics` parses as Prometheus text (the official Python client's parser) and
/// says what the repository holds.
#[test]
fn metrics_are_prometheus_text() {
    let env = Env::new();
    let src = env.disk("gpt", "web.img");
    env.init();
    let id = env.capture(&src, "web01")["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    // A name capture no longer takes (one written by an older version, or by anyone
    // who can write the repository) is still escaped: the same manifest under it.
    let mut m = env.manifest(&id);
    m["name"] = "db \"primary\"".into();
    let data = serde_json::to_vec(&m).unwrap();
    let other = blake3::hash(&data).to_hex().to_string();
    std::fs::write(env.path(&format!("repo/snapshots/{other}.json")), data).unwrap();
    ok(&["check", "--repo", &env.repo()]);
    let served = Served::start(&env.repo(), None);
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let mut r = agent.get(&format!("{}metrics", served.url)).call().unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out[s.name + json.dumps(s.labels, sort_keys=True)] = s.value
print(json.dumps(out))
"#;
    // Debian's python3-prometheus-client (scripts/test installs it) is in the system's
    // Python, whatever else is first on PATH.
    let mut py = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = py.wait_with_output().unwrap();
    assert!(o.status.success(), "the parser refused:\n{text}");
    let m: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["lifeboat_snapshots{}"], 2.0, "{m}");
    assert_eq!(m["lifeboat_last_check_success{}"], 1.0, "{m}");
    assert!(m["lifeboat_packs{}"].as_f64().unwrap() >= 1.0, "{m}");
    let size = std::fs::metadata(&src).unwrap().len() as f64;
    assert_eq!(
        m[r#"lifeboat_last_capture_disk_bytes{"name": "web01"}"#], size,
        "{m}"
    );
    assert_eq!(
        m[r#"lifeboat_last_capture_disk_bytes{"name": "db \"primary\""}"#], size,
        "{m}"
    );
    let t = m[r#"lifeboat_last_capture_timestamp_seconds{"name": "web01"}"#]
        .as_f64()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - t).abs() < 600.0, "{t} vs {now}");
}
