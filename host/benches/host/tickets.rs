//! The ticket-forwarding, outbox and webhook figures, each through the
//! release binary and a shipped bot:
//!
//! - `ticket_roundtrip_p95_ms`: `ticket-forward` in front of a real
//!   django-helpdesk (the e2e tests' peer), one customer message at a time,
//!   from its POST to the helpdesk's 201 for its follow-up (its job gone
//!   from the host's outbox: polling the helpdesk's API every millisecond
//!   would slow the helpdesk down on two cores); the ticket is then
//!   checked to hold them all;
//! - `ticket_backlog_drain_s`: [`BACKLOG`] messages written while the
//!   helpdesk is down by [`BACKLOG_CUSTOMERS`] customers, from the helpdesk answering again to the last of
//!   them answered (with `retry_max_ms` 1 s, the circuit's longest
//!   cool-down); the ticket is checked to hold each once and in order;
//! - `outbox_jobs_per_s`: `ticket-forward` pointed at a local HTTP sink
//!   that answers as the helpdesk would, [`SINK_CONVERSATIONS`] customers
//!   (so as many ordering keys) writing at once, from the first message's
//!   POST to the sink receiving the last request;
//! - `webhook_p50_ms`/`webhook_p99_ms`: a signed alert posted to the
//!   `alerts` bot's hook, from the POST to its broadcast readable in a
//!   subscriber's conversation.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use aviary_e2e::helpdesk::Helpdesk;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::served::{Served, Setup};

/// Messages timed one at a time for the round trip.
const ROUNDTRIPS: usize = 40;
/// Messages queued while the helpdesk is down...
pub const BACKLOG: usize = 1_000;
/// ...by this many customers, each on a ticket opened before: one long
/// ticket would measure django-helpdesk instead, whose follow-up webhook
/// carries the whole ticket (each follow-up costs more than the last).
const BACKLOG_CUSTOMERS: usize = 50;
/// Customers writing to the sink at once, each its own ordering key.
const SINK_CONVERSATIONS: usize = 128;
/// Messages each of them writes (the first opens the ticket).
const SINK_MESSAGES: usize = 16;
/// Alerts posted one at a time.
const ALERTS: usize = 300;
const HOOK_TOKEN: &str = "bench-helpdesk-hook-token-0123456789";
const ALERT_SECRET: &str = "bench-monitoring-secret-0123456789";
const WAIT: Duration = Duration::from_secs(120);
/// How often the outbox is looked at while a backlog drains.
const POLL: Duration = Duration::from_millis(20);

/// What this benchmark measured.
pub struct TicketFigures {
    pub roundtrip_p95_ms: f64,
    /// The same follow-up posted straight to the helpdesk's API.
    pub direct_followup_p95_ms: f64,
    pub backlog_drain_s: f64,
    /// Follow-ups per second the helpdesk takes straight, 16 at once (as
    /// many as the outbox sends): the ceiling of the drain.
    pub direct_followups_per_s: f64,
    pub outbox_jobs_per_s: f64,
    pub webhook_p50_ms: f64,
    pub webhook_p99_ms: f64,
}

pub fn figures(scratch: &Path, bots: &Path) -> Result<TicketFigures> {
    let helpdesk = helpdesk_figures(scratch, bots)?;
    let outbox_jobs_per_s = outbox_jobs_per_s(scratch, bots)?;
    let (webhook_p50_ms, webhook_p99_ms) = webhook_figures(scratch, bots)?;
    Ok(TicketFigures {
        roundtrip_p95_ms: helpdesk.0,
        direct_followup_p95_ms: helpdesk.1,
        backlog_drain_s: helpdesk.2,
        direct_followups_per_s: helpdesk.3,
        outbox_jobs_per_s,
        webhook_p50_ms,
        webhook_p99_ms,
    })
}

/// A policies directory granting `ticket-forward` the helpdesk at `url`
/// and `alerts` timers enough for every alert the benchmark posts, both
/// with send rates that never throttle it.
fn policies(dir: &Path, url: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let common = "memory_mb = 16\ntimeout_ms = 2000\n\
                  [send]\nper_conversation_per_minute = 100000\nper_bot_per_minute = 1000000\n\
                  [kv]\nmax_bytes = 67108864\nmax_keys = 1000000\n";
    std::fs::write(
        dir.join("ticket-forward.toml"),
        format!("http = [\"{url}\"]\nsecrets = [\"HELPDESK_AUTH\"]\n{common}"),
    )?;
    std::fs::write(dir.join("alerts.toml"), format!("timers = 10000\n{common}"))?;
    Ok(())
}

/// The host's config for `ticket-forward` in front of the helpdesk at `url`.
fn ticket_config(url: &str, auth: &str) -> String {
    format!(
        "[outbox]\nretry_first_ms = 100\nretry_max_ms = 1000\n\
         [bots.ticket-forward.settings]\nhelpdesk_url = \"{url}\"\n\
         [bots.ticket-forward.secrets]\nHELPDESK_AUTH = \"{auth}\"\n\
         [bots.ticket-forward.hooks.helpdesk]\ntoken = \"{HOOK_TOKEN}\"\nmax_body_bytes = 4194304\n"
    )
}

/// A customer's conversation with a bot of a [`Served`] host.
struct Customer<'a> {
    served: &'a Served,
    url: String,
    token: String,
    /// The id of the last message read.
    cursor: Option<String>,
}

impl<'a> Customer<'a> {
    fn new(served: &'a Served, bot: &str) -> Result<Customer<'a>> {
        let (conversation, token) = served.conversation(bot)?;
        Ok(Customer {
            url: format!(
                "{}/api/v1/bots/{bot}/conversations/{conversation}/messages",
                served.base
            ),
            served,
            token,
            cursor: None,
        })
    }

    /// Posts `text`; the message's id.
    fn post(&self, text: &str) -> Result<String> {
        let posted: Value = self
            .served
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&json!({ "text": text }))
            .send()?
            .error_for_status()
            .with_context(|| format!("POST {text:?}"))?
            .json()?;
        Ok(posted["id"].as_str().context("no id")?.to_owned())
    }

    /// Long-polls until the bot sends a message whose text `wanted` accepts.
    fn wait_for(&mut self, wanted: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let mut get = self
                .served
                .client
                .get(&self.url)
                .bearer_auth(&self.token)
                .query(&[("wait", "5")]);
            if let Some(after) = &self.cursor {
                get = get.query(&[("after", after)]);
            }
            let page: Value = get.send()?.error_for_status()?.json()?;
            for message in page["messages"].as_array().context("no messages")? {
                self.cursor = message["id"].as_str().map(str::to_owned);
                let text = message["text"].as_str().unwrap_or_default();
                if message["direction"] == "out" && wanted(text) {
                    return Ok(text.to_owned());
                }
            }
        }
        anyhow::bail!("no such message from the bot within {WAIT:?}")
    }

    /// Opens a ticket with `text`; its id.
    fn open_ticket(&mut self, text: &str) -> Result<i64> {
        const OPENED: &str = "🎫 Ticket #";
        self.post(text)?;
        let said = self.wait_for(|t| t.starts_with(OPENED))?;
        let digits: String = said[OPENED.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Ok(digits.parse()?)
    }
}

/// The round trip's p95 and the direct follow-up's (ms), the backlog's
/// drain time (s) and the helpdesk's direct follow-ups per second.
fn helpdesk_figures(scratch: &Path, bots: &Path) -> Result<(f64, f64, f64, f64)> {
    let mut helpdesk = Helpdesk::start(&[], &[]);
    let policy_dir = scratch.join("ticket-policies");
    policies(&policy_dir, &helpdesk.base_url())?;
    let served = Served::start(Setup {
        dir: scratch.join("tickets"),
        config: ticket_config(&helpdesk.base_url(), &helpdesk.auth_header()),
        plugins: bots,
        policies: &policy_dir,
        timeout: Duration::from_secs(30),
    })?;
    let hook = format!(
        "{}/api/v1/hooks/ticket-forward/helpdesk?token={HOOK_TOKEN}",
        served.base
    );
    helpdesk.set_webhooks(std::slice::from_ref(&hook), std::slice::from_ref(&hook));
    helpdesk.start_again();

    let mut customer = Customer::new(&served, "ticket-forward")?;
    let id = customer.open_ticket("The licence key is refused")?;
    let admin = served.admin_token()?;
    let mut latencies = Vec::new();
    for n in 0..ROUNDTRIPS {
        let before = helpdesk.followups(id).len();
        let sent = Instant::now();
        let message = customer.post(&format!("round trip {n}"))?;
        let key = format!("fu-{message}");
        let mut seen = false;
        let mut looked = Instant::now();
        // Done when its job was seen and is gone (the helpdesk answered),
        // or, should it come and go between two looks, when the helpdesk's
        // API lists one more follow-up.
        loop {
            let queued = job_keys(&served, &admin)?.contains(&key);
            if seen && !queued {
                break;
            }
            seen |= queued;
            if looked.elapsed() > Duration::from_millis(100) {
                if helpdesk.followups(id).len() > before {
                    break;
                }
                looked = Instant::now();
            }
            anyhow::ensure!(sent.elapsed() < WAIT, "follow-up {n} never arrived");
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    let comments = customer_comments(&helpdesk.followups(id));
    let expected: Vec<String> = (0..ROUNDTRIPS).map(|n| format!("round trip {n}")).collect();
    anyhow::ensure!(
        comments == expected,
        "the round trips are not all on the ticket"
    );
    let roundtrip = super::percentile_f64(latencies, 0.95);
    eprintln!("tickets: round trip p95 {roundtrip:.1} ms");

    let mut tickets = Vec::new();
    for n in 0..BACKLOG_CUSTOMERS {
        let mut customer = Customer::new(&served, "ticket-forward")?;
        let id = customer.open_ticket(&format!("Customer {n} in the outage"))?;
        tickets.push((customer, id));
    }
    // django-helpdesk ignores Idempotency-Key: stopped in mid-request it
    // would store a follow-up twice, so it is stopped between requests.
    wait_for_jobs(&served, &admin, |jobs| jobs == 0)?;
    helpdesk.stop();
    let per_customer = BACKLOG / BACKLOG_CUSTOMERS;
    let expected: Vec<String> = (0..per_customer).map(|n| format!("backlog {n}")).collect();
    for text in &expected {
        for (customer, _) in &tickets {
            customer.post(text)?;
        }
    }
    wait_for_jobs(&served, &admin, |jobs| jobs == BACKLOG)?;
    helpdesk.start_again();
    let back = Instant::now();
    wait_for_jobs(&served, &admin, |jobs| jobs == 0)?;
    let drain = back.elapsed().as_secs_f64();
    for (_, id) in &tickets {
        let comments = customer_comments(&helpdesk.followups(*id));
        anyhow::ensure!(
            comments == expected,
            "ticket {id}: the backlog arrived out of order or twice"
        );
    }
    eprintln!("tickets: {BACKLOG} queued messages drained in {drain:.1} s, once each, in order");
    let direct = Direct::new(&helpdesk)?;
    let (_, first) = &tickets[0];
    let mut latencies = Vec::new();
    for n in 0..ROUNDTRIPS {
        let sent = Instant::now();
        direct.followup(*first, &format!("direct {n}"))?;
        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    let direct_p95 = super::percentile_f64(latencies, 0.95);
    let started = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let senders: Vec<_> = (0..16)
            .map(|t| {
                let (direct, tickets) = (&direct, &tickets);
                s.spawn(move || -> Result<()> {
                    for n in 0..10 {
                        let (_, id) = &tickets[(t * 10 + n) % tickets.len()];
                        direct.followup(*id, &format!("direct {t}.{n}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for sender in senders {
            sender.join().expect("sender panicked")?;
        }
        Ok(())
    })?;
    let direct_rate = 160.0 / started.elapsed().as_secs_f64();
    eprintln!(
        "tickets: straight to the helpdesk, a follow-up p95 {direct_p95:.1} ms, {direct_rate:.1} a second 16 at once"
    );
    Ok((roundtrip, direct_p95, drain, direct_rate))
}

/// Follow-ups posted straight to the helpdesk's API, as the bot posts them.
struct Direct {
    client: reqwest::blocking::Client,
    url: String,
    auth: String,
}

impl Direct {
    fn new(helpdesk: &Helpdesk) -> Result<Direct> {
        Ok(Direct {
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            url: format!("{}/api/followups/", helpdesk.base_url()),
            auth: helpdesk.auth_header(),
        })
    }

    fn followup(&self, ticket: i64, comment: &str) -> Result<()> {
        self.client
            .post(&self.url)
            .header("authorization", &self.auth)
            .json(&json!({ "ticket": ticket, "comment": comment, "public": true }))
            .send()?
            .error_for_status()?;
        Ok(())
    }
}

/// The customer's follow-ups on a ticket, oldest first, without the
/// helpdesk's opening one (which holds the first message).
fn customer_comments(followups: &[Value]) -> Vec<String> {
    followups
        .iter()
        .skip(1)
        .filter_map(|f| f["comment"].as_str()?.strip_prefix("bench: "))
        .map(str::to_owned)
        .collect()
}

/// The idempotency keys of the jobs in the host's outbox.
fn job_keys(served: &Served, admin: &str) -> Result<Vec<String>> {
    let listed: Value = served
        .client
        .get(format!("{}/api/v1/admin/outbox", served.base))
        .bearer_auth(admin)
        .send()?
        .error_for_status()?
        .json()?;
    Ok(listed["jobs"]
        .as_array()
        .context("no jobs")?
        .iter()
        .map(|job| {
            job["idempotency_key"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect())
}

/// Waits until the number of jobs in the host's outbox satisfies `done`.
/// An empty outbox means every follow-up was answered by the helpdesk.
fn wait_for_jobs(served: &Served, admin: &str, done: impl Fn(usize) -> bool) -> Result<()> {
    let deadline = Instant::now() + WAIT * 3;
    loop {
        let jobs = job_keys(served, admin)?.len();
        if done(jobs) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{jobs} jobs in the outbox");
        std::thread::sleep(POLL);
    }
}

/// Jobs per second that `ticket-forward` gets through the outbox to
/// [`sink`], many customers at once.
fn outbox_jobs_per_s(scratch: &Path, bots: &Path) -> Result<f64> {
    let sink = sink::Sink::start()?;
    let policy_dir = scratch.join("sink-policies");
    policies(&policy_dir, &sink.url)?;
    let served = Served::start(Setup {
        dir: scratch.join("sink"),
        config: ticket_config(&sink.url, "Basic none"),
        plugins: bots,
        policies: &policy_dir,
        timeout: Duration::from_secs(30),
    })?;
    let customers = (0..SINK_CONVERSATIONS)
        .map(|_| Customer::new(&served, "ticket-forward"))
        .collect::<Result<Vec<_>>>()?;
    let jobs = (SINK_CONVERSATIONS * SINK_MESSAGES) as u64;
    let started = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let writers: Vec<_> = customers
            .chunks(SINK_CONVERSATIONS / 4)
            .map(|chunk| {
                s.spawn(move || -> Result<()> {
                    for n in 0..SINK_MESSAGES {
                        for customer in chunk {
                            customer.post(&format!("message {n}"))?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("writer panicked")?;
        }
        Ok(())
    })?;
    let last = sink.wait_for(jobs, WAIT)?;
    let rate = jobs as f64 / (last - started).as_secs_f64();
    eprintln!("outbox: {jobs} jobs to a local sink at {rate:.0} jobs/s");
    Ok(rate)
}

/// The signed alert's post-to-broadcast p50 and p99, in ms.
fn webhook_figures(scratch: &Path, bots: &Path) -> Result<(f64, f64)> {
    let policy_dir = scratch.join("alert-policies");
    policies(&policy_dir, "http://127.0.0.1:9")?;
    let served = Served::start(Setup {
        dir: scratch.join("alerts"),
        config: format!(
            "[bots.alerts.settings]\nrepeat_ms = \"3600000\"\n\
             [bots.alerts.hooks.monitor]\nsecret = \"{ALERT_SECRET}\"\n"
        ),
        plugins: bots,
        policies: &policy_dir,
        timeout: Duration::from_secs(30),
    })?;
    let mut subscribers = Vec::new();
    for _ in 0..8 {
        let mut subscriber = Customer::new(&served, "alerts")?;
        subscriber.post("/subscribe bench")?;
        subscriber.wait_for(|t| t.contains("subscribed"))?;
        subscribers.push(subscriber);
    }
    let hook = format!("{}/api/v1/hooks/alerts/monitor", served.base);
    let last = subscribers.last_mut().expect("subscribers");
    let mut latencies = Vec::new();
    for n in 0..ALERTS {
        let body = json!({ "id": format!("b{n}"), "topic": "bench", "text": "load" }).to_string();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)?
            .as_secs()
            .to_string();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(ALERT_SECRET.as_bytes())?;
        mac.update(format!("{timestamp}.{body}").as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let sent = Instant::now();
        let status = served
            .client
            .post(&hook)
            .header("content-type", "application/json")
            .header("x-aviary-timestamp", timestamp)
            .header("x-aviary-signature", signature)
            .body(body)
            .send()?
            .status();
        anyhow::ensure!(status == 202, "the hook answered {status}");
        let marker = format!("(alert b{n};");
        last.wait_for(|t| t.contains(&marker))?;
        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    let p50 = super::percentile_f64(latencies.clone(), 0.50);
    let p99 = super::percentile_f64(latencies, 0.99);
    eprintln!("webhooks: signed alert to broadcast p50 {p50:.2} ms, p99 {p99:.2} ms");
    Ok((p50, p99))
}

/// A local HTTP server that answers `ticket-forward` as django-helpdesk
/// would (a new ticket with its id and opening follow-up, a follow-up with
/// its id), at once and from memory, and counts what it received.
mod sink {
    use super::*;

    use axum::routing::post;
    use axum::{Json, Router};

    /// The running sink; stopped when dropped.
    pub struct Sink {
        pub url: String,
        received: Arc<Received>,
        _runtime: tokio::runtime::Runtime,
    }

    #[derive(Default)]
    struct Received {
        requests: AtomicU64,
        last: Mutex<Option<Instant>>,
    }

    impl Received {
        fn count(&self) -> u64 {
            *self.last.lock() = Some(Instant::now());
            self.requests.fetch_add(1, Ordering::AcqRel) + 1
        }
    }

    impl Sink {
        pub fn start() -> Result<Sink> {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            let url = format!("http://{}", listener.local_addr()?);
            let received = Arc::new(Received::default());
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let (tickets, followups) = (received.clone(), received.clone());
            let app = Router::new()
                .route(
                    "/api/tickets/",
                    post(move || async move {
                        let id = tickets.count();
                        Json(json!({ "id": id, "followup_set": [{ "id": id, "user": 1 }] }))
                    }),
                )
                .route(
                    "/api/followups/",
                    post(move || async move { Json(json!({ "id": followups.count() })) }),
                );
            runtime.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                axum::serve(listener, app).await
            });
            Ok(Sink {
                url,
                received,
                _runtime: runtime,
            })
        }

        /// Waits until `requests` have arrived; when the last did.
        pub fn wait_for(&self, requests: u64, timeout: Duration) -> Result<Instant> {
            let deadline = Instant::now() + timeout;
            while self.received.requests.load(Ordering::Acquire) < requests {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the sink got {} of {requests} requests",
                    self.received.requests.load(Ordering::Acquire)
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(self.received.last.lock().expect("a request arrived"))
        }
    }
}
