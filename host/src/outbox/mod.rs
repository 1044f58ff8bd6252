//! The outbox's delivery engine. Jobs bots enqueued (committed with their
//! events, see [`crate::runtime::capabilities::outbox`]) are sent here:
//! one at a time per bot and ordering key, in enqueue order; retried with
//! growing backoff and jitter, never sooner than `Retry-After`; held back
//! while their destination's circuit is open ([`circuit`]); settled into a
//! `delivery` event for the bot when answered, or dead-lettered when their
//! give-up time passes. Every attempt's bookkeeping is stored, so a restart
//! goes on where it stopped.

pub mod circuit;
pub mod retry;
mod send;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Result;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::bots::Bots;
use crate::pinned::EgressError;
use crate::policy::egress::Target;
use crate::router::Router;
use crate::store::{now_ms, OutboxJob, Store};

/// `[outbox]`: how the host delivers outbox jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Jobs sent at once, host-wide.
    pub parallel: usize,
    /// Wait before the second attempt of a job; each further one doubles.
    pub retry_first_ms: u64,
    /// Longest wait between two attempts of a job, and longest cool-down of
    /// a destination's open circuit.
    pub retry_max_ms: u64,
    /// How long one attempt may take, answer included.
    pub timeout_ms: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            parallel: 16,
            retry_first_ms: 500,
            retry_max_ms: 60_000,
            timeout_ms: 10_000,
        }
    }
}

impl OutboxConfig {
    /// Checks the values an admin set.
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            (1..=1024).contains(&self.parallel),
            "`outbox.parallel` must be 1 to 1024"
        );
        anyhow::ensure!(
            self.retry_first_ms >= 10,
            "`outbox.retry_first_ms` must be at least 10"
        );
        anyhow::ensure!(
            self.retry_max_ms >= self.retry_first_ms,
            "`outbox.retry_max_ms` must be at least `outbox.retry_first_ms`"
        );
        anyhow::ensure!(
            self.timeout_ms >= 100,
            "`outbox.timeout_ms` must be at least 100"
        );
        Ok(())
    }
}

/// A bot and one of its ordering keys: the unit of order.
type Lane = (String, String);

/// The delivery engine. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    bots: Arc<Bots>,
    router: OnceLock<Router>,
    config: OutboxConfig,
    queues: Mutex<Queues>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct Queues {
    lanes: BTreeMap<Lane, VecDeque<u64>>,
    jobs: HashMap<u64, OutboxJob>,
    /// Lanes whose first job is being sent.
    sending: HashSet<Lane>,
    circuits: circuit::Circuits,
}

/// One job as `aviary outbox list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    #[serde(flatten)]
    pub job: OutboxJob,
    pub destination: String,
    pub sending: bool,
}

impl Outbox {
    /// Loads the jobs waiting in the store; nothing is sent before
    /// [`Outbox::start`].
    pub fn load(store: Store, bots: Arc<Bots>, config: OutboxConfig) -> Result<Outbox> {
        let mut queues = Queues::default();
        for job in store.outbox_jobs()? {
            queues.add(job);
        }
        Ok(Outbox {
            inner: Arc::new(Inner {
                store,
                bots,
                router: OnceLock::new(),
                config,
                queues: Mutex::new(queues),
                wake: tokio::sync::Notify::new(),
            }),
        })
    }

    /// Starts delivering, on a thread of its own; settled jobs' delivery
    /// events go to `router`.
    pub fn start(&self, router: Router) -> Result<()> {
        let _ = self.inner.router.set(router);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("aviary-outbox-io")
            .enable_all()
            .build()?;
        let inner = self.inner.clone();
        std::thread::Builder::new()
            .name("aviary-outbox".into())
            .spawn(move || runtime.block_on(inner.run()))?;
        Ok(())
    }

    /// Jobs `ids` were committed: queue them.
    pub fn added(&self, ids: &[u64]) {
        let mut queues = self.inner.queues.lock();
        for &id in ids {
            match self.inner.store.outbox_job(id) {
                Ok(Some(job)) => queues.add(job),
                Ok(None) => {}
                Err(error) => tracing::error!(job = id, "cannot read an outbox job: {error:#}"),
            }
        }
        drop(queues);
        self.inner.wake.notify_one();
    }

    /// Every waiting job, in enqueue order.
    pub fn list(&self) -> Vec<JobView> {
        let queues = self.inner.queues.lock();
        let mut jobs: Vec<JobView> = queues
            .jobs
            .values()
            .map(|job| JobView {
                destination: destination(&job.url),
                sending: queues.sending.contains(&lane_of(job))
                    && queues.lanes.get(&lane_of(job)).and_then(|l| l.front()) == Some(&job.id),
                job: job.clone(),
            })
            .collect();
        jobs.sort_by_key(|view| view.job.id);
        jobs
    }

    /// Destinations whose circuit is not simply closed.
    pub fn circuits(&self) -> Vec<(String, circuit::Circuit)> {
        self.inner.queues.lock().circuits.snapshot()
    }

    /// Sends job `id` again now, closing its destination's circuit.
    pub fn retry(&self, id: u64) -> Result<(), String> {
        let mut queues = self.inner.queues.lock();
        let Some(job) = queues.jobs.get_mut(&id) else {
            return Err(format!(
                "no job {id:016x} waits in the outbox (`aviary outbox list` lists them)"
            ));
        };
        job.next_at = 0;
        let dest = destination(&job.url);
        queues.circuits.success(&dest);
        drop(queues);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Takes job `id` out of the outbox; the bot gets its delivery event,
    /// with the error that an admin dropped it.
    pub fn drop_job(&self, id: u64) -> Result<(), String> {
        let mut queues = self.inner.queues.lock();
        let Some(job) = queues.jobs.get(&id).cloned() else {
            return Err(format!(
                "no job {id:016x} waits in the outbox (`aviary outbox list` lists them)"
            ));
        };
        let lane = lane_of(&job);
        if queues.sending.contains(&lane)
            && queues.lanes.get(&lane).and_then(|l| l.front()) == Some(&id)
        {
            return Err(format!(
                "job {id:016x} is being sent right now; try again in a moment"
            ));
        }
        queues.remove(&job);
        drop(queues);
        self.inner.settle(
            &job,
            job.delivery(None, Some("dropped by an admin".into())),
            false,
        );
        Ok(())
    }

    /// Moves dead letter `id` of the outbox back into it.
    pub fn revive(&self, id: u64) -> Result<bool> {
        let Some(job) = self.inner.store.revive_job(id)? else {
            return Ok(false);
        };
        self.inner.queues.lock().add(job);
        self.inner.wake.notify_one();
        Ok(true)
    }
}

fn lane_of(job: &OutboxJob) -> Lane {
    (job.bot.clone(), job.ordering_key.clone())
}

/// The destination of a URL, as circuits key it.
fn destination(url: &str) -> String {
    Target::parse(url).map_or_else(|| url.to_owned(), |t| t.to_string())
}

impl Queues {
    fn add(&mut self, job: OutboxJob) {
        if self.jobs.contains_key(&job.id) {
            return;
        }
        let lane = self.lanes.entry(lane_of(&job)).or_default();
        // Keep enqueue order even when a revived job comes back late.
        let at = lane.partition_point(|&id| id < job.id);
        lane.insert(at, job.id);
        self.jobs.insert(job.id, job);
    }

    fn remove(&mut self, job: &OutboxJob) {
        let lane = lane_of(job);
        if let Some(ids) = self.lanes.get_mut(&lane) {
            ids.retain(|&id| id != job.id);
            if ids.is_empty() {
                self.lanes.remove(&lane);
            }
        }
        self.jobs.remove(&job.id);
    }

    /// The first jobs of lanes that may go now (marked as sending), up to
    /// `room`, and when to look again for the others.
    fn ready(&mut self, now: u64, room: usize) -> (Vec<OutboxJob>, Option<u64>) {
        let mut ready = Vec::new();
        let mut next: Option<u64> = None;
        let mut soonest = |at: u64| next = Some(next.map_or(at, |n: u64| n.min(at)));
        let lanes: Vec<(Lane, u64)> = self
            .lanes
            .iter()
            .filter(|(lane, _)| !self.sending.contains(*lane))
            .filter_map(|(lane, ids)| Some((lane.clone(), *ids.front()?)))
            .collect();
        for (lane, id) in lanes {
            if ready.len() >= room {
                break;
            }
            let job = &self.jobs[&id];
            if job.next_at > now {
                soonest(job.next_at);
                continue;
            }
            match self.circuits.admit(&destination(&job.url), now) {
                Ok(()) => {
                    self.sending.insert(lane);
                    ready.push(job.clone());
                }
                Err(Some(until)) => soonest(until),
                Err(None) => {}
            }
        }
        (ready, next)
    }
}

impl Inner {
    async fn run(self: Arc<Self>) {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(self.config.parallel));
        loop {
            let room = in_flight.available_permits();
            let (ready, next) = self.queues.lock().ready(now_ms(), room);
            for job in ready {
                let permit = in_flight
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("never closed");
                let inner = self.clone();
                tokio::spawn(async move {
                    inner.attempt(job).await;
                    drop(permit);
                    inner.wake.notify_one();
                });
            }
            let wait = next.map_or(Duration::from_secs(5), |at| {
                Duration::from_millis(at.saturating_sub(now_ms()).clamp(1, 5_000))
            });
            let _ = tokio::time::timeout(wait, self.wake.notified()).await;
        }
    }

    /// Sends `job` once and settles, retries or dead-letters it.
    async fn attempt(&self, mut job: OutboxJob) {
        let grants = self
            .bots
            .get(&job.bot)
            .map(|bot| bot.policy.grant.http.clone());
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let dest = destination(&job.url);
        let result = match &grants {
            Some(grants) => send::send(grants, &job, timeout).await,
            None => Err(EgressError::Failed(format!(
                "bot `{}` is not loaded",
                job.bot
            ))),
        };
        job.attempts += 1;
        let now = now_ms();
        let mut queues = self.queues.lock();
        let failure = match result {
            Ok(answer) if !retry::retryable(answer.status) => {
                queues.circuits.success(&dest);
                queues.sending.remove(&lane_of(&job));
                queues.remove(&job);
                drop(queues);
                self.settle(&job, job.delivery(Some(answer), None), false);
                return;
            }
            Ok(answer) => {
                job.last_status = Some(answer.status);
                let wait = answer
                    .headers
                    .iter()
                    .find(|(name, _)| name == "retry-after")
                    .and_then(|(_, v)| retry::retry_after(v, std::time::SystemTime::now()));
                (
                    format!("the server answered {}", answer.status),
                    wait,
                    false,
                )
            }
            Err(EgressError::Denied(reason)) => (reason, None, true),
            Err(EgressError::Failed(reason)) => (reason, None, false),
        };
        let (reason, retry_after, denied) = failure;
        job.last_error = Some(reason.clone());
        if !denied {
            queues
                .circuits
                .failure(&dest, now, self.config.retry_max_ms);
        }
        queues.sending.remove(&lane_of(&job));
        if denied || now >= job.give_up_at {
            queues.remove(&job);
            drop(queues);
            let error = if denied {
                format!("refused by the bot's http grant: {reason}")
            } else {
                format!(
                    "gave up after {} attempts; the last: {reason}",
                    job.attempts
                )
            };
            tracing::warn!(bot = %job.bot, job = %job.name(), "outbox job dead-lettered: {error}");
            job.last_error = Some(error.clone());
            self.settle(&job, job.delivery(None, Some(error)), true);
            return;
        }
        let first = Duration::from_millis(self.config.retry_first_ms);
        let max = Duration::from_millis(self.config.retry_max_ms);
        let wait =
            retry::backoff(job.attempts, first, max, random()).max(retry_after.unwrap_or_default());
        job.next_at = now + wait.as_millis() as u64;
        tracing::debug!(bot = %job.bot, job = %job.name(), attempt = job.attempts, "outbox job failed ({reason}); next in {wait:?}");
        self.store.update_job(&job);
        queues.jobs.insert(job.id, job);
    }

    /// Removes a finished job and hands its delivery event to the bot.
    fn settle(&self, job: &OutboxJob, event: crate::store::EventRecord, dead: bool) {
        match self.store.settle_job(job, event, dead) {
            Ok(event) => {
                if let Some(router) = self.router.get() {
                    router.requeue(vec![event]);
                }
            }
            Err(error) => {
                tracing::error!(job = %job.name(), "cannot settle an outbox job: {error:#}")
            }
        }
    }
}

/// A random number for jitter.
fn random() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}
