//! `tributary`: the platform binary.
//!
//! * `tributary standalone` runs every service in one process with embedded
//!   storage;
//! * `tributary registry|ingest|processor|query` run one service each, for
//!   the distributed mode (Kafka, Scylla);
//! * every other subcommand is the operator CLI, which talks gRPC to a
//!   running platform.
//!
//! This file only parses flags, sets up logging and dispatches.

// A binary exports nothing, so `pub` inside it only marks module APIs.
#![allow(unreachable_pub)]
// Printing to stdout is the point of a CLI (tables, the ready line, tokens).
#![allow(clippy::print_stdout)]

use clap::Parser;

use clap::{CommandFactory, FromArgMatches};

mod cli;
mod output;
mod serve;

/// Tributary: an IoT ingestion platform.
#[derive(Debug, Parser)]
#[command(name = "tributary", version, about, propagate_version = true)]
struct Args {
    #[command(flatten)]
    conn: cli::Connection,
    /// A TOML file of service settings, keyed by long flag name; flags and
    /// environment variables override it.
    #[arg(long, global = true, env = "TRIBUTARY_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Print a service's settings in force (flags, environment, config
    /// file, defaults) as a config file, and exit.
    #[arg(long, global = true)]
    print_config: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Run the whole platform in one process, with embedded storage.
    Standalone(serve::standalone::StandaloneArgs),
    /// Run the registry service (tenants, devices, credentials, presence).
    Registry(serve::registry::RegistryArgs),
    /// Run an ingest frontend replica (HTTP and MQTT) appending to Kafka.
    Ingest(serve::ingest::IngestArgs),
    /// Run a processor replica (Kafka consumer group to the store).
    Processor(serve::processor::ProcessorArgs),
    /// Run a query replica (QueryService and CommandService).
    Query(serve::query::QueryArgs),
    #[command(flatten)]
    Cli(cli::CliCommand),
}

fn main() -> std::process::ExitCode {
    let command = Args::command();
    let argv = match serve::config_file::expand_args(std::env::args_os().collect(), &command) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("tributary: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let matches = match command.clone().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => e.exit(),
    };
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    if args.print_config && !matches!(args.command, Command::Cli(_)) {
        return match serve::print_config::render(&command, &matches, &args.command) {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tributary: {e:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    match args.command {
        Command::Standalone(a) => service("standalone", a.ops.clone(), serve::standalone::run(a)),
        Command::Registry(a) => service("registry", a.ops.clone(), serve::registry::run(a)),
        Command::Ingest(a) => service("ingest", a.ops.clone(), serve::ingest::run(a)),
        Command::Processor(a) => service("processor", a.ops.clone(), serve::processor::run(a)),
        Command::Query(a) => service("query", a.ops.clone(), serve::query::run(a)),
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

/// Runs a service on a multi-threaded runtime until it stops, with logging
/// and (when `--otlp-endpoint` is set) trace export.
fn service(
    name: &str,
    ops: serve::args::OpsArgs,
    run: impl Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
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
    // The exporter's connection lives on the runtime: start it inside, and
    // flush it (dropping the guard) before the runtime goes.
    let guard = {
        let _rt = rt.enter();
        let filter = tributary_otel::env_filter("TRIBUTARY_LOG", "info");
        match tributary_otel::init(ops.otel_config(name), ops.log_json(), filter) {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("tributary: {e}");
                return std::process::ExitCode::from(2);
            }
        }
    };
    let code = match rt.block_on(run) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{name} failed");
            eprintln!("tributary: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    drop(guard);
    code
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
