//! The `lifeboat` binary: parse the command line, dispatch, print the error chain. As the
//! rescue initramfs's /init (PID 1) it takes its orders from the kernel command line.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use lifeboat::cli::Cli;
use lifeboat::io::interrupt;
use lifeboat::ui;

// musl's allocator maps and unmaps every chunk-sized buffer; mimalloc reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_arena_eager_commit` (its v2 option 4; 2 by default: on Linux,
/// which overcommits, arenas are committed at once and purged memory only reset, which
/// leaves it counted in the process's memory until the kernel wants it back).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
/// mimalloc's `mi_option_purge_delay` (its v2 option 15, 10 ms by default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// A command line clap refuses: its message, and exit 2; but 3 (UNKNOWN) for `status`,
/// which Nagios runs. Help and version are not errors.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    {
        e.exit();
    }
    let _ = e.print();
    let status = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .is_some_and(|a| a == "status");
    std::process::exit(if status { 3 } else { 2 })
}

fn main() -> ExitCode {
    // Freed memory goes back to the system at once, and is then no longer counted: a
    // restore's peak 165 -> 110 MiB and a capture's 147 -> 83 MiB (bench disk), for about
    // 0.1 s more system time, with the purge at once; a restore over HTTP with eight
    // workers 94 -> 41 MiB with arenas committed as used.
    // SAFETY: sets two allocator options, before any allocation; no pointers involved.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
    if lifeboat::rescue::is_init() {
        lifeboat::rescue::main();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    env_logger::Builder::new()
        .filter_level(cli.log_level())
        .parse_env("LIFEBOAT_LOG")
        .format_timestamp(None)
        .init();
    if let Err(e) = interrupt::install() {
        log::warn!("{e:#}");
    }
    lifeboat::io::bandwidth::set_limits(cli.limit_download, cli.limit_upload);
    lifeboat::io::timeouts::set_io_timeout(cli.io_timeout);
    match cli.command.run(&cli.ui(), Cli::command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let exit = match interrupt::of(&e) {
                Some(i) if i.signal == 15 => ui::Exit::Terminated,
                Some(_) => ui::Exit::Interrupted,
                None => ui::exit_of(&e),
            };
            if cli.json && !ui::shown(&e) {
                ui::out(format_args!("{}", ui::error_json(&e, exit)));
            }
            match exit {
                ui::Exit::Interrupted | ui::Exit::Terminated => eprintln!("lifeboat: {e:#}"),
                _ => eprintln!("lifeboat: error: {e:#}"),
            }
            ExitCode::from(exit as u8)
        }
    }
}
