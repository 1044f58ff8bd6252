//! The web channel's JSON API, driven over HTTP against the real binary with
//! the echo bot.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use aviary_e2e::{assert_increasing, bots_dir, now_ms, Answer, Conversation, Host};
use reqwest::StatusCode;

#[test]
fn echo_round_trip() {
    let host = Host::start("");
    let chat = host.conversation("echo", "round-trip");
    let before = now_ms();
    let id = chat.post_message("alice", "hi there");
    assert!(
        id.bytes().all(|b| b.is_ascii_hexdigit()),
        "ids are hex, got {id:?}"
    );

    let reply = chat.wait_for_reply(&id);
    assert_eq!(reply.text, "echo: hi there");
    assert_eq!(reply.sender, "echo");
    assert_eq!(reply.direction, "out");
    assert_eq!(reply.reply_to.as_deref(), Some(id.as_str()));

    let all = chat.messages(None, None);
    assert_eq!(all.len(), 2, "one message in, one out: {all:#?}");
    let inbound = &all[0];
    assert_eq!(inbound.id, id);
    assert_eq!(
        (
            inbound.sender.as_str(),
            inbound.text.as_str(),
            inbound.direction.as_str()
        ),
        ("alice", "hi there", "in")
    );
    assert_eq!(inbound.reply_to, None);
    assert_eq!(all[1], reply);
    assert_eq!(inbound.id.len(), reply.id.len(), "ids are fixed width");
    assert_increasing(&all);
    let after = now_ms();
    for message in &all {
        assert!(
            (before.saturating_sub(2_000)..=after + 2_000).contains(&message.at),
            "`at` {} is not unix ms between {before} and {after}",
            message.at
        );
    }
    assert!(
        inbound.at <= reply.at,
        "the reply is not older than the message"
    );
}

#[test]
fn unicode_text_survives_the_round_trip() {
    let host = Host::start("");
    let chat = host.conversation("echo", "unicode");
    let text = "héllo wörld — 你好 🐦 \"quoted\" \\ back\nslash";
    let id = chat.post_message("zoë", text);
    assert_eq!(chat.wait_for_reply(&id).text, format!("echo: {text}"));
    let stored = chat.messages(None, None);
    assert_eq!(
        (stored[0].sender.as_str(), stored[0].text.as_str()),
        ("zoë", text)
    );
}

#[test]
fn long_poll_wakes_when_a_message_arrives() {
    let host = Host::start("");
    let chat = host.conversation("echo", "long-poll");

    // A poll on an empty conversation, started before anything is posted,
    // must return as soon as the message exists, well before its `wait`.
    let poller = {
        let chat = chat.clone();
        thread::spawn(move || {
            let started = Instant::now();
            let page = chat.messages(None, Some(30.0));
            (page, started.elapsed())
        })
    };
    thread::sleep(Duration::from_millis(500));
    let id = chat.post_message("alice", "wake up");
    let (page, waited) = poller.join().unwrap();
    assert!(!page.is_empty(), "the long poll returned no message");
    assert_eq!(page[0].id, id);
    assert!(
        waited < Duration::from_secs(10),
        "the long poll took {waited:?}: it did not wake on the new message"
    );

    // Waiting after the inbound message returns with the reply in it.
    let started = Instant::now();
    let mut after = id.clone();
    let reply = loop {
        let page = chat.messages(Some(&after), Some(30.0));
        assert!(
            !page.is_empty(),
            "a long poll with wait=30 returned [] after {:?}",
            started.elapsed()
        );
        if let Some(reply) = page
            .iter()
            .find(|m| m.reply_to.as_deref() == Some(id.as_str()))
        {
            break reply.clone();
        }
        after = page.last().unwrap().id.clone();
    };
    assert_eq!(reply.text, "echo: wake up");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the reply took {:?}",
        started.elapsed()
    );
}

#[test]
fn long_poll_returns_empty_after_wait() {
    let host = Host::start("");
    let chat = host.conversation("echo", "quiet");
    let id = chat.post_message("alice", "only one");
    let reply = chat.wait_for_reply(&id);

    let started = Instant::now();
    let page = chat.messages(Some(&reply.id), Some(1.5));
    let waited = started.elapsed();
    assert!(
        page.is_empty(),
        "nothing was posted after the reply, got {page:#?}"
    );
    assert!(
        waited >= Duration::from_millis(1_300),
        "returned after {waited:?}, before the 1.5 s wait elapsed"
    );
    assert!(
        waited < Duration::from_secs(10),
        "returned after {waited:?}, long after the 1.5 s wait"
    );

    // Without `wait`, an empty page comes back at once.
    let started = Instant::now();
    assert!(chat.messages(Some(&reply.id), None).is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a GET without wait took {:?}",
        started.elapsed()
    );

    // An empty body is exactly {"messages": []}.
    let answer = chat.get_page(Some(&reply.id), Some(0.2), None);
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, serde_json::json!({ "messages": [] }));
}

#[test]
fn messages_and_replies_keep_their_order() {
    let host = Host::start("");
    let chat = host.conversation("echo", "ordered");

    // One at a time: the conversation alternates in, out, in, out.
    let mut expected = Vec::new();
    for n in 0..5 {
        let text = format!("step {n}");
        let id = chat.post_message("alice", &text);
        chat.wait_for_reply(&id);
        expected.push(("in", text.clone()));
        expected.push(("out", format!("echo: {text}")));
    }
    let all = chat.messages(None, None);
    let seen: Vec<(&str, String)> = all
        .iter()
        .map(|m| (m.direction.as_str(), m.text.clone()))
        .collect();
    let expected: Vec<(&str, String)> = expected.iter().map(|(d, t)| (*d, t.clone())).collect();
    assert_eq!(seen, expected);
    assert_increasing(&all);
    for pair in all.chunks(2) {
        assert_eq!(pair[1].reply_to.as_deref(), Some(pair[0].id.as_str()));
    }

    // A burst without waiting: the bot still answers in the order sent, each
    // reply after the message it answers.
    let burst: Vec<(String, String)> = (0..20)
        .map(|n| format!("burst {n:02}"))
        .map(|text| (chat.post_message("bob", &text), text))
        .collect();
    let ids: Vec<String> = burst.iter().map(|(id, _)| id.clone()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(
        ids, sorted,
        "ids of one conversation increase in the order posted"
    );
    chat.wait_for_reply(&ids[19]);
    let all = chat.all_messages();
    assert_increasing(&all);
    let tail = &all[10..];
    let ins: Vec<&str> = tail
        .iter()
        .filter(|m| m.is_in())
        .map(|m| m.text.as_str())
        .collect();
    let outs: Vec<&str> = tail
        .iter()
        .filter(|m| m.is_out())
        .map(|m| m.text.as_str())
        .collect();
    let sent: Vec<&str> = burst.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(ins, sent);
    let echoed: Vec<String> = sent.iter().map(|t| format!("echo: {t}")).collect();
    assert_eq!(
        outs, echoed,
        "replies came in another order than the messages"
    );
    for (position, message) in tail.iter().enumerate() {
        if let Some(to) = &message.reply_to {
            let answered = tail[..position].iter().any(|m| &m.id == to);
            assert!(
                answered,
                "reply {message:?} comes before the message it answers"
            );
        }
    }

    // Pages of 3 walk through the same sequence.
    let mut paged = Vec::new();
    loop {
        let page = chat.page(
            paged.last().map(|m: &aviary_e2e::Message| m.id.as_str()),
            None,
            Some(3),
        );
        assert!(page.len() <= 3, "limit=3 returned {} messages", page.len());
        if page.is_empty() {
            break;
        }
        paged.extend(page);
    }
    assert_eq!(paged, all);
}

#[test]
fn conversations_stay_separate() {
    let host = Host::start("");
    let red = host.conversation("echo", "room-red");
    let blue = host.conversation("echo", "room.blue:2_x");
    let red_id = red.post_message("alice", "to red");
    let blue_id = blue.post_message("bob", "to blue");
    red.wait_for_reply(&red_id);
    blue.wait_for_reply(&blue_id);
    let red_id2 = red.post_message("alice", "red again");
    red.wait_for_reply(&red_id2);

    let texts = |chat: &Conversation| {
        chat.messages(None, None)
            .into_iter()
            .map(|m| m.text)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        texts(&red),
        ["to red", "echo: to red", "red again", "echo: red again"]
    );
    assert_eq!(texts(&blue), ["to blue", "echo: to blue"]);
    assert!(texts(&host.conversation("echo", "room-green")).is_empty());
}

#[test]
fn bots_list_shows_the_echo_bot() {
    let host = Host::start("");
    let bots = host.bots();
    let echo = bots
        .iter()
        .find(|b| b["id"] == "echo")
        .unwrap_or_else(|| panic!("no echo in {bots:#?}"));
    assert_eq!(echo["status"], "running");
    assert!(echo["description"].is_string(), "description: {echo}");

    // The version is the one in the installed manifest.
    let manifest: toml::Table = std::fs::read_to_string(bots_dir().join("echo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        echo["version"].as_str(),
        manifest["version"].as_str(),
        "{echo} vs the manifest {manifest}"
    );
    assert_eq!(
        echo["description"].as_str(),
        manifest.get("description").and_then(|d| d.as_str()),
        "{echo}"
    );
}

/// Asserts an error answer and that the conversation is still empty.
fn assert_rejected(answer: &Answer, status: StatusCode, chat: &Conversation, what: &str) {
    assert_eq!(answer.status, status, "{what}: {}", answer.raw);
    let message = answer.error();
    assert!(!message.is_empty(), "{what}");
    assert!(
        chat.messages(None, None).is_empty(),
        "{what}: a rejected message was stored"
    );
}

#[test]
fn bad_requests_get_json_errors_and_store_nothing() {
    let host = Host::start("");
    let chat = host.conversation("echo", "errors");
    let json = Some("application/json");

    let cases: &[(&str, &str, Option<&str>, StatusCode)] = &[
        (
            "malformed JSON",
            r#"{"text":"hi""#,
            json,
            StatusCode::BAD_REQUEST,
        ),
        ("not JSON at all", "hello", json, StatusCode::BAD_REQUEST),
        ("no text", r#"{}"#, json, StatusCode::UNPROCESSABLE_ENTITY),
        (
            "text is a number",
            r#"{"text":42}"#,
            json,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "a sender of one's choosing",
            r#"{"sender":"mallory","text":"hi"}"#,
            json,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "body is a string",
            r#""alice: hi""#,
            json,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "body is an array",
            r#"[{"text":"hi"}]"#,
            json,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "no content type",
            r#"{"text":"hi"}"#,
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "a cross-site form",
            "text=hi",
            Some("application/x-www-form-urlencoded"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "JSON as text/plain (a CORS-simple request)",
            r#"{"text":"hi"}"#,
            Some("text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for (what, body, content_type, status) in cases {
        assert_rejected(
            &chat.post_raw("alice", *body, *content_type),
            *status,
            &chat,
            what,
        );
    }

    // A body over 64 KiB, otherwise valid.
    let big = serde_json::json!({ "text": "x".repeat(65 * 1024) }).to_string();
    assert_rejected(
        &chat.post_raw("alice", big, json),
        StatusCode::PAYLOAD_TOO_LARGE,
        &chat,
        "body over 64 KiB",
    );

    // Unknown bot: POST and GET are 404.
    let ghost = host.conversation("no-such-bot", "errors");
    let answer = ghost.try_post("alice", "hi").unwrap();
    assert_eq!(
        answer.status,
        StatusCode::NOT_FOUND,
        "unknown bot: {}",
        answer.raw
    );
    answer.error();
    let answer = ghost.get_page(None, None, None);
    assert_eq!(
        answer.status,
        StatusCode::NOT_FOUND,
        "GET for an unknown bot: {}",
        answer.raw
    );
    answer.error();

    // Conversation ids outside [A-Za-z0-9._:-]{1,128}, or only dots.
    for bad in [
        "has%20space",
        "semi%3Bcolon",
        "caf%C3%A9",
        "a%2Fb",
        &"c".repeat(129),
        "...",
    ] {
        let path = format!("/api/v1/bots/echo/conversations/{bad}/messages");
        let answer = host.post_raw(&path, r#"{"text":"hi"}"#);
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "conversation id {bad:?}: {}",
            answer.raw
        );
        answer.error();
    }
    // 128 characters is still fine.
    let longest = host.conversation("echo", &"c".repeat(128));
    let id = longest.post_message("alice", "longest id");
    assert_eq!(longest.wait_for_reply(&id).text, "echo: longest id");

    // After all that, the conversation still works and holds only this.
    let id = chat.post_message("alice", "finally valid");
    chat.wait_for_reply(&id);
    let texts: Vec<String> = chat
        .messages(None, None)
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["finally valid", "echo: finally valid"]);
}

#[test]
fn a_full_queue_answers_429_and_stores_nothing() {
    // Room for one message at a time: concurrent posts must be turned away.
    let host = Host::start("workers = 1\n[queue]\nper_conversation = 2\ntotal = 2\n");
    let chat = host.conversation("echo", "crowded");
    let mut accepted: Vec<(String, String)> = Vec::new();
    let mut rejected = 0;
    for round in 0..20 {
        let barrier = Arc::new(Barrier::new(8));
        let posts: Vec<_> = (0..8)
            .map(|n| {
                let chat = chat.clone();
                let barrier = barrier.clone();
                thread::spawn(move || {
                    let text = format!("round {round} post {n}");
                    barrier.wait();
                    (text.clone(), chat.try_post("alice", &text).expect("POST"))
                })
            })
            .collect();
        for post in posts {
            let (text, answer) = post.join().unwrap();
            match answer.status {
                StatusCode::ACCEPTED => {
                    accepted.push((answer.body["id"].as_str().unwrap().to_owned(), text))
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    answer.error();
                    rejected += 1;
                }
                other => panic!("a post answered {other}: {}", answer.raw),
            }
        }
        if rejected > 0 && round >= 2 {
            break;
        }
    }
    assert!(
        rejected > 0,
        "no post got 429 with a queue of 2 and 8 concurrent posts per round"
    );
    assert!(
        !accepted.is_empty(),
        "every post got 429: the queue never admits a message"
    );

    // Exactly the accepted messages are stored, each answered once.
    for (id, _) in &accepted {
        chat.wait_for_reply(id);
    }
    let all = chat.all_messages();
    let stored: BTreeSet<(String, String)> = all
        .iter()
        .filter(|m| m.is_in())
        .map(|m| (m.id.clone(), m.text.clone()))
        .collect();
    let expected: BTreeSet<(String, String)> = accepted.iter().cloned().collect();
    assert_eq!(
        stored, expected,
        "stored inbound messages differ from the 202s ({rejected} posts got 429)"
    );
    assert_eq!(
        all.iter().filter(|m| m.is_out()).count(),
        accepted.len(),
        "one reply per accepted message"
    );

    // Once the queue drains, posts are accepted again.
    let id = chat.post_message("alice", "after the rush");
    assert_eq!(chat.wait_for_reply(&id).text, "echo: after the rush");
}

#[test]
fn settings_reach_the_bot() {
    let host = Host::start("[bots.echo]\nsettings = { prefix = \"E> \" }\n");
    let chat = host.conversation("echo", "settings");
    let id = chat.post_message("alice", "configured");
    assert_eq!(chat.wait_for_reply(&id).text, "E> configured");
}

#[test]
fn counter_is_atomic_across_parallel_conversations() {
    let host = Host::start("");
    let threads = 8;
    let per_thread = 10;
    let barrier = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let chat = host.conversation("echo", &format!("counter-{t}"));
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let ids: Vec<String> = (0..per_thread)
                    .map(|_| chat.post_message("alice", "/inc hits"))
                    .collect();
                ids.iter()
                    .map(|id| chat.wait_for_reply(id).text)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut values: Vec<u64> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .map(|text| {
            text.trim()
                .parse()
                .unwrap_or_else(|_| panic!("/inc replied {text:?}, not a number"))
        })
        .collect();
    values.sort_unstable();
    let total = (threads * per_thread) as u64;
    assert_eq!(
        values,
        (1..=total).collect::<Vec<_>>(),
        "every increment must see a distinct value, ending at {total}"
    );

    // Within one conversation the values only grow; a separate counter starts at 1.
    let chat = host.conversation("echo", "counter-check");
    let id = chat.post_message("alice", "/inc hits");
    assert_eq!(
        chat.wait_for_reply(&id).text.trim(),
        (total + 1).to_string()
    );
    let id = chat.post_message("alice", "/inc other");
    assert_eq!(chat.wait_for_reply(&id).text.trim(), "1");
}

#[test]
fn remember_and_recall() {
    let host = Host::start("");
    let chat = host.conversation("echo", "memory");
    let id = chat.post_message("alice", "/remember the blue door");
    assert_eq!(chat.wait_for_reply(&id).text, "remembered");
    let id = chat.post_message("alice", "/recall");
    assert_eq!(chat.wait_for_reply(&id).text, "the blue door");
}

#[test]
fn a_failing_message_gets_no_reply_and_later_ones_do() {
    let host = Host::start("[bots.echo]\nmax_retries = 2\n");
    let chat = host.conversation("echo", "failing");
    let failed = chat.post_message("alice", "/fail");
    let next = chat.post_message("alice", "still there?");
    assert_eq!(chat.wait_for_reply(&next).text, "echo: still there?");
    // Another conversation of the same bot is served too.
    let other = host.conversation("echo", "bystander");
    let id = other.post_message("bob", "hello");
    assert_eq!(other.wait_for_reply(&id).text, "echo: hello");

    // Give retries time to (wrongly) produce something, then check.
    let last = chat.messages(None, None).last().unwrap().id.clone();
    let late = chat.messages(Some(&last), Some(2.0));
    assert!(
        late.is_empty(),
        "unexpected messages after the last reply: {late:#?}"
    );
    let all = chat.messages(None, None);
    assert!(
        all.iter()
            .all(|m| m.reply_to.as_deref() != Some(failed.as_str())),
        "/fail was answered: {all:#?}"
    );
    let texts: Vec<&str> = all.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["/fail", "still there?", "echo: still there?"]);

    let again = chat.post_message("alice", "and again");
    assert_eq!(chat.wait_for_reply(&again).text, "echo: and again");
}
