//! `aviary:bot/log`: the bot's log lines, tagged with its id, capped per event.

use crate::runtime::bindings::aviary::bot::log::{Host, Level};

/// Most log lines one event may write; later ones are dropped and counted.
pub const MAX_LINES_PER_EVENT: u32 = 100;
/// Longest logged line, in bytes; longer ones are cut.
pub const MAX_LINE_BYTES: usize = 4096;

/// Per-event log state.
pub struct Log {
    bot: std::sync::Arc<str>,
    lines: u32,
}

impl Log {
    pub fn new(bot: std::sync::Arc<str>) -> Log {
        Log { bot, lines: 0 }
    }
}

impl Host for Log {
    fn log(&mut self, level: Level, message: String) {
        self.lines += 1;
        if self.lines > MAX_LINES_PER_EVENT {
            if self.lines == MAX_LINES_PER_EVENT + 1 {
                tracing::warn!(bot = %self.bot, "log limit of {MAX_LINES_PER_EVENT} lines per event reached; dropping the rest");
            }
            return;
        }
        let message = crate::text::cut(&message, MAX_LINE_BYTES);
        let bot = &*self.bot;
        match level {
            Level::Trace => tracing::trace!(target: "bot", bot, "{message}"),
            Level::Debug => tracing::debug!(target: "bot", bot, "{message}"),
            Level::Info => tracing::info!(target: "bot", bot, "{message}"),
            Level::Warn => tracing::warn!(target: "bot", bot, "{message}"),
            Level::Error => tracing::error!(target: "bot", bot, "{message}"),
        }
    }
}
