//! `llm-chat`: a private chat with a language model the host runs.
//!
//! Every message is answered by the model (setting `model`, default the
//! first one the host offers the bot), as a reply to it. The request is the
//! system prompt (`system_prompt`), the conversation's history and the new
//! message, the oldest turns dropped to fit `history_tokens` (see
//! [`history`]); the answer is at most `max_tokens` long, sampled at
//! `temperature` ([`config`] has the defaults and limits). The host shows
//! the answer growing in the conversation while it is generated; the bot
//! then sends it, split into several messages if it is longer than one may
//! be. Only an answered turn joins the history.
//!
//! Commands: `/reset` forgets the conversation's history, `/help` says
//! what the bot does and which model it uses.
//!
//! When the model cannot answer (none granted, not allowed, not available,
//! a refused request) the user is told why, in words, and the event still
//! succeeds: a retry would not help, and nothing joins the history.
//! Contact-added and timer events are ignored.

pub mod config;
pub mod history;

use aviary_sdk::llm::{ChatMessage, ChatRequest, Completion, FinishReason};
use aviary_sdk::{text, Bot, Error, Event, Host, Level, Message, Settings};

use config::Config;
use history::Turn;

/// Added to an answer the host cut at the event's time limit.
pub const TIME_LIMIT_NOTE: &str =
    "(The answer was cut because it took too long. Ask for something shorter, or ask me to go on.)";
/// The answer when the model said nothing.
pub const EMPTY_ANSWER: &str = "(The model gave an empty answer. Try rephrasing your message.)";
/// The answer when the model said nothing before the time limit.
pub const EMPTY_AT_TIME_LIMIT: &str =
    "(The model took too long and gave no answer. Try again, or ask for something shorter.)";
/// The answer to a message without text.
pub const NO_TEXT: &str = "I can only read text: write me a message.";
/// The answer to `/reset`.
pub const FORGOTTEN: &str = "I forgot this conversation; we start afresh.";
/// The answer when the host offers the bot no model.
pub const NO_MODEL: &str = "No language model is granted to this bot, so I cannot answer. \
     The admin adds one to `llm_models` in policies/llm-chat.toml.";

/// The chat bot. Holds no state: the histories live in kv.
#[derive(Default)]
pub struct LlmChat;

impl Bot for LlmChat {
    fn init(settings: &Settings) -> Result<(), String> {
        Config::read(|key| settings.get(key).map(str::to_owned)).map(drop)
    }

    fn handle(&mut self, host: &mut dyn Host, event: Event) -> Result<(), String> {
        match event {
            Event::Message(message) => on_message(host, &message),
            Event::ContactAdded(_) | Event::Timer(_) => Ok(()),
        }
    }
}

fn on_message(host: &mut dyn Host, message: &Message) -> Result<(), String> {
    let text = message.text.trim();
    match text.split_whitespace().next() {
        Some("/reset") => return reset(host, message),
        Some("/help") => return help(host, message),
        _ => {}
    }
    if text.is_empty() {
        return reply(host, message, NO_TEXT);
    }
    let config = Config::read(|key| host.config(key))?;
    match model(host, &config) {
        Some(model) => chat(host, message, &config, &model),
        None => reply(host, message, NO_MODEL),
    }
}

/// The model to ask: the `model` setting, else the first one offered.
fn model(host: &mut dyn Host, config: &Config) -> Option<String> {
    config
        .model
        .clone()
        .or_else(|| host.llm_models().into_iter().next())
}

fn reset(host: &mut dyn Host, message: &Message) -> Result<(), String> {
    history::forget(host, &message.conversation)?;
    reply(host, message, FORGOTTEN)
}

fn help(host: &mut dyn Host, message: &Message) -> Result<(), String> {
    let config = Config::read(|key| host.config(key))?;
    let model = match model(host, &config) {
        Some(model) => format!("I answer with the language model `{model}`."),
        None => NO_MODEL.to_owned(),
    };
    let help = format!(
        "I am a private chat with a language model. {model} \
         I remember about {} tokens of this conversation; older turns fade.\n\
         Commands:\n\
         /reset: forget this conversation and start afresh\n\
         /help: show this help",
        config.history_tokens
    );
    reply(host, message, &help)
}

/// Asks `model` to answer `message` after the conversation's history.
fn chat(
    host: &mut dyn Host,
    message: &Message,
    config: &Config,
    model: &str,
) -> Result<(), String> {
    let mut turns = history::load(host, &message.conversation)?;
    turns.push(Turn::user(message.text.trim()));
    history::fit(&mut turns, config.history_tokens);
    let request = build_request(config, model, &turns, &message.conversation);
    match host.llm_chat(&request) {
        Ok(completion) => answered(host, message, config, turns, completion),
        Err(error) => {
            host.log(
                Level::Warn,
                &format!("model `{model}` did not answer: {error}"),
            );
            reply(host, message, &refusal(model, &error))
        }
    }
}

/// The request: the system prompt (unless empty), then `turns`, streamed
/// into `conversation`.
fn build_request(config: &Config, model: &str, turns: &[Turn], conversation: &str) -> ChatRequest {
    let system = (!config.system_prompt.is_empty())
        .then(|| ChatMessage::system(config.system_prompt.as_str()));
    let messages = system
        .into_iter()
        .chain(turns.iter().map(Turn::to_message))
        .collect();
    let mut request = ChatRequest::new(model, messages);
    request.max_tokens = Some(config.max_tokens);
    request.temperature = Some(config.temperature);
    request.stream_to = Some(conversation.to_owned());
    request
}

/// Sends the model's answer and adds the turn to the history; an empty
/// answer gets a note instead and is not kept.
fn answered(
    host: &mut dyn Host,
    message: &Message,
    config: &Config,
    mut turns: Vec<Turn>,
    completion: Completion,
) -> Result<(), String> {
    let answer = completion.text.trim();
    let cut = completion.finish_reason == FinishReason::TimeLimit;
    if answer.is_empty() {
        let note = if cut {
            EMPTY_AT_TIME_LIMIT
        } else {
            EMPTY_ANSWER
        };
        return reply(host, message, note);
    }
    let shown = if cut {
        format!("{answer}\n\n{TIME_LIMIT_NOTE}")
    } else {
        answer.to_owned()
    };
    reply(host, message, &shown)?;
    turns.push(Turn::assistant(answer));
    history::fit(&mut turns, config.history_tokens);
    history::save(host, &message.conversation, &turns)
}

/// What the user is told when the model could not answer.
fn refusal(model: &str, error: &Error) -> String {
    match error {
        Error::Denied(why) => format!("The model `{model}` is not allowed for this bot: {why}"),
        Error::Unavailable(why) => {
            format!("The model `{model}` is not available right now: {why}")
        }
        Error::Invalid(why) => format!("The request to the model `{model}` was invalid: {why}"),
        Error::QuotaExceeded(why) => {
            format!("This bot reached a limit and cannot ask the model `{model}` now: {why}")
        }
    }
}

/// Replies to `message` with `answer`, in as many messages as it needs.
fn reply(host: &mut dyn Host, message: &Message, answer: &str) -> Result<(), String> {
    for part in text::split(answer, text::MAX_TEXT_BYTES) {
        host.reply_to(message, part)
            .map_err(|e| format!("reply failed: {e}"))?;
    }
    Ok(())
}

aviary_sdk::export_bot!(LlmChat);

#[cfg(test)]
mod tests;
