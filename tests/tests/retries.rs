//! Failures and retries: a send-rate quota that will refill delays a
//! conversation instead of dead-lettering its messages; a failing event is
//! retried with growing backoff, then dead-lettered with its reason; echo
//! answers a message at the text limit.

use std::time::{Duration, Instant};

use aviary_e2e::{bots_dir, hostile_dir, Host};
use serde_json::Value;

fn dead_letters(host: &Host) -> Vec<Value> {
    host.admin_get("/api/v1/admin/dead-letters")["dead_letters"]
        .as_array()
        .unwrap()
        .clone()
}

/// Echo's shipped grant with `per_conversation_per_minute` set to `rate`.
fn echo_policies(rate: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let grant = std::fs::read_to_string(aviary_e2e::workspace_dir().join("policies/echo.toml"))
        .unwrap()
        .replace(
            "per_conversation_per_minute = 3000",
            &format!("per_conversation_per_minute = {rate}"),
        );
    assert!(grant.contains(&format!("= {rate}\n")), "{grant}");
    std::fs::write(dir.path().join("echo.toml"), grant).unwrap();
    dir
}

#[test]
fn messages_past_the_send_rate_are_delayed_not_dead_lettered() {
    // 600 sends a minute in one conversation, 660 messages at once: the
    // last 60 wait for the bucket to refill (10 a second).
    const RATE: u32 = 600;
    const MESSAGES: usize = 660;
    let policies = echo_policies(RATE);
    let host = Host::start(&format!(
        "policies_dir = {:?}\n",
        policies.path().display().to_string()
    ));
    let conversation = host.conversation("echo", "busy");
    let ids: Vec<String> = (0..MESSAGES)
        .map(|n| conversation.post_message("alice", &format!("m{n}")))
        .collect();
    let last = conversation.wait_for_reply_within(ids.last().unwrap(), Duration::from_secs(90));
    assert!(last.is_some(), "the last message was answered");
    let replies: Vec<_> = conversation
        .all_messages()
        .into_iter()
        .filter(|m| m.is_out())
        .collect();
    let answered: Vec<&str> = replies
        .iter()
        .filter_map(|m| m.reply_to.as_deref())
        .collect();
    assert_eq!(answered, ids, "every message answered once, in order");
    for (n, reply) in replies.iter().enumerate() {
        assert_eq!(reply.text, format!("echo: m{n}"));
    }
    assert_eq!(
        dead_letters(&host),
        Vec::<Value>::new(),
        "nothing dead-lettered"
    );
}

#[test]
fn a_panicking_bot_is_retried_with_growing_delays_then_dead_lettered() {
    let plugins = tempfile::tempdir().unwrap();
    std::fs::copy(
        hostile_dir().join("mischief.wasm"),
        plugins.path().join("panicker.wasm"),
    )
    .expect("built hostile bots");
    let manifest = std::fs::read_to_string(hostile_dir().join("mischief.toml"))
        .unwrap()
        .replacen("id = \"mischief\"", "id = \"panicker\"", 1);
    std::fs::write(plugins.path().join("panicker.toml"), manifest).unwrap();
    let config = "[bots.panicker]\nmax_retries = 3\nsettings = { mode = \"panic\" }\n[bots.panicker.grant]\nmemory_mb = 16\ntimeout_ms = 300\n\
         send = { per_conversation_per_minute = 5, per_bot_per_minute = 50 }\nkv = { max_bytes = 65536, max_keys = 100 }\n";
    let host = Host::start_with_plugins(config, plugins.path());
    let conversation = host.conversation("panicker", "c");
    let started = Instant::now();
    conversation.post_message("mallory", "go");
    let letter = loop {
        if let Some(letter) = dead_letters(&host).into_iter().next() {
            break letter;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no dead letter"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    assert_eq!(
        letter["attempts"], 4,
        "one run and max_retries = 3 retries: {letter}"
    );
    assert!(
        letter["error"]
            .as_str()
            .unwrap()
            .contains("the bot trapped"),
        "the dead letter says why: {letter}"
    );
    let spread = letter["at"].as_u64().unwrap()
        - letter["event"]["event"]["message"]["at"].as_u64().unwrap();
    assert!(
        spread >= 700,
        "dead-lettered {spread} ms after arrival: {letter}"
    );
    // Retries after 100, 200 and 400 ms: at least 700 ms in all, where
    // immediate re-runs took well under a millisecond.
    assert!(
        elapsed >= Duration::from_millis(700),
        "retries took only {elapsed:?}"
    );
    // The bot's lane is not stuck behind the dead letter.
    let ping = conversation.post_message("mallory", "ping");
    assert_eq!(conversation.wait_for_reply(&ping).text, "pong");
}

#[test]
fn echo_answers_a_message_at_the_text_limit_in_parts() {
    assert!(bots_dir().join("echo.wasm").exists());
    let host = Host::start("");
    let conversation = host.conversation("echo", "long");
    for size in [16_379, 16_384] {
        let text = "z".repeat(size);
        let id = conversation.post_message("alice", &text);
        conversation.wait_for_reply(&id);
        // Wait until both parts are visible.
        let deadline = Instant::now() + Duration::from_secs(10);
        let parts = loop {
            let parts: Vec<String> = conversation
                .all_messages()
                .into_iter()
                .filter(|m| m.reply_to.as_deref() == Some(id.as_str()))
                .map(|m| m.text)
                .collect();
            if parts.len() >= 2 || Instant::now() > deadline {
                break parts;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let lengths: Vec<usize> = parts.iter().map(String::len).collect();
        assert_eq!(
            parts.len(),
            2,
            "{size} bytes + prefix take two messages: {lengths:?}"
        );
        assert!(parts.iter().all(|p| p.len() <= 16 * 1024));
        assert_eq!(parts.concat(), format!("echo: {text}"), "nothing lost");
    }
}
