//! `echo`: the example Aviary bot.
//!
//! Replies to every message, in its conversation and as an answer to it, with
//! the message's text behind a prefix (setting `prefix`, default `"echo: "`).
//! A few commands show the kv store and the commit rules:
//!
//! - `/remember <text>` stores `<text>` for the conversation, replies `remembered`;
//! - `/recall` replies with what was remembered, or `nothing remembered`;
//! - `/inc <name>` increments counter `<name>` and replies with its new value;
//! - `/fail` fails the event, so nothing it did commits.
//!
//! Contact-added and timer events are ignored.
//!
//! A reply longer than one message may be (the prefix and a text near the
//! [`MAX_TEXT_BYTES`](aviary_sdk::text::MAX_TEXT_BYTES) limit) is split with
//! [`aviary_sdk::text::split`] and sent as several replies, in order, so
//! nothing of the text is lost.

use aviary_sdk::{text, Bot, Event, Host, Message, Settings};

/// Prefix used when the `prefix` setting is absent.
pub const DEFAULT_PREFIX: &str = "echo: ";
/// Longest `prefix` setting accepted, in characters.
pub const MAX_PREFIX_CHARS: usize = 64;

/// The echo bot. Holds no state: everything lasting lives in kv.
#[derive(Default)]
pub struct Echo;

impl Bot for Echo {
    fn init(settings: &Settings) -> Result<(), String> {
        match settings.get("prefix") {
            Some(prefix) if prefix.chars().count() > MAX_PREFIX_CHARS => Err(format!(
                "setting `prefix` is longer than {MAX_PREFIX_CHARS} characters"
            )),
            _ => Ok(()),
        }
    }

    fn handle(&mut self, host: &mut dyn Host, event: Event) -> Result<(), String> {
        match event {
            Event::Message(message) => on_message(host, &message),
            Event::ContactAdded(_) | Event::Timer(_) => Ok(()),
        }
    }
}

fn on_message(host: &mut dyn Host, message: &Message) -> Result<(), String> {
    let text = message.text.as_str();
    let answer = if let Some(memo) = command(text, "/remember") {
        host.kv_set(&memo_key(message), memo.as_bytes())
            .map_err(kv_error)?;
        "remembered".to_owned()
    } else if command(text, "/recall").is_some() {
        match host.kv_get(&memo_key(message)).map_err(kv_error)? {
            Some(memo) => String::from_utf8_lossy(&memo).into_owned(),
            None => "nothing remembered".to_owned(),
        }
    } else if let Some(name) = command(text, "/inc") {
        host.kv_increment(&format!("counter/{name}"), 1)
            .map_err(kv_error)?
            .to_string()
    } else if command(text, "/fail").is_some() {
        return Err("failed on purpose".into());
    } else {
        let prefix = host.config("prefix");
        format!("{}{text}", prefix.as_deref().unwrap_or(DEFAULT_PREFIX))
    };
    reply_in_parts(host, message, &answer)
}

/// Replies with `answer`, in as many messages as the text limit needs.
fn reply_in_parts(host: &mut dyn Host, message: &Message, answer: &str) -> Result<(), String> {
    for part in text::split(answer, text::MAX_TEXT_BYTES) {
        host.reply_to(message, part)
            .map_err(|e| format!("reply failed: {e}"))?;
    }
    Ok(())
}

/// The argument of `/name arg` (empty for a bare `/name`), or `None` if
/// `text` is not that command.
fn command<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(name)?;
    if rest.is_empty() {
        Some(rest)
    } else {
        rest.strip_prefix(' ')
    }
}

fn memo_key(message: &Message) -> String {
    format!("memo/{}", message.conversation)
}

fn kv_error(error: aviary_sdk::Error) -> String {
    format!("kv failed: {error}")
}

aviary_sdk::export_bot!(Echo);

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_sdk::testing::{Sent, TestHost};

    /// Delivers a message from alice in `conversation` and returns the reply.
    fn say(host: &mut TestHost, conversation: &str, text: &str) -> Sent {
        let event = host.message(conversation, "alice", text);
        let before = host.sent().len();
        host.deliver::<Echo>(event).expect("handle succeeds");
        assert_eq!(host.sent().len(), before + 1, "one reply per message");
        host.sent().last().unwrap().clone()
    }

    #[test]
    fn echoes_with_default_prefix_as_a_reply() {
        let mut host = TestHost::new();
        let event = host.message("room", "alice", "hello");
        let Event::Message(message) = &event else {
            unreachable!()
        };
        let id = message.id.clone();
        host.deliver::<Echo>(event).unwrap();
        assert_eq!(
            host.sent(),
            [Sent {
                conversation: "room".into(),
                text: "echo: hello".into(),
                reply_to: Some(id),
            }]
        );
    }

    #[test]
    fn uses_prefix_setting() {
        let mut host = TestHost::new().with_setting("prefix", "> ");
        assert_eq!(say(&mut host, "room", "hi").text, "> hi");
        let mut host = TestHost::new().with_setting("prefix", "");
        assert_eq!(say(&mut host, "room", "hi").text, "hi");
    }

    #[test]
    fn init_rejects_long_prefix() {
        assert!(TestHost::new().init::<Echo>().is_ok());
        assert!(TestHost::new()
            .with_setting("prefix", "p".repeat(64))
            .init::<Echo>()
            .is_ok());
        let err = TestHost::new()
            .with_setting("prefix", "p".repeat(65))
            .init::<Echo>()
            .unwrap_err();
        assert!(err.contains("prefix"), "{err}");
    }

    #[test]
    fn remember_and_recall_per_conversation() {
        let mut host = TestHost::new();
        assert_eq!(say(&mut host, "a", "/recall").text, "nothing remembered");
        assert_eq!(say(&mut host, "a", "/remember buy milk").text, "remembered");
        assert_eq!(
            host.kv().get("memo/a").map(Vec::as_slice),
            Some(b"buy milk".as_slice())
        );
        assert_eq!(say(&mut host, "a", "/recall").text, "buy milk");
        assert_eq!(say(&mut host, "b", "/recall").text, "nothing remembered");
        assert_eq!(say(&mut host, "a", "/remember").text, "remembered");
        assert_eq!(say(&mut host, "a", "/recall").text, "");
    }

    #[test]
    fn inc_counts_per_name() {
        let mut host = TestHost::new();
        assert_eq!(say(&mut host, "a", "/inc x").text, "1");
        assert_eq!(say(&mut host, "b", "/inc x").text, "2");
        assert_eq!(say(&mut host, "a", "/inc y").text, "1");
        assert_eq!(
            host.kv().get("counter/x").map(Vec::as_slice),
            Some(b"2".as_slice())
        );
    }

    #[test]
    fn fail_commits_nothing() {
        let mut host = TestHost::new();
        say(&mut host, "a", "/inc x");
        let event = host.message("a", "alice", "/fail");
        assert_eq!(host.deliver::<Echo>(event), Err("failed on purpose".into()));
        assert_eq!(host.sent().len(), 1);
        assert_eq!(say(&mut host, "a", "/inc x").text, "2");
    }

    #[test]
    fn lookalike_commands_are_echoed() {
        let mut host = TestHost::new();
        assert_eq!(say(&mut host, "a", "/recalled").text, "echo: /recalled");
        assert_eq!(say(&mut host, "a", "/failure").text, "echo: /failure");
        assert!(host.kv().is_empty());
    }

    #[test]
    fn a_reply_over_the_limit_is_split_into_replies_that_fit() {
        let mut host = TestHost::new();
        let long = "y".repeat(text::MAX_TEXT_BYTES);
        let event = host.message("a", "alice", &long);
        host.deliver::<Echo>(event)
            .expect("a message at the limit is answered");
        let parts = host.sent();
        assert_eq!(parts.len(), 2, "prefix + 16384 bytes take two messages");
        assert!(parts.iter().all(|p| p.text.len() <= text::MAX_TEXT_BYTES));
        assert!(parts
            .iter()
            .all(|p| p.reply_to.as_deref() == Some("m000001")));
        let joined: String = parts.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(joined, format!("echo: {long}"), "nothing is lost");
    }

    #[test]
    fn long_words_split_at_spaces_and_chars_stay_whole() {
        let mut host = TestHost::new();
        let words = "🦜 bird ".repeat(2000); // 18,000 bytes
        let event = host.message("a", "alice", &words);
        host.deliver::<Echo>(event).unwrap();
        let parts = host.sent();
        assert_eq!(parts.len(), 2);
        assert!(parts[0].text.ends_with(' '), "cut after a space");
        let joined: String = parts.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(joined, format!("echo: {words}"));
    }

    #[test]
    fn ignores_contacts_and_timers() {
        let mut host = TestHost::new();
        host.deliver::<Echo>(TestHost::contact_added("a", "bob"))
            .unwrap();
        host.deliver::<Echo>(TestHost::timer("t1", Some("a"), "x"))
            .unwrap();
        assert!(host.sent().is_empty() && host.kv().is_empty());
    }
}
