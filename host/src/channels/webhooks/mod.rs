//! Inbound webhooks: `POST /api/v1/hooks/{bot}/{hook}` delivers a `webhook`
//! event to the bot and answers 202 once it is durable. Each hook is
//! configured per bot (`[bots.<id>.hooks.<name>]`) and authenticated by an
//! HMAC signature with a timestamp (see [`signature`]; replays outside the
//! window and repeated signatures are refused) or by a random token in the
//! URL. A request that fails gets a 401 and leaves one audit record;
//! nothing of it is delivered.

pub mod signature;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::channels::web::{ApiError, WebState};
use crate::store::{now_ms, sha256_hex, AuditEntry, HookAccepted, WebhookRecord};

/// How a hook authenticates its sender, and what it takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The HMAC-SHA256 key senders sign with (at least 16 characters).
    #[serde(default)]
    pub secret: Option<String>,
    /// For senders that cannot sign: the token the URL must carry as
    /// `?token=` (at least 16 characters; make it random).
    #[serde(default)]
    pub token: Option<String>,
    /// How far a signature's timestamp may be from the host's clock, in
    /// seconds (default 300).
    #[serde(default = "default_window")]
    pub window_secs: u64,
    /// Largest body, in bytes (default 65536). A helpdesk's webhook carries
    /// the whole ticket with its follow-ups: give it a megabyte or more.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

fn default_window() -> u64 {
    300
}

fn default_max_body() -> usize {
    64 * 1024
}

impl HookConfig {
    /// Checks the values an admin set; `what` names the hook in errors.
    pub fn validate(&self, what: &str) -> anyhow::Result<()> {
        match (&self.secret, &self.token) {
            (Some(secret), None) | (None, Some(secret)) => anyhow::ensure!(
                secret.len() >= 16,
                "{what}: a hook's `secret` or `token` must be at least 16 characters"
            ),
            _ => anyhow::bail!(
                "{what}: a hook needs exactly one of `secret` (senders sign with HMAC-SHA256) or `token` (senders put it in the URL)"
            ),
        }
        anyhow::ensure!(
            (1..=86_400).contains(&self.window_secs),
            "{what}.window_secs must be 1 to 86400"
        );
        anyhow::ensure!(
            self.max_body_bytes >= 1,
            "{what}.max_body_bytes must be at least 1"
        );
        Ok(())
    }
}

/// The largest body any of `hooks` takes (the web server's bound for the
/// hooks' path; each hook then checks its own).
pub fn max_body_bytes(hooks: &crate::config::Hooks) -> usize {
    hooks
        .values()
        .flat_map(|hooks| hooks.values())
        .map(|hook| hook.max_body_bytes)
        .max()
        .unwrap_or_else(default_max_body)
}

#[derive(Deserialize)]
pub struct HookQuery {
    token: Option<String>,
}

/// `POST /api/v1/hooks/{bot}/{hook}`.
pub async fn receive(
    State(state): State<WebState>,
    Path((bot, hook)): Path<(String, String)>,
    Query(query): Query<HookQuery>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let config = state
        .hooks
        .get(&bot)
        .and_then(|hooks| hooks.get(&hook))
        .filter(|_| state.bots.get(&bot).is_some())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("bot `{bot}` has no hook `{hook}`"),
            )
        })?;
    if body.len() > config.max_body_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "hook `{hook}` takes bodies of at most {} bytes",
                config.max_body_bytes
            ),
        ));
    }
    let signature = authenticate(config, &headers, query.token.as_deref(), &body)
        .map_err(|reason| refuse(&state, &bot, &hook, &reason))?;
    let record = WebhookRecord {
        hook: hook.clone(),
        method: method.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        at: now_ms(),
    };
    let reservation = state
        .router
        .reserve(&bot, &crate::store::hook_lane(&hook), 1)
        .map_err(|full| ApiError::new(StatusCode::TOO_MANY_REQUESTS, full.to_string()))?;
    let remembered = signature
        .as_deref()
        .map(|hash| (hash, now_ms() + 2 * config.window_secs * 1000));
    let event = match state.store.accept_webhook(&bot, record, remembered)? {
        HookAccepted::Stored(event) => event,
        HookAccepted::Replayed => {
            return Err(refuse(
                &state,
                &bot,
                &hook,
                "this signature was accepted before: a replay",
            ))
        }
    };
    let id = format!("{:016x}", event.seq);
    reservation.push(vec![event]);
    state.store.wait_durable().await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id }))))
}

/// Checks the request's signature or token; returns the signature's hash,
/// to refuse it the next time.
fn authenticate(
    config: &HookConfig,
    headers: &HeaderMap,
    token: Option<&str>,
    body: &[u8],
) -> Result<Option<String>, String> {
    if let Some(expected) = &config.token {
        return match token {
            Some(token) if crate::channels::web::auth::same_secret(token, expected) => Ok(None),
            Some(_) => Err("the URL's token is wrong".into()),
            None => Err("the URL carries no `token`".into()),
        };
    }
    let secret = config.secret.as_deref().unwrap_or_default();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signature = header(signature::SIGNATURE_HEADER);
    signature::verify(
        secret,
        header(signature::TIMESTAMP_HEADER),
        signature,
        body,
        now_ms() / 1000,
        config.window_secs,
    )?;
    Ok(signature.map(|s| sha256_hex(s.as_bytes())))
}

/// One audit record and a 401.
fn refuse(state: &WebState, bot: &str, hook: &str, reason: &str) -> ApiError {
    tracing::warn!(bot, hook, "webhook refused: {reason}");
    let entry = AuditEntry {
        action: "deny".into(),
        bot: bot.to_owned(),
        capability: Some("webhook".into()),
        target: Some(hook.to_owned()),
        detail: reason.to_owned(),
    };
    if let Err(error) = state.store.audit(entry) {
        tracing::error!("cannot append to the audit log: {error:#}");
    }
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        format!("webhook refused: {reason}"),
    )
}
