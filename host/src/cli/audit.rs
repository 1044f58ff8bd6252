//! `aviary audit …`: read and check the hash-chained audit log.

use std::process::ExitCode;

use anyhow::Result;

use super::AuditCommand;

pub(super) fn run(command: AuditCommand) -> Result<ExitCode> {
    match command {
        AuditCommand::Tail { n, json, admin } => {
            let body = admin.client()?.get(&format!("/api/v1/admin/audit?n={n}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body["records"])?);
            } else {
                for r in body["records"].as_array().into_iter().flatten() {
                    let opt = |k: &str| {
                        r[k].as_str()
                            .map(|s| format!(" {k}={s}"))
                            .unwrap_or_default()
                    };
                    let at = r["at"].as_u64().map(crate::localtime::iso_local);
                    println!(
                        "#{} {} {} bot={}{}{} {}",
                        r["seq"],
                        at.as_deref().unwrap_or("?"),
                        r["action"].as_str().unwrap_or(""),
                        r["bot"].as_str().unwrap_or(""),
                        opt("capability"),
                        opt("target"),
                        r["detail"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { admin } => {
            let body = admin.client()?.get("/api/v1/admin/audit/verify")?;
            if body["ok"].as_bool() == Some(true) {
                println!("audit log intact: {} records", body["records"]);
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "audit log BROKEN at record {}: {}",
                    body["broken_at"],
                    body["reason"].as_str().unwrap_or("")
                );
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
