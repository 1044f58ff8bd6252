//! Shows a generation in its `stream-to` conversation while it runs: the
//! bot as typing while it waits (refreshed, since a typing indicator fades),
//! then the growing text as drafts, at most one frame per [`FRAME_GAP`],
//! and a last draft marked done.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::live::{LiveHub, Signal};

/// Least time between two drafts; the first one goes out at once.
pub const FRAME_GAP: Duration = Duration::from_millis(50);
/// How often "typing" is repeated while nothing else shows progress.
pub const TYPING_EVERY: Duration = Duration::from_secs(3);

/// The drafts of one generation (inert without a conversation).
pub struct Drafts {
    target: Option<(Arc<LiveHub>, String, String)>,
    last: Option<Instant>,
    sent_len: usize,
}

impl Drafts {
    /// Drafts into `bot`'s `conversation`, if one is given.
    pub fn new(live: Arc<LiveHub>, bot: &str, conversation: Option<&str>) -> Drafts {
        Drafts {
            target: conversation.map(|c| (live, bot.to_owned(), c.to_owned())),
            last: None,
            sent_len: 0,
        }
    }

    fn publish(&self, signal: Signal) {
        if let Some((live, bot, conversation)) = &self.target {
            live.publish(bot, conversation, signal);
        }
    }

    /// Awaits `work`, showing "typing" now and every [`TYPING_EVERY`]
    /// until it is done.
    pub async fn typing_while<T>(&mut self, work: impl Future<Output = T>) -> T {
        if self.target.is_none() {
            return work.await;
        }
        tokio::pin!(work);
        let due = self.last.is_none_or(|last| last.elapsed() >= TYPING_EVERY);
        if due && self.sent_len == 0 {
            self.publish(Signal::Typing);
            self.last = Some(Instant::now());
        }
        loop {
            tokio::select! {
                done = &mut work => return done,
                () = tokio::time::sleep(TYPING_EVERY) => {
                    self.publish(Signal::Typing);
                    self.last = Some(Instant::now());
                }
            }
        }
    }

    /// The text so far grew to `text`: show it unless a draft just went out.
    pub fn text(&mut self, text: &str) {
        let recent = self.sent_len > 0 && self.last.is_some_and(|l| l.elapsed() < FRAME_GAP);
        if recent {
            return;
        }
        self.publish(Signal::Draft {
            text: text.to_owned(),
            done: false,
        });
        self.last = Some(Instant::now());
        self.sent_len = text.len();
    }

    /// The generation ended with `text`: the last draft, marked done.
    pub fn finish(&mut self, text: &str) {
        if self.sent_len > 0 || !text.is_empty() {
            self.publish(Signal::Draft {
                text: text.to_owned(),
                done: true,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drafts_show_typing_then_the_growing_text_then_done() {
        let live = Arc::new(LiveHub::default());
        let recorder = Arc::new(crate::live::Recorder::default());
        live.tap(recorder.clone());
        let mut drafts = Drafts::new(live.clone(), "bot", Some("c"));
        assert_eq!(drafts.typing_while(async { 7 }).await, 7);
        drafts.text("Hel");
        drafts.text("Hello"); // within the gap: coalesced into the next
        tokio::time::sleep(FRAME_GAP).await;
        drafts.text("Hello, wor");
        drafts.finish("Hello, world");
        let seen: Vec<Signal> = recorder
            .0
            .lock()
            .iter()
            .map(|(_, _, s)| s.clone())
            .collect();
        assert!(
            recorder
                .0
                .lock()
                .iter()
                .all(|(b, c, _)| b == "bot" && c == "c"),
            "only the event's conversation"
        );
        assert_eq!(
            seen,
            [
                Signal::Typing,
                Signal::Draft {
                    text: "Hel".into(),
                    done: false
                },
                Signal::Draft {
                    text: "Hello, wor".into(),
                    done: false
                },
                Signal::Draft {
                    text: "Hello, world".into(),
                    done: true
                },
            ]
        );
    }

    #[tokio::test]
    async fn without_a_conversation_nothing_is_published() {
        let live = Arc::new(LiveHub::default());
        let recorder = Arc::new(crate::live::Recorder::default());
        live.tap(recorder.clone());
        let mut drafts = Drafts::new(live.clone(), "bot", None);
        drafts.text("secret");
        drafts.finish("secret");
        assert!(recorder.0.lock().is_empty());
    }
}
