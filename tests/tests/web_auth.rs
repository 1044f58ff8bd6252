//! Who may talk in a conversation: tokens of the web channel, driven over
//! HTTP against the real binary. A token binds one bot, one conversation
//! and one user; everything else is refused and stores nothing.

use std::time::Duration;

use aviary_e2e::{bots_dir, now_ms, Answer, Host, CONVERSATION_SECRET};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The fields of a `201` from `POST .../conversations`.
struct Created {
    conversation: String,
    token: String,
    expires_at: u64,
    user: String,
}

fn created(answer: &Answer) -> Created {
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.raw);
    let field = |name: &str| {
        answer.body[name]
            .as_str()
            .unwrap_or_else(|| panic!("no string `{name}` in {}", answer.raw))
            .to_owned()
    };
    Created {
        conversation: field("conversation"),
        token: field("token"),
        expires_at: answer.body["expires_at"].as_u64().expect("expires_at"),
        user: answer.body["user"]["id"]
            .as_str()
            .expect("user.id")
            .to_owned(),
    }
}

fn url(host: &Host, bot: &str, conversation: &str, tail: &str) -> String {
    host.url(&format!(
        "/api/v1/bots/{bot}/conversations/{conversation}/{tail}"
    ))
}

/// `POST .../messages` `{"text"}` with `Authorization: Bearer <token>` when given.
fn post(host: &Host, bot: &str, conversation: &str, token: Option<&str>, text: &str) -> Answer {
    let mut request = Client::new()
        .post(url(host, bot, conversation, "messages"))
        .json(&json!({ "text": text }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Answer::read(request.send().unwrap())
}

/// `GET .../messages` with `Authorization: Bearer <token>` when given.
fn get(host: &Host, bot: &str, conversation: &str, token: Option<&str>) -> Answer {
    let mut request = Client::new().get(url(host, bot, conversation, "messages"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Answer::read(request.send().unwrap())
}

fn refresh(host: &Host, bot: &str, conversation: &str, token: &str) -> Answer {
    Answer::read(
        Client::new()
            .post(url(host, bot, conversation, "token"))
            .bearer_auth(token)
            .send()
            .unwrap(),
    )
}

/// The messages of a conversation as its token's holder sees them.
fn texts(host: &Host, bot: &str, conversation: &str, token: &str) -> Vec<(String, String)> {
    let answer = get(host, bot, conversation, Some(token));
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.raw);
    answer.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["sender"].as_str().unwrap().to_owned(),
                m["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn assert_refused(answer: &Answer, status: StatusCode, what: &str) {
    assert_eq!(answer.status, status, "{what}: {}", answer.raw);
    answer.error();
}

#[test]
fn open_creation_gives_a_token_for_one_user_in_one_new_conversation() {
    let host = Host::start_open("");
    let before = now_ms();
    let alice = created(&host.create_conversation(
        "echo",
        Some(json!({ "user": { "id": "alice", "name": "Alice" } })),
        None,
    ));
    assert_eq!(alice.user, "alice");
    assert!(
        alice.token.len() >= 32 && alice.token.bytes().all(|b| b.is_ascii_hexdigit()),
        "a token of at least 128 random bits, got {:?}",
        alice.token
    );
    let day = 24 * 3600 * 1000;
    assert!(
        (before + day - 5_000..=now_ms() + day + 5_000).contains(&alice.expires_at),
        "a token lives a day by default: {} vs now {before}",
        alice.expires_at
    );
    // No body at all: a new conversation and a made-up user.
    let anonymous = created(&host.create_conversation("echo", None, None));
    assert_ne!(anonymous.conversation, alice.conversation);
    assert_ne!(anonymous.token, alice.token);
    assert!(!anonymous.user.is_empty());

    // The sender is the token's user.
    let answer = post(&host, "echo", &alice.conversation, Some(&alice.token), "hi");
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.raw);

    // Without a token, with a bad one, or with another conversation's:
    // refused, and nothing stored.
    let c = &alice.conversation;
    assert_refused(
        &post(&host, "echo", c, None, "no token"),
        StatusCode::UNAUTHORIZED,
        "no token",
    );
    assert_refused(
        &post(
            &host,
            "echo",
            c,
            Some("0123456789abcdef0123456789abcdef"),
            "guessed",
        ),
        StatusCode::UNAUTHORIZED,
        "a made-up token",
    );
    assert_refused(
        &post(&host, "echo", c, Some(&anonymous.token), "intruder"),
        StatusCode::FORBIDDEN,
        "another conversation's token",
    );
    assert_refused(
        &get(&host, "echo", c, None),
        StatusCode::UNAUTHORIZED,
        "reading without a token",
    );
    assert_refused(
        &get(&host, "echo", c, Some(&anonymous.token)),
        StatusCode::FORBIDDEN,
        "reading with another conversation's token",
    );
    // A client may not claim someone else's conversation on an open host.
    assert_refused(
        &host.create_conversation("echo", Some(json!({ "conversation": c })), None),
        StatusCode::FORBIDDEN,
        "naming a conversation without the secret",
    );
    let stored = texts(&host, "echo", c, &alice.token);
    assert_eq!(stored[0], ("alice".to_owned(), "hi".to_owned()));
    assert!(
        stored
            .iter()
            .all(|(_, text)| text == "hi" || text == "echo: hi"),
        "a refused message was stored: {stored:?}"
    );
    assert!(
        texts(&host, "echo", &anonymous.conversation, &anonymous.token)
            .iter()
            .all(|(_, text)| !text.contains("intruder"))
    );

    // Bad creation bodies are JSON errors.
    for (what, body, status) in [
        (
            "a user without id",
            json!({ "user": { "name": "x" } }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("an array", json!([1]), StatusCode::UNPROCESSABLE_ENTITY),
        (
            "an unknown field",
            json!({ "sender": "x" }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "an empty user id",
            json!({ "user": { "id": "" } }),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        assert_refused(
            &host.create_conversation("echo", Some(body), None),
            status,
            what,
        );
    }
    assert_refused(
        &host.create_conversation("no-such-bot", None, None),
        StatusCode::NOT_FOUND,
        "an unknown bot",
    );
}

#[test]
fn with_a_secret_only_the_backend_creates_and_may_add_users_to_a_conversation() {
    let host = Host::start("");
    assert_eq!(host.secret(), Some(CONVERSATION_SECRET));
    assert_refused(
        &host.create_conversation("echo", None, None),
        StatusCode::UNAUTHORIZED,
        "creating without the secret",
    );
    assert_refused(
        &host.create_conversation("echo", None, Some("not-the-secret-at-all")),
        StatusCode::UNAUTHORIZED,
        "creating with a wrong secret",
    );
    let alice = created(&host.create_conversation(
        "echo",
        Some(json!({ "user": { "id": "alice" } })),
        Some(CONVERSATION_SECRET),
    ));
    // The backend gives bob a token for alice's conversation.
    let bob = created(&host.create_conversation(
        "echo",
        Some(json!({ "user": { "id": "bob" }, "conversation": alice.conversation })),
        Some(CONVERSATION_SECRET),
    ));
    assert_eq!(bob.conversation, alice.conversation);
    for (who, token) in [("alice", &alice.token), ("bob", &bob.token)] {
        let answer = post(
            &host,
            "echo",
            &alice.conversation,
            Some(token),
            &format!("from {who}"),
        );
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.raw);
    }
    let ins: Vec<(String, String)> = texts(&host, "echo", &alice.conversation, &bob.token)
        .into_iter()
        .filter(|(_, text)| text.starts_with("from"))
        .collect();
    assert_eq!(
        ins,
        [
            ("alice".to_owned(), "from alice".to_owned()),
            ("bob".to_owned(), "from bob".to_owned())
        ]
    );
    // The secret is for creating conversations, not for reading them.
    assert_refused(
        &get(
            &host,
            "echo",
            &alice.conversation,
            Some(CONVERSATION_SECRET),
        ),
        StatusCode::UNAUTHORIZED,
        "the secret as a conversation token",
    );
    // Conversation ids made only of dots are refused, even to the backend.
    for dots in [".", "..", "..."] {
        assert_refused(
            &host.create_conversation(
                "echo",
                Some(json!({ "conversation": dots })),
                Some(CONVERSATION_SECRET),
            ),
            StatusCode::BAD_REQUEST,
            dots,
        );
    }
}

#[test]
fn a_refreshed_token_replaces_the_old_one() {
    let host = Host::start_open("[web]\ntoken_lifetime_secs = 120\n");
    let first = created(&host.create_conversation("echo", None, None));
    assert!(
        first.expires_at <= now_ms() + 121_000 && first.expires_at + 10_000 > now_ms() + 120_000,
        "token_lifetime_secs = 120 gives a token of two minutes: {}",
        first.expires_at
    );
    std::thread::sleep(Duration::from_millis(20));
    let answer = refresh(&host, "echo", &first.conversation, &first.token);
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.raw);
    let second = answer.body["token"].as_str().unwrap().to_owned();
    assert_ne!(second, first.token);
    assert_eq!(answer.body["conversation"], first.conversation.as_str());
    assert!(answer.body["expires_at"].as_u64().unwrap() > first.expires_at);

    // Hostile: replaying the token that was refreshed.
    let c = &first.conversation;
    assert_refused(
        &post(&host, "echo", c, Some(&first.token), "replay"),
        StatusCode::UNAUTHORIZED,
        "the replaced token",
    );
    assert_refused(
        &refresh(&host, "echo", c, &first.token),
        StatusCode::UNAUTHORIZED,
        "refreshing the replaced token",
    );
    let answer = post(&host, "echo", c, Some(&second), "renewed");
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.raw);
    // Another conversation's token cannot refresh this one.
    let other = created(&host.create_conversation("echo", None, None));
    assert_refused(
        &refresh(&host, "echo", c, &other.token),
        StatusCode::FORBIDDEN,
        "a foreign refresh",
    );
    assert_refused(
        &refresh(&host, "echo", c, "nonsense"),
        StatusCode::UNAUTHORIZED,
        "a bad refresh",
    );
}

#[test]
fn tokens_are_stored_only_as_hashes_and_outlive_a_restart() {
    let mut host = Host::start_open("");
    let session = created(&host.create_conversation("echo", None, None));
    let answer = post(
        &host,
        "echo",
        &session.conversation,
        Some(&session.token),
        "kept",
    );
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.raw);
    host.restart();
    let stored = texts(&host, "echo", &session.conversation, &session.token);
    assert_eq!(stored[0].1, "kept", "the token works after a restart");
    host.kill();
    let mut files = vec![host.data_dir()];
    let mut seen = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        seen += bytes.len();
        assert!(
            !bytes
                .windows(session.token.len())
                .any(|w| w == session.token.as_bytes()),
            "{} holds the token in the clear",
            path.display()
        );
    }
    assert!(seen > 0, "the data dir holds the store");
}

/// A plugins dir with echo and a copy of it installed as `parrot`.
fn echo_and_parrot() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    for ext in ["wasm", "toml"] {
        std::fs::copy(
            bots_dir().join(format!("echo.{ext}")),
            dir.path().join(format!("echo.{ext}")),
        )
        .unwrap();
    }
    std::fs::copy(bots_dir().join("echo.wasm"), dir.path().join("parrot.wasm")).unwrap();
    let manifest = std::fs::read_to_string(bots_dir().join("echo.toml")).unwrap();
    let manifest: String = manifest
        .lines()
        .map(|l| {
            if l.starts_with("id = ") {
                "id = \"parrot\"\n".to_owned()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(dir.path().join("parrot.toml"), manifest).unwrap();
    let grant = "[bots.parrot.grant]\nmemory_mb = 16\ntimeout_ms = 2000\n\
                 send = { per_conversation_per_minute = 3000, per_bot_per_minute = 60000 }\n\
                 kv = { max_bytes = 1048576, max_keys = 10000 }\n";
    (dir, grant.to_owned())
}

#[test]
fn a_token_of_one_bot_opens_nothing_of_another_bot() {
    let (plugins, grant) = echo_and_parrot();
    let host = Host::start_with_plugins(&grant, plugins.path());
    let parrot_running = host
        .bots()
        .iter()
        .any(|b| b["id"] == "parrot" && b["status"] == "running");
    assert!(parrot_running, "parrot runs: {:?}", host.bots());
    let echo = created(&host.create_conversation(
        "echo",
        Some(json!({ "conversation": "shared-name", "user": { "id": "alice" } })),
        Some(CONVERSATION_SECRET),
    ));
    // The same conversation id under another bot is another conversation.
    assert_refused(
        &post(
            &host,
            "parrot",
            &echo.conversation,
            Some(&echo.token),
            "wrong bot",
        ),
        StatusCode::FORBIDDEN,
        "echo's token on parrot",
    );
    assert_refused(
        &get(&host, "parrot", &echo.conversation, Some(&echo.token)),
        StatusCode::FORBIDDEN,
        "reading parrot with echo's token",
    );
    let parrot = host.conversation("parrot", "shared-name");
    assert!(
        parrot.messages(None, None).is_empty(),
        "nothing stored under parrot"
    );
}

#[test]
fn an_idempotency_key_makes_a_retry_answer_the_first_id() {
    let mut host = Host::start("");
    let chat = host.conversation("echo", "retry");
    let token = chat.token("alice").unwrap().unwrap();
    let send = |key: &str, text: &str| -> Value {
        let answer = Answer::read(
            Client::new()
                .post(host.url(&chat.path()))
                .bearer_auth(&token)
                .header("idempotency-key", key)
                .json(&json!({ "text": text }))
                .send()
                .unwrap(),
        );
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.raw);
        answer.body["id"].clone()
    };
    let first = send("order-1", "pay once");
    assert_eq!(
        send("order-1", "pay once"),
        first,
        "a retry answers with the first id"
    );
    let other = send("order-2", "another");
    assert_ne!(other, first);
    chat.wait_for_reply(other.as_str().unwrap());
    let ins: Vec<String> = chat
        .all_messages()
        .into_iter()
        .filter(|m| m.is_in())
        .map(|m| m.text)
        .collect();
    assert_eq!(ins, ["pay once", "another"], "the retry stored nothing");

    // Remembered durably: a retry after a restart still finds the first.
    host.restart();
    let chat = host.conversation("echo", "retry");
    let token = chat.token("alice").unwrap().unwrap();
    let answer = Answer::read(
        Client::new()
            .post(host.url(&chat.path()))
            .bearer_auth(&token)
            .header("idempotency-key", "order-1")
            .json(&json!({ "text": "pay once" }))
            .send()
            .unwrap(),
    );
    assert_eq!(answer.body["id"], first, "{}", answer.raw);
    assert_eq!(chat.all_messages().iter().filter(|m| m.is_in()).count(), 2);

    // A malformed key is refused, and stores nothing.
    let answer = Answer::read(
        Client::new()
            .post(host.url(&chat.path()))
            .bearer_auth(&token)
            .header("idempotency-key", "x".repeat(300))
            .json(&json!({ "text": "long key" }))
            .send()
            .unwrap(),
    );
    assert_refused(&answer, StatusCode::BAD_REQUEST, "a 300-character key");
    assert_eq!(chat.all_messages().iter().filter(|m| m.is_in()).count(), 2);
}
