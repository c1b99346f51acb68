//! The `weir` command: `weir run --config weir.yaml` (SIGHUP or an edit of
//! the file reloads it) and `weir validate weir.yaml`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use weir::Gateway;

/// mimalloc: a proxy allocates and frees many small buffers per request, and
/// it serves them faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "An API gateway whose policies are Wasm filters"
)]
struct Cli {
    /// Log filter, e.g. `info`, `warn,weir::access=off` (tracing-subscriber syntax).
    #[arg(long, env = "WEIR_LOG", default_value = "info", global = true)]
    log: String,
    /// Log format.
    #[arg(
        long,
        env = "WEIR_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    /// Directory for compiled plugin code, so restarts do not recompile
    /// (default: `$HOME/.cache/weir`; `none` disables the cache).
    #[arg(long, env = "WEIR_CACHE_DIR", global = true)]
    cache_dir: Option<String>,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    fn options(&self, workers: Option<usize>) -> weir::gateway::Options {
        let cache_dir = match self.cache_dir.as_deref() {
            Some("none") => None,
            Some(dir) => Some(PathBuf::from(dir)),
            None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weir")),
        };
        weir::gateway::Options {
            cache_dir,
            workers,
            vms: None,
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve traffic with a manifest.
    Run {
        /// The route manifest.
        #[arg(long, short, env = "WEIR_CONFIG", default_value = "weir.yaml")]
        config: PathBuf,
        /// Workers: threads that each serve their own socket of every
        /// listener, with their own VM of each filter and their own upstream
        /// connections (default: one per core).
        #[arg(long, env = "WEIR_WORKERS", value_parser = clap::value_parser!(usize))]
        workers: Option<usize>,
        /// Reload when the manifest file changes (`--watch false` reloads on
        /// SIGHUP only).
        #[arg(long, env = "WEIR_WATCH", default_value_t = true, action = clap::ArgAction::Set)]
        watch: bool,
    },
    /// Check a manifest without serving; lists every problem.
    Validate {
        /// The route manifest.
        #[arg(env = "WEIR_CONFIG", default_value = "weir.yaml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_format);
    match &cli.command {
        Command::Validate { config } => match validate(config, &cli.options(None)) {
            Ok(manifest) => {
                println!(
                    "{}: ok ({}, {}, {})",
                    config.display(),
                    count(manifest.listeners.len(), "listener"),
                    count(manifest.upstreams.len(), "upstream"),
                    count(manifest.routes.len(), "route")
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            config,
            workers,
            watch,
        } => match run(config.clone(), cli.options(*workers), *watch) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("{error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `1 route`, `2 routes`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Validates the manifest, then loads and configures every plugin it names.
fn validate(
    config: &std::path::Path,
    options: &weir::gateway::Options,
) -> anyhow::Result<weir::Manifest> {
    let manifest = weir::config::load(config)?;
    weir::gateway::build_chains(&manifest, options, &weir::services::Services::standalone())?;
    Ok(manifest)
}

fn run(config: PathBuf, options: weir::gateway::Options, watch: bool) -> anyhow::Result<()> {
    let manifest = weir::config::load(&config)?;
    // The workers run their own runtimes (`Gateway::start_with` starts them);
    // this one only runs start-up, reloads and shutdown.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the control runtime")?;
    runtime.block_on(async {
        let gateway = Arc::new(Gateway::start_with(manifest, &options).await?);
        weir::control::run_until_stopped(&gateway, &config, watch).await?;
        tracing::info!("shutting down: draining in-flight requests");
        let gateway = Arc::into_inner(gateway).context("a reload still holds the gateway")?;
        let drained = gateway.shutdown().await;
        tracing::info!(drained, "stopped");
        Ok(())
    })
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
