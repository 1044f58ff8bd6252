//! The `aviary` command line: a parser plus calls into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
    /// Start the host: load the bots from the plugins directory and serve the
    /// web channel (HTTP API, WebSocket and chat page).
    Up(UpArgs),
    /// Work with bot sources.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// List the events that failed on every attempt, from a running host.
    DeadLetters(AdminArgs),
}

/// Where the running host is and where its admin token lives.
#[derive(clap::Args)]
struct AdminArgs {
    /// The host's web address.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "AVIARY_URL")]
    url: String,
    /// The host's data directory (holds admin.token).
    #[arg(long, default_value = ".aviary/data")]
    data_dir: PathBuf,
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
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Build a bot crate for wasm32-wasip2 and put `<id>.wasm` and its
    /// manifest `<id>.toml` into the output directory.
    Build {
        /// The bot's crate directory (holding Cargo.toml and bot.toml).
        dir: PathBuf,
        /// Where to put the built bot (default: bots).
        #[arg(long, default_value = "bots")]
        out: PathBuf,
    },
}

/// Runs the command line and turns errors into a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Up(args) => up(args),
        Command::Plugin(PluginCommand::Build { dir, out }) => {
            let built = crate::plugin_build::build(&dir, &out)?;
            println!("built bot `{}` {} into {}", built.id, built.version, built.wasm.display());
            Ok(())
        }
        Command::DeadLetters(args) => {
            let body = crate::admin::AdminClient::new(&args.url, &args.data_dir)?.get("/api/v1/admin/dead-letters")?;
            println!("{}", serde_json::to_string_pretty(&body["dead_letters"])?);
            Ok(())
        }
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
    let app = App::start(config)?;
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(app.serve())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AVIARY_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
