//! The data of one `wasmtime::Store`: everything a single event may touch.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::budget::{EventBudget, Refusals};
use super::capabilities::llm::{Llm, LlmParts};
use super::capabilities::log::LogRing;
use super::capabilities::vision::VisionState;
use super::capabilities::{
    attachments::Attachments, config::Config, http::Http, kv::Kv, log::Log, messaging::Messaging,
    outbox::Outbox, schedule::Schedule, Services,
};
use super::clock::EventClock;
use super::limits::BotLimiter;
use crate::policy::BotPolicy;
use crate::store::Effects;

/// Most bytes of stdout and stderr kept per event; the bot's further writes
/// fail.
pub const MAX_STDIO_BYTES: usize = 16 * 1024;

/// What every event of one loaded bot shares: who it is and what it may do.
pub struct Identity {
    pub id: Arc<str>,
    pub version: Arc<str>,
    pub settings: Arc<BTreeMap<String, String>>,
    pub policy: Arc<BotPolicy>,
    /// Where its log lines go besides the host's log.
    pub logs: Arc<LogRing>,
    pub memory_bytes: usize,
    /// The host-wide state capabilities share.
    pub services: Services,
    /// kv prefixes whose every read is audited (data tables of personal data).
    pub audited: Arc<Vec<String>>,
}

/// What the capabilities need to know of the event itself.
#[derive(Debug, Clone, Default)]
pub struct EventContext {
    /// Who sent the message and where, for message events.
    pub sender: Option<String>,
    pub conversation: Option<String>,
    /// The lane the event runs in: its conversation, or a lane of the host's
    /// own (`#timers`, `#hook:<name>`) for events of no conversation.
    pub lane: String,
    /// The attachments of the message.
    pub attachments: Vec<crate::store::Attachment>,
}

/// Per-event state, made fresh for every event and dropped after it.
pub struct EventState {
    wasi: WasiCtx,
    table: ResourceTable,
    stdio: MemoryOutputPipe,
    pub limits: BotLimiter,
    pub clock: EventClock,
    pub budget: EventBudget,
    pub messaging: Messaging,
    pub kv: Kv,
    pub log: Log,
    pub config: Config,
    pub http: Http,
    pub llm: Llm,
    pub attachments: Attachments,
    pub vision: VisionState,
    pub schedule: Schedule,
    pub outbox: Outbox,
}

impl EventState {
    /// State for one event of `bot` on `store`, timed by `clock`.
    pub fn new(
        bot: &Identity,
        store: &crate::store::Store,
        clock: EventClock,
        event: EventContext,
    ) -> EventState {
        let Identity {
            id,
            version,
            settings,
            policy,
            logs,
            memory_bytes,
            services,
            audited,
        } = bot;
        let stdio = MemoryOutputPipe::new(MAX_STDIO_BYTES);
        // No preopened directories, no environment, no arguments, empty
        // stdin, no network: WASI is linked only because Rust's std uses it.
        let wasi = WasiCtx::builder()
            .stdout(stdio.clone())
            .stderr(stdio.clone())
            .build();
        EventState {
            wasi,
            table: ResourceTable::new(),
            stdio,
            limits: BotLimiter::new(*memory_bytes),
            http: Http::new(policy.clone(), clock.wall_deadline()),
            llm: Llm::new(
                LlmParts {
                    models: services.models.clone(),
                    live: services.live.clone(),
                    policy: policy.clone(),
                    bot: id.clone(),
                    version: version.clone(),
                    logs: logs.clone(),
                },
                clock.wall_deadline(),
                clock.wall_limit(),
            ),
            attachments: Attachments::new(
                store.clone(),
                id.clone(),
                policy.clone(),
                event.attachments.clone(),
            ),
            vision: VisionState::new(
                services.vision.clone(),
                policy.grant.vision,
                (id.clone(), version.clone(), logs.clone()),
                clock.wall_deadline(),
                clock.wall_limit(),
            ),
            clock,
            budget: EventBudget::default(),
            messaging: Messaging::new(
                policy.clone(),
                store.clone(),
                services.live.clone(),
                id.clone(),
                event.conversation.clone(),
            ),
            schedule: Schedule::new(
                store.clone(),
                id.clone(),
                policy.clone(),
                event.conversation.clone(),
            ),
            outbox: Outbox::new(
                store.state().clone(),
                id.clone(),
                policy.clone(),
                event.lane.clone(),
            ),
            kv: Kv::new(store.state().clone(), id, policy.clone())
                .auditing(audited.clone(), &event),
            log: Log::new(id.clone(), version.clone(), logs.clone()),
            config: Config {
                settings: settings.clone(),
                policy: policy.clone(),
            },
        }
    }

    /// Everything the policy refused during the event, itemised up to a bound.
    pub fn take_refusals(&mut self) -> Refusals {
        let mut all = std::mem::take(&mut self.budget.refusals);
        all.merge(self.http.take_refusals());
        all
    }

    /// Audit records of what the event did that must be recorded whether or
    /// not it commits (calls to models off this machine, reads of audited
    /// data tables).
    pub fn take_audit(&mut self) -> Vec<crate::store::AuditEntry> {
        let mut all = std::mem::take(&mut self.llm.audit);
        all.append(&mut self.kv.audit);
        all
    }

    /// The HTTP state and the resource table it shares with WASI.
    pub fn http_parts(&mut self) -> (&mut Http, &mut ResourceTable) {
        (&mut self.http, &mut self.table)
    }

    /// What the bot wrote to stdout and stderr.
    pub fn stdio(&self) -> bytes::Bytes {
        self.stdio.contents()
    }

    /// The effects buffered during the call, to commit.
    pub fn into_effects(self) -> Effects {
        let mut reads = self.kv.reads;
        let mut writes = self.kv.writes;
        self.schedule.buffer.merge_into(&mut reads, &mut writes);
        self.outbox.buffer.merge_into(&mut reads, &mut writes);
        Effects {
            sends: self.messaging.sends,
            kv_reads: reads,
            kv_writes: writes,
            kv_delta: self.kv.delta,
            timers: self.schedule.changed,
            jobs: self.outbox.jobs,
        }
    }
}

impl WasiView for EventState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
