//! `aviary:bot/vision`: text recognition on the image attachments a bot may
//! read (the rule is [`Attachments::find`]), run natively in the host by
//! [`engine`], never in the bot.
//!
//! The work runs off the event's thread, so it costs the bot no CPU time;
//! it is cut shortly before the event's wall-clock deadline. An image is
//! decoded once per event however many calls read it.

pub mod engine;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aviary_vision::{Image, Point, TextLine};

use super::attachments::Attachments;
use super::log::LogRing;
use crate::runtime::bindings::aviary::bot::vision as wit;
use crate::runtime::bindings::BotError;
use crate::runtime::budget::EventBudget;
use engine::Vision;

/// Calls one event may make.
pub const MAX_CALLS_PER_EVENT: u32 = 32;
/// How long before the wall deadline a call gives up, at most.
const MAX_MARGIN: Duration = Duration::from_secs(1);

/// Per-event vision state.
pub struct VisionState {
    vision: Arc<Vision>,
    granted: bool,
    bot: Arc<str>,
    version: Arc<str>,
    logs: Arc<LogRing>,
    cut_at: Instant,
    calls: u32,
    /// The last image decoded, by attachment id.
    decoded: Option<(String, Arc<Image>)>,
}

impl VisionState {
    /// The state of one event of `bot` that must end by `wall_deadline`,
    /// `wall` after its start; `granted` is the bot's `vision` grant.
    pub fn new(
        vision: Arc<Vision>,
        granted: bool,
        (bot, version, logs): (Arc<str>, Arc<str>, Arc<LogRing>),
        wall_deadline: Instant,
        wall: Duration,
    ) -> VisionState {
        let margin = (wall / 10).clamp(Duration::from_millis(50), MAX_MARGIN);
        VisionState {
            vision,
            granted,
            bot,
            version,
            logs,
            cut_at: wall_deadline.checked_sub(margin).unwrap_or(wall_deadline),
            calls: 0,
            decoded: None,
        }
    }
}

/// What the vision imports work on: their state and the event's
/// attachments, whose rule says which images the bot may have read.
pub struct VisionCtx<'a> {
    pub cap: &'a mut VisionState,
    pub files: &'a mut Attachments,
    pub budget: &'a mut EventBudget,
}

impl VisionCtx<'_> {
    /// Checks the grant and the call count, then the decoded image of
    /// attachment `id`.
    async fn image(&mut self, id: &str) -> Result<Arc<Image>, BotError> {
        self.budget.check()?;
        if !self.cap.granted {
            let reason = "text recognition needs the `vision` grant".to_owned();
            self.budget.refusals.deny("vision", id, || reason.clone());
            return Err(BotError::Denied(reason));
        }
        if self.cap.calls >= MAX_CALLS_PER_EVENT {
            let reason = format!("at most {MAX_CALLS_PER_EVENT} vision calls per event");
            self.budget.refusals.deny("vision", id, || reason.clone());
            return Err(BotError::QuotaExceeded(reason));
        }
        self.cap.calls += 1;
        if let Some((decoded_id, image)) = &self.cap.decoded {
            if decoded_id == id {
                return Ok(image.clone());
            }
        }
        let attachment = self.files.find(id)?;
        if !attachment.media_type.starts_with("image/") {
            return Err(BotError::Invalid(format!(
                "attachment `{id}` is {}, not an image",
                attachment.media_type
            )));
        }
        let bytes = self.files.blob(&attachment)?;
        let image = self.in_time(self.cap.vision.decode(bytes)).await?;
        self.cap.decoded = Some((id.to_owned(), image.clone()));
        Ok(image)
    }

    /// Waits for `work` until shortly before the event's wall deadline.
    async fn in_time<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, BotError>>,
    ) -> Result<T, BotError> {
        tokio::time::timeout_at(self.cap.cut_at.into(), work)
            .await
            .unwrap_or_else(|_| {
                Err(BotError::Unavailable(
                    "text recognition did not finish before the event's time limit".into(),
                ))
            })
    }

    fn log(&self, line: String) {
        self.cap.logs.push("vision", &self.cap.version, &line);
        tracing::debug!(target: "bot", bot = &*self.cap.bot, "{line}");
    }
}

impl wit::Host for VisionCtx<'_> {
    async fn read_text(&mut self, attachment: String) -> Result<wit::Reading, BotError> {
        let started = Instant::now();
        let image = self.image(&attachment).await?;
        let lines = self
            .in_time(self.cap.vision.read_text(image.clone()))
            .await?;
        self.log(format!(
            "read-text attachment={} lines={} ms={}",
            short(&attachment),
            lines.len(),
            started.elapsed().as_millis()
        ));
        Ok(wit::Reading {
            width: image.width(),
            height: image.height(),
            lines: lines.iter().map(to_wit).collect(),
        })
    }

    async fn read_region(
        &mut self,
        attachment: String,
        corners: Vec<wit::Point>,
    ) -> Result<wit::TextLine, BotError> {
        let corners: [wit::Point; 4] = corners.try_into().map_err(|_| {
            BotError::Invalid(
                "a region is 4 corners: top-left, top-right, bottom-right, bottom-left".into(),
            )
        })?;
        if corners.iter().any(|p| !p.x.is_finite() || !p.y.is_finite()) {
            return Err(BotError::Invalid(
                "a region's corners are finite numbers".into(),
            ));
        }
        let started = Instant::now();
        let image = self.image(&attachment).await?;
        let corners = corners.map(|p| Point { x: p.x, y: p.y });
        let line = self
            .in_time(self.cap.vision.read_region(image, corners))
            .await?;
        self.log(format!(
            "read-region attachment={} ms={}",
            short(&attachment),
            started.elapsed().as_millis()
        ));
        Ok(to_wit(&line))
    }
}

/// The start of an attachment id, for log lines.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn to_wit(line: &TextLine) -> wit::TextLine {
    wit::TextLine {
        text: line.text.clone(),
        confidence: line.confidence,
        corners: line
            .corners
            .iter()
            .map(|p| wit::Point { x: p.x, y: p.y })
            .collect(),
        char_confidences: line.chars.iter().map(|(_, c)| *c).collect(),
    }
}
