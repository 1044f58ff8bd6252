//! The bot's settings (`[bots.llm-chat.settings]`), their defaults and
//! limits. `init` checks them once at load; every event reads them again
//! through `Host::config`, with the same rules.

use std::ops::RangeInclusive;
use std::str::FromStr;

/// System prompt used when the `system_prompt` setting is absent.
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are a helpful assistant in a private chat. Answer clearly and briefly.";
/// Longest `system_prompt` accepted, in bytes.
pub const MAX_SYSTEM_PROMPT_BYTES: usize = 16 * 1024;
/// Token budget of the kept history when `history_tokens` is absent.
pub const DEFAULT_HISTORY_TOKENS: u32 = 1024;
/// Accepted `history_tokens`: room for a short message at least, and a
/// stored history that stays well within one kv value.
pub const HISTORY_TOKENS: RangeInclusive<u32> = 16..=32_768;
/// Most tokens of an answer when `max_tokens` is absent.
pub const DEFAULT_MAX_TOKENS: u32 = 256;
/// Accepted `max_tokens` (the host's own limit).
pub const MAX_TOKENS: RangeInclusive<u32> = 1..=8192;
/// Sampling temperature when `temperature` is absent.
pub const DEFAULT_TEMPERATURE: f32 = 0.7;
/// Accepted `temperature` (the host's own limit).
pub const TEMPERATURE: RangeInclusive<f32> = 0.0..=2.0;

/// The bot's settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The model to ask; `None`: the first model the host offers the bot.
    pub model: Option<String>,
    /// The system message that starts every request; empty: none.
    pub system_prompt: String,
    /// Token budget of the turns sent and kept (see [`crate::history`]).
    pub history_tokens: u32,
    /// Most tokens of one answer.
    pub max_tokens: u32,
    /// Sampling temperature.
    pub temperature: f32,
}

impl Config {
    /// The settings as `setting(name)` gives them, with defaults for the
    /// absent ones; an error names the setting that is wrong and why.
    pub fn read(mut setting: impl FnMut(&str) -> Option<String>) -> Result<Config, String> {
        Ok(Config {
            model: model(setting("model"))?,
            system_prompt: system_prompt(setting("system_prompt"))?,
            history_tokens: number(
                "history_tokens",
                setting("history_tokens"),
                DEFAULT_HISTORY_TOKENS,
                HISTORY_TOKENS,
            )?,
            max_tokens: number(
                "max_tokens",
                setting("max_tokens"),
                DEFAULT_MAX_TOKENS,
                MAX_TOKENS,
            )?,
            temperature: number(
                "temperature",
                setting("temperature"),
                DEFAULT_TEMPERATURE,
                TEMPERATURE,
            )?,
        })
    }
}

fn model(value: Option<String>) -> Result<Option<String>, String> {
    match value.as_deref().map(str::trim) {
        None => Ok(None),
        Some("") => Err(
            "setting `model` is empty: name a model, or leave it out to use the first one granted"
                .into(),
        ),
        Some(name) => Ok(Some(name.to_owned())),
    }
}

fn system_prompt(value: Option<String>) -> Result<String, String> {
    let prompt = value.unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_owned());
    if prompt.len() > MAX_SYSTEM_PROMPT_BYTES {
        return Err(format!(
            "setting `system_prompt` is {} bytes; at most {MAX_SYSTEM_PROMPT_BYTES}",
            prompt.len()
        ));
    }
    Ok(prompt)
}

/// Setting `name` parsed as a number within `range`, or `default`.
fn number<T>(
    name: &str,
    value: Option<String>,
    default: T,
    range: RangeInclusive<T>,
) -> Result<T, String>
where
    T: FromStr + PartialOrd + std::fmt::Display,
{
    let Some(value) = value else {
        return Ok(default);
    };
    let bounds = format!("{} to {}", range.start(), range.end());
    match value.trim().parse::<T>() {
        Ok(number) if range.contains(&number) => Ok(number),
        _ => Err(format!(
            "setting `{name}` is `{value}`; it must be a number from {bounds}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Config, String> {
        Config::read(|key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn absent_settings_take_their_defaults() {
        let config = read(&[]).unwrap();
        assert_eq!(
            config,
            Config {
                model: None,
                system_prompt: DEFAULT_SYSTEM_PROMPT.into(),
                history_tokens: DEFAULT_HISTORY_TOKENS,
                max_tokens: DEFAULT_MAX_TOKENS,
                temperature: DEFAULT_TEMPERATURE,
            }
        );
    }

    #[test]
    fn settings_are_parsed_and_trimmed() {
        let config = read(&[
            ("model", " big "),
            ("system_prompt", ""),
            ("history_tokens", "16"),
            ("max_tokens", " 8192"),
            ("temperature", "0"),
        ])
        .unwrap();
        assert_eq!(config.model.as_deref(), Some("big"));
        assert_eq!(config.system_prompt, "", "an empty prompt means none");
        assert_eq!(
            (config.history_tokens, config.max_tokens, config.temperature),
            (16, 8192, 0.0)
        );
    }

    #[test]
    fn wrong_settings_are_named_with_their_limits() {
        for (key, value, expect) in [
            ("model", "  ", "`model` is empty"),
            ("history_tokens", "15", "from 16 to 32768"),
            ("history_tokens", "lots", "`history_tokens` is `lots`"),
            ("max_tokens", "0", "from 1 to 8192"),
            ("max_tokens", "-1", "`max_tokens`"),
            ("temperature", "2.5", "from 0 to 2"),
            ("temperature", "NaN", "`temperature`"),
        ] {
            let error = read(&[(key, value)]).unwrap_err();
            assert!(error.contains(expect), "{key}={value}: {error}");
        }
        let long = "x".repeat(MAX_SYSTEM_PROMPT_BYTES + 1);
        let error = read(&[("system_prompt", &long)]).unwrap_err();
        assert!(error.contains("`system_prompt`"), "{error}");
    }
}
