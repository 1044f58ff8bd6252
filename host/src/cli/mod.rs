//! The `aviary` command line: a parser plus calls into the library.

mod audit;
mod outbox;
mod plugin;
mod policy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use crate::admin::AdminClient;
use crate::app::App;
use crate::config::Config;

/// Aviary runs chat bots as sandboxed WebAssembly components.
#[derive(Parser)]
#[command(name = "aviary", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the host: load the bots from the plugins directory, check each
    /// against its grant, and serve the web channel (HTTP API, WebSocket and
    /// chat page).
    Up(UpArgs),
    /// Create, build, install and manage bots: list, versions, rollback,
    /// disable, enable, remove, logs and stats.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Re-scan the plugins directory of a running host: load new and changed
    /// bots (hot reload), hold those that ask for more than granted.
    Reload(Listing),
    /// Review and decide what bots may do.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Read and check the hash-chained audit log of a running host.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// List the events and outbox jobs that failed on every attempt, from a
    /// running host; `retry <id>` or `drop <id>` one of them.
    DeadLetters(outbox::DeadLettersArgs),
    /// The outbound requests bots queued: list, retry, drop.
    #[command(subcommand)]
    Outbox(outbox::OutboxCommand),
}

/// An admin command that prints a listing.
#[derive(clap::Args)]
pub(super) struct Listing {
    /// Print JSON instead of text.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    pub(super) admin: AdminArgs,
}

#[derive(clap::Args)]
struct UpArgs {
    /// Configuration file (TOML). Without it every setting has its default.
    #[arg(long, short, env = "AVIARY_CONFIG")]
    config: Option<PathBuf>,
    /// Address to serve on, overriding `listen` (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory, overriding `data_dir` (default .aviary/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Directory of `<id>.wasm` + `<id>.toml` bots, overriding `plugins_dir` (default bots).
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
    /// Directory of grants, `<id>.toml` per bot, overriding `policies_dir` (default policies).
    #[arg(long)]
    policies_dir: Option<PathBuf>,
    /// Directory of embedded models, overriding `llm.models_dir` (default <data_dir>/models);
    /// `cargo xtask up` installs the default model into target/models.
    #[arg(long, env = "AVIARY_MODELS_DIR")]
    models_dir: Option<PathBuf>,
}

/// Where the running host is and where its admin token lives.
#[derive(clap::Args)]
pub(super) struct AdminArgs {
    /// The host's web address.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "AVIARY_URL")]
    url: String,
    /// The host's data directory (holds admin.token).
    #[arg(long, default_value = ".aviary/data", env = "AVIARY_DATA_DIR")]
    data_dir: PathBuf,
}

impl AdminArgs {
    pub(super) fn client(&self) -> Result<AdminClient> {
        AdminClient::new(&self.url, &self.data_dir)
    }
}

#[derive(Subcommand)]
pub(super) enum PolicyCommand {
    /// Per bot: component sha256, the imports it really has, its asks, its
    /// grant, grants it never uses, what is missing, and risk notes.
    Audit {
        /// Only this bot.
        bot: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// What a new build adds or drops in imports and asks. Each argument is a
    /// component `.wasm` with its manifest `.toml` beside it.
    Diff {
        old: PathBuf,
        new: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Approve a held version: its asks join the bot's grant and it replaces
    /// the running version.
    Approve {
        bot: String,
        version: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Drop a held version; the running version stays.
    Reject {
        bot: String,
        version: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub(super) enum AuditCommand {
    /// The latest records of the audit log.
    Tail {
        /// How many records.
        #[arg(short, default_value_t = 20)]
        n: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Check the hash chain; exits 1 and names the first broken record.
    Verify {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Runs the command line and turns errors into a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Up(args) => up(args)?,
        Command::Reload(Listing { json, admin }) => {
            let body = admin.client()?.post("/api/v1/admin/reload", &json!({}))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body["bots"])?);
            } else {
                print_bots(&body);
            }
        }
        Command::DeadLetters(args) => return outbox::dead_letters(args),
        Command::Outbox(command) => return outbox::run(command),
        Command::Policy(command) => return policy::run(command),
        Command::Audit(command) => return audit::run(command),
        Command::Plugin(command) => return plugin::run(command),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn print_bots(body: &Value) {
    for bot in body["bots"].as_array().into_iter().flatten() {
        let pending = bot["pending"]["version"]
            .as_str()
            .map(|v| format!(" (version {v} held for approval)"))
            .unwrap_or_default();
        let error = bot["error"]
            .as_str()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        println!(
            "{} {} {}{pending}{error}",
            bot["id"].as_str().unwrap_or(""),
            bot["version"].as_str().unwrap_or(""),
            bot["status"].as_str().unwrap_or("")
        );
    }
}

pub(super) fn print_dead_letters(letters: &Value) {
    let all = letters.as_array().map(Vec::as_slice).unwrap_or_default();
    if all.is_empty() {
        println!("no dead letters");
    }
    for letter in all {
        let event = &letter["event"];
        println!(
            "#{} {} bot={} conversation={} attempts={}: {}",
            event["seq"],
            letter["at"]
                .as_u64()
                .map(crate::localtime::iso_local)
                .unwrap_or_default(),
            event["bot"].as_str().unwrap_or(""),
            event["conversation"].as_str().unwrap_or(""),
            letter["attempts"],
            letter["error"].as_str().unwrap_or("")
        );
    }
}

fn up(args: UpArgs) -> Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(dir) = args.plugins_dir {
        config.plugins_dir = dir;
    }
    if let Some(dir) = args.policies_dir {
        config.policies_dir = dir;
    }
    if let Some(dir) = args.models_dir {
        config.llm.models_dir = Some(dir);
    }
    let app = App::start(config)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(app.serve())
}

fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("AVIARY_LOG").unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}
