//! A bot that abuses `aviary:bot/llm` in the way each message names, and
//! answers with what the host said, so the end-to-end suite can check that
//! every abuse is refused with the right error (and nothing else breaks).
//! Written against the raw bindings, as an attacker would call the imports.

wit_bindgen::generate!({ path: "../../../wit", world: "bot" });

use aviary::bot::llm::{self, ChatMessage, ChatRequest, Role};
use aviary::bot::messaging;
use aviary::bot::types::{Error, Event};
use exports::aviary::bot::handler::Guest;

struct Abuser;

fn request(model: &str, content: String) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![ChatMessage {
            role: Role::User,
            content,
        }],
        max_tokens: Some(1),
        temperature: Some(0.0),
        stop: Vec::new(),
        stream_to: None,
    }
}

fn describe(result: Result<llm::Completion, Error>) -> String {
    match result {
        Ok(c) => format!(
            "ok {:?} {} tokens",
            c.finish_reason, c.usage.completion_tokens
        ),
        Err(e) => kind(&e),
    }
}

fn kind(error: &Error) -> String {
    match error {
        Error::Denied(m) => format!("denied: {m}"),
        Error::QuotaExceeded(m) => format!("quota: {m}"),
        Error::Invalid(m) => format!("invalid: {m}"),
        Error::Unavailable(m) => format!("unavailable: {m}"),
    }
}

/// The abuse named `what`, and what the host answered.
fn abuse(what: &str, conversation: &str) -> String {
    let good = || request("smollm2", "hi".into());
    match what {
        "ungranted" => describe(llm::chat(&request("big", "hi".into()))),
        "huge-prompt" => describe(llm::chat(&request("smollm2", "a".repeat(2 << 20)))),
        "many-messages" => {
            let mut r = good();
            r.messages = (0..5000)
                .map(|_| ChatMessage {
                    role: Role::User,
                    content: "x".into(),
                })
                .collect();
            describe(llm::chat(&r))
        }
        "no-messages" => {
            let mut r = good();
            r.messages.clear();
            describe(llm::chat(&r))
        }
        "max-tokens" => describe(llm::chat(&ChatRequest {
            max_tokens: Some(u32::MAX),
            ..good()
        })),
        "nan" => describe(llm::chat(&ChatRequest {
            temperature: Some(f32::NAN),
            ..good()
        })),
        "stops" => describe(llm::chat(&ChatRequest {
            stop: vec!["x".into(); 100],
            ..good()
        })),
        "stream-bad-id" => describe(llm::chat(&ChatRequest {
            stream_to: Some("../../etc".into()),
            ..good()
        })),
        "stream-elsewhere" => {
            // Drafts into a conversation id that another bot also has.
            let r = ChatRequest {
                stream_to: Some("victim".into()),
                max_tokens: Some(16),
                ..good()
            };
            describe(llm::chat(&r))
        }
        "flood" => {
            let answers: Vec<String> = (0..20).map(|_| describe(llm::chat(&good()))).collect();
            let first_refused = answers.iter().position(|a| a.starts_with("quota"));
            format!(
                "refused from call {first_refused:?}: {}",
                answers.last().unwrap()
            )
        }
        "embed-flood" => match llm::embed("smollm2", &vec!["x".to_string(); 5000]) {
            Ok(v) => format!("ok {}", v.len()),
            Err(e) => kind(&e),
        },
        "long-wait" => {
            // Far more wall time than the 200 ms CPU grant: waiting is free.
            let r = ChatRequest {
                max_tokens: Some(200),
                messages: vec![ChatMessage {
                    role: Role::User,
                    content: "Write a long story about a lighthouse keeper.".into(),
                }],
                ..good()
            };
            describe(llm::chat(&r))
        }
        "models" => format!("models {:?}", llm::models()),
        _ => format!("unknown abuse {what} in {conversation}"),
    }
}

impl Guest for Abuser {
    fn init(_settings: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        let Event::Message(message) = event else {
            return Ok(());
        };
        let answer = abuse(message.text.trim(), &message.conversation);
        messaging::reply(&message.conversation, &message.id, &answer).map_err(|e| kind(&e))
    }
}

export!(Abuser);
