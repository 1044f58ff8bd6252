//! The bot against [`TestHost`] and fake models.

use super::*;
use aviary_sdk::llm::{Role, Usage};
use aviary_sdk::testing::{completion, Sent, TestHost};

const MODEL: &str = "smollm2";

/// A model answering "answer 1", "answer 2", ...
fn counting() -> impl FnMut(&ChatRequest) -> Result<Completion, Error> {
    let mut answers = 0;
    move |_| {
        answers += 1;
        Ok(completion(format!("answer {answers}")))
    }
}

/// A model that always answers `result`.
fn always(
    result: Result<Completion, Error>,
) -> impl FnMut(&ChatRequest) -> Result<Completion, Error> {
    move |_| result.clone()
}

fn host() -> TestHost {
    TestHost::new().with_model(MODEL, counting())
}

/// Delivers `text` from ada in `conversation`; the replies it got.
fn say(host: &mut TestHost, conversation: &str, text: &str) -> Vec<Sent> {
    let before = host.sent().len();
    let event = host.message(conversation, "ada", text);
    host.deliver::<LlmChat>(event).expect("handle succeeds");
    host.sent()[before..].to_vec()
}

/// The only reply to `text`.
fn answer(host: &mut TestHost, conversation: &str, text: &str) -> String {
    let replies = say(host, conversation, text);
    assert_eq!(replies.len(), 1, "{replies:?}");
    replies[0].text.clone()
}

/// The messages of `request` as (role, content).
fn messages(request: &ChatRequest) -> Vec<(Role, &str)> {
    request
        .messages
        .iter()
        .map(|m| (m.role, m.content.as_str()))
        .collect()
}

/// The history stored for `conversation`.
fn stored(host: &TestHost, conversation: &str) -> Option<Vec<Turn>> {
    let bytes = host.kv().get(&history::key(conversation))?;
    Some(serde_json::from_slice(bytes).expect("stored history decodes"))
}

#[test]
fn answers_as_a_reply_streamed_into_the_conversation() {
    let mut host = host()
        .with_setting("max_tokens", "64")
        .with_setting("temperature", "0");
    let replies = say(&mut host, "room", "Hello!");
    assert_eq!(
        replies,
        [Sent {
            conversation: "room".into(),
            text: "answer 1".into(),
            reply_to: Some("m000001".into()),
        }]
    );
    let request = &host.llm_requests()[0];
    assert_eq!(request.model, MODEL);
    assert_eq!(request.stream_to.as_deref(), Some("room"));
    assert_eq!(
        (request.max_tokens, request.temperature),
        (Some(64), Some(0.0))
    );
    assert_eq!(
        messages(request),
        [
            (Role::System, config::DEFAULT_SYSTEM_PROMPT),
            (Role::User, "Hello!")
        ]
    );
}

#[test]
fn the_second_request_holds_the_first_turn() {
    let mut host = host();
    say(&mut host, "room", "My name is Ada.");
    say(&mut host, "room", "What is my name?");
    assert_eq!(
        messages(&host.llm_requests()[1]),
        [
            (Role::System, config::DEFAULT_SYSTEM_PROMPT),
            (Role::User, "My name is Ada."),
            (Role::Assistant, "answer 1"),
            (Role::User, "What is my name?"),
        ]
    );
    assert_eq!(
        stored(&host, "room").unwrap(),
        [
            Turn::user("My name is Ada."),
            Turn::assistant("answer 1"),
            Turn::user("What is my name?"),
            Turn::assistant("answer 2"),
        ]
    );
}

#[test]
fn conversations_have_histories_of_their_own() {
    let mut host = host();
    say(&mut host, "a", "one");
    say(&mut host, "b", "two");
    assert_eq!(host.llm_requests()[1].messages.len(), 2);
    assert_eq!(host.llm_requests()[1].stream_to.as_deref(), Some("b"));
}

#[test]
fn reset_forgets_the_conversation() {
    let mut host = host();
    say(&mut host, "room", "remember me");
    say(&mut host, "other", "and me");
    assert_eq!(answer(&mut host, "room", "/reset"), FORGOTTEN);
    assert!(stored(&host, "room").is_none());
    assert!(stored(&host, "other").is_some(), "other conversations stay");
    say(&mut host, "room", "Who am I?");
    let requests = host.llm_requests();
    assert_eq!(requests.len(), 3, "/reset asks no model");
    assert_eq!(
        messages(&requests[2]),
        [
            (Role::System, config::DEFAULT_SYSTEM_PROMPT),
            (Role::User, "Who am I?")
        ]
    );
}

#[test]
fn help_names_the_model_and_the_commands_without_asking_it() {
    let mut host = host();
    let help = answer(&mut host, "room", "/help");
    assert!(help.contains("`smollm2`"), "{help}");
    assert!(help.contains("/reset") && help.contains("/help"), "{help}");
    assert!(host.llm_requests().is_empty());
    assert!(host.kv().is_empty());
    let mut host = host.with_setting("model", "big");
    assert!(answer(&mut host, "room", "/help").contains("`big`"));
}

#[test]
fn the_model_setting_picks_the_model_else_the_first_offered() {
    let mut host = TestHost::new()
        .with_model("first", counting())
        .with_model("second", counting());
    say(&mut host, "room", "hi");
    let mut host = host.with_setting("model", "second");
    say(&mut host, "room", "hi");
    let models: Vec<_> = host
        .llm_requests()
        .iter()
        .map(|r| r.model.as_str())
        .collect();
    assert_eq!(models, ["first", "second"]);
}

#[test]
fn an_empty_system_prompt_sends_none() {
    let mut host = host().with_setting("system_prompt", "");
    say(&mut host, "room", "hi");
    assert_eq!(messages(&host.llm_requests()[0]), [(Role::User, "hi")]);
}

#[test]
fn the_oldest_turns_are_dropped_to_fit_the_budget() {
    // Each turn is 40 bytes (14 tokens); the budget holds four of them.
    let mut host = TestHost::new()
        .with_model(MODEL, always(Ok(completion("a".repeat(40)))))
        .with_setting("history_tokens", "60");
    let said: Vec<String> = (0..4).map(|i| format!("{i}").repeat(40)).collect();
    for text in &said {
        say(&mut host, "room", text);
    }
    let last = host.llm_requests().last().unwrap();
    let turns = &last.messages[1..];
    assert_eq!(turns.len(), 3, "a user turn, its answer, the new message");
    assert_eq!(turns[0].content, said[2], "the oldest turns went first");
    assert_eq!(turns[2].content, said[3], "the new message is kept");
    assert_eq!(
        turns[0].role,
        Role::User,
        "the history starts with the user"
    );
    let stored = stored(&host, "room").unwrap();
    assert!(
        history::total_tokens(&stored) <= 60,
        "kv stays within the budget"
    );
    assert_eq!(stored.len(), 4);
}

#[test]
fn a_message_over_the_budget_alone_is_cut_to_fit() {
    let mut host = host().with_setting("history_tokens", "16");
    say(&mut host, "room", &"x".repeat(500));
    let sent = &host.llm_requests()[0].messages[1];
    assert_eq!(sent.role, Role::User);
    assert!(sent.content.starts_with("xxxx") && sent.content.ends_with(text::TRIM_MARKER));
    assert!(
        history::tokens(&sent.content) <= 16,
        "{}",
        sent.content.len()
    );
}

#[test]
fn a_long_answer_is_split_into_replies_that_fit() {
    let long = "word ".repeat(8000); // 40,000 bytes
    let mut host = TestHost::new().with_model(MODEL, always(Ok(completion(long.clone()))));
    let replies = say(&mut host, "room", "Talk a lot.");
    assert_eq!(replies.len(), 3);
    assert!(replies.iter().all(|r| r.text.len() <= text::MAX_TEXT_BYTES));
    assert!(replies
        .iter()
        .all(|r| r.reply_to.as_deref() == Some("m000001")));
    let joined: String = replies.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(joined, long.trim(), "nothing is lost");
}

#[test]
fn without_a_model_the_user_is_told_how_to_grant_one() {
    let mut host = TestHost::new();
    let text = answer(&mut host, "room", "hello");
    assert_eq!(text, NO_MODEL);
    assert!(text.contains("`llm_models`") && text.contains("policies/llm-chat.toml"));
    assert!(host.llm_requests().is_empty() && host.kv().is_empty());
}

#[test]
fn a_model_not_granted_is_not_allowed() {
    let mut host = host().with_setting("model", "big");
    let text = answer(&mut host, "room", "hello");
    assert!(text.contains("`big` is not allowed"), "{text}");
    assert!(
        text.contains("`llm_models` grant (smollm2)"),
        "the host's reason: {text}"
    );
    assert!(host.kv().is_empty(), "no history stored");
}

#[test]
fn an_unavailable_model_is_explained_with_the_hosts_words() {
    let why = "the model file /models/x.gguf is missing: run `cargo xtask up`";
    let mut host = TestHost::new().with_model(MODEL, always(Err(Error::Unavailable(why.into()))));
    let text = answer(&mut host, "room", "hello");
    assert!(text.contains("not available right now"), "{text}");
    assert!(text.contains(why), "verbatim: {text}");
    assert!(host.kv().is_empty());
    assert_eq!(host.logs()[0].0, Level::Warn);
}

#[test]
fn an_invalid_request_or_a_quota_is_explained() {
    let mut host =
        TestHost::new().with_model(MODEL, always(Err(Error::Invalid("too many bytes".into()))));
    let text = answer(&mut host, "room", "hello");
    assert!(text.contains("invalid: too many bytes"), "{text}");
    let mut host =
        TestHost::new().with_model(MODEL, always(Err(Error::QuotaExceeded("16 calls".into()))));
    assert!(answer(&mut host, "room", "hello").contains("limit"));
    assert!(host.kv().is_empty());
}

#[test]
fn an_answer_cut_at_the_time_limit_says_so_and_is_kept() {
    let cut = Completion {
        text: "1, 2, 3,".into(),
        finish_reason: FinishReason::TimeLimit,
        usage: Usage {
            prompt_tokens: 0,
            completion_tokens: 0,
        },
    };
    let mut host = TestHost::new().with_model(MODEL, always(Ok(cut.clone())));
    let text = answer(&mut host, "room", "Count to 5000.");
    assert_eq!(text, format!("1, 2, 3,\n\n{TIME_LIMIT_NOTE}"));
    assert!(text.contains("too long"));
    assert_eq!(
        stored(&host, "room").unwrap(),
        [Turn::user("Count to 5000."), Turn::assistant("1, 2, 3,")],
        "the note is not part of the history"
    );

    let nothing = Completion {
        text: " ".into(),
        ..cut
    };
    let mut host = TestHost::new().with_model(MODEL, always(Ok(nothing)));
    assert_eq!(answer(&mut host, "room", "Count."), EMPTY_AT_TIME_LIMIT);
    assert!(host.kv().is_empty());
}

#[test]
fn an_empty_answer_gets_a_note_and_is_not_kept() {
    let mut host = TestHost::new().with_model(MODEL, always(Ok(completion("\n  "))));
    assert_eq!(answer(&mut host, "room", "hello"), EMPTY_ANSWER);
    assert!(host.kv().is_empty());
}

#[test]
fn the_answer_is_sent_without_surrounding_whitespace() {
    let mut host = TestHost::new().with_model(MODEL, always(Ok(completion("\n Hi there.\n"))));
    assert_eq!(answer(&mut host, "room", "hello"), "Hi there.");
}

#[test]
fn a_message_without_text_is_not_sent_to_the_model() {
    let mut host = host();
    assert_eq!(answer(&mut host, "room", "   "), NO_TEXT);
    assert!(host.llm_requests().is_empty());
}

#[test]
fn init_checks_the_settings() {
    assert!(TestHost::new().init::<LlmChat>().is_ok());
    let error = TestHost::new()
        .with_setting("temperature", "hot")
        .init::<LlmChat>()
        .unwrap_err();
    assert!(error.contains("`temperature`"), "{error}");
    let error = TestHost::new()
        .with_setting("history_tokens", "1")
        .init::<LlmChat>()
        .unwrap_err();
    assert!(error.contains("`history_tokens`"), "{error}");
}

#[test]
fn contacts_and_timers_are_ignored() {
    let mut host = host();
    host.deliver::<LlmChat>(TestHost::contact_added("room", "bob"))
        .unwrap();
    host.deliver::<LlmChat>(TestHost::timer("t", Some("room"), ""))
        .unwrap();
    assert!(host.sent().is_empty() && host.llm_requests().is_empty());
}
