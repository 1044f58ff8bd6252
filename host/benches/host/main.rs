//! `cargo xtask bench`: the host's benchmarks. Prints progress to stderr and,
//! as the last line of stdout, one JSON object of figures.
//!
//! - raw: a fresh instance of the echo bot from its `InstancePre` and a call
//!   to `handle`, on every core, no router and no store commit;
//! - dispatch: the full in-process path (admission, store, router, fresh
//!   instance, commit) on every core; latency measured one event at a time;
//! - http: loopback HTTP clients over many conversations, each timing from
//!   its POST to the reply being readable by a long-poll GET;
//! - http bare: the same load against a bare in-memory axum server, the
//!   HTTP stack's own ceiling;
//! - fsync: a 4 KiB append and `fdatasync` on the data directory's
//!   filesystem, the floor of a durable write;
//! - reload: see [`reload`];
//! - llm: see [`llm`];
//! - plates: see [`plates`], once with PP-OCRv5 and once with tesseract
//!   reading the photos;
//! - tickets, outbox and webhooks: see [`tickets`];
//! - matrix, and the web channel beside it: see [`matrix`].
//!
//! `AVIARY_BENCH_ONLY=tickets` (or `matrix`) runs only that group and
//! prints its figures alone: for working on it without the hour the rest
//! takes.

mod llm;
mod llm_direct;
mod matrix;
mod plates;
mod reload;
mod served;
mod tickets;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aviary_host::app::App;
use aviary_host::bots::Bots;
use aviary_host::config::{Config, QueueConfig};
use aviary_host::dispatch::Dispatcher;
use aviary_host::policy::{BotPolicy, Capabilities, KvQuota, SendRate};
use aviary_host::router::{Dispatch, Next, Router};
use aviary_host::runtime::{BotSpec, HandleError, LoadedBot, Manifest};
use aviary_host::store::{PendingEvent, Store};
use parking_lot::Mutex;
use serde_json::json;

fn main() -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let scratch = tempfile::tempdir()?;
    match std::env::var("AVIARY_BENCH_ONLY").as_deref() {
        Ok("tickets") => {
            let tickets = tickets::figures(scratch.path(), &bots_dir())?;
            println!("{}", tickets_json(&tickets));
            return Ok(());
        }
        Ok("matrix") => {
            let matrix = matrix::figures(scratch.path(), &bots_dir(), &policies_dir())?;
            println!("{}", matrix_json(&matrix));
            return Ok(());
        }
        _ => {}
    }
    // First, while nothing else is writing to the disk.
    let (fsync_p50, fsync_p99) = fsync_us(scratch.path())?;
    eprintln!("fsync: 4 KiB append + fdatasync, p50 {fsync_p50:.1} us, p99 {fsync_p99:.1} us");
    let mut config = Config {
        plugins_dir: bots_dir(),
        data_dir: scratch.path().join("data"),
        workers: cores,
        ..Config::default()
    };
    config.queue = QueueConfig {
        per_conversation: 10_000,
        total: 1_000_000,
    };
    // The benchmark's own grant: rates high enough never to throttle it.
    config.policies_dir = scratch.path().join("no-policies");
    let mut echo = aviary_host::config::BotConfig::default();
    echo.grant.send = Some(aviary_host::policy::SendRate {
        per_conversation_per_minute: u32::MAX,
        per_bot_per_minute: u32::MAX,
    });
    echo.grant.kv = Some(aviary_host::policy::KvQuota {
        max_bytes: 1 << 30,
        max_keys: 1 << 20,
    });
    config.bots.insert("echo".into(), echo);
    let app = App::start(config.clone())
        .context("cannot start the host; build the bots first (`cargo xtask bench` does)")?;
    anyhow::ensure!(
        app.bots.get("echo").is_some(),
        "the echo bot did not load: {:?}",
        app.bots.list()
    );

    let raw = raw_events_per_s(&app, cores);
    eprintln!("raw: {raw:.0} events/s");
    let (dispatch, p50, p99) = dispatch_figures(&app.store, &app.bots, cores)?;
    eprintln!("dispatch: {dispatch:.0} events/s, p50 {p50:.1} us, p99 {p99:.1} us");
    let overhead = policy_overhead_pct(&app)?;
    eprintln!("policy overhead: {overhead:.2} %");
    let (tried, contained) = hostile_containment(&app)?;
    eprintln!("hostile: {contained} of {tried} contained");
    let echo_p99_under_hostile = echo_p99_under_hostile(&app, cores * 2)?;
    eprintln!("echo p99 under hostile load: {echo_p99_under_hostile:.1} us");
    let post_event = hostile_post_event_ms(&app)?;
    eprintln!("hostile post-event work: worst {post_event:.2} ms");
    let wall_blocked = hostile_wall_blocked_ms(&app, (cores * 2).max(4))?;
    eprintln!(
        "echo worst beside 4 sleepers: {wall_blocked:.1} ms (wall limit {HOSTILE_WALL_MS} ms)"
    );
    drop(app);

    let storm = reload::storm(scratch.path(), &hostile_dir(), cores)?;
    eprintln!(
        "reload: swap p99 {:.0} us (max {:.0} us over {} swaps), lost {}, duplicated {}",
        storm.swap_p99_us, storm.swap_max_us, storm.swaps_seen, storm.lost, storm.duplicated
    );
    let startup = reload::startup_ms_10_bots(scratch.path(), &hostile_dir())?;

    let llm = llm::figures(scratch.path(), &bots_dir(), &policies_dir(), cores as u32)?;
    eprintln!(
        "llm: {:.1} tokens/s through the host, {:.1} direct ({:.2} % overhead), first draft {:.0} ms, p99 {:.0} ms with {} at once",
        llm.tokens_per_s, llm.direct_tokens_per_s, llm.overhead_pct, llm.first_token_ms,
        llm.concurrent_p99_first_token_ms, 8
    );

    let plates = plates::figures(scratch.path(), &bots_dir(), &policies_dir(), "ppocr")?;
    let tesseract = plates::figures(scratch.path(), &bots_dir(), &policies_dir(), "tesseract")?;
    for (engine, f) in [("PP-OCRv5", &plates), ("tesseract", &tesseract)] {
        eprintln!(
            "plates ({engine}): accuracy {:.3} ({:.3} on the hardest third) over {} photos, p50 {:.0} ms, p95 {:.0} ms",
            f.accuracy, f.accuracy_hard, f.photos, f.p50_ms, f.p95_ms
        );
    }

    let tickets = tickets::figures(scratch.path(), &bots_dir())?;
    let matrix = matrix::figures(scratch.path(), &bots_dir(), &policies_dir())?;

    config.data_dir = scratch.path().join("http");
    let (http, http_p99) = http_figures(config)?;
    eprintln!("http: {http:.0} msgs/s, p99 {http_p99:.2} ms");
    let (bare, bare_p99) = http_bare_figures()?;
    eprintln!("http bare: {bare:.0} msgs/s, p99 {bare_p99:.2} ms");

    let mut figures = json!({
            "cores": cores,
            "plate_accuracy": (plates.accuracy * 1000.0).round() / 1000.0,
            "plate_accuracy_hard": (plates.accuracy_hard * 1000.0).round() / 1000.0,
            "plate_p50_ms": plates.p50_ms.round(),
            "plate_p95_ms": plates.p95_ms.round(),
            "plate_tesseract_accuracy": (tesseract.accuracy * 1000.0).round() / 1000.0,
            "plate_tesseract_accuracy_hard": (tesseract.accuracy_hard * 1000.0).round() / 1000.0,
            "plate_tesseract_p95_ms": tesseract.p95_ms.round(),
            "raw_events_per_s": raw.round(),
            "dispatch_events_per_s": dispatch.round(),
            "dispatch_p50_us": round1(p50),
            "dispatch_p99_us": round1(p99),
            "dispatch_vs_raw": round1(raw / dispatch),
            "http_msgs_per_s": http.round(),
            "http_p99_ms": round1(http_p99),
            "http_bare_msgs_per_s": bare.round(),
            "fsync_p50_us": round1(fsync_p50),
            "fsync_p99_us": round1(fsync_p99),
            "policy_overhead_pct": round1(overhead),
            "hostile_tried": tried,
            "hostile_contained": contained,
            "echo_p99_us_under_hostile": round1(echo_p99_under_hostile),
            "hostile_wall_blocked_ms": round1(wall_blocked),
            "hostile_wall_limit_ms": HOSTILE_WALL_MS,
            "hostile_post_event_ms": round1(post_event),
            "reload_swap_us_p99": storm.swap_p99_us,
            "reload_next_event_us_p99": storm.baseline_p99_us,
            "reload_swap_vs_next_event_p99": round1(storm.swap_p99_us / storm.baseline_p99_us.max(1.0)),
            "reload_swaps": storm.swaps_seen,
            "reload_lost": storm.lost,
            "reload_duplicated": storm.duplicated,
            "reload_worst_event_ms": round1(storm.worst_event_ms),
            "startup_ms_10_bots": round1(startup),
            "llm_tokens_per_s": round1(llm.tokens_per_s),
            "llm_direct_tokens_per_s": round1(llm.direct_tokens_per_s),
            "llm_overhead_pct": round1(llm.overhead_pct),
            "llm_first_token_ms": round1(llm.first_token_ms),
            "llm_concurrent_p99_first_token_ms": round1(llm.concurrent_p99_first_token_ms),
    });
    for group in [tickets_json(&tickets), matrix_json(&matrix)] {
        if let (Some(all), serde_json::Value::Object(more)) = (figures.as_object_mut(), group) {
            all.extend(more);
        }
    }
    println!("{figures}");
    Ok(())
}

/// The ticket, outbox and webhook figures as JSON fields.
fn tickets_json(tickets: &tickets::TicketFigures) -> serde_json::Value {
    json!({
        "ticket_roundtrip_p95_ms": round1(tickets.roundtrip_p95_ms),
        "helpdesk_direct_followup_p95_ms": round1(tickets.direct_followup_p95_ms),
        "ticket_backlog_drain_s": round1(tickets.backlog_drain_s),
        "helpdesk_direct_followups_per_s": round1(tickets.direct_followups_per_s),
        "ticket_backlog_vs_direct": round1(
            tickets.backlog_drain_s * tickets.direct_followups_per_s / tickets::BACKLOG as f64
        ),
        "outbox_jobs_per_s": tickets.outbox_jobs_per_s.round(),
        "webhook_p50_ms": round1(tickets.webhook_p50_ms),
        "webhook_p99_ms": round1(tickets.webhook_p99_ms),
    })
}

/// The Matrix channel's figures, and the web channel's beside them, as
/// JSON fields.
fn matrix_json(matrix: &matrix::MatrixFigures) -> serde_json::Value {
    json!({
        "matrix_msgs_per_s": round1(matrix.msgs_per_s),
        "matrix_p50_ms": round1(matrix.p50_ms),
        "matrix_p99_ms": round1(matrix.p99_ms),
        "matrix_host_cpu_ms_per_msg": (matrix.host_cpu_ms_per_msg * 100.0).round() / 100.0,
        "web_echo_p50_ms": round1(matrix.web_p50_ms),
        "web_echo_p99_ms": round1(matrix.web_p99_ms),
        "matrix_vs_web_p50": round1(matrix.p50_ms / matrix.web_p50_ms),
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn message_event(store: &Store, conversation: &str, text: &str) -> Result<PendingEvent> {
    Ok(store
        .accept_inbound("echo", conversation, "bench", text, &[])?
        .events
        .pop()
        .expect("a message event"))
}

/// Fresh instance + `handle` of the echo bot, on `threads` threads for 2 s.
fn raw_events_per_s(app: &App, threads: usize) -> f64 {
    let bot = app.bots.get("echo").unwrap();
    let event = message_event(&app.store, "raw", "hello").unwrap();
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    bot.handle(&app.store, &event).result.expect("echo handles");
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Wraps the real dispatcher to time each event from admission to commit,
/// and, when a probe is set, the time from it to the next event's start.
struct Timed {
    inner: Dispatcher,
    started: Mutex<std::collections::HashMap<u64, Instant>>,
    latencies: Mutex<Vec<Duration>>,
    finished: AtomicU64,
    probe: Mutex<Option<Instant>>,
    probed: Mutex<Vec<Duration>>,
}

impl Timed {
    fn new(inner: Dispatcher) -> Timed {
        Timed {
            inner,
            started: Mutex::default(),
            latencies: Mutex::default(),
            finished: AtomicU64::new(0),
            probe: Mutex::default(),
            probed: Mutex::default(),
        }
    }
}

impl Dispatch for Timed {
    fn dispatch(&self, event: &PendingEvent, failures: u32) -> Next {
        if let Some(at) = self.probe.lock().take() {
            self.probed.lock().push(at.elapsed());
        }
        let next = self.inner.dispatch(event, failures);
        if next != Next::Done {
            return next;
        }
        let seq = event.seq;
        if let Some(start) = self.started.lock().remove(&seq) {
            self.latencies.lock().push(start.elapsed());
        }
        self.finished.fetch_add(1, Ordering::Release);
        next
    }

    fn concurrency_limit(&self, bot: &str) -> Option<usize> {
        self.inner.concurrency_limit(bot)
    }
}

fn dispatch_figures(store: &Store, bots: &Arc<Bots>, workers: usize) -> Result<(f64, f64, f64)> {
    let timed = Arc::new(Timed::new(Dispatcher::new(bots.clone(), store.clone())));
    let router = Router::start(
        workers,
        QueueConfig {
            per_conversation: 100_000,
            total: 1_000_000,
        },
        timed.clone(),
    );
    let submit = |conversation: &str, timed_event: bool| -> Result<()> {
        let reservation = loop {
            match router.reserve("echo", conversation, 1) {
                Ok(r) => break r,
                Err(_) => std::thread::yield_now(),
            }
        };
        let start = Instant::now();
        let event = message_event(store, conversation, "hello")?;
        if timed_event {
            timed.started.lock().insert(event.seq, start);
        }
        reservation.push(vec![event]);
        Ok(())
    };
    // Throughput: 256 conversations, 100k events, as fast as they go.
    let total = 100_000u64;
    let conversations: Vec<String> = (0..256).map(|i| format!("d{i}")).collect();
    let before = timed.finished.load(Ordering::Acquire);
    let started = Instant::now();
    // One submitter per core: admission (store writes) runs in parallel too.
    std::thread::scope(|s| -> Result<()> {
        let submitters = workers as u64;
        let handles: Vec<_> = (0..submitters)
            .map(|t| {
                let (submit, conversations) = (&submit, &conversations);
                s.spawn(move || -> Result<()> {
                    for i in (t..total).step_by(submitters as usize) {
                        submit(&conversations[(i % 256) as usize], false)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("submitter panicked")?;
        }
        Ok(())
    })?;
    while timed.finished.load(Ordering::Acquire) < before + total {
        std::thread::sleep(Duration::from_millis(1));
    }
    let throughput = total as f64 / started.elapsed().as_secs_f64();
    // Latency: one event at a time, 5,000 times.
    for _ in 0..5_000 {
        let target = timed.finished.load(Ordering::Acquire) + 1;
        submit("latency", true)?;
        while timed.finished.load(Ordering::Acquire) < target {
            std::hint::spin_loop();
        }
    }
    let mut latencies = std::mem::take(&mut *timed.latencies.lock());
    latencies.sort();
    let us = |p| percentile(&latencies, p).as_secs_f64() * 1e6;
    Ok((throughput, us(0.50), us(0.99)))
}

/// The host's web API under [`http_load`], served on a 2-thread runtime.
fn http_figures(mut config: Config) -> Result<(f64, f64)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    config.listen = format!("127.0.0.1:{port}").parse()?;
    let app = App::start(config)?;
    let server = two_thread_runtime()?;
    server.spawn(async move { app.serve().await });
    http_load(port)
}

/// [`bare::serve`] under [`http_load`], on a 2-thread runtime like the host's.
fn http_bare_figures() -> Result<(f64, f64)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let server = two_thread_runtime()?;
    server.spawn(async move { bare::serve(tokio::net::TcpListener::from_std(listener)?).await });
    http_load(port)
}

/// A multi-thread tokio runtime with two workers.
fn two_thread_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The web chat's load on the server at `port`: 128 clients on a 2-thread
/// runtime, each in its own conversation, for 8 s posting a message and
/// long-polling until the reply to it is readable. Messages per second and
/// the p99 of post-to-reply, in ms.
fn http_load(port: u16) -> Result<(f64, f64)> {
    two_thread_runtime()?.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?;
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if client.get(format!("{base}/healthz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let clients = 128;
        let run_for = Duration::from_secs(8);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let more = move |_| started.elapsed() < run_for;
            tasks.push(tokio::spawn(echo_client(
                client.clone(),
                base.clone(),
                format!("bench-{c}"),
                more,
            )));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await??);
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.sort();
        Ok((
            all.len() as f64 / elapsed,
            percentile(&all, 0.99).as_secs_f64() * 1e3,
        ))
    })
}

/// A web chat client of the echo bot at `base`: starts its own
/// conversation as user `user`, as the chat page does, then, while `more`
/// says so of the number of messages sent, posts a message and long-polls
/// until the reply to it is readable. Each message's post-to-reply time.
async fn echo_client(
    client: reqwest::Client,
    base: String,
    user: String,
    more: impl Fn(usize) -> bool,
) -> Result<Vec<Duration>> {
    let created: serde_json::Value = client
        .post(format!("{base}/api/v1/bots/echo/conversations"))
        .json(&json!({"user": {"id": user}}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let conversation = created["conversation"]
        .as_str()
        .context("no conversation")?;
    let token = created["token"].as_str().context("no token")?;
    let url = format!("{base}/api/v1/bots/echo/conversations/{conversation}/messages");
    let mut latencies = Vec::new();
    let mut cursor: Option<String> = None;
    while more(latencies.len()) {
        let sent = Instant::now();
        let posted: serde_json::Value = client
            .post(&url)
            .bearer_auth(token)
            .json(&json!({"text": "hi"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = posted["id"].as_str().context("no id")?.to_owned();
        'reply: loop {
            let mut get = client.get(&url).bearer_auth(token).query(&[("wait", "5")]);
            if let Some(after) = &cursor {
                get = get.query(&[("after", after)]);
            }
            let page: serde_json::Value = get.send().await?.error_for_status()?.json().await?;
            for message in page["messages"].as_array().context("no messages")? {
                cursor = message["id"].as_str().map(str::to_owned);
                if message["reply_to"].as_str() == Some(id.as_str()) {
                    break 'reply;
                }
            }
        }
        latencies.push(sent.elapsed());
    }
    Ok(latencies)
}

/// A bare axum server with the web API's shape for one echo bot, answering
/// from memory: no store, router, bot or durability. It exists so that the
/// same client load as the host's (`http_bare_msgs_per_s` beside
/// `http_msgs_per_s`) shows the ceiling of the HTTP stack itself, axum,
/// hyper, loopback and the client, and so how much of the host's time is
/// its own.
mod bare {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use axum::extract::{Path, Query, State};
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::routing::post;
    use axum::{Json, Router};
    use parking_lot::Mutex;
    use serde_json::{json, Value};
    use tokio::sync::watch;

    /// A conversation: its token and its messages, watched by long polls.
    struct Conversation {
        token: String,
        messages: watch::Sender<Vec<Value>>,
    }

    /// The server's state: every conversation, by id.
    #[derive(Default)]
    struct Bare {
        conversations: Mutex<HashMap<String, Arc<Conversation>>>,
        created: AtomicU64,
    }

    /// What each handler extracts: the server's state.
    type Shared = State<Arc<Bare>>;

    /// Serves `POST /api/v1/bots/echo/conversations` and `POST`/`GET`
    /// `.../conversations/{c}/messages` on `listener` until dropped.
    pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
        let app = Router::new()
            .route("/api/v1/bots/echo/conversations", post(create))
            .route(
                "/api/v1/bots/echo/conversations/{c}/messages",
                post(send).get(list),
            )
            .with_state(Arc::default());
        axum::serve(listener, app).await
    }

    /// Starts conversation `c-<n>` with token `token-<n>`; 201 with both.
    async fn create(State(bare): Shared) -> (StatusCode, Json<Value>) {
        let n = bare.created.fetch_add(1, Ordering::Relaxed);
        let (conversation, token) = (format!("c-{n}"), format!("token-{n}"));
        let (messages, _) = watch::channel(Vec::new());
        let entry = Arc::new(Conversation {
            token: token.clone(),
            messages,
        });
        bare.conversations
            .lock()
            .insert(conversation.clone(), entry);
        (
            StatusCode::CREATED,
            Json(json!({"conversation": conversation, "token": token})),
        )
    }

    /// The conversation, if the bearer token is its own.
    fn authorized(
        bare: &Bare,
        c: &str,
        headers: &HeaderMap,
    ) -> Result<Arc<Conversation>, StatusCode> {
        let conversation = bare
            .conversations
            .lock()
            .get(c)
            .cloned()
            .ok_or(StatusCode::NOT_FOUND)?;
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if presented.and_then(|v| v.strip_prefix("Bearer ")) != Some(conversation.token.as_str()) {
            return Err(StatusCode::UNAUTHORIZED);
        }
        Ok(conversation)
    }

    /// Stores the message and at once echo's reply to it; 202 with its id.
    async fn send(
        State(bare): Shared,
        Path(c): Path<String>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Result<(StatusCode, Json<Value>), StatusCode> {
        let conversation = authorized(&bare, &c, &headers)?;
        let text = body["text"]
            .as_str()
            .ok_or(StatusCode::UNPROCESSABLE_ENTITY)?;
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let message =
            |id: &str, sender: &str, text: &str, direction: &str, reply_to: Option<&str>| {
                json!({"id": id, "sender": sender, "text": text, "direction": direction,
                "at": at, "reply_to": reply_to})
            };
        let mut id = String::new();
        conversation.messages.send_modify(|messages| {
            // Ids: 16 hex digits, increasing in storage order, as the host's.
            id = format!("{:016x}", messages.len() + 1);
            let reply = format!("{:016x}", messages.len() + 2);
            messages.push(message(&id, "bench", text, "in", None));
            messages.push(message(
                &reply,
                "echo",
                &format!("echo: {text}"),
                "out",
                Some(&id),
            ));
        });
        Ok((StatusCode::ACCEPTED, Json(json!({"id": id}))))
    }

    /// Up to 100 messages after `after`, waiting up to `wait` seconds for one.
    async fn list(
        State(bare): Shared,
        Path(c): Path<String>,
        headers: HeaderMap,
        Query(query): Query<HashMap<String, String>>,
    ) -> Result<Json<Value>, StatusCode> {
        let conversation = authorized(&bare, &c, &headers)?;
        let wait = query.get("wait").map_or(Some(0.0), |w| w.parse().ok());
        let wait = wait.and_then(|w| Duration::try_from_secs_f64(w).ok());
        let after = query
            .get("after")
            .map_or(Some(0), |a| usize::from_str_radix(a, 16).ok());
        let (Some(wait), Some(after)) = (wait, after) else {
            return Err(StatusCode::BAD_REQUEST);
        };
        let mut messages = conversation.messages.subscribe();
        let _ = tokio::time::timeout(wait, messages.wait_for(|m| m.len() > after)).await;
        let page: Vec<Value> = messages
            .borrow()
            .iter()
            .skip(after)
            .take(100)
            .cloned()
            .collect();
        Ok(Json(json!({"messages": page})))
    }
}

/// The time at quantile `p` of `sorted`.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// The floor of a durable write on `dir`'s filesystem: 1,000 times, append
/// 4 KiB to a file and `fdatasync` it. p50 and p99 of each write and sync,
/// in µs.
fn fsync_us(dir: &std::path::Path) -> Result<(f64, f64)> {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("fsync-probe"))?;
    let block = [0xa5u8; 4096];
    let mut times = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(started.elapsed());
    }
    times.sort();
    let us = |p| percentile(&times, p).as_secs_f64() * 1e6;
    Ok((us(0.50), us(0.99)))
}

/// `p` of unsorted `values` (nearest rank).
fn percentile_f64(mut values: Vec<f64>, p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64 * p).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn policies_dir() -> PathBuf {
    std::env::var_os("AVIARY_POLICIES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies"))
}

fn bots_dir() -> PathBuf {
    std::env::var_os("AVIARY_BOTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../target/bots"))
}

fn hostile_dir() -> PathBuf {
    std::env::var_os("AVIARY_HOSTILE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../target/hostile"))
}

/// Wall-clock limit of the benchmark's hostile bots, in ms.
const HOSTILE_WALL_MS: u64 = 300;

/// The grant every benchmark hostile bot gets.
fn hostile_grant() -> Capabilities {
    Capabilities {
        memory_mb: Some(16),
        timeout_ms: Some(100),
        wall_ms: Some(HOSTILE_WALL_MS),
        send: Some(SendRate {
            per_conversation_per_minute: 5,
            per_bot_per_minute: 50,
        }),
        kv: Some(KvQuota {
            max_bytes: 65536,
            max_keys: 100,
        }),
        ..Capabilities::default()
    }
}

/// Loads component `source` from the hostile directory as bot `id`, with
/// its own grant.
fn load_hostile_with(
    app: &App,
    id: &str,
    source: &str,
    mode: &str,
    grant: Capabilities,
    policy_unchecked: bool,
) -> Result<LoadedBot> {
    let bytes = std::fs::read(hostile_dir().join(format!("{source}.wasm")))
        .context("build the hostile bots first (`cargo xtask bench` does)")?;
    let mut manifest: Manifest = toml::from_str(&std::fs::read_to_string(
        hostile_dir().join(format!("{source}.toml")),
    )?)?;
    manifest.id = id.into();
    load_bot(
        app,
        manifest,
        &bytes,
        grant,
        &[("mode", mode)],
        policy_unchecked,
    )
}

/// Loads component `source` from the hostile directory as bot `id`.
fn load_hostile(
    app: &App,
    id: &str,
    source: &str,
    mode: &str,
    policy_unchecked: bool,
) -> Result<LoadedBot> {
    load_hostile_with(app, id, source, mode, hostile_grant(), policy_unchecked)
}

fn load_bot(
    app: &App,
    manifest: Manifest,
    bytes: &[u8],
    grant: Capabilities,
    settings: &[(&str, &str)],
    unchecked: bool,
) -> Result<LoadedBot> {
    let id = manifest.id.clone();
    let policy = if unchecked {
        BotPolicy::unchecked(&id, grant, app.store.state())?
    } else {
        BotPolicy::new(&id, grant, &Default::default(), app.store.state())?
    };
    let spec = BotSpec {
        manifest,
        policy,
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        max_retries: 0,
        logs: Default::default(),
    };
    app.runtime
        .load(app.runtime.inspect(bytes)?, spec, &app.store)
}

/// Echo's fresh-instance-and-handle time with the run-time policy checks
/// against the same with them off, alternating rounds on one thread.
fn policy_overhead_pct(app: &App) -> Result<f64> {
    let bytes = std::fs::read(bots_dir().join("echo.wasm"))?;
    let manifest = Manifest::read(&bots_dir().join("echo.toml"))?;
    let grant = Capabilities {
        send: Some(SendRate {
            per_conversation_per_minute: u32::MAX,
            per_bot_per_minute: u32::MAX,
        }),
        kv: Some(KvQuota {
            max_bytes: 1 << 30,
            max_keys: 1 << 20,
        }),
        ..Capabilities::default()
    };
    let checked = load_bot(app, manifest.clone(), &bytes, grant.clone(), &[], false)?;
    let unchecked = load_bot(app, manifest, &bytes, grant, &[], true)?;
    let event = message_event(&app.store, "overhead", "hello")?;
    let (mut with, mut without) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..20 {
        for (bot, total) in [(&checked, &mut with), (&unchecked, &mut without)] {
            let started = Instant::now();
            for _ in 0..2_000 {
                bot.handle(&app.store, &event).result.expect("echo handles");
            }
            *total += started.elapsed();
        }
    }
    Ok((with.as_secs_f64() / without.as_secs_f64() - 1.0) * 100.0)
}

/// Tries every hostile behaviour once; counts those the sandbox contained.
fn hostile_containment(app: &App) -> Result<(u32, u32)> {
    let mut tried = 0;
    let mut contained = 0;
    let event = message_event(&app.store, "hostile", "go")?;
    type Check = fn(&aviary_host::runtime::Outcome) -> bool;
    let run_time: [(&str, Check); 19] = [
        ("loop", |o| matches!(o.result, Err(HandleError::Timeout(_)))),
        ("memory-growth", |o| {
            matches!(&o.result, Err(HandleError::Memory(_)))
        }),
        ("huge-alloc", |o| {
            matches!(&o.result, Err(HandleError::Memory(_)))
        }),
        ("recursion", |o| {
            matches!(o.result, Err(HandleError::Trap(_)))
        }),
        ("panic", |o| matches!(o.result, Err(HandleError::Trap(_)))),
        ("kv-flood", |o| denied(o, "kv")),
        ("send-flood", |o| {
            denied(o, "send") && o.result.as_ref().is_ok_and(|e| e.sends.len() <= 5)
        }),
        ("oversized", |o| denied(o, "send")),
        ("log-flood", |o| o.result.is_err()),
        ("snoop", |o| denied(o, "secrets")),
        ("sleep", |o| {
            matches!(o.result, Err(HandleError::WallTimeout(_)))
        }),
        (
            "huge-error",
            |o| matches!(&o.result, Err(HandleError::Bot(m)) if m.len() < 4096),
        ),
        ("secret-flood", bounded_refusals),
        ("kv-refusal-flood", bounded_refusals),
        ("one-key-refusals", bounded_refusals),
        ("long-secret-name", |o| o.refusals.is_empty()),
        ("absent-deletes", |o| {
            matches!(o.result, Err(HandleError::Budget(_)))
        }),
        ("absent-reads", |o| {
            matches!(o.result, Err(HandleError::Budget(_)))
        }),
        ("huge-reply-to", |o| {
            o.result
                .as_ref()
                .is_ok_and(|e| e.sends.len() == 1 && e.sends[0].text.contains("Invalid"))
        }),
    ];
    for (mode, was_contained) in run_time {
        tried += 1;
        let bot = load_hostile(app, &format!("bench-{mode}"), "mischief", mode, false)?;
        if was_contained(&bot.handle(&app.store, &event)) {
            contained += 1;
        } else {
            eprintln!("hostile {mode}: NOT contained");
        }
    }
    for (id, source, mode) in [
        ("bench-init", "mischief", "init-trap"),
        ("bench-init-error", "mischief", "init-huge-error"),
        ("bench-fs", "fs-reader", ""),
        ("bench-world", "other-world", ""),
        ("bench-wit", "future-wit", ""),
    ] {
        tried += 1;
        if load_hostile(app, id, source, mode, false).is_err() {
            contained += 1;
        } else {
            eprintln!("hostile {id}: loaded, NOT contained");
        }
    }
    tried += 1;
    let manifest = Manifest {
        id: "bench-junk".into(),
        version: "0".into(),
        description: String::new(),
        asks: Capabilities::default(),
        accepts: Vec::new(),
        data: Default::default(),
    };
    if load_bot(
        app,
        manifest,
        b"\0asm\x0d\0\x01\0junk",
        hostile_grant(),
        &[],
        false,
    )
    .is_err()
    {
        contained += 1;
    }
    tried += 1;
    let quad =
        wat::parse_str("(component (core module (memory 1) (memory 1) (memory 1) (memory 1)))")?;
    if app.runtime.inspect(&quad).is_err() {
        contained += 1;
    }
    Ok((tried, contained))
}

/// Whether the event was refused something of `capability`.
fn denied(outcome: &aviary_host::runtime::Outcome, capability: &str) -> bool {
    outcome
        .refusals
        .itemised()
        .iter()
        .any(|d| d.capability == capability)
}

/// A refusal flood kept to a few itemised records and a count.
fn bounded_refusals(outcome: &aviary_host::runtime::Outcome) -> bool {
    let refusals = &outcome.refusals;
    refusals.itemised().len() <= aviary_host::runtime::budget::MAX_ITEMISED_DENIALS
        && (refusals.unlisted > 0 || refusals.itemised().iter().any(|d| d.count > 100))
}

/// The worst time, in ms, that a worker spends on one event after `handle`
/// returned (auditing its refusals, committing or dead-lettering), for
/// bots that flood the host with refusals.
fn hostile_post_event_ms(app: &App) -> Result<f64> {
    let dispatcher = Dispatcher::new(app.bots.clone(), app.store.clone());
    let mut worst = Duration::ZERO;
    for mode in ["secret-flood", "kv-refusal-flood", "one-key-refusals"] {
        let mut grant = hostile_grant();
        grant.timeout_ms = Some(2_000);
        grant.wall_ms = Some(5_000);
        let bot = load_hostile_with(
            app,
            &format!("bench-post-{mode}"),
            "mischief",
            mode,
            grant,
            false,
        )?;
        let event = message_event(&app.store, "post-event", "go")?;
        let outcome = bot.handle(&app.store, &event);
        let started = Instant::now();
        dispatcher.settle(&bot, &event, outcome);
        worst = worst.max(started.elapsed());
    }
    Ok(worst.as_secs_f64() * 1e3)
}

/// Echo latency (p99, µs), one event at a time through the full path,
/// while a looping bot and a memory hog are hammered on other conversations.
fn echo_p99_under_hostile(app: &App, workers: usize) -> Result<f64> {
    for (id, mode) in [("bench-looper", "loop"), ("bench-hog", "memory-growth")] {
        app.bots
            .insert(load_hostile(app, id, "mischief", mode, false)?);
    }
    let latencies = echo_latencies_beside(app, workers, &["bench-looper", "bench-hog"], 500)?;
    Ok(percentile(&latencies, 0.99).as_secs_f64() * 1e6)
}

/// Echo's worst reply time (ms) while four bots sleep inside host calls on
/// every worker, each event cut at the wall limit.
fn hostile_wall_blocked_ms(app: &App, workers: usize) -> Result<f64> {
    let sleepers: Vec<String> = (0..4).map(|n| format!("bench-sleeper-{n}")).collect();
    for id in &sleepers {
        app.bots
            .insert(load_hostile(app, id, "mischief", "sleep", false)?);
    }
    let ids: Vec<&str> = sleepers.iter().map(String::as_str).collect();
    let latencies = echo_latencies_beside(app, workers, &ids, 50)?;
    Ok(latencies[latencies.len() - 1].as_secs_f64() * 1e3)
}

/// Echo's latencies, sorted, over `count` events sent one at a time while
/// `hostile` bots get an event every 5 ms on 32 conversations each.
fn echo_latencies_beside(
    app: &App,
    workers: usize,
    hostile: &[&str],
    count: usize,
) -> Result<Vec<Duration>> {
    let timed = Arc::new(Timed::new(Dispatcher::new(
        app.bots.clone(),
        app.store.clone(),
    )));
    let router = Router::start(
        workers,
        QueueConfig {
            per_conversation: 1_000,
            total: 100_000,
        },
        timed.clone(),
    );
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<Vec<Duration>> {
        s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for bot in hostile {
                    let conversation = format!("h{}", n % 32);
                    if let Ok(reservation) = router.reserve(bot, &conversation, 1) {
                        let event = app
                            .store
                            .accept_inbound(bot, &conversation, "mallory", "go", &[])
                            .expect("store")
                            .events
                            .pop()
                            .unwrap();
                        reservation.push(vec![event]);
                    }
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        std::thread::sleep(Duration::from_millis(500));
        let mut latencies = Vec::new();
        for _ in 0..count {
            let start = Instant::now();
            let reservation = router
                .reserve("echo", "bystander", 1)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let event = message_event(&app.store, "bystander", "hello")?;
            let seq = event.seq;
            timed.started.lock().insert(seq, start);
            reservation.push(vec![event]);
            while timed.started.lock().contains_key(&seq) {
                std::thread::sleep(Duration::from_micros(50));
            }
            latencies.push(start.elapsed());
        }
        stop.store(true, Ordering::Relaxed);
        latencies.sort();
        eprintln!(
            "echo beside {hostile:?}: p50 {:?}, max {:?}",
            latencies[latencies.len() / 2],
            latencies[latencies.len() - 1]
        );
        Ok(latencies)
    })
}
