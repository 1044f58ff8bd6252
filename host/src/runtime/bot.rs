//! A loaded bot: its manifest, its pre-linked component and its limits, and
//! the one operation the router needs: run an event on a fresh instance.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use wasmtime::{Engine, Trap};

use super::bindings::aviary::bot::types as wit;
use super::bindings::BotPre;
use super::engine::deadline_ticks;
use super::state::EventState;
use crate::policy::{BotPolicy, Capabilities, Denial};
use crate::store::{Effects, EventRecord, PendingEvent};

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
        Ok(manifest)
    }
}

/// The limits one bot runs under.
#[derive(Debug, Clone)]
pub struct Limits {
    pub memory_bytes: usize,
    pub timeout: Duration,
    pub max_retries: u32,
}

/// The result of one event: its effects or why there are none, and what
/// the policy refused along the way (for the audit log either way).
pub struct Outcome {
    pub result: Result<Effects, HandleError>,
    pub denials: Vec<Denial>,
    /// A send was refused by a send-rate bucket that will refill in this
    /// long: the event is to run again then, not to fail.
    pub send_wait: Option<Duration>,
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
    pub(super) id: Arc<str>,
    pub(super) settings: Arc<BTreeMap<String, String>>,
}

/// Why an event did not produce effects.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The bot returned an error value.
    #[error("the bot returned an error: {0}")]
    Bot(String),
    /// The bot ran past its deadline.
    #[error("the bot ran past its deadline of {0:?}")]
    Timeout(Duration),
    /// The bot trapped (panic, out of memory, stack overflow, ...).
    #[error("the bot trapped: {0}")]
    Trap(String),
}

impl LoadedBot {
    /// Runs `event` on a fresh instance; returns its effects, uncommitted.
    pub fn handle(&self, tree: &sled::Tree, event: &PendingEvent) -> Outcome {
        let mut store = self.new_store(tree);
        let wit_event = to_wit(event);
        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|bot| bot.aviary_bot_handler().call_handle(&mut store, &wit_event));
        let denials = store.data_mut().take_denials();
        let send_wait = store.data().messaging.refill_wait.flatten();
        self.log_stdio(store.data().stdio());
        let result = match result {
            Ok(Ok(())) => Ok(store.into_data().into_effects()),
            Ok(Err(message)) => Err(HandleError::Bot(message)),
            Err(error) => Err(self.classify(error)),
        };
        Outcome {
            result,
            denials,
            send_wait,
        }
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
            tracing::info!(target: "bot", bot = &*self.id, stdio = true, "{line}");
        }
    }

    /// Calls the bot's `init` with its settings, on a throw-away instance.
    pub(super) fn init(&self, tree: &sled::Tree) -> Result<()> {
        let mut store = self.new_store(tree);
        let settings: Vec<(String, String)> = self
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let outcome = self
            .pre
            .instantiate(&mut store)
            .and_then(|bot| bot.aviary_bot_handler().call_init(&mut store, &settings));
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => anyhow::bail!("bot `{}` refused its settings: {message}", self.id),
            Err(error) => {
                anyhow::bail!("bot `{}` failed in init: {}", self.id, self.classify(error))
            }
        }
    }

    fn new_store(&self, tree: &sled::Tree) -> wasmtime::Store<EventState> {
        let state = EventState::new(
            &self.id,
            tree,
            &self.settings,
            &self.policy,
            self.limits.memory_bytes,
        );
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(deadline_ticks(self.limits.timeout));
        store.epoch_deadline_trap();
        store
    }

    fn classify(&self, error: wasmtime::Error) -> HandleError {
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => HandleError::Timeout(self.limits.timeout),
            Some(trap) => HandleError::Trap(trap.to_string()),
            None => HandleError::Trap(error.root_cause().to_string()),
        }
    }
}

fn to_wit(event: &PendingEvent) -> wit::Event {
    match &event.event {
        EventRecord::Message { message } => wit::Event::Message(wit::Message {
            id: message.id.clone(),
            conversation: event.conversation.clone(),
            sender: message.sender.clone(),
            text: message.text.clone(),
            attachments: Vec::new(),
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
            conversation: Some(event.conversation.clone()),
            payload: payload.clone(),
        }),
    }
}
