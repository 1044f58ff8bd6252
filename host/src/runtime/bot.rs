//! A loaded bot: its manifest, its pre-linked component and its limits, and
//! the one operation the router needs: run an event on a fresh instance.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use wasmtime::component::ComponentExportIndex;
use wasmtime::{Engine, Store, Trap};

use super::bindings::aviary::bot::types as wit;
use super::bindings::BotPre;
use super::budget::Refusals;
use super::clock::{Containment, EventClock, Overrun};
use super::limits::MemoryCapReached;
use super::state::{EventContext, EventState, Identity};
use crate::policy::{BotPolicy, Capabilities};
use crate::store::{Effects, EventRecord, PendingEvent};
use crate::text::{cut, MAX_ERROR_BYTES};

/// What a bot says about itself, from `<id>.toml` beside its component.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub id: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// The capabilities the bot asks for; the admin's grant must cover them.
    #[serde(default)]
    pub asks: Capabilities,
    /// The media types people may attach for it (`image/*` for any image),
    /// judged by content; empty: any. Its grant's `attachment_bytes` still
    /// bounds their size, and without it the bot takes no files at all.
    #[serde(default)]
    pub accepts: Vec<String>,
    /// Data tables the admin imports (see [`crate::bots::data`]).
    #[serde(default)]
    pub data: BTreeMap<String, crate::bots::data::DataTable>,
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the bot manifest {}", path.display()))?;
        let manifest: Manifest = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid bot manifest", path.display()))?;
        anyhow::ensure!(
            crate::ids::is_valid_id(&manifest.id),
            "{}: bot id `{}` may use only letters, digits, `.`, `_`, `:` and `-`",
            path.display(),
            manifest.id
        );
        anyhow::ensure!(
            crate::ids::is_valid_id(&manifest.version),
            "{}: version `{}` may use only letters, digits, `.`, `_`, `:` and `-`",
            path.display(),
            manifest.version
        );
        crate::config::validate_grant(&format!("{}: asks", path.display()), &manifest.asks)?;
        for table in manifest.data.keys() {
            anyhow::ensure!(
                aviary_rules::ids::is_valid_id(table) && !table.contains(['.', ':']),
                "{}: data table name `{table}` may use only letters, digits, `_` and `-`",
                path.display()
            );
        }
        for pattern in &manifest.accepts {
            anyhow::ensure!(
                pattern.split_once('/').is_some_and(|(kind, sub)| {
                    !kind.is_empty() && kind != "*" && !sub.is_empty()
                }),
                "{}: `accepts` entry `{pattern}` is not a media type such as `image/png` or `image/*`",
                path.display()
            );
        }
        Ok(manifest)
    }

    /// Whether files of `media_type` may be attached for this bot.
    pub fn takes(&self, media_type: &str) -> bool {
        self.accepts.is_empty()
            || self
                .accepts
                .iter()
                .any(|pattern| match pattern.strip_suffix("/*") {
                    Some(kind) => media_type
                        .split_once('/')
                        .is_some_and(|(k, _)| k.eq_ignore_ascii_case(kind)),
                    None => pattern.eq_ignore_ascii_case(media_type),
                })
    }
}

/// The limits one bot runs under.
#[derive(Debug, Clone)]
pub struct Limits {
    pub memory_bytes: usize,
    /// CPU time per event (`timeout_ms`).
    pub timeout: Duration,
    /// Wall-clock time per event, waits in host calls included (`wall_ms`).
    pub wall: Duration,
    pub max_retries: u32,
}

/// The result of one event: its effects or why there are none, and what
/// the policy refused along the way (for the audit log either way).
pub struct Outcome {
    pub result: Result<Effects, HandleError>,
    pub refusals: Refusals,
    /// A send was refused by a send-rate bucket that will refill in this
    /// long: the event is to run again then, not to fail.
    pub send_wait: Option<Duration>,
    /// How long the run took, instantiation included.
    pub elapsed: Duration,
    /// The linear memory the instance had at its end (memory never shrinks,
    /// so this is its high-water mark).
    pub memory_bytes: usize,
    /// What to audit whatever the result (calls to models off this machine).
    pub audit: Vec<crate::store::AuditEntry>,
}

/// A bot ready to handle events.
pub struct LoadedBot {
    pub manifest: Manifest,
    /// sha256 of the component bytes, hex.
    pub sha256: String,
    pub limits: Limits,
    /// The interfaces the component imports.
    pub imports: Vec<String>,
    pub policy: Arc<BotPolicy>,
    pub(super) engine: Engine,
    pub(super) pre: BotPre<EventState>,
    /// `aviary:bot/lifecycle.migrate`, when the component exports it.
    pub(super) migrate: Option<ComponentExportIndex>,
    /// The functions of `aviary:bot/callbacks`, when exported.
    pub(super) callbacks: Callbacks,
    pub(super) identity: Identity,
    /// The runtime that drives waits inside host calls (timers, sockets).
    pub(super) io: tokio::runtime::Handle,
    /// When the bot last trapped or overran; see [`Containment`].
    pub containment: Arc<Containment>,
}

/// Why an event did not produce effects. Texts that come from the bot are
/// cut to [`MAX_ERROR_BYTES`].
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The bot returned an error value.
    #[error("the bot returned an error: {0}")]
    Bot(String),
    /// The bot used more CPU time than `timeout_ms`.
    #[error("the bot ran past its CPU deadline of {0:?}")]
    Timeout(Duration),
    /// The event took longer than `wall_ms`, waits in host calls included.
    #[error("the event ran past its wall-clock deadline of {0:?}")]
    WallTimeout(Duration),
    /// Growing memory would exceed the bot's cap.
    #[error("the bot trapped: {0}")]
    Memory(String),
    /// The bot trapped (panic, stack overflow, ...).
    #[error("the bot trapped: {0}")]
    Trap(String),
    /// The event cost the host more than an event may (see `runtime::budget`).
    #[error("{0}")]
    Budget(String),
}

impl HandleError {
    /// Whether the sandbox stopped the bot (rather than the bot failing on
    /// its own terms): what the audit log records as containment.
    pub fn contained(&self) -> Option<&'static str> {
        match self {
            HandleError::Bot(_) => None,
            HandleError::Timeout(_) => Some("cpu_time"),
            HandleError::WallTimeout(_) => Some("wall_time"),
            HandleError::Memory(_) => Some("memory"),
            HandleError::Budget(_) => Some("event_budget"),
            HandleError::Trap(message)
                if message.contains("out of bounds")
                    || message.contains("call stack exhausted") =>
            {
                Some("stack")
            }
            HandleError::Trap(_) => Some("trap"),
        }
    }
}

impl LoadedBot {
    /// Runs `event` on a fresh instance; returns its effects, uncommitted.
    pub fn handle(&self, store: &crate::store::Store, event: &PendingEvent) -> Outcome {
        let started = std::time::Instant::now();
        let wit_event = to_wit(event);
        let conversation =
            (!event.conversation.starts_with('#')).then(|| event.conversation.clone());
        let context = match &event.event {
            EventRecord::Message { message } => EventContext {
                sender: Some(message.sender.clone()),
                conversation,
                lane: event.conversation.clone(),
                attachments: message.attachments.clone(),
            },
            _ => EventContext {
                conversation,
                lane: event.conversation.clone(),
                ..EventContext::default()
            },
        };
        let (mut store, result) =
            self.run(
                store,
                context,
                async |store: &mut Store<_>| match &wit_event {
                    Call::Handle(event) => {
                        let bot = self.pre.instantiate_async(&mut *store).await?;
                        bot.aviary_bot_handler().call_handle(store, event).await
                    }
                    Call::Webhook(webhook) => {
                        self.call_back(store, self.callbacks.webhook, webhook).await
                    }
                    Call::Delivery(delivery) => {
                        self.call_back(store, self.callbacks.delivery, delivery)
                            .await
                    }
                },
            );
        let memory_bytes = store.data().limits.memory_used();
        let refusals = store.data_mut().take_refusals();
        let audit = store.data_mut().take_audit();
        let send_wait = store.data().messaging.refill_wait.flatten();
        self.log_stdio(store.data().stdio());
        let over_budget = store.data().budget.exceeded().map(str::to_owned);
        let result = match (result, over_budget) {
            // Whatever the bot did after it ran out of budget (answered,
            // trapped, overran), the budget is why the event fails.
            (_, Some(reason)) => Err(HandleError::Budget(reason)),
            (Err(error), None) => Err(error),
            (Ok(Ok(())), None) => Ok(store.into_data().into_effects()),
            (Ok(Err(message)), None) => Err(HandleError::Bot(
                cut(&message, MAX_ERROR_BYTES).into_owned(),
            )),
        };
        Outcome {
            result,
            refusals,
            send_wait,
            elapsed: started.elapsed(),
            memory_bytes,
            audit,
        }
    }

    /// Calls one function of the optional `callbacks` export with `arg`.
    async fn call_back<
        T: wasmtime::component::ComponentType + wasmtime::component::Lower + Sync,
    >(
        &self,
        store: &mut Store<EventState>,
        index: Option<ComponentExportIndex>,
        arg: &T,
    ) -> wasmtime::Result<Result<(), String>> {
        let Some(index) = index else {
            return Ok(Err(format!(
                "the bot does not export {CALLBACKS}, so it cannot take webhook or delivery \
                 events; build it with aviary-sdk 0.1.4 or later"
            )));
        };
        let instance = self
            .pre
            .instance_pre()
            .instantiate_async(&mut *store)
            .await?;
        let func = instance.get_typed_func::<(&T,), (Result<(), String>,)>(&mut *store, index)?;
        let (answer,) = func.call_async(&mut *store, (arg,)).await?;
        Ok(answer)
    }

    /// Whether the component exports `migrate`.
    pub fn has_migrate(&self) -> bool {
        self.migrate.is_some()
    }

    /// Runs the bot's `migrate(from_version)` on an instance of its own and
    /// returns its kv effects, uncommitted; sends are refused there. A bot
    /// without the export has nothing to migrate: empty effects.
    pub fn run_migrate(&self, store: &crate::store::Store, from_version: &str) -> Result<Effects> {
        let Some(index) = self.migrate else {
            return Ok(Effects::default());
        };
        let (store, result) = self.run(
            store,
            EventContext::default(),
            async |store: &mut Store<_>| {
                store.data_mut().messaging.closed =
                    Some("a bot cannot send from `migrate`: it runs before any event");
                let instance = self
                    .pre
                    .instance_pre()
                    .instantiate_async(&mut *store)
                    .await?;
                let migrate = instance
                    .get_typed_func::<(&str,), (Result<(), String>,)>(&mut *store, index)?;
                let (answer,) = migrate.call_async(&mut *store, (from_version,)).await?;
                Ok(answer)
            },
        );
        self.log_stdio(store.data().stdio());
        match result {
            Ok(Ok(())) => Ok(store.into_data().into_effects()),
            Ok(Err(message)) => anyhow::bail!(
                "bot `{}` {} refused to migrate from {from_version}: {}",
                self.identity.id,
                self.manifest.version,
                cut(&message, MAX_ERROR_BYTES)
            ),
            Err(error) => anyhow::bail!(
                "bot `{}` {} failed in migrate from {from_version}: {error}",
                self.identity.id,
                self.manifest.version
            ),
        }
    }

    /// Calls the bot's `init` with its settings, on a throw-away instance.
    pub(super) fn init(&self, store: &crate::store::Store) -> Result<()> {
        let settings: Vec<(String, String)> = self
            .identity
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (_, result) = self.run(
            store,
            EventContext::default(),
            async |store: &mut Store<_>| {
                let bot = self.pre.instantiate_async(&mut *store).await?;
                bot.aviary_bot_handler().call_init(store, &settings).await
            },
        );
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => anyhow::bail!(
                "bot `{}` refused its settings: {}",
                self.identity.id,
                cut(&message, MAX_ERROR_BYTES)
            ),
            Err(error) => anyhow::bail!("bot `{}` failed in init: {error}", self.identity.id),
        }
    }

    /// Instantiates the bot in a fresh store and runs `call` on it, within
    /// the event's CPU and wall-clock limits. A wait inside a host call that
    /// outlasts the wall deadline is cancelled there.
    fn run<R>(
        &self,
        data: &crate::store::Store,
        context: EventContext,
        call: impl AsyncFnOnce(&mut Store<EventState>) -> wasmtime::Result<R>,
    ) -> (Store<EventState>, Result<R, HandleError>) {
        let mut store = self.new_store(data, context);
        let deadline = tokio::time::Instant::from_std(store.data().clock.wall_deadline());
        let outcome = self
            .io
            .block_on(async { tokio::time::timeout_at(deadline, call(&mut store)).await });
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.classify(&store, error)),
            Err(_elapsed) => {
                store.data_mut().clock.wall_passed();
                Err(HandleError::WallTimeout(self.limits.wall))
            }
        };
        (store, result)
    }

    fn log_stdio(&self, output: bytes::Bytes) {
        if output.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&output);
        for line in text
            .lines()
            .take(super::capabilities::log::MAX_LINES_PER_EVENT as usize)
        {
            let line = cut(line, super::capabilities::log::MAX_LINE_BYTES);
            self.identity
                .logs
                .push("stdio", &self.manifest.version, &line);
            tracing::info!(target: "bot", bot = &*self.identity.id, stdio = true, "{line}");
        }
    }

    fn new_store(&self, data: &crate::store::Store, context: EventContext) -> Store<EventState> {
        let clock = EventClock::start(
            self.limits.timeout,
            self.limits.wall,
            self.containment.clone(),
        );
        let state = EventState::new(&self.identity, data, clock, context);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut context| Ok(context.data_mut().clock.tick()));
        store
    }

    fn classify(&self, store: &Store<EventState>, error: wasmtime::Error) -> HandleError {
        if let Some(cap) = error.downcast_ref::<MemoryCapReached>() {
            return HandleError::Memory(cap.to_string());
        }
        match (error.downcast_ref::<Trap>(), store.data().clock.overrun) {
            (Some(Trap::Interrupt), Some(Overrun::Wall(wall))) => HandleError::WallTimeout(wall),
            (Some(Trap::Interrupt), _) => HandleError::Timeout(self.limits.timeout),
            (Some(trap), _) => HandleError::Trap(trap.to_string()),
            (None, _) => HandleError::Trap(
                cut(&error.root_cause().to_string(), MAX_ERROR_BYTES).into_owned(),
            ),
        }
    }
}

/// The interface of the optional webhook and delivery export, any `0.1.x`
/// from 0.1.4.
pub const CALLBACKS: &str = "aviary:bot/callbacks@0.1.5";

/// Where the functions of the optional `callbacks` export are.
#[derive(Debug, Clone, Copy, Default)]
pub struct Callbacks {
    pub webhook: Option<ComponentExportIndex>,
    pub delivery: Option<ComponentExportIndex>,
}

/// The export an event goes to, with its WIT value.
enum Call {
    Handle(wit::Event),
    Webhook(wit::Webhook),
    Delivery(wit::Delivery),
}

fn to_wit(event: &PendingEvent) -> Call {
    let conversation = (!event.conversation.starts_with('#')).then(|| event.conversation.clone());
    Call::Handle(match &event.event {
        EventRecord::Message { message } => wit::Event::Message(wit::Message {
            id: message.id.clone(),
            conversation: event.conversation.clone(),
            sender: message.sender.clone(),
            text: message.text.clone(),
            attachments: message
                .attachments
                .iter()
                .map(super::capabilities::attachments::to_wit)
                .collect(),
            reply_to: message.reply_to.clone(),
            at: message.at,
        }),
        EventRecord::ContactAdded { contact } => wit::Event::ContactAdded(wit::ContactAdded {
            conversation: event.conversation.clone(),
            contact: wit::Contact {
                id: contact.clone(),
                display_name: None,
            },
        }),
        EventRecord::Timer { id, payload } => wit::Event::Timer(wit::Timer {
            id: id.clone(),
            conversation,
            payload: payload.clone(),
        }),
        EventRecord::Webhook { webhook } => {
            return Call::Webhook(wit::Webhook {
                hook: webhook.hook.clone(),
                method: webhook.method.clone(),
                headers: webhook.headers.clone(),
                body: webhook.body.clone(),
                at: webhook.at,
            })
        }
        EventRecord::Delivery { delivery } => {
            return Call::Delivery(wit::Delivery {
                job: delivery.job.clone(),
                tag: delivery.tag.clone(),
                idempotency_key: delivery.idempotency_key.clone(),
                conversation: delivery.conversation.clone(),
                status: delivery.status,
                headers: delivery.headers.clone(),
                body: delivery.body.clone(),
                error: delivery.error.clone(),
                attempts: delivery.attempts,
            })
        }
    })
}
