//! The `lifeboat` binary: parse the command line, dispatch, print the error chain. As the
//! rescue initramfs's /init (PID 1) it takes its orders from the kernel command line.

use std::process::ExitCode;

use clap::Parser;

use lifeboat::cli::Cli;

// musl's allocator maps and unmaps every chunk-sized buffer; mimalloc reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    if lifeboat::rescue::is_init() {
        lifeboat::rescue::main();
    }
    let cli = Cli::parse();
    env_logger::Builder::new()
        .filter_level(cli.log_level())
        .parse_env("LIFEBOAT_LOG")
        .format_timestamp(None)
        .init();
    lifeboat::io::timeouts::set_io_timeout(std::time::Duration::from_secs_f64(cli.io_timeout));
    match cli.command.run(&cli.ui()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lifeboat: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
