//! The `weir` command: `weir run --config weir.yaml` (SIGHUP or an edit of
//! the file reloads it), `weir validate weir.yaml`, and the admin API's
//! clients: `weir apply`, `weir admin …`, `weir plugins …` (whose `list`
//! shows the plugins built into the binary, and needs no gateway);
//! `weir plugin test`, one request through one filter without a gateway;
//! and `weir completions SHELL` and `weir man`, generated from this parser.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use weir::Gateway;
use weir::control::cluster::{Cluster, ClusterSettings};

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
    /// Log filter, e.g. `info`, `warn,weir::plugin=debug` (tracing-subscriber syntax).
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
            response_cache_bytes: None,
            without_access_log: false,
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
        /// Memory for cached responses (the `cache` built-in's), like
        /// `256MiB`; one entry may take at most an eighth of it.
        #[arg(long, env = "WEIR_RESPONSE_CACHE_SIZE", default_value = "256MiB", value_parser = byte_size)]
        response_cache_size: u64,
        /// Reload when the manifest file changes (`--watch false` reloads on
        /// SIGHUP only).
        #[arg(long, env = "WEIR_WATCH", default_value_t = true, action = clap::ArgAction::Set)]
        watch: bool,
        /// Share the config with every node that names the same Redis and
        /// cluster key: `redis://[user:password@]host:port[/db]`. Without it
        /// the node is on its own and its file is its only source.
        #[arg(long, env = "WEIR_CLUSTER", hide_env_values = true)]
        cluster: Option<String>,
        /// Which cluster in that Redis this node joins (its keys are `weir:<key>:…`).
        #[arg(long, env = "WEIR_CLUSTER_KEY", default_value = "default")]
        cluster_key: String,
        /// How often a cluster node reads the cluster's version besides
        /// being told by pub/sub: the longest a missed message goes unseen.
        #[arg(long, env = "WEIR_CLUSTER_POLL", default_value = "1s", value_parser = poll_period)]
        cluster_poll: std::time::Duration,
    },
    /// Check a manifest without serving; lists every problem.
    Validate {
        /// The route manifest.
        #[arg(env = "WEIR_CONFIG", default_value = "weir.yaml")]
        config: PathBuf,
    },
    /// Make a running gateway serve a manifest (through its admin API).
    Apply {
        /// The manifest to apply.
        #[arg(long = "file", short = 'f')]
        file: PathBuf,
        /// Apply only if the running config is still this version (an ETag
        /// from `weir admin config`).
        #[arg(long)]
        if_version: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Read a running gateway through its admin API.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Work with one plugin module on its own, without a gateway.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// List the plugins built into this binary; upload plugin modules to a
    /// running gateway, list and roll back their versions.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print a shell completion script, e.g.
    /// `weir completions bash > /usr/share/bash-completion/completions/weir`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `weir man | man -l -`; with `--dir`,
    /// write `weir.1` and one page per command (`weir-run.1`, …) there.
    Man {
        /// Write every page into this directory (made if missing) instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Run one request through the filter in Weir's Wasm runtime and print,
    /// phase by phase, what it did: exit 0 when it ran without failure, 1
    /// when it failed, 2 for bad input.
    Test(PluginTestArgs),
}

#[derive(Debug, clap::Args)]
struct PluginTestArgs {
    /// The module (`.wasm`); its file name (without `.wasm`) is the plugin's name.
    file: PathBuf,
    /// The filter's configuration, as the plugin reads it (JSON text, or any text).
    #[arg(long, default_value = "")]
    config: String,
    /// The request: an HTTP/1.1 message as text (request line, headers,
    /// blank line, body).
    #[arg(long)]
    request: PathBuf,
    /// What the upstream answers if the filter lets the request through
    /// (default: `HTTP/1.1 200 OK`, no body).
    #[arg(long)]
    response: Option<PathBuf>,
    /// An upstream group callouts may reach, as `NAME=HOST:PORT` (repeatable).
    #[arg(long = "upstream", value_parser = upstream_arg)]
    upstreams: Vec<(String, String)>,
    /// The root id (`plugin_root_id`; default: the plugin's name).
    #[arg(long)]
    root_id: Option<String>,
    /// How long a paused phase waits for the filter to resume it.
    #[arg(long, default_value = "10s", value_parser = pause_limit)]
    timeout: std::time::Duration,
}

#[derive(Debug, Subcommand)]
enum PluginsCommand {
    /// List the plugins built into this binary (a manifest names one with
    /// `builtin: NAME`): version, size, sha256 and what it does. Needs no
    /// running gateway.
    List {
        /// Print the JSON Schema of this built-in's `config` instead.
        #[arg(long, value_name = "NAME")]
        schema: Option<String>,
    },
    /// Upload a module as the plugin's next version and run it (the plugin
    /// is created when the manifest has none of that name).
    Push {
        /// The plugin's name.
        name: String,
        /// The module (`.wasm`).
        file: PathBuf,
    },
    /// List the plugin's uploaded versions; `*` marks the one that runs.
    Versions {
        /// The plugin's name.
        name: String,
    },
    /// Run the version before the running one (or `--version N`).
    Rollback {
        /// The plugin's name.
        name: String,
        /// The version to run.
        #[arg(long)]
        version: Option<u64>,
    },
}

/// Where the admin API is and how to call it.
#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// The admin API's URL.
    #[arg(
        long,
        env = "WEIR_ADMIN_URL",
        default_value = "http://127.0.0.1:9901",
        global = true
    )]
    admin_url: String,
    /// A bearer token of the manifest's `admin.tokens`.
    #[arg(long, env = "WEIR_ADMIN_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// For an https:// admin URL: the CA (PEM) that issued the admin API's
    /// certificate; the system's roots when absent.
    #[arg(long, env = "WEIR_ADMIN_CA", global = true)]
    admin_ca: Option<PathBuf>,
    /// A client certificate (PEM) for an admin API with `tls.client_ca`.
    #[arg(long, env = "WEIR_ADMIN_CERT", global = true, requires = "admin_key")]
    admin_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "WEIR_ADMIN_KEY", global = true, requires = "admin_cert")]
    admin_key: Option<PathBuf>,
}

impl AdminArgs {
    /// The admin API these arguments name.
    fn endpoint(&self) -> weir::control::admin::client::Endpoint {
        weir::control::admin::client::Endpoint {
            url: self.admin_url.clone(),
            token: self.token.clone(),
            tls: weir::control::admin::client::ClientTls {
                ca: self.admin_ca.clone(),
                cert: self.admin_cert.clone(),
                key: self.admin_key.clone(),
            },
        }
    }
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Print the running manifest (as written), with its version.
    Config,
    /// Check a manifest against the running gateway without applying it.
    Validate {
        /// The manifest.
        file: PathBuf,
    },
    /// Print whether the gateway is ready, and its generation.
    Status,
    /// Print the running routes (JSON).
    Routes,
    /// Print the running upstreams (JSON).
    Upstreams,
    /// Print the running plugins (JSON).
    Plugins,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_format);
    match &cli.command {
        Command::Validate { config } => match validate(config, &cli.options(None)) {
            Ok(manifest) => print_bytes(
                format!(
                    "{}: ok ({}, {}, {})\n",
                    config.display(),
                    count(manifest.listeners.len(), "listener"),
                    count(manifest.upstreams.len(), "upstream"),
                    count(manifest.routes.len(), "route")
                )
                .as_bytes(),
            ),
            Err(error) => {
                eprintln!("{error}");
                ExitCode::from(2)
            }
        },
        Command::Apply {
            file,
            if_version,
            admin,
        } => admin_call(admin, AdminRequest::Apply(file, if_version.as_deref())),
        Command::Admin { command, admin } => admin_call(
            admin,
            match command {
                AdminCommand::Config => AdminRequest::Config,
                AdminCommand::Validate { file } => AdminRequest::Validate(file),
                AdminCommand::Status => AdminRequest::Status,
                AdminCommand::Routes => AdminRequest::List("routes"),
                AdminCommand::Upstreams => AdminRequest::List("upstreams"),
                AdminCommand::Plugins => AdminRequest::List("plugins"),
            },
        ),
        Command::Plugin {
            command: PluginCommand::Test(args),
        } => plugin_test(args, cli.options(None).cache_dir),
        Command::Plugins { command, admin } => match command {
            PluginsCommand::List { schema } => list_builtins(schema.as_deref()),
            PluginsCommand::Push { name, file } => {
                admin_call(admin, AdminRequest::Push(name, file))
            }
            PluginsCommand::Versions { name } => admin_call(admin, AdminRequest::Versions(name)),
            PluginsCommand::Rollback { name, version } => {
                admin_call(admin, AdminRequest::Rollback(name, *version))
            }
        },
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "weir", &mut script);
            print_bytes(&script)
        }
        Command::Man { dir } => {
            let pages = match dir {
                Some(dir) => std::fs::create_dir_all(dir)
                    .and_then(|()| clap_mangen::generate_to(Cli::command(), dir))
                    .with_context(|| format!("cannot write the man pages to {}", dir.display()))
                    .map(|()| Vec::new()),
                None => {
                    let mut page = Vec::new();
                    clap_mangen::Man::new(Cli::command())
                        .render(&mut page)
                        .map(|()| page)
                        .context("cannot render the man page")
                }
            };
            match pages {
                Ok(page) => print_bytes(&page),
                Err(error) => {
                    eprintln!("{error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config,
            workers,
            response_cache_size,
            watch,
            cluster,
            cluster_key,
            cluster_poll,
        } => match run(
            config.clone(),
            weir::gateway::Options {
                response_cache_bytes: Some(*response_cache_size),
                ..cli.options(*workers)
            },
            *watch,
            cluster.as_ref().map(|url| ClusterSettings {
                url: url.clone(),
                key: cluster_key.clone(),
                poll: *cluster_poll,
            }),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("{error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Writes `bytes` to stdout, as every command prints its output (not
/// `println!`, which panics when the reader has gone). A reader that stops
/// early (`| head`) is no failure; any other write error is reported, exit 1.
fn print_bytes(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cannot write to stdout: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `weir plugins list`: the built-ins as a table, or one's schema; exit 1
/// for a name that is no built-in.
fn list_builtins(schema: Option<&str>) -> ExitCode {
    let builtins = weir::builtins::all();
    let Some(name) = schema else {
        let mut lines = vec![format!(
            "{:<16} {:<8} {:>9}  {:<64}  DESCRIPTION",
            "NAME", "VERSION", "BYTES", "SHA256"
        )];
        for b in builtins {
            lines.push(format!(
                "{:<16} {:<8} {:>9}  {:<64}  {}",
                b.name,
                b.version,
                b.module.len(),
                b.sha256(),
                b.description
            ));
        }
        return print_bytes(format!("{}\n", lines.join("\n")).as_bytes());
    };
    match weir::builtins::find(name) {
        Some(builtin) => print_bytes(format!("{}\n", builtin.schema.trim_end()).as_bytes()),
        None => {
            eprintln!(
                "no built-in plugin `{name}`; this Weir has: {}",
                weir::builtins::names()
            );
            ExitCode::FAILURE
        }
    }
}

/// One call of the admin API the commands make.
enum AdminRequest<'a> {
    Apply(&'a std::path::Path, Option<&'a str>),
    Validate(&'a std::path::Path),
    Config,
    Status,
    /// `GET /routes` and the like.
    List(&'static str),
    Push(&'a str, &'a std::path::Path),
    Versions(&'a str),
    Rollback(&'a str, Option<u64>),
}

/// Makes `request` of the admin API and prints the answer: exit 0 when it
/// succeeded, 1 with the problem (every violation listed) when it did not.
fn admin_call(admin: &AdminArgs, request: AdminRequest<'_>) -> ExitCode {
    use weir::control::admin::client;
    let body = |file: &std::path::Path, content_type| {
        std::fs::read(file)
            .map(|b| (bytes::Bytes::from(b), content_type))
            .with_context(|| format!("cannot read {}", file.display()))
    };
    let plugin = |name: &str| {
        percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let call = async {
        let (method, path, sent, if_match) = match request {
            AdminRequest::Apply(file, version) => (
                http::Method::PUT,
                "/config".to_owned(),
                Some(body(file, "application/yaml")?),
                version,
            ),
            AdminRequest::Validate(file) => (
                http::Method::POST,
                "/config/validate".to_owned(),
                Some(body(file, "application/yaml")?),
                None,
            ),
            AdminRequest::Config => (
                http::Method::GET,
                "/config?format=yaml".to_owned(),
                None,
                None,
            ),
            AdminRequest::Status => (http::Method::GET, "/readyz".to_owned(), None, None),
            AdminRequest::List(kind) => (http::Method::GET, format!("/{kind}"), None, None),
            AdminRequest::Push(name, file) => (
                http::Method::PUT,
                format!("/plugins/{}", plugin(name)),
                Some(body(file, "application/wasm")?),
                None,
            ),
            AdminRequest::Versions(name) => (
                http::Method::GET,
                format!("/plugins/{}/versions", plugin(name)),
                None,
                None,
            ),
            AdminRequest::Rollback(name, version) => (
                http::Method::POST,
                match version {
                    Some(n) => format!("/plugins/{}/rollback?version={n}", plugin(name)),
                    None => format!("/plugins/{}/rollback", plugin(name)),
                },
                None,
                None,
            ),
        };
        anyhow::Ok(client::call(&admin.endpoint(), method, &path, sent, if_match).await?)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let answer = match runtime
        .map_err(anyhow::Error::from)
        .and_then(|r| r.block_on(call))
    {
        Ok(answer) => answer,
        Err(error) => {
            eprintln!("{error:#}");
            return ExitCode::FAILURE;
        }
    };
    if answer.status.is_success() {
        if let Some(version) = answer.headers.get(http::header::ETAG) {
            eprintln!(
                "version {}",
                version.to_str().unwrap_or_default().trim_matches('"')
            );
        }
        print_bytes(format!("{}\n", render(&request, &answer)).as_bytes())
    } else {
        eprintln!("{}", answer.problem_text());
        ExitCode::FAILURE
    }
}

/// `weir plugin test`: exit 0 when the filter ran without failure, 1 when
/// it failed, 2 when the input is unusable.
fn plugin_test(args: &PluginTestArgs, cache_dir: Option<PathBuf>) -> ExitCode {
    use weir::tool::plugin_test;
    let read = |path: &std::path::Path, max: u64| {
        weir::config::read_file(path, max).map_err(|e| format!("{}: {e}", path.display()))
    };
    let input = || -> Result<_, String> {
        let wasm = read(&args.file, weir::config::MAX_PLUGIN_BYTES)?;
        let request = plugin_test::parse_request(&read(&args.request, MAX_MESSAGE_BYTES)?)
            .map_err(|e| format!("{}: {e}", args.request.display()))?;
        let response = match &args.response {
            Some(path) => plugin_test::parse_response(&read(path, MAX_MESSAGE_BYTES)?)
                .map_err(|e| format!("{}: {e}", path.display()))?,
            None => plugin_test::ResponseMessage::default(),
        };
        Ok((wasm, request, response))
    };
    let (wasm, request, response) = match input() {
        Ok(input) => input,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let name = args
        .file
        .file_stem()
        .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned());
    let setup = plugin_test::Setup {
        root_id: args.root_id.clone().unwrap_or_else(|| name.clone()),
        name,
        wasm,
        configuration: bytes::Bytes::from(args.config.clone().into_bytes()),
        upstreams: args.upstreams.clone(),
        pause_limit: args.timeout,
        cache_dir,
    };
    let report = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| {
            runtime
                .block_on(plugin_test::run(&setup, request, response))
                .map_err(|e| e.to_string())
        });
    match report {
        Ok(report) => {
            let printed = print_bytes(plugin_test::render(&report).as_bytes());
            if report.failed() {
                ExitCode::FAILURE
            } else {
                printed
            }
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(2)
        }
    }
}

/// The largest request or response file `weir plugin test` reads.
const MAX_MESSAGE_BYTES: u64 = 16 << 20;

/// `NAME=HOST:PORT`.
fn upstream_arg(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, address)) if !name.is_empty() && address.contains(':') => {
            Ok((name.to_owned(), address.to_owned()))
        }
        _ => Err(format!("`{text}` is not NAME=HOST:PORT")),
    }
}

/// How long a pause may last: `1ms` to `1h`.
fn pause_limit(text: &str) -> Result<std::time::Duration, String> {
    weir::config::parse_duration(text)
        .filter(|d| (1..=3_600_000).contains(&d.as_millis()))
        .ok_or_else(|| format!("`{text}` is not a duration from 1ms to 1h (like 500ms, 10s)"))
}

/// A poll period: `100ms` to `1h`.
fn byte_size(text: &str) -> Result<u64, String> {
    weir::config::parse_size(text)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}` is not a size above 0 (like 64MiB, 1GiB)"))
}

fn poll_period(text: &str) -> Result<std::time::Duration, String> {
    weir::config::parse_duration(text)
        .filter(|d| (100..=3_600_000).contains(&d.as_millis()))
        .ok_or_else(|| format!("`{text}` is not a period from 100ms to 1h (like 500ms, 2s)"))
}

/// A successful answer as the command prints it.
fn render(request: &AdminRequest<'_>, answer: &weir::control::admin::client::Answer) -> String {
    let json = answer.json();
    match request {
        AdminRequest::List(_) => serde_json::to_string_pretty(&json).unwrap_or_default(),
        AdminRequest::Push(name, _) => format!(
            "plugin `{name}`: version {} runs (sha256 {})",
            json["version"]["version"],
            json["version"]["sha256"].as_str().unwrap_or_default()
        ),
        AdminRequest::Rollback(name, _) => format!(
            "plugin `{name}`: version {} runs (was {})",
            json["version"], json["previous"]
        ),
        AdminRequest::Versions(_) => {
            let mut lines = vec![format!(
                "{:<8} {:>10}  {:<64}  {:<29}  RUNNING",
                "VERSION", "BYTES", "SHA256", "UPLOADED"
            )];
            for v in json.as_array().into_iter().flatten() {
                lines.push(format!(
                    "{:<8} {:>10}  {:<64}  {:<29}{}",
                    v["version"],
                    v["size"],
                    v["sha256"].as_str().unwrap_or_default(),
                    v["uploaded"].as_str().unwrap_or("-"),
                    if v["running"] == true { "  *" } else { "" }
                ));
            }
            lines.join("\n")
        }
        _ => String::from_utf8_lossy(&answer.body).trim_end().to_owned(),
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

fn run(
    config: PathBuf,
    options: weir::gateway::Options,
    watch: bool,
    cluster: Option<ClusterSettings>,
) -> anyhow::Result<()> {
    // The workers run their own runtimes (`Gateway::start_with` starts them);
    // this one runs start-up, the admin API, reloads and shutdown.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the control runtime")?;
    // First thing: until the handlers are in place, SIGHUP (a reload asked
    // for early, by `systemctl reload` say) would kill the process.
    let signals = {
        let _runtime = runtime.enter();
        weir::control::Signals::install()?
    };
    let text = weir::control::read_manifest(&config)?;
    let base_dir = config.parent().unwrap_or(std::path::Path::new("."));
    let manifest = weir::config::parse(&text, &config, base_dir)?;
    if let Some(settings) = &cluster {
        settings.client().context("cannot join the cluster")?;
    }
    runtime.block_on(async {
        let admin = manifest.admin.clone();
        let admin_listener = match &admin {
            Some(admin) => Some(weir::control::admin::bind(admin).await?),
            None => None,
        };
        let gateway = Arc::new(Gateway::start_with(manifest, &options).await?);
        let store = Arc::new(weir::control::Store::new(
            gateway.clone(),
            config.clone(),
            text,
            admin.as_ref(),
        ));
        let cluster_task = match &cluster {
            Some(settings) => {
                let node =
                    Cluster::new(settings, store.clone()).context("cannot join the cluster")?;
                Some(tokio::spawn(node.run()))
            }
            None => None,
        };
        let admin_task = admin_listener.map(|listener| {
            if let Ok(address) = listener.local_addr() {
                let scheme = if listener.is_tls() { "https" } else { "http" };
                tracing::info!(%address, scheme, "admin API listening");
            }
            weir::control::admin::serve(listener, store.clone())
        });
        weir::control::run_until_stopped(&store, signals, watch).await?;
        tracing::info!("shutting down: draining in-flight requests");
        store.start_draining();
        let drained = gateway.shutdown().await;
        for task in admin_task.into_iter().chain(cluster_task) {
            task.abort();
        }
        tracing::info!(drained, "stopped");
        Ok(())
    })
}

/// Logs to stderr: text lines (coloured on a terminal only) or JSON lines.
fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colours(std::env::var_os("NO_COLOR").as_deref()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Whether text logs are coloured: only when stderr is a terminal (a file,
/// a pipe or the journal gets plain text) and `NO_COLOR` is unset or empty
/// (<https://no-color.org>).
fn colours(no_color: Option<&std::ffi::OsStr>) -> bool {
    use std::io::IsTerminal;
    no_color.is_none_or(|value| value.is_empty()) && std::io::stderr().is_terminal()
}
