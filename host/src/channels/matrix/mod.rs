//! The Matrix channel: the bots as Matrix users, on a homeserver's
//! client-server API. Each account in `[matrix.accounts]` is bound to one
//! bot; it joins the rooms allowed users invite it to, receives through a
//! `/sync` loop ([`sync`]) and delivers the bot's messages through a
//! per-room queue over the store ([`deliver`]). Direct and group rooms are
//! both conversations; in a group, a message's sender is the member who
//! wrote it.

mod client;
mod config;
mod deliver;
mod drafts;
mod format;
mod rooms;
mod sync;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use parking_lot::Mutex;

pub use config::{AccountConfig, MatrixConfig};

use crate::live::Signal;
use crate::router::Router;
use crate::store::Store;
use client::Client;
use rooms::{Login, Rooms};

/// The message type of everything the bots say. By Matrix's convention
/// automated clients never answer a notice, so two bots in one room (ours
/// or another's) cannot answer each other forever; the channel ignores
/// notices for the same reason.
const NOTICE: &str = "m.notice";

/// Least time between two typing notices in a room: one lasts longer (the
/// homeserver shows it for 10 s), so repeating it sooner only adds load.
const TYPING_EVERY: Duration = Duration::from_secs(2);

/// One bot's Matrix account, logged in.
pub struct Account {
    bot: String,
    user: String,
    client: Client,
    rooms: Rooms,
    store: Store,
    router: Router,
    config: Arc<MatrixConfig>,
    /// Largest file taken from a room, in bytes.
    max_file_bytes: usize,
    /// Conversations whose delivery task runs (every room the account is
    /// in), with their room: signals look their room up here, not in the
    /// store.
    delivering: Mutex<HashMap<String, String>>,
    /// The draft shown in each conversation that has one.
    drafts: Mutex<HashMap<String, Arc<drafts::Draft>>>,
    /// When typing was last shown in each conversation.
    typed: Mutex<HashMap<String, Instant>>,
    /// Where signals from the bots' worker threads are sent from.
    runtime: tokio::runtime::Handle,
    me: Weak<Account>,
}

/// The running channel: every account.
pub struct Matrix {
    accounts: Vec<Arc<Account>>,
}

impl Matrix {
    /// Logs every account in (reusing a stored login) and starts its sync
    /// loop and its rooms' deliveries. Call from within the tokio runtime.
    pub async fn start(
        config: &MatrixConfig,
        store: Store,
        router: Router,
        max_file_bytes: usize,
    ) -> Result<Arc<Matrix>> {
        let shared = Arc::new(config.clone());
        let mut accounts = Vec::new();
        for account in &config.accounts {
            let started = Account::start(account, &shared, &store, &router, max_file_bytes)
                .await
                .with_context(|| format!("Matrix account {}", account.user))?;
            accounts.push(started);
        }
        Ok(Arc::new(Matrix { accounts }))
    }
}

impl Account {
    async fn start(
        account: &AccountConfig,
        config: &Arc<MatrixConfig>,
        store: &Store,
        router: &Router,
        max_file_bytes: usize,
    ) -> Result<Arc<Account>> {
        let homeserver = config.homeserver.as_deref().unwrap_or_default();
        let rooms = Rooms::new(store.clone(), &account.bot);
        let token = match (&account.access_token, &account.password) {
            (Some(token), _) => token.clone(),
            (None, Some(password)) => match rooms.login()? {
                Some(login) => login.access_token,
                None => {
                    let (access_token, device_id) =
                        Client::login(homeserver, &account.user, password, None)
                            .await
                            .context("cannot log in (check `password`)")?;
                    rooms.set_login(&Login {
                        access_token: access_token.clone(),
                        device_id,
                    })?;
                    store.wait_durable().await?;
                    access_token
                }
            },
            (None, None) => anyhow::bail!("no `password` or `access_token`"),
        };
        let account = Arc::new_cyclic(|me| Account {
            bot: account.bot.clone(),
            user: account.user.clone(),
            client: Client::new(homeserver, token).expect("validated homeserver URL"),
            rooms,
            store: store.clone(),
            router: router.clone(),
            config: config.clone(),
            max_file_bytes,
            delivering: Mutex::default(),
            drafts: Mutex::default(),
            typed: Mutex::default(),
            runtime: tokio::runtime::Handle::current(),
            me: me.clone(),
        });
        for (conversation, room) in account.rooms.all()? {
            account.deliver_to(&conversation, &room);
        }
        tokio::spawn(account.clone().sync_forever());
        tracing::info!(bot = %account.bot, user = %account.user, "Matrix account is syncing");
        Ok(account)
    }
}

impl super::Channel for Matrix {
    fn signal(&self, bot: &str, conversation: &str, signal: &Arc<Signal>) {
        let Some(account) = self.accounts.iter().find(|a| a.bot == bot) else {
            return;
        };
        let Some(room) = account.delivering.lock().get(conversation).cloned() else {
            return;
        };
        match &**signal {
            Signal::Typing => account.typing(conversation, room),
            Signal::Draft { text, .. } => account.draft(conversation, &room, text),
        }
    }
}

impl Account {
    /// Shows the bot typing in `room`, unless it just did.
    fn typing(&self, conversation: &str, room: String) {
        let now = Instant::now();
        let mut typed = self.typed.lock();
        if typed
            .get(conversation)
            .is_some_and(|last| now.duration_since(*last) < TYPING_EVERY)
        {
            return;
        }
        typed.insert(conversation.to_owned(), now);
        let account = self.me.upgrade().expect("the account outlives its signals");
        let conversation = conversation.to_owned();
        self.runtime.spawn(async move {
            // The answer may have been posted (and typing stopped) since.
            if account.typed.lock().contains_key(&conversation) {
                let _ = account.client.typing(&room, &account.user, true).await;
            }
        });
    }
}
