//! The `berth` command.

use std::process::ExitCode;

use berth::cli::{Cli, Command};
use berth::commands;
use berth::context::Context;
use clap::Parser;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // Help and --version are not failures; bad usage exits 125 like Docker's CLI.
            return if error.use_stderr() {
                ExitCode::from(125)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let filter = if cli.debug { "debug" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let ctx = Context {
        root: cli.root,
        debug: cli.debug,
    };
    let creates_containers = matches!(cli.command, Command::Run(_) | Command::Create(_));
    let code = match commands::dispatch(&ctx, cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("berth: {}", berth::error_chain(&error));
            error.exit_code(creates_containers)
        }
    };
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(255))
}
