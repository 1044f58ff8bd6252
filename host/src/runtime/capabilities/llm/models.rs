//! The models this host offers, each with its backend, its bounded fair
//! queue of generation slots and, for endpoints off this machine (or
//! `redact = true`), its redactor.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::backend::Backend;
use super::config::{Defaults, LlmConfig, ModelConfig};
use super::embedded::Embedded;
use super::fair::FairQueue;
use super::openai::OpenAi;
use super::redact::{is_on_this_machine, Redactor};

/// One model as bots use it.
pub struct Model {
    pub name: String,
    pub backend: Box<dyn Backend>,
    /// Generations at once; the rest wait their conversation's turn.
    pub slots: Arc<FairQueue>,
    pub defaults: Defaults,
    /// Set when what is sent leaves the host: redacted, and audited.
    pub redaction: Option<Redaction>,
}

/// How a model's requests are redacted.
pub struct Redaction {
    /// Where they go (for the audit log).
    pub endpoint: String,
    /// Why: the endpoint is not on this machine, or `redact = true`.
    pub why: &'static str,
    pub redactor: Redactor,
}

/// Every model of the host, by name.
#[derive(Default)]
pub struct Models {
    models: BTreeMap<String, Arc<Model>>,
}

impl Models {
    /// No models: every call is unavailable (tools that never run events).
    pub fn none() -> Models {
        Models::default()
    }

    /// Starts the configured models (the default one when none is): an
    /// embedded model loads in the background, so a missing file shows up
    /// as a clear answer to the first call rather than a failed start.
    pub fn start(
        config: &LlmConfig,
        models_dir: &Path,
        io: tokio::runtime::Handle,
    ) -> Result<Models> {
        let mut models = BTreeMap::new();
        for (name, model) in config.models() {
            let started = start_model(&name, &model, models_dir, io.clone())
                .with_context(|| format!("cannot start model `{name}`"))?;
            models.insert(name, Arc::new(started));
        }
        Ok(Models { models })
    }

    /// The model called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Model>> {
        self.models.get(name)
    }

    /// Whether the host offers `name`.
    pub fn offers(&self, name: &str) -> bool {
        self.models.contains_key(name)
    }
}

fn start_model(
    name: &str,
    config: &ModelConfig,
    models_dir: &Path,
    io: tokio::runtime::Handle,
) -> Result<Model> {
    let (backend, parallel, defaults, redaction): (Box<dyn Backend>, _, _, _) = match config {
        ModelConfig::Embedded(embedded) => {
            let file = embedded.file(models_dir);
            if !file.exists() {
                tracing::warn!(
                    model = name,
                    "the model file {} is missing: {}",
                    file.display(),
                    super::config::INSTALL_HINT
                );
            }
            let backend = Embedded::start(name, embedded, models_dir);
            (
                Box::new(backend),
                embedded.parallel,
                embedded.defaults.clone(),
                None,
            )
        }
        ModelConfig::Openai(openai) => {
            let local = is_on_this_machine(&openai.base_url);
            let redaction = if !local || openai.redact {
                Some(Redaction {
                    endpoint: openai.base_url.clone(),
                    why: if local {
                        "redact = true"
                    } else {
                        "the endpoint is not on this machine"
                    },
                    redactor: Redactor::new(openai.redact_patterns.as_deref())?,
                })
            } else {
                None
            };
            let backend = OpenAi::new(name, openai, io)?;
            (
                Box::new(backend),
                openai.parallel,
                openai.defaults.clone(),
                redaction,
            )
        }
    };
    Ok(Model {
        name: name.to_owned(),
        backend,
        slots: FairQueue::new(parallel),
        defaults,
        redaction,
    })
}
