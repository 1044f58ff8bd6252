//! `aviary plugin …`: build and install bots, and manage them on a running
//! host through its admin API.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use super::AdminArgs;
use crate::localtime::iso_local;
use crate::runtime::Manifest;

#[derive(Subcommand)]
pub(super) enum PluginCommand {
    /// Build a bot crate for wasm32-wasip2 and put `<id>.wasm` and its
    /// manifest `<id>.toml` into the output directory.
    Build {
        /// The bot's crate directory (holding Cargo.toml and bot.toml).
        dir: PathBuf,
        /// Where to put the built bot (default: bots).
        #[arg(long, default_value = "bots")]
        out: PathBuf,
    },
    /// Create a new bot crate `<dir>/<name>` that builds for wasm32-wasip2
    /// and passes its own unit tests (`cargo test`) at once.
    New {
        /// The bot's id and crate name: letters, digits, `-` and `_`,
        /// starting with a letter.
        name: String,
        /// The directory to create the crate in (default: the current one).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The Aviary SDK directory the crate depends on (default: `sdk/` of
        /// the checkout this binary was built from).
        #[arg(long, env = "AVIARY_SDK")]
        sdk: Option<PathBuf>,
    },
    /// Install a bot into a running host's plugins directory (atomically)
    /// and load it: a `.wasm` with its `.toml` manifest beside it, or a
    /// crate directory, which is built first.
    Install {
        /// `<file>.wasm` (with `<file>.toml`) or a bot crate directory.
        path: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Every bot: running version, sha256, status, held upgrade, last error.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The builds a bot served, oldest first: what `rollback --to` accepts.
    Versions {
        bot: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Put back the build that served before the current one, or the one
    /// `--to` names. Needs no file: every build that served is kept.
    Rollback {
        bot: String,
        /// A version, or a sha256 prefix (at least 4 hex digits).
        #[arg(long)]
        to: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Stop running a bot's events; they wait, in order, until `enable`.
    Disable {
        bot: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Run a disabled bot's events again, the waiting ones first.
    Enable {
        bot: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Unload a bot and delete its files from the plugins directory. Its
    /// kv is kept unless `--purge --yes`.
    Remove {
        bot: String,
        /// Delete the bot's kv as well (cannot be undone; needs --yes).
        #[arg(long)]
        purge: bool,
        /// Confirm --purge.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// A bot's own log lines and what it printed, kept by the host (the
    /// newest 1000).
    Logs {
        bot: String,
        /// Keep printing new lines as they come.
        #[arg(long, short)]
        follow: bool,
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// A bot's data tables (declared under `[data.<table>]` in its
    /// manifest): import a CSV, replacing the table whole while the bot
    /// serves, or export it.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// What a bot did since the host started: events, errors, dead
    /// letters, handle times, memory, kv against its quota, denials,
    /// lookups in its audited data tables.
    Stats {
        bot: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub(super) enum DataCommand {
    /// Replace table `--table` (default: the file's name without `.csv`)
    /// of a bot with the rows of a CSV file (a header line first).
    Import {
        bot: String,
        file: PathBuf,
        #[arg(long)]
        table: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print a bot's table as CSV (or write it to `--out`).
    Export {
        bot: String,
        table: String,
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Runs one `aviary plugin data` command.
fn data(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Import {
            bot,
            file,
            table,
            admin,
        } => {
            let table = match table {
                Some(table) => table,
                None => file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_owned)
                    .with_context(|| {
                        format!("name the table with --table (from {})", file.display())
                    })?,
            };
            let csv =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let body = admin
                .client()?
                .put_csv(&format!("/api/v1/admin/bots/{bot}/data/{table}"), csv)?;
            let done = &body["imported"];
            println!(
                "imported {} rows into table `{table}` of {bot} (replacing {} rows)",
                done["rows"], done["replaced"]
            );
        }
        DataCommand::Export {
            bot,
            table,
            out,
            admin,
        } => {
            let body = admin
                .client()?
                .get(&format!("/api/v1/admin/bots/{bot}/data/{table}"))?;
            let csv = text(&body["csv"]);
            match out {
                Some(path) => std::fs::write(&path, csv)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => print!("{csv}"),
            }
        }
    }
    Ok(())
}

/// Runs one `aviary plugin` command.
pub(super) fn run(command: PluginCommand) -> Result<ExitCode> {
    match command {
        PluginCommand::Build { dir, out } => {
            let built = crate::plugin_build::build(&dir, &out)?;
            println!(
                "built bot `{}` {} into {}",
                built.id,
                built.version,
                built.wasm.display()
            );
        }
        PluginCommand::New { name, dir, sdk } => {
            let created = crate::plugin_new::create(&name, dir.as_deref(), sdk.as_deref())?;
            print!("{}", created.summary());
        }
        PluginCommand::Install { path, admin } => return install(&path, &admin),
        PluginCommand::List { json, admin } => {
            let body = admin.client()?.get("/api/v1/admin/bots")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body["bots"])?);
            } else {
                print_list(&body);
            }
        }
        PluginCommand::Versions { bot, json, admin } => {
            let body = admin
                .client()?
                .get(&format!("/api/v1/admin/bots/{bot}/versions"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body["versions"])?);
            } else {
                print_versions(&body);
            }
        }
        PluginCommand::Rollback {
            bot,
            to,
            json,
            admin,
        } => {
            let body = admin.client()?.post(
                &format!("/api/v1/admin/bots/{bot}/rollback"),
                &json!({ "to": to }),
            )?;
            let done = &body["rolled_back"];
            if json {
                println!("{}", serde_json::to_string_pretty(done)?);
            } else {
                println!(
                    "rolled back {bot} from {} to {} (sha256 {}): swapped in {} µs{}",
                    text(&done["from"]),
                    text(&done["to"]),
                    short(&done["sha256"]),
                    done["took_us"],
                    if done["in_memory"] == true {
                        ", still loaded in memory"
                    } else {
                        ", loaded from the kept copy"
                    }
                );
            }
        }
        PluginCommand::Disable { bot, admin } => {
            admin
                .client()?
                .post(&format!("/api/v1/admin/bots/{bot}/disable"), &json!({}))?;
            println!("{bot} disabled: its events wait until `aviary plugin enable {bot}`");
        }
        PluginCommand::Enable { bot, admin } => {
            admin
                .client()?
                .post(&format!("/api/v1/admin/bots/{bot}/enable"), &json!({}))?;
            println!("{bot} enabled: its waiting events run now");
        }
        PluginCommand::Remove {
            bot,
            purge,
            yes,
            admin,
        } => {
            anyhow::ensure!(
                !purge || yes,
                "--purge deletes the kv of `{bot}` for good; add --yes to confirm (or drop --purge to keep it)"
            );
            let body = admin.client()?.post(
                &format!("/api/v1/admin/bots/{bot}/remove"),
                &json!({ "purge": purge, "confirm": yes }),
            )?;
            if purge {
                println!(
                    "{bot} removed; its kv purged ({} keys)",
                    body["removed"]["purged_keys"]
                );
            } else {
                println!("{bot} removed; its kv is kept (reinstall it to use it again)");
            }
        }
        PluginCommand::Logs {
            bot,
            follow,
            json,
            admin,
        } => logs(&bot, follow, json, &admin)?,
        PluginCommand::Data { command } => data(command)?,
        PluginCommand::Stats { bot, json, admin } => {
            let body = admin
                .client()?
                .get(&format!("/api/v1/admin/bots/{bot}/stats"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body["stats"])?);
            } else {
                print_stats(&body["stats"]);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies a built bot into the host's plugins directory, asks the host to
/// load it, and says what became of it.
fn install(path: &Path, admin: &AdminArgs) -> Result<ExitCode> {
    let client = admin.client()?;
    let wasm = if path.is_dir() {
        let out = std::env::temp_dir().join(format!("aviary-install-{}", std::process::id()));
        crate::plugin_build::build(path, &out)?.wasm
    } else {
        anyhow::ensure!(
            path.extension().is_some_and(|x| x == "wasm"),
            "{} is neither a bot crate directory nor a `.wasm` component",
            path.display()
        );
        path.to_owned()
    };
    let manifest_path = wasm.with_extension("toml");
    let manifest = Manifest::read(&manifest_path).with_context(|| {
        format!(
            "a component needs its manifest beside it as {}",
            manifest_path.display()
        )
    })?;
    let bytes = std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let manifest_text = std::fs::read(&manifest_path)?;
    let listing = client.get("/api/v1/admin/bots")?;
    let plugins_dir = PathBuf::from(text(&listing["plugins_dir"]));
    let id = &manifest.id;
    // The component first, the manifest last: a watcher that rescans in
    // between sees the new component with the old manifest and loads
    // nothing until both have settled.
    crate::files::write_atomically(&plugins_dir.join(format!("{id}.wasm")), &bytes)?;
    crate::files::write_atomically(&plugins_dir.join(format!("{id}.toml")), &manifest_text)?;
    let body = client.post("/api/v1/admin/reload", &json!({}))?;
    let sha256 = crate::runtime::sha256_hex(&bytes);
    let bot = body["bots"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["id"] == id.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    let installed = format!("{id} {} (sha256 {})", manifest.version, &sha256[..12]);
    if bot["sha256"] == sha256.as_str() {
        println!("installed {installed}: {}", text(&bot["status"]));
        return Ok(ExitCode::SUCCESS);
    }
    if bot["pending"]["sha256"] == sha256.as_str() {
        println!(
            "installed {installed}: held for approval, it asks for more than its grant; review it with `aviary policy audit {id}`, then `aviary policy approve {id} {}`",
            manifest.version
        );
        return Ok(ExitCode::SUCCESS);
    }
    let serving = match text(&bot["version"]) {
        "" => "no version of it is serving".to_owned(),
        version => format!("{version} keeps serving"),
    };
    eprintln!(
        "error: {installed} did not load: {}; {serving}",
        bot["error"].as_str().unwrap_or("no error was recorded")
    );
    Ok(ExitCode::FAILURE)
}

/// Prints the bot's log lines, then (with `follow`) new ones as they come.
fn logs(bot: &str, follow: bool, json: bool, admin: &AdminArgs) -> Result<()> {
    let client = admin.client()?;
    let mut after = 0;
    let mut wait = 0;
    loop {
        let body = client.get(&format!(
            "/api/v1/admin/bots/{bot}/logs?after={after}&wait={wait}"
        ))?;
        for line in body["lines"].as_array().into_iter().flatten() {
            after = after.max(line["seq"].as_u64().unwrap_or(after));
            if json {
                println!("{line}");
            } else {
                println!(
                    "{} {:5} {} {}",
                    line["at"].as_u64().map(iso_local).unwrap_or_default(),
                    text(&line["level"]),
                    text(&line["version"]),
                    text(&line["text"])
                );
            }
        }
        if !follow {
            return Ok(());
        }
        // Then ask for what comes after, waiting on the host for it.
        wait = 25;
    }
}

fn print_list(body: &Value) {
    let mut rows = vec![[
        "BOT".to_owned(),
        "VERSION".into(),
        "SHA256".into(),
        "STATUS".into(),
        "HELD".into(),
        "LAST ERROR".into(),
    ]];
    for bot in body["bots"].as_array().into_iter().flatten() {
        let held = bot["pending"]["version"]
            .as_str()
            .map(|v| format!("{v} (needs approval)"))
            .unwrap_or_else(|| "-".into());
        let error = match (bot["error_at"].as_u64(), bot["error"].as_str()) {
            (Some(at), Some(error)) => {
                format!("{} {}", iso_local(at), crate::text::cut(error, 160))
            }
            _ => "-".into(),
        };
        rows.push([
            text(&bot["id"]).to_owned(),
            or_dash(text(&bot["version"])),
            or_dash(short(&bot["sha256"])),
            text(&bot["status"]).to_owned(),
            held,
            error,
        ]);
    }
    print_table(&rows);
    let watch = if body["watch"] == true {
        "watched: changes load by themselves"
    } else {
        "not watched: run `aviary reload` after a change"
    };
    println!("plugins directory {} ({watch})", text(&body["plugins_dir"]));
}

fn print_versions(body: &Value) {
    let mut rows = vec![[
        "WHEN".to_owned(),
        "VERSION".into(),
        "SHA256".into(),
        "HOW".into(),
        "".into(),
    ]];
    for v in body["versions"].as_array().into_iter().flatten() {
        rows.push([
            v["at"].as_u64().map(iso_local).unwrap_or_default(),
            text(&v["version"]).to_owned(),
            short(&v["sha256"]).to_owned(),
            text(&v["how"]).to_owned(),
            if v["current"] == true { "current" } else { "" }.to_owned(),
        ]);
    }
    print_table(&rows);
}

fn print_stats(stats: &Value) {
    let us = |v: &Value| {
        v.as_u64()
            .map(|us| format!("{us} µs"))
            .unwrap_or_else(|| "-".into())
    };
    let denials: Vec<String> = stats["denials"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(capability, count)| format!("{capability} {count}"))
        .collect();
    let quota = match (
        stats["kv_max_bytes"].as_u64(),
        stats["kv_max_keys"].as_u64(),
    ) {
        (Some(bytes), Some(keys)) => format!("of {bytes} bytes in {keys} keys"),
        _ => "(kv not granted)".into(),
    };
    println!(
        "{} {} {}",
        text(&stats["bot"]),
        text(&stats["version"]),
        text(&stats["status"])
    );
    println!(
        "  events      {} ({} failed, {} dead-lettered)",
        stats["events"], stats["errors"], stats["dead_letters"]
    );
    println!(
        "  handle time p50 {}, p99 {}",
        us(&stats["handle_p50_us"]),
        us(&stats["handle_p99_us"])
    );
    println!(
        "  memory      {} KiB high-water",
        stats["memory_high_water_bytes"].as_u64().unwrap_or(0) / 1024
    );
    println!(
        "  kv          {} keys, {} bytes {quota}",
        stats["kv_keys"], stats["kv_bytes"]
    );
    println!(
        "  denials     {}",
        if denials.is_empty() {
            "none".into()
        } else {
            denials.join(", ")
        }
    );
    for (table, reads) in stats["tables"].as_object().into_iter().flatten() {
        println!(
            "  data        {table}: {} lookups, {} found",
            reads["reads"], reads["found"]
        );
    }
    println!(
        "  swaps       {} (with events waiting, the first ran on the new version within p99 {})",
        stats["swaps"],
        us(&stats["swap_p99_us"])
    );
}

/// Prints rows as left-aligned columns.
fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

/// The first 12 hex digits of a sha256.
fn short(value: &Value) -> &str {
    let full = text(value);
    &full[..full.len().min(12)]
}

fn or_dash(value: &str) -> String {
    if value.is_empty() {
        "-".into()
    } else {
        value.into()
    }
}
