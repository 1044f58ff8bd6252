//! `aviary policy …`: review what bots may do, approve or reject held builds.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;

use super::{print_bots, PolicyCommand};
use crate::policy::report::{BotAudit, BuildDiff};
use crate::runtime::{Manifest, Runtime};

pub(super) fn run(command: PolicyCommand) -> Result<ExitCode> {
    match command {
        PolicyCommand::Audit { bot, json, admin } => {
            let path = match &bot {
                Some(bot) => format!("/api/v1/admin/policy/audit?bot={bot}"),
                None => "/api/v1/admin/policy/audit".into(),
            };
            let body = admin.client()?.get(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body["bots"])?);
            } else {
                let audits: Vec<BotAudit> = serde_json::from_value(body["bots"].clone())
                    .context("unexpected audit answer")?;
                for audit in audits {
                    println!("{}", audit.to_text());
                }
            }
        }
        PolicyCommand::Diff { old, new, json } => {
            let diff = diff_builds(&old, &new)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&diff)?);
            } else {
                print_diff(&diff);
            }
        }
        PolicyCommand::Approve {
            bot,
            version,
            admin,
        } => print_bots(&admin.client()?.post(
            "/api/v1/admin/policy/approve",
            &json!({ "bot": bot, "version": version }),
        )?),
        PolicyCommand::Reject {
            bot,
            version,
            admin,
        } => print_bots(&admin.client()?.post(
            "/api/v1/admin/policy/reject",
            &json!({ "bot": bot, "version": version }),
        )?),
    }
    Ok(ExitCode::SUCCESS)
}

fn diff_builds(old: &Path, new: &Path) -> Result<BuildDiff> {
    let cache = tempfile_dir()?;
    let runtime = Runtime::new(&cache, |_| Ok(crate::runtime::Services::none()))?;
    let read = |path: &Path| -> Result<(Vec<String>, crate::policy::Capabilities)> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let imports = runtime
            .inspect(&bytes)
            .with_context(|| format!("{} is not a component", path.display()))?
            .imports;
        let manifest = path.with_extension("toml");
        let asks = if manifest.exists() {
            Manifest::read(&manifest)?.asks
        } else {
            Default::default()
        };
        Ok((imports, asks))
    };
    let (old_imports, old_asks) = read(old)?;
    let (new_imports, new_asks) = read(new)?;
    let _ = std::fs::remove_dir_all(&cache);
    Ok(BuildDiff::new(
        &old_imports,
        &new_imports,
        &old_asks,
        &new_asks,
    ))
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("aviary-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn print_diff(diff: &BuildDiff) {
    for import in &diff.added_imports {
        println!("+ import {import}");
    }
    for import in &diff.removed_imports {
        println!("- import {import}");
    }
    for ask in &diff.added_asks {
        println!(
            "+ asks {}: {} (was {})",
            ask.capability, ask.asked, ask.granted
        );
    }
    for ask in &diff.dropped_asks {
        println!(
            "- asks {}: {} (now {})",
            ask.capability, ask.asked, ask.granted
        );
    }
    println!(
        "{}",
        if diff.escalates() {
            "the new build asks for more: an upgrade will be held for approval"
        } else {
            "the new build asks for nothing more"
        }
    );
}
