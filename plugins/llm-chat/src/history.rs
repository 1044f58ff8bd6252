//! Each conversation's history: its turns (who said what), kept in kv under
//! `history/<conversation>` as a JSON list of `{"role", "text"}` objects,
//! oldest first, and trimmed to a token budget.
//!
//! Tokens are estimated, here only: a message costs [`tokens`], its bytes
//! of UTF-8 divided by 4 and rounded up, plus [`MESSAGE_OVERHEAD_TOKENS`]
//! for its role and framing. [`fit`] drops the oldest turns until the rest
//! fits the budget; the newest turn always stays, cut if it alone is over.

use aviary_sdk::llm::{estimate_tokens, ChatMessage};
use aviary_sdk::{text, Host, Level};
use serde::{Deserialize, Serialize};

/// Tokens a message costs beyond its text: its role and framing.
pub const MESSAGE_OVERHEAD_TOKENS: u32 = 4;

/// Who said a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    /// The person chatting.
    User,
    /// The model.
    Assistant,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Who said it.
    pub role: Speaker,
    /// What was said.
    pub text: String,
}

impl Turn {
    /// A turn of the user.
    pub fn user(text: impl Into<String>) -> Turn {
        Turn {
            role: Speaker::User,
            text: text.into(),
        }
    }

    /// A turn of the model.
    pub fn assistant(text: impl Into<String>) -> Turn {
        Turn {
            role: Speaker::Assistant,
            text: text.into(),
        }
    }

    /// The turn as a message of a chat request.
    pub fn to_message(&self) -> ChatMessage {
        match self.role {
            Speaker::User => ChatMessage::user(self.text.as_str()),
            Speaker::Assistant => ChatMessage::assistant(self.text.as_str()),
        }
    }
}

/// The estimated tokens of a message saying `text` (see the module docs).
pub fn tokens(text: &str) -> u32 {
    estimate_tokens(text).saturating_add(MESSAGE_OVERHEAD_TOKENS)
}

/// The estimated tokens of all of `turns`.
pub fn total_tokens(turns: &[Turn]) -> u64 {
    turns.iter().map(|t| u64::from(tokens(&t.text))).sum()
}

/// Drops the oldest turns until `turns` fits `budget` tokens, and those
/// that would leave the history starting with the model's turn. The last
/// turn always stays; if it alone is over the budget, its text is cut
/// (ending with [`text::TRIM_MARKER`]) to fit.
pub fn fit(turns: &mut Vec<Turn>, budget: u32) {
    let mut total = total_tokens(turns);
    let mut drop = 0;
    while drop + 1 < turns.len()
        && (total > u64::from(budget) || turns[drop].role == Speaker::Assistant)
    {
        total -= u64::from(tokens(&turns[drop].text));
        drop += 1;
    }
    turns.drain(..drop);
    if let Some(last) = turns.last_mut() {
        if tokens(&last.text) > budget {
            last.text = cut(&last.text, budget);
        }
    }
}

/// `text` cut so that a message saying it costs at most `budget` tokens.
fn cut(text: &str, budget: u32) -> String {
    let text_tokens = budget.saturating_sub(MESSAGE_OVERHEAD_TOKENS);
    let max_bytes = usize::try_from(text_tokens).unwrap_or(usize::MAX) * 4;
    text::trim(text, max_bytes).into_owned()
}

/// The kv key of `conversation`'s history.
pub fn key(conversation: &str) -> String {
    format!("history/{conversation}")
}

/// `conversation`'s stored history, oldest first; empty when there is none.
/// A stored value that does not decode is logged and treated as none, so
/// one bad value cannot stop the conversation.
pub fn load(host: &mut dyn Host, conversation: &str) -> Result<Vec<Turn>, String> {
    let stored = host.kv_get(&key(conversation)).map_err(kv_error)?;
    let Some(bytes) = stored else {
        return Ok(Vec::new());
    };
    match serde_json::from_slice(&bytes) {
        Ok(turns) => Ok(turns),
        Err(error) => {
            let line =
                format!("history of `{conversation}` is unreadable ({error}); starting afresh");
            host.log(Level::Warn, &line);
            Ok(Vec::new())
        }
    }
}

/// Stores `turns` as `conversation`'s history.
pub fn save(host: &mut dyn Host, conversation: &str, turns: &[Turn]) -> Result<(), String> {
    let bytes = serde_json::to_vec(turns).map_err(|e| format!("cannot encode the history: {e}"))?;
    host.kv_set(&key(conversation), &bytes).map_err(kv_error)
}

/// Deletes `conversation`'s history.
pub fn forget(host: &mut dyn Host, conversation: &str) -> Result<(), String> {
    host.kv_delete(&key(conversation)).map_err(kv_error)?;
    Ok(())
}

fn kv_error(error: aviary_sdk::Error) -> String {
    format!("kv failed: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_sdk::testing::TestHost;

    /// Turns alternating user, assistant, ..., each of `bytes` bytes.
    fn turns(count: usize, bytes: usize) -> Vec<Turn> {
        (0..count)
            .map(|i| {
                let text = format!("{i}").repeat(bytes);
                match i % 2 {
                    0 => Turn::user(text),
                    _ => Turn::assistant(text),
                }
            })
            .collect()
    }

    #[test]
    fn tokens_are_a_quarter_of_the_bytes_plus_the_overhead() {
        assert_eq!(tokens(""), 4);
        assert_eq!(tokens("abcd"), 5);
        assert_eq!(tokens("abcde"), 6);
        assert_eq!(total_tokens(&turns(3, 8)), 18);
    }

    #[test]
    fn fitting_turns_are_kept() {
        let mut all = turns(5, 8);
        fit(&mut all, 30);
        assert_eq!(all, turns(5, 8));
    }

    #[test]
    fn the_oldest_turns_go_first_and_the_rest_starts_with_the_user() {
        let mut all = turns(5, 8); // 6 tokens each
        fit(&mut all, 20);
        assert_eq!(all, turns(5, 8)[2..], "three fit; 2 turns dropped");
        let mut all = turns(5, 8);
        fit(&mut all, 24);
        assert_eq!(all, turns(5, 8)[2..], "never starts with the model's turn");
        let mut all = turns(4, 8);
        fit(&mut all, 7);
        assert_eq!(
            all,
            turns(4, 8)[3..],
            "the newest stays even when it is the model's"
        );
    }

    #[test]
    fn a_last_turn_over_the_budget_alone_is_cut_to_fit() {
        let mut all = vec![Turn::user("old"), Turn::user("é".repeat(100))];
        fit(&mut all, 16);
        assert_eq!(all.len(), 1);
        assert!(all[0].text.ends_with(text::TRIM_MARKER), "{}", all[0].text);
        assert!(tokens(&all[0].text) <= 16);
        assert!(all[0].text.len() > 40, "cut no more than needed");
    }

    #[test]
    fn histories_round_trip_through_kv_per_conversation() {
        let mut host = TestHost::new();
        assert!(load(&mut host, "c").unwrap().is_empty());
        let said = vec![Turn::user("hi"), Turn::assistant("hello \"you\"")];
        save(&mut host, "c", &said).unwrap();
        assert_eq!(load(&mut host, "c").unwrap(), said);
        assert!(load(&mut host, "d").unwrap().is_empty());
        assert_eq!(
            host.kv()["history/c"],
            br#"[{"role":"user","text":"hi"},{"role":"assistant","text":"hello \"you\""}]"#
        );
        forget(&mut host, "c").unwrap();
        assert!(host.kv().is_empty());
    }

    #[test]
    fn an_unreadable_history_is_logged_and_dropped() {
        let mut host = TestHost::new();
        host.kv_set("history/c", b"not json").unwrap();
        assert!(load(&mut host, "c").unwrap().is_empty());
        assert_eq!(host.logs()[0].0, Level::Warn);
        assert!(host.logs()[0].1.contains("unreadable"), "{:?}", host.logs());
    }
}
