//! `aviary outbox list|retry|drop` and `aviary dead-letters [retry|drop]`:
//! calls to a running host's admin API.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};

use super::{AdminArgs, Listing};

/// What `aviary outbox` does.
#[derive(Subcommand)]
pub(super) enum OutboxCommand {
    /// The jobs waiting in the outbox, and the destinations whose circuit is open.
    List(Listing),
    /// Send a job again now (and close its destination's circuit).
    Retry(JobArgs),
    /// Take a job out of the outbox; its bot gets a delivery event saying so.
    Drop(JobArgs),
}

#[derive(clap::Args)]
pub(super) struct JobArgs {
    /// The job's id, as `aviary outbox list` shows it.
    id: String,
    #[command(flatten)]
    admin: AdminArgs,
}

/// `aviary dead-letters`: a listing, or an action on one letter.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(super) struct DeadLettersArgs {
    #[command(subcommand)]
    action: Option<DeadLetterAction>,
    #[command(flatten)]
    listing: Listing,
}

#[derive(Subcommand)]
enum DeadLetterAction {
    /// Run a dead event again, or put a dead outbox job (`job:<id>`) back in the outbox.
    Retry(JobArgs),
    /// Delete a dead letter.
    Drop(JobArgs),
}

pub(super) fn run(command: OutboxCommand) -> Result<ExitCode> {
    match command {
        OutboxCommand::List(Listing { json, admin }) => {
            let body = admin.client()?.get("/api/v1/admin/outbox")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                print_outbox(&body);
            }
        }
        OutboxCommand::Retry(job) => act(&job, "outbox", "retry", "will be sent again now")?,
        OutboxCommand::Drop(job) => act(&job, "outbox", "drop", "dropped")?,
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn dead_letters(args: DeadLettersArgs) -> Result<ExitCode> {
    match args.action {
        None => {
            let Listing { json, admin } = args.listing;
            let body = admin.client()?.get("/api/v1/admin/dead-letters")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body["dead_letters"])?);
            } else {
                super::print_dead_letters(&body["dead_letters"]);
                print_dead_jobs(&body["outbox"]);
            }
        }
        Some(DeadLetterAction::Retry(job)) => act(&job, "dead-letters", "retry", "retried")?,
        Some(DeadLetterAction::Drop(job)) => act(&job, "dead-letters", "drop", "dropped")?,
    }
    Ok(ExitCode::SUCCESS)
}

fn act(job: &JobArgs, what: &str, verb: &str, done: &str) -> Result<()> {
    job.admin.client()?.post(
        &format!("/api/v1/admin/{what}/{}/{verb}", job.id),
        &json!({}),
    )?;
    println!("{} {done}", job.id);
    Ok(())
}

fn print_outbox(body: &Value) {
    let jobs = body["jobs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if jobs.is_empty() {
        println!("the outbox is empty");
    }
    for job in jobs {
        let next = job["next_at"]
            .as_u64()
            .filter(|&t| t > 0)
            .map(crate::localtime::iso_local);
        println!(
            "{} bot={} {} {} attempts={}{}{}{}",
            job["id"].as_str().unwrap_or(""),
            job["bot"].as_str().unwrap_or(""),
            job["method"].as_str().unwrap_or(""),
            job["url"].as_str().unwrap_or(""),
            job["attempts"],
            if job["sending"] == true {
                " sending"
            } else {
                ""
            },
            next.map(|t| format!(" next={t}")).unwrap_or_default(),
            job["last_error"]
                .as_str()
                .map(|e| format!(": {e}"))
                .unwrap_or_default(),
        );
    }
    for circuit in body["circuits"].as_array().into_iter().flatten() {
        let state = &circuit["circuit"];
        let open = state["open_until"]
            .as_u64()
            .map(crate::localtime::iso_local);
        println!(
            "circuit {}: {} failures in a row{}",
            circuit["destination"].as_str().unwrap_or(""),
            state["failures"],
            open.map(|t| format!(", open until {t}"))
                .unwrap_or_default()
        );
    }
}

fn print_dead_jobs(jobs: &Value) {
    for dead in jobs.as_array().into_iter().flatten() {
        let job = &dead["job"];
        println!(
            "{} bot={} {} {} attempts={}: {}",
            dead["id"].as_str().unwrap_or(""),
            job["bot"].as_str().unwrap_or(""),
            job["method"].as_str().unwrap_or(""),
            job["url"].as_str().unwrap_or(""),
            job["attempts"],
            job["last_error"].as_str().unwrap_or("")
        );
    }
}
