use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Parser;

use lifeboat::cli::{Cli, Command};
use lifeboat::repo::{ChunkerParams, Repository};
use lifeboat::{capture, check, disk, drill, media, report, restore, serve, snapshots};

// musl's allocator maps and unmaps every chunk-sized buffer; mimalloc reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // As the rescue initramfs's /init, there is no command line to parse: the kernel's
    // command line holds the orders.
    if lifeboat::rescue::is_init() {
        lifeboat::rescue::main();
    }
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve { .. });
    let level = match cli.verbose {
        // A server logs every request by default.
        0 if serving => log::LevelFilter::Info,
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .parse_env("LIFEBOAT_LOG")
        .format_timestamp(None)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lifeboat: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    let quiet = cli.quiet;
    match cli.command {
        Command::Init {
            repo,
            chunk_avg_kib,
            level,
        } => {
            let avg = chunk_avg_kib.saturating_mul(1024);
            if !(4..=1024).contains(&chunk_avg_kib) {
                bail!("--chunk-avg-kib must be between 4 and 1024");
            }
            let params = ChunkerParams {
                min_size: avg / 4,
                avg_size: avg,
                max_size: avg * 4,
                ..Default::default()
            };
            let r = Repository::init(&repo, params, level)?;
            if json {
                report::print_json(&r.config)?;
            } else {
                println!("created repository {} (id {})", repo.display(), r.config.id);
            }
        }
        Command::Capture {
            repo,
            source,
            name,
            sector_size,
            full,
            level,
        } => {
            let s = capture::run(&capture::Options {
                repo: repo.spec(),
                source,
                name,
                sector_size: sector_size.map(|s| s.parse().expect("validated by clap")),
                full,
                level,
                quiet,
            })?;
            emit(json, &s, |s| s.print())?;
        }
        Command::Restore {
            repo,
            snapshot,
            target,
            yes,
            verify,
            seed,
            no_reuse,
            zero_free,
            grow,
        } => {
            let s = restore::run(&restore::Options {
                repo: repo.spec(),
                snapshot,
                target,
                yes,
                verify,
                quiet,
                seed,
                no_reuse,
                zero_free,
                grow,
            })?;
            emit(json, &s, |s| s.print())?;
        }
        Command::Snapshots { repo } => {
            let list = snapshots::list(&repo.spec())?;
            if json {
                report::print_json(&list)?
            } else {
                snapshots::print(&list)
            }
        }
        Command::Check { repo, read_data } => {
            let r = check::run(&check::Options {
                repo: repo.spec(),
                read_data,
                quiet,
            })?;
            if json {
                report::print_json(&r)?
            } else {
                r.print()
            }
            if !r.ok {
                bail!("check found problems: {}", r.problem_line());
            }
        }
        Command::Serve {
            repo,
            listen,
            write_token_file,
            tls_cert,
            tls_key,
            threads,
            nbd,
        } => serve::http::run(&serve::http::Options {
            repo,
            listen,
            write_token_file,
            tls_cert,
            tls_key,
            threads,
            nbd,
        })?,
        Command::Mkimage {
            out,
            kernel,
            cmdline,
            loader,
            with_repo,
            data_mib,
        } => {
            let s = media::run(&media::Options {
                out,
                kernel: kernel.kernel,
                cmdline,
                loader,
                repo: with_repo,
                data_mib,
            })?;
            emit(json, &s, |s| s.print())?;
        }
        Command::Drill {
            repo,
            snapshot,
            via,
            kernel,
            marker,
            verify,
            rescue_timeout,
            boot_timeout,
            work,
            accel,
        } => {
            let s = drill::run(&drill::Options {
                repo: repo.spec(),
                snapshot,
                via,
                kernel: kernel.kernel,
                marker,
                verify,
                rescue_timeout: std::time::Duration::from_secs(rescue_timeout),
                boot_timeout: std::time::Duration::from_secs(boot_timeout),
                work,
                accel,
                quiet,
            })?;
            emit(json, &s, |s| s.print())?;
            if !s.pass {
                bail!(
                    "drill failed: {}",
                    s.rescue_error
                        .clone()
                        .unwrap_or_else(|| "the restored disk did not boot to its marker".into())
                );
            }
        }
        Command::Disks => {
            let disks = disk::detect::list_disks()?;
            if json {
                report::print_json(&disks)?
            } else {
                print_disks(&disks)
            }
        }
    }
    Ok(())
}

/// One JSON object on stdout for machines, or the human summary.
fn emit<T: serde::Serialize>(json: bool, value: &T, print: impl Fn(&T)) -> Result<()> {
    if json {
        report::print_json(value)
    } else {
        print(value);
        Ok(())
    }
}

fn print_disks(disks: &[disk::detect::Disk]) {
    println!(
        "{:<10} {:>10} {:>9} {:<8} {:<20} {:<20} {:<8} MOUNTED",
        "NAME", "SIZE", "SECTORS", "TRAN", "MODEL", "SERIAL", "FSTYPE"
    );
    for d in disks {
        let dash = || "-".to_string();
        println!(
            "{:<10} {:>10} {:>9} {:<8} {:<20} {:<20} {:<8} {}",
            d.name,
            report::bytes(d.size),
            format!("{}/{}", d.logical_sector_size, d.physical_sector_size),
            d.transport,
            d.model.clone().unwrap_or_else(dash),
            d.serial.clone().unwrap_or_else(dash),
            d.fstype.clone().unwrap_or_else(dash),
            if d.mountpoints.is_empty() {
                dash()
            } else {
                d.mountpoints.join(",")
            }
        );
        for p in &d.partitions {
            println!(
                "  {:<8} {:>10} {:>9} {:<8} {:<20} {:<20} {:<8} {}",
                p.name,
                report::bytes(p.size),
                "",
                "",
                "",
                "",
                p.fstype.clone().unwrap_or_else(dash),
                if p.mountpoints.is_empty() {
                    dash()
                } else {
                    p.mountpoints.join(",")
                }
            );
        }
    }
}
