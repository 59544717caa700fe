//! Hostile inputs: disks, repositories and servers made to break Lifeboat. Each must get
//! one clear error (or, where the input is still a disk, a safe capture), in bounded time
//! and memory, with no panic, and leave the target untouched when refused.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// What a bounded run of the binary came to.
struct Bounded {
    code: Option<i32>,
    signal: Option<i32>,
    stderr: String,
    stdout: String,
    elapsed: Duration,
    /// Peak resident memory of the child, in KiB, as its VmHWM last read before it ended
    /// (wait4's ru_maxrss is no use here: it counts the test process's own memory, shared
    /// with the child until it execs).
    max_rss_kib: i64,
}

impl Bounded {
    /// Failed with an error message, not a panic or a signal: the message (from its
    /// `lifeboat: error:` on; the retries said before it are warnings).
    fn refused(&self) -> &str {
        assert_eq!(
            self.code,
            Some(1),
            "expected a clean failure (signal {:?}):\n{}",
            self.signal,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "a panic:\n{}",
            self.stderr
        );
        assert!(
            self.stderr.contains("lifeboat: error:"),
            "no error line:\n{}",
            self.stderr
        );
        &self.stderr[self.stderr.find("lifeboat: error:").unwrap_or(0)..]
    }
}

/// Run lifeboat with `args`; kill it (and fail) if it takes longer than `limit`. The child
/// is reaped by wait4, not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run_bounded(args: &[&str], limit: Duration) -> Bounded {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let start = Instant::now();
    let child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut hwm = 0i64;
    loop {
        if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(v) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                hwm = hwm.max(v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0));
            }
        }
        let mut status = 0;
        // SAFETY: waits for our own child; a null rusage is allowed.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, std::ptr::null_mut()) };
        if r == pid {
            let st = std::process::ExitStatus::from_raw(status);
            return Bounded {
                code: st.code(),
                signal: st.signal(),
                stderr: fs::read_to_string(&err).unwrap_or_default(),
                stdout: fs::read_to_string(&out).unwrap_or_default(),
                elapsed: start.elapsed(),
                max_rss_kib: hwm,
            };
        }
        if start.elapsed() > limit {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!(
                "lifeboat {args:?} still ran after {limit:?}:\n{}",
                fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const QUICK: Duration = Duration::from_secs(20);

/// A quiet capture of `source` into `repo`, named "x", bounded by `QUICK`.
fn try_capture(repo: &str, source: &str) -> Bounded {
    run_bounded(
        &[
            "capture", "-q", "--repo", repo, "--source", source, "--name", "x",
        ],
        QUICK,
    )
}

#[test]
fn a_fifo_or_an_empty_file_is_no_source() {
    let env = Env::new();
    let repo = env.init();
    let fifo = env.path("fifo");
    sh(&format!("mkfifo {}", fifo.display()));
    let r = try_capture(&repo, path_str(&fifo));
    assert!(
        r.refused()
            .contains("neither a block device nor a regular file"),
        "{}",
        r.stderr
    );
    let empty = env.path("empty.img");
    fs::write(&empty, b"").unwrap();
    let r = try_capture(&repo, path_str(&empty));
    assert!(
        r.refused().contains("less than one 512-byte sector"),
        "{}",
        r.stderr
    );
    assert!(
        fs::read_dir(env.path("repo/snapshots"))
            .unwrap()
            .next()
            .is_none(),
        "nothing was stored"
    );
}

#[test]
fn unusable_chunker_settings_are_refused_before_use() {
    let env = Env::new();
    let repo = env.init();
    let disk = env.disk("mbr", "mbr.img");
    let config = env.path("repo/config.json");
    let good = fs::read_to_string(&config).unwrap();
    for (field, value) in [
        ("avg_size", "0"),
        ("avg_size", "2147483648"),
        ("segment_size", "0"),
        ("max_size", "4294967295"),
    ] {
        let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
        v["chunker"][field] = serde_json::from_str(value).unwrap();
        fs::write(&config, v.to_string()).unwrap();
        let r = try_capture(&repo, path_str(&disk));
        assert!(
            r.refused().contains("chunker settings are unusable"),
            "{field}={value}: {}",
            r.stderr
        );
    }
}

/// Overwrite a GPT header at `lba` with `edit` applied, its CRC made right again.
fn forge_header(img: &std::path::Path, lba: u64, edit: impl Fn(&mut [u8])) {
    let mut h = read_at(img, lba * 512, 92);
    edit(&mut h);
    h[16..20].fill(0);
    let crc = crc32fast::hash(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    let f = fs::OpenOptions::new().write(true).open(img).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &h, lba * 512).unwrap();
}

#[test]
fn hostile_partition_tables_are_not_obeyed() {
    let env = Env::new();
    let repo = env.init();
    // The primary header damaged, the backup's entries said to be 0 bytes each (a panic
    // in the gpt crate once): captured whole, with the reason.
    let disk = env.disk("gpt", "gpt.img");
    let last = fs::metadata(&disk).unwrap().len() / 512 - 1;
    forge_header(&disk, 1, |h| h[40] ^= 1);
    let f = fs::OpenOptions::new().write(true).open(&disk).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xFF], 512 + 16).unwrap();
    forge_header(&disk, last, |h| {
        h[84..88].copy_from_slice(&0u32.to_le_bytes())
    });
    let (r, notes) = capture_notes(&repo, &disk, "a");
    assert!(notes.contains("GPT not usable"), "{notes}");
    assert!(r.max_rss_kib < 256 << 10, "{} KiB", r.max_rss_kib);

    // A partition at LBA 2^55 + 2048, whose byte offset wraps to 1 MiB, with both CRCs
    // right: the table is not used to cut regions.
    let disk = env.disk("gpt", "wrap.img");
    let mut entries = read_at(&disk, 1024, 128 * 128);
    entries[32..40].copy_from_slice(&((1u64 << 55) + 2048).to_le_bytes());
    entries[40..48].copy_from_slice(&((1u64 << 55) + 4095).to_le_bytes());
    let f = fs::OpenOptions::new().write(true).open(&disk).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &entries, 1024).unwrap();
    let crc = crc32fast::hash(&entries);
    forge_header(&disk, 1, |h| h[88..92].copy_from_slice(&crc.to_le_bytes()));
    let (_, notes) = capture_notes(&repo, &disk, "b");
    assert!(notes.contains("GPT is inconsistent"), "{notes}");
}

/// Capture `disk`, which must succeed (without a panic), and return the run and the
/// summary's notes.
fn capture_notes(repo: &str, disk: &std::path::Path, name: &str) -> (Bounded, String) {
    let r = run_bounded(&capture_args(repo, disk, name), QUICK);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let s: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let notes = s["notes"].to_string();
    (r, notes)
}

/// A fake NBD server that completes the handshake announcing `size` bytes, then says
/// nothing more; with `claim`, its option reply instead claims that many bytes of data
/// (and sends none). Returns its port.
fn fake_nbd(size: u64) -> u16 {
    fake_nbd_claiming(size, None)
}

fn fake_nbd_claiming(size: u64, claim: Option<u32>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut hello = 0x4e42_444d_4147_4943u64.to_be_bytes().to_vec();
            hello.extend_from_slice(&0x4948_4156_454f_5054u64.to_be_bytes());
            hello.extend_from_slice(&3u16.to_be_bytes());
            let _ = s.write_all(&hello);
            let mut flags = [0u8; 4];
            let mut head = [0u8; 16];
            if s.read_exact(&mut flags).is_err() || s.read_exact(&mut head).is_err() {
                continue;
            }
            let len = u32::from_be_bytes(head[12..16].try_into().unwrap());
            let mut opt = vec![0u8; len as usize];
            let _ = s.read_exact(&mut opt);
            let reply = |kind: u32, data: &[u8]| {
                let mut r = 0x0003_e889_0455_65a9u64.to_be_bytes().to_vec();
                r.extend_from_slice(&7u32.to_be_bytes());
                r.extend_from_slice(&kind.to_be_bytes());
                r.extend_from_slice(&(data.len() as u32).to_be_bytes());
                r.extend_from_slice(data);
                r
            };
            if let Some(claim) = claim {
                let mut r = reply(3, b"");
                r[16..20].copy_from_slice(&claim.to_be_bytes());
                let _ = s.write_all(&r);
                std::thread::sleep(Duration::from_secs(120));
                continue;
            }
            let mut info = 0u16.to_be_bytes().to_vec();
            info.extend_from_slice(&size.to_be_bytes());
            info.extend_from_slice(&3u16.to_be_bytes());
            let _ = s.write_all(&reply(3, &info));
            let _ = s.write_all(&reply(1, b""));
            // Then silence: keep the socket open for the test's length.
            std::thread::sleep(Duration::from_secs(120));
        }
    });
    port
}

#[test]
fn an_nbd_server_announcing_an_absurd_disk_is_refused_in_bounded_memory() {
    let env = Env::new();
    let repo = env.init();
    let port = fake_nbd(1 << 62);
    let url = format!("nbd://127.0.0.1:{port}/big");
    let r = try_capture(&repo, &url);
    assert!(
        r.refused().contains("more than any disk Lifeboat supports"),
        "{}",
        r.stderr
    );
    assert!(r.max_rss_kib < 64 << 10, "{} KiB", r.max_rss_kib);
    assert!(r.elapsed < QUICK);
}

#[test]
fn an_nbd_server_that_stalls_after_the_handshake_is_given_up_on() {
    let env = Env::new();
    let repo = env.init();
    let port = fake_nbd(1 << 30);
    let url = format!("nbd://127.0.0.1:{port}/x");
    let r = run_bounded(
        &[
            "capture",
            "-q",
            "--io-timeout",
            "2",
            "--repo",
            &repo,
            "--source",
            &url,
            "--name",
            "x",
        ],
        QUICK,
    );
    let e = r.refused();
    println!("{:.1} s: {e}", r.elapsed.as_secs_f64());
    assert!(e.contains("127.0.0.1"), "names the server: {e}");
    assert!(e.contains("stalled"), "{e}");
    // A stall is twice the I/O timeout.
    assert!(r.elapsed < Duration::from_secs(10), "{:?}", r.elapsed);
    let snapshots: serde_json::Value =
        serde_json::from_slice(&ok(&["snapshots", "--json", "--repo", &repo]).stdout).unwrap();
    assert_eq!(
        snapshots["snapshots"],
        serde_json::json!([]),
        "nothing stored"
    );
}

#[test]
fn an_nbd_option_reply_claiming_4_gib_is_refused_at_once() {
    let env = Env::new();
    let repo = env.init();
    let port = fake_nbd_claiming(1 << 30, Some(u32::MAX));
    let url = format!("nbd://127.0.0.1:{port}/x");
    let r = try_capture(&repo, &url);
    assert!(
        r.refused().contains("option reply of 4294967295 bytes"),
        "{}",
        r.stderr
    );
    assert!(r.elapsed < Duration::from_secs(5), "{:?}", r.elapsed);
    assert!(r.max_rss_kib < 64 << 10, "{} KiB", r.max_rss_kib);
}

#[test]
fn a_chunk_that_is_a_fifo_is_missing_to_check_and_restore_alike() {
    let env = Env::new();
    let (_, snap) = env.with_snapshot_v1("gpt", "m");
    let m = env.manifest(&snap);
    let chunk = first_chunk_of_partition(&m, 1);
    let path = env.chunk_path(&chunk);
    fs::remove_file(&path).unwrap();
    sh(&format!("mkfifo {}", path.display()));
    missing_to_check_and_restore(&env, &snap, &chunk);
}

/// `check --read-data` names `chunk` missing, and a restore of `snap` is refused for it
/// with nothing written; both in bounded time and memory.
fn missing_to_check_and_restore(env: &Env, snap: &str, chunk: &str) {
    let repo = env.repo();
    let r = run_bounded(
        &["check", "--json", "-q", "--repo", &repo, "--read-data"],
        QUICK,
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["missing"][0]["chunk"], chunk, "{report}");
    assert!(r.max_rss_kib < 128 << 10, "{} KiB", r.max_rss_kib);
    let target = env.path("t.img");
    let r = run_bounded(
        &[
            "restore",
            "-q",
            "--repo",
            &repo,
            "--snapshot",
            snap,
            "--target",
            path_str(&target),
        ],
        QUICK,
    );
    assert!(r.refused().contains("missing"), "{}", r.stderr);
    assert!(!target.exists(), "nothing was written");
    assert!(r.max_rss_kib < 128 << 10, "{} KiB", r.max_rss_kib);
}

#[test]
fn a_manifest_that_raises_its_own_chunk_limit_is_refused_before_writing() {
    let env = Env::new();
    let (_, snap) = env.with_snapshot("gpt", "m");
    let repo = env.repo();
    let mut m = env.manifest(&snap);
    // Merge the first stored chunks of a region into one reference of over 256 KiB (the
    // repository's maximum), and raise the manifest's own limit to match.
    let chunks = m["regions"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .map(|r| r["chunks"].as_array_mut().unwrap())
        .find(|c| c.iter().take(8).all(|c| c.get("id").is_some()) && c.len() > 8)
        .expect("a region that starts with 8 stored chunks");
    let merged: u64 = chunks[..8]
        .iter()
        .map(|c| c["length"].as_u64().unwrap())
        .sum();
    assert!(merged > 256 << 10);
    chunks[0]["length"] = merged.into();
    chunks.drain(1..8);
    m["chunker"]["max_size"] = (4u64 << 20).into();
    let mut data = serde_json::to_vec(&m).unwrap();
    data.push(b'\n');
    let forged = blake3::hash(&data).to_hex().to_string();
    fs::write(env.path(&format!("repo/snapshots/{forged}.json")), &data).unwrap();
    let target = env.path("t.img");
    fs::write(&target, vec![0x5a; 100 << 20]).unwrap();
    let before = hash_file(&target);
    let r = run_bounded(
        &[
            "restore",
            "-q",
            "--yes",
            "--repo",
            &repo,
            "--snapshot",
            &forged,
            "--target",
            path_str(&target),
        ],
        QUICK,
    );
    let e = r.refused();
    assert!(e.contains("over the repository's maximum"), "{e}");
    assert!(e.contains("nothing was written"), "{e}");
    assert_eq!(hash_file(&target), before, "the target is untouched");
}

/// How the hostile web server answers a GET of a chunk.
#[derive(Clone, Copy)]
enum ChunkAnswer {
    /// An endless body with no length.
    Endless,
    /// Content-Length of 4 GiB.
    HugeLength,
    /// 500 every time.
    Error,
    /// A length, then one byte every half second (for at most a minute).
    Trickle,
    /// Nothing at all after the request (for at most a minute).
    Silent,
}

/// A web server that serves a real repository's config, listings and manifests (and HEADs
/// of chunks), but answers chunk GETs as `answer` says. One request per connection.
fn hostile_server(repo: std::path::PathBuf, answer: ChunkAnswer) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let repo = repo.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read_exact(&mut b).is_ok() {
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let mut words = head.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
                let file = repo.join(path.trim_start_matches('/'));
                let send = |s: &mut std::net::TcpStream, code: &str, body: &[u8]| {
                    let h = format!(
                        "HTTP/1.1 {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(h.as_bytes());
                    if method != "HEAD" {
                        let _ = s.write_all(body);
                    }
                };
                if (path.starts_with("/chunks/") || path.starts_with("/packs/")) && method == "GET"
                {
                    match answer {
                        ChunkAnswer::Error => send(&mut s, "500 Internal Server Error", b"no"),
                        ChunkAnswer::HugeLength => {
                            let _ = s.write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 4294967296\r\n\r\n",
                            );
                            let zeros = vec![0u8; 1 << 20];
                            while s.write_all(&zeros).is_ok() {}
                        }
                        ChunkAnswer::Trickle => {
                            // A length a chunk file may have, or a pack's (whose
                            // range is then read from the start of the whole file).
                            let len = if path.starts_with("/packs/") {
                                1 << 30
                            } else {
                                100_000
                            };
                            let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                            let _ = s.write_all(h.as_bytes());
                            for _ in 0..120 {
                                if s.write_all(b"x").is_err() {
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(500));
                            }
                        }
                        ChunkAnswer::Silent => std::thread::sleep(Duration::from_secs(60)),
                        ChunkAnswer::Endless => {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                            let zeros = vec![0u8; 1 << 20];
                            while s.write_all(&zeros).is_ok() {}
                        }
                    }
                } else if path.ends_with('/') && file.is_dir() {
                    let mut page = String::new();
                    for e in fs::read_dir(&file).unwrap() {
                        let e = e.unwrap();
                        let slash = if e.path().is_dir() { "/" } else { "" };
                        let name = e.file_name().to_string_lossy().to_string();
                        page.push_str(&format!("<a href=\"{name}{slash}\">x</a>\n"));
                    }
                    send(&mut s, "200 OK", page.as_bytes());
                } else if let Ok(data) = fs::read(&file) {
                    send(&mut s, "200 OK", &data);
                } else {
                    send(&mut s, "404 Not Found", b"");
                }
            });
        }
    });
    port
}

#[test]
fn a_hostile_web_server_cannot_exhaust_memory_or_repeat_itself() {
    // Format 1 fetches chunk files whole; format 2 asks for ranges of packs, so a server
    // that ignores the range and sends garbage gives a corrupt chunk instead.
    for version in [1, 2] {
        let env = Env::new();
        let disk = env.disk("gpt", "m.img");
        env.init_version(version);
        env.capture(&disk, "m");
        let (big, url_part) = if version == 1 {
            ("larger than the", "/chunks/")
        } else {
            ("is corrupt", "/packs/")
        };
        // With a 2 s I/O timeout: a request may take 4 s plus its body at 64 KiB/s (a
        // run of a pack, 1 MiB: 20 s), a body must keep 64 KiB/s after 2 s, and no new
        // attempt starts after 6 s (the defaults are 30 s and 90 s).
        for (answer, expect) in [
            (ChunkAnswer::Endless, big),
            (ChunkAnswer::HugeLength, big),
            (ChunkAnswer::Error, "HTTP 500"),
            (ChunkAnswer::Trickle, "too slow"),
            (ChunkAnswer::Silent, "timed out"),
        ] {
            let port = hostile_server(env.path("repo"), answer);
            let url = format!("http://127.0.0.1:{port}/");
            let target = env.path("t.img");
            let _ = fs::remove_file(&target);
            let r = run_bounded(
                &[
                    "restore",
                    "-q",
                    "--io-timeout",
                    "2",
                    "--repo",
                    &url,
                    "--snapshot",
                    "m",
                    "--target",
                    path_str(&target),
                ],
                Duration::from_secs(60),
            );
            let e = r.refused().to_string();
            println!(
                "v{version}: {:.1} s, {} KiB: {e}",
                r.elapsed.as_secs_f64(),
                r.max_rss_kib
            );
            assert!(
                r.elapsed < Duration::from_secs(30),
                "bounded by the I/O timeout: {:?}",
                r.elapsed
            );
            assert!(e.contains(expect), "{e}");
            assert_eq!(e.matches(expect).count(), 1, "the cause once: {e}");
            assert!(e.contains(url_part), "names the URL: {e}");
            assert!(r.max_rss_kib < 256 << 10, "{} KiB", r.max_rss_kib);
        }
    }
}

/// Write a manifest of `count` stored chunks of 64 KiB (all naming one real chunk) over
/// a disk just large enough, into the repository under its own hash; return its id.
fn write_huge_manifest(env: &Env, template: &serde_json::Value, chunk: &str, count: u64) -> String {
    const LEN: u64 = 64 << 10;
    let size = count * LEN;
    let mut head = template.clone();
    head["disk"]["size"] = size.into();
    head["disk"]["table"] = "none".into();
    head["disk"].as_object_mut().unwrap().remove("gpt");
    head["disk"].as_object_mut().unwrap().remove("mbr");
    head["regions"] = serde_json::json!([]);
    let head = serde_json::to_string(&head).unwrap();
    let (before, after) = head.split_once("\"regions\":[]").unwrap();
    let mut data = Vec::with_capacity((count * 96) as usize);
    data.extend_from_slice(before.as_bytes());
    let zero = "0".repeat(64);
    write!(
        data,
        "\"regions\":[{{\"kind\":\"disk\",\"offset\":0,\"length\":{size},\"blake3\":\"{zero}\",\"chunks\":["
    )
    .unwrap();
    for i in 0..count {
        if i > 0 {
            data.push(b',');
        }
        write!(
            data,
            "{{\"offset\":{},\"length\":{LEN},\"id\":\"{chunk}\"}}",
            i * LEN
        )
        .unwrap();
    }
    data.extend_from_slice(b"]}]");
    data.extend_from_slice(after.as_bytes());
    data.push(b'\n');
    let id = blake3::hash(&data).to_hex().to_string();
    fs::write(env.path(&format!("repo/snapshots/{id}.json")), &data).unwrap();
    id
}

#[test]
fn a_manifest_of_millions_of_chunks_is_read_in_bounded_memory() {
    let env = Env::new();
    let (_, snap) = env.with_snapshot("gpt", "m");
    let m = env.manifest(&snap);
    let chunk = first_chunk_of_partition(&m, 1);
    // Ten million would be over the 1 GiB a manifest may hold (and is refused unread);
    // the suite runs fewer (the debug build parses slowly), a measurement more.
    let count: u64 = std::env::var("LIFEBOAT_TEST_HUGE_MANIFEST_CHUNKS")
        .map(|v| v.parse().unwrap())
        .unwrap_or(2_000_000);
    let huge = write_huge_manifest(&env, &m, &chunk, count);
    let size = fs::metadata(env.path(&format!("repo/snapshots/{huge}.json")))
        .unwrap()
        .len();
    let r = run_bounded(
        &["snapshots", "--json", "--repo", &env.repo()],
        Duration::from_secs(300),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let list: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(r.stdout.contains(&huge[..8]), "{list}");
    println!(
        "a {size}-byte manifest of {count} chunks: {:.1} s, peak {} MiB",
        r.elapsed.as_secs_f64(),
        r.max_rss_kib >> 10
    );
    // Parsed as it streams: about half the file's size (48 bytes a chunk), never the
    // file and more.
    assert!(
        r.max_rss_kib < (size as i64 >> 10) / 2 + (32 << 10),
        "{} KiB",
        r.max_rss_kib
    );
}

#[test]
fn repository_files_that_are_symlinks_to_dev_zero_are_not_read() {
    let env = Env::new();
    let (_, snap) = env.with_snapshot_v1("gpt", "m");
    let repo = env.repo();
    let m = env.manifest(&snap);
    // A chunk: missing to check and restore, read in bounded time and memory.
    let chunk = first_chunk_of_partition(&m, 1);
    let path = env.chunk_path(&chunk);
    fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
    missing_to_check_and_restore(&env, &snap, &chunk);
    // The config: the repository cannot be opened, and says why.
    let config = env.path("repo/config.json");
    fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &config).unwrap();
    let r = run_bounded(&["snapshots", "--repo", &repo], QUICK);
    let e = r.refused();
    assert!(
        e.contains("config.json") && e.contains("symbolic link"),
        "{e}"
    );
    assert!(r.max_rss_kib < 64 << 10, "{} KiB", r.max_rss_kib);
}
