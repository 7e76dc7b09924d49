//! The `footfall` binary: parse the command line, set up logging, run the command.
#![forbid(unsafe_code)]

use clap::Parser;
use footfall::config::{Cli, Command};

fn main() -> anyhow::Result<()> {
    match Cli::parse().into_command() {
        Command::Serve(args) => {
            // Held to the end of `main`: dropping it flushes the buffered log lines.
            let _log_guard = footfall::telemetry::init_tracing(args.log_format)?;
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.http_worker_threads())
                .enable_all()
                .build()?
                .block_on(footfall::cli::serve(args))
        }
        Command::Import(args) => footfall::cli::import(&args),
        Command::Export(args) => footfall::cli::export(&args),
        Command::Cleanup(args) => footfall::cli::cleanup(&args),
    }
}
