//! `aviary:bot/log`: the bot's log lines, tagged with its id, capped per event.

use crate::runtime::bindings::aviary::bot::log::{Host, Level};

/// Most log lines one event may write; later ones are dropped and counted.
pub const MAX_LINES_PER_EVENT: u32 = 100;
/// Longest logged line, in bytes; longer ones are cut.
pub const MAX_LINE_BYTES: usize = 4096;

/// Per-event log state.
pub struct Log {
    bot: std::sync::Arc<str>,
    version: std::sync::Arc<str>,
    ring: std::sync::Arc<LogRing>,
    lines: u32,
}

impl Log {
    /// Log state of one event of `version` of `bot`, whose lines also go
    /// to `ring`.
    pub fn new(
        bot: std::sync::Arc<str>,
        version: std::sync::Arc<str>,
        ring: std::sync::Arc<LogRing>,
    ) -> Log {
        Log {
            bot,
            version,
            ring,
            lines: 0,
        }
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
        let name = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.ring.push(name, &self.version, &message);
        match level {
            Level::Trace => tracing::trace!(target: "bot", bot, "{message}"),
            Level::Debug => tracing::debug!(target: "bot", bot, "{message}"),
            Level::Info => tracing::info!(target: "bot", bot, "{message}"),
            Level::Warn => tracing::warn!(target: "bot", bot, "{message}"),
            Level::Error => tracing::error!(target: "bot", bot, "{message}"),
        }
    }
}

/// Lines kept per bot by [`LogRing`]; older ones are dropped.
pub const RING_LINES: usize = 1000;

/// One line a bot logged or wrote to stdout or stderr.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    /// Increasing per bot, across its versions: `after=` for the next page.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    /// `trace` … `error`, or `stdio` for what the bot printed.
    pub level: String,
    /// The bot version that wrote it.
    pub version: String,
    pub text: String,
}

/// The bounded ring of a bot's recent log lines that `aviary plugin logs`
/// reads: shared by every version of the bot, so a swap keeps the history.
#[derive(Default)]
pub struct LogRing {
    lines: parking_lot::Mutex<std::collections::VecDeque<LogLine>>,
    next: std::sync::atomic::AtomicU64,
    /// Wakes `--follow` readers when a line arrives.
    pub(crate) arrived: tokio::sync::Notify,
}

impl LogRing {
    /// Adds a line, dropping the oldest beyond [`RING_LINES`].
    pub fn push(&self, level: &str, version: &str, text: &str) {
        let mut lines = self.lines.lock();
        let seq = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if lines.len() == RING_LINES {
            lines.pop_front();
        }
        lines.push_back(LogLine {
            seq,
            at: crate::store::now_ms(),
            level: level.into(),
            version: version.into(),
            text: text.into(),
        });
        drop(lines);
        self.arrived.notify_waiters();
    }

    /// Lines with `seq > after`, oldest first, at most `limit`.
    pub fn after(&self, after: u64, limit: usize) -> Vec<LogLine> {
        let lines = self.lines.lock();
        let start = lines.partition_point(|line| line.seq <= after);
        lines.range(start..).take(limit).cloned().collect()
    }

    /// Waits up to `wait` for a line with `seq > after`.
    pub async fn wait_after(&self, after: u64, wait: std::time::Duration) {
        let arrived = self.arrived.notified();
        if self.next.load(std::sync::atomic::Ordering::Relaxed) > after {
            return;
        }
        let _ = tokio::time::timeout(wait, arrived).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_lines_in_order() {
        let ring = LogRing::default();
        for n in 0..RING_LINES + 5 {
            ring.push("info", "1.0", &format!("line {n}"));
        }
        let all = ring.after(0, usize::MAX);
        assert_eq!(all.len(), RING_LINES);
        assert_eq!(all[0].text, "line 5");
        assert_eq!(all[0].seq, 6);
        let tail = ring.after(all[RING_LINES - 3].seq, 10);
        let texts: Vec<&str> = tail.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                format!("line {}", RING_LINES + 3),
                format!("line {}", RING_LINES + 4)
            ]
        );
    }
}
