//! `aviary:bot/outbox`: HTTP requests enqueued as effects of the event.
//! A request is checked here against the `http` grant by name (and again by
//! address when it is sent, see [`crate::outbox`]), bounded, and written
//! with the event's commit; a repeated idempotency key returns the first
//! job instead of a second one.

use std::sync::Arc;

use super::buffer::Buffer;
use super::Ctx;
use crate::policy::egress::{check_target, Target};
use crate::policy::BotPolicy;
use crate::runtime::bindings::aviary::bot::outbox::{Host, Request};
use crate::runtime::bindings::BotError;
use crate::store::{keys, now_ms, sha256_hex, OutboxJob};

/// Largest request body, in bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most headers of one request.
pub const MAX_HEADERS: usize = 64;
/// Longest tag, idempotency or ordering key, in bytes.
pub const MAX_TAG_BYTES: usize = 1024;
/// Most jobs one event may enqueue.
pub const MAX_JOBS_PER_EVENT: usize = 64;
/// How long a job is tried when the bot names no give-up time: a day.
pub const DEFAULT_GIVE_UP_MS: u64 = 24 * 3600 * 1000;
/// The longest give-up time, and how long idempotency keys are kept: 7 days.
pub const MAX_GIVE_UP_MS: u64 = 7 * 24 * 3600 * 1000;

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Per-event outbox state.
pub struct Outbox {
    state: crate::store::State,
    bot: Arc<str>,
    policy: Arc<BotPolicy>,
    /// The lane of the event: where the deliveries of its jobs run.
    lane: String,
    pub buffer: Buffer,
    /// Ids of the jobs this event enqueued.
    pub jobs: Vec<u64>,
}

impl Outbox {
    pub fn new(
        state: crate::store::State,
        bot: Arc<str>,
        policy: Arc<BotPolicy>,
        lane: String,
    ) -> Outbox {
        Outbox {
            state,
            bot,
            policy,
            lane,
            buffer: Buffer::default(),
            jobs: Vec::new(),
        }
    }
}

impl Ctx<'_, Outbox> {
    fn refuse(&mut self, target: &str, error: BotError) -> Result<String, BotError> {
        let reason = crate::runtime::bindings::reason(&error).to_owned();
        self.budget.refusals.deny("outbox", target, || reason);
        Err(error)
    }
}

/// Checks everything of a request but its destination.
fn check_shape(request: &Request) -> Result<(), String> {
    if !METHODS.contains(&request.method.as_str()) {
        return Err(format!("method must be one of {}", METHODS.join(", ")));
    }
    if request.body.len() > MAX_BODY_BYTES {
        return Err(format!("the body is over {MAX_BODY_BYTES} bytes"));
    }
    if request.headers.len() > MAX_HEADERS {
        return Err(format!("at most {MAX_HEADERS} headers"));
    }
    for (name, value) in &request.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || http::HeaderValue::from_str(value).is_err()
        {
            return Err(format!("header `{name}` is not a valid HTTP header"));
        }
        if [
            "host",
            "content-length",
            "idempotency-key",
            "transfer-encoding",
            "connection",
        ]
        .contains(&name.to_ascii_lowercase().as_str())
        {
            return Err(format!("header `{name}` is set by the host"));
        }
    }
    let key = &request.idempotency_key;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the idempotency key is 1 to 255 visible ASCII characters".into());
    }
    if request.tag.len() > MAX_TAG_BYTES
        || request
            .ordering_key
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > MAX_TAG_BYTES)
    {
        return Err(format!(
            "tag and ordering key are at most {MAX_TAG_BYTES} bytes (an ordering key at least 1)"
        ));
    }
    if request
        .give_up_after_ms
        .is_some_and(|ms| ms == 0 || ms > MAX_GIVE_UP_MS)
    {
        return Err(format!("give-up-after-ms is 1 to {MAX_GIVE_UP_MS}"));
    }
    Ok(())
}

impl Host for Ctx<'_, Outbox> {
    fn enqueue(&mut self, request: Request) -> Result<String, BotError> {
        self.budget.check()?;
        let url = request.url.clone();
        if let Err(reason) = check_shape(&request) {
            return self.refuse(&url, BotError::Invalid(reason));
        }
        let Some(target) =
            Target::parse(&url).filter(|t| ["http", "https"].contains(&t.scheme.as_str()))
        else {
            return self.refuse(
                &url,
                BotError::Invalid("not an absolute http(s) URL".into()),
            );
        };
        if let Err(reason) = check_target(&self.cap.policy.grant.http, &target) {
            return self.refuse(&target.to_string(), BotError::Denied(reason));
        }
        let state = self.cap.state.clone();
        let remembered = keys::idempotency(
            &self.cap.bot,
            keys::OUTBOX_LANE,
            &sha256_hex(request.idempotency_key.as_bytes()),
        );
        if let Some(value) = self.cap.buffer.read(&state, &remembered)? {
            #[derive(serde::Deserialize)]
            struct First {
                id: String,
                expires_at: u64,
            }
            if let Ok(first) = serde_json::from_slice::<First>(&value) {
                if first.expires_at > now_ms() {
                    return Ok(first.id);
                }
            }
        }
        if self.cap.jobs.len() >= MAX_JOBS_PER_EVENT {
            return self.refuse(
                &url,
                BotError::QuotaExceeded(format!(
                    "at most {MAX_JOBS_PER_EVENT} outbox jobs per event"
                )),
            );
        }
        self.budget
            .resize(0, request.body.len() + url.len() + 256)?;
        let now = now_ms();
        let job = OutboxJob {
            id: state.generate_id(),
            bot: self.cap.bot.to_string(),
            lane: self.cap.lane.clone(),
            ordering_key: request
                .ordering_key
                .unwrap_or_else(|| self.cap.lane.clone()),
            method: request.method,
            url,
            headers: request.headers,
            body: request.body,
            idempotency_key: request.idempotency_key,
            tag: request.tag,
            created_at: now,
            give_up_at: now + request.give_up_after_ms.unwrap_or(DEFAULT_GIVE_UP_MS),
            attempts: 0,
            next_at: 0,
            last_status: None,
            last_error: None,
        };
        let name = job.name();
        let first = serde_json::json!({ "id": name, "expires_at": now + MAX_GIVE_UP_MS });
        self.cap
            .buffer
            .write(remembered, Some(first.to_string().into_bytes()));
        self.cap
            .buffer
            .write(keys::outbox_job(job.id), Some(job.encode()));
        self.cap.jobs.push(job.id);
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            method: "POST".into(),
            url: "https://helpdesk.example:443/api/tickets/".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{}".to_vec(),
            idempotency_key: "msg-1".into(),
            ordering_key: None,
            give_up_after_ms: None,
            tag: "ticket".into(),
        }
    }

    #[test]
    fn requests_are_bounded() {
        assert!(check_shape(&request()).is_ok());
        let bad = [
            Request {
                method: "CONNECT".into(),
                ..request()
            },
            Request {
                headers: vec![("Host".into(), "evil".into())],
                ..request()
            },
            Request {
                headers: vec![("x\n".into(), "v".into())],
                ..request()
            },
            Request {
                idempotency_key: String::new(),
                ..request()
            },
            Request {
                idempotency_key: "a b".into(),
                ..request()
            },
            Request {
                body: vec![0; MAX_BODY_BYTES + 1],
                ..request()
            },
            Request {
                give_up_after_ms: Some(MAX_GIVE_UP_MS + 1),
                ..request()
            },
            Request {
                ordering_key: Some(String::new()),
                ..request()
            },
        ];
        for request in bad {
            assert!(check_shape(&request).is_err(), "{:?}", request.method);
        }
    }
}
