//! `tributary`: the platform binary.
//!
//! * `tributary standalone` runs every service in one process with embedded
//!   storage;
//! * every other subcommand is the operator CLI, which talks gRPC to a
//!   running platform.
//!
//! This file only parses flags, sets up logging and dispatches.

// A binary exports nothing, so `pub` inside it only marks module APIs.
#![allow(unreachable_pub)]
// Printing to stdout is the point of a CLI (tables, the ready line, tokens).
#![allow(clippy::print_stdout)]

use clap::Parser;

mod cli;
mod output;
mod standalone;

/// Tributary: an IoT ingestion platform.
#[derive(Debug, Parser)]
#[command(name = "tributary", version, about, propagate_version = true)]
struct Args {
    #[command(flatten)]
    conn: cli::Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the whole platform in one process, with embedded storage.
    Standalone(standalone::StandaloneArgs),
    #[command(flatten)]
    Cli(cli::CliCommand),
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Standalone(a) => {
            init_tracing(a.log_format);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tributary: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match rt.block_on(standalone::run(a)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "standalone failed");
                    eprintln!("tributary: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Cli(c) => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tributary: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match rt.block_on(cli::run(args.conn, c)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

/// Log format: human-readable on a terminal, JSON in containers.
#[derive(Debug, Clone, Copy, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable when stderr is a terminal, JSON otherwise.
    #[default]
    Auto,
    Text,
    Json,
}

fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRIBUTARY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Auto => !std::io::stderr().is_terminal(),
        LogFormat::Text => false,
        LogFormat::Json => true,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
