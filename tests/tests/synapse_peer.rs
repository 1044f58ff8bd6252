//! The Synapse peer itself: accounts through the shared-secret admin API, a
//! room between a human and a bot, `/sync` in order, a gap that a limited
//! timeline leaves and `/messages` fills, authenticated media, a restart
//! that keeps tokens, history and media, and rate limits a test tightens.

use std::time::{Duration, Instant};

use aviary_e2e::photos;
use aviary_e2e::synapse::{self, Account, Synapse};
use reqwest::blocking::Client;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Incremental syncs from `*since` (moved on to each answer's
/// `next_batch`), each answer shown to `found`, until it says so; returns
/// that answer; panics after 30 s.
fn sync_until(
    account: &Account,
    since: &mut String,
    mut found: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = account.sync(Some(since), 2_000);
        *since = answer["next_batch"]
            .as_str()
            .unwrap_or_else(|| panic!("no next_batch in {answer}"))
            .to_owned();
        if found(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{} never synced what the test waits for",
            account.user_id()
        );
    }
}

/// The `m.room.message` events of `events`.
fn room_messages(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .collect()
}

fn event_ids(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| event["event_id"].as_str().expect("an event_id").to_owned())
        .collect()
}

#[test]
fn synapse_rooms_sync_gaps_media_and_restart() {
    let mut synapse = Synapse::start();
    let base = synapse.base_url();
    assert_eq!(base, format!("http://127.0.0.1:{}", synapse.port()));
    assert_eq!(synapse.server_name(), "localhost");
    let anonymous = Client::builder().no_proxy().build().unwrap();

    // Accounts come from the shared-secret admin API only.
    let human = synapse.register("alice", "alice-password", false);
    let bot = synapse.register("aviary-bot", "bot-password", false);
    assert_eq!(human.user_id(), synapse.user_id("alice"));
    assert_eq!(bot.user_id(), "@aviary-bot:localhost");
    assert_eq!(human.whoami(), human.user_id());
    assert_eq!(bot.whoami(), bot.user_id());
    assert_ne!(human.access_token(), bot.access_token());
    let open = anonymous
        .post(format!("{base}/_matrix/client/v3/register"))
        .json(&json!({
            "username": "mallory",
            "password": "mallory-password",
            "auth": { "type": "m.login.dummy" },
        }))
        .send()
        .unwrap();
    assert_eq!(open.status(), StatusCode::FORBIDDEN, "open registration");

    // The human opens a room and invites the bot, who joins.
    let mut since = bot.sync(None, 0)["next_batch"]
        .as_str()
        .expect("next_batch of the initial sync")
        .to_owned();
    let room = human.create_room(&json!({ "name": "Support", "preset": "private_chat" }));
    // Room version 12 ids are `!<hash>`, with no server name.
    assert!(room.starts_with('!'), "{room}");
    human.invite(&room, bot.user_id());
    sync_until(&bot, &mut since, |sync| {
        sync["rooms"]["invite"][&room].is_object()
    });
    assert_eq!(bot.join(&room), room);
    sync_until(&bot, &mut since, |sync| {
        sync["rooms"]["join"][&room].is_object()
    });

    // Three texts and an image reach the bot's /sync in order.
    let texts = ["Hello, bot!", "Is anybody there?", "Ünïcödé & <markup> ✓"];
    let mut sent: Vec<String> = texts
        .iter()
        .map(|text| human.send_text(&room, text))
        .collect();
    let image = photos::car("SYN 163", 40, 85);
    let mxc = human.upload(&image, "image/jpeg");
    assert!(mxc.starts_with("mxc://localhost/"), "{mxc}");
    sent.push(human.send_image(&room, &mxc, "car.jpg", "image/jpeg", image.len()));

    let mut received: Vec<Value> = Vec::new();
    sync_until(&bot, &mut since, |sync| {
        let timeline = &sync["rooms"]["join"][&room]["timeline"];
        assert_ne!(timeline["limited"], json!(true), "a gap in {timeline}");
        let events = synapse::timeline_events(sync, &room);
        received.extend(room_messages(&events).into_iter().cloned());
        received.len() >= sent.len()
    });
    assert_eq!(event_ids(&received.iter().collect::<Vec<_>>()), sent);
    for (event, text) in received.iter().zip(texts) {
        assert_eq!(event["sender"], human.user_id());
        assert_eq!(event["content"]["msgtype"], "m.text");
        assert_eq!(event["content"]["body"], text);
    }
    let shown = &received[3]["content"];
    assert_eq!(shown["msgtype"], "m.image");
    assert_eq!(shown["url"], mxc.as_str());
    assert_eq!(shown["info"]["size"], json!(image.len()));

    // 150 messages while nobody syncs: far past the default rate limit
    // (ten at once), and past the default filter's timeline of ten.
    let gap_since = since.clone();
    let burst: Vec<String> = (0..150)
        .map(|n| human.send_text(&room, &format!("burst {n}")))
        .collect();
    let sync = bot.sync(Some(&gap_since), 0);
    since = sync["next_batch"].as_str().expect("next_batch").to_owned();
    let timeline = &sync["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["limited"], json!(true), "{timeline}");
    let newest = synapse::timeline_events(&sync, &room);
    assert!(
        !newest.is_empty() && newest.len() < burst.len(),
        "a capped timeline of {} events",
        newest.len()
    );
    let prev_batch = timeline["prev_batch"].as_str().expect("prev_batch");
    let gap = bot.messages_between(&room, Some(prev_batch), Some(&gap_since));
    assert!(!gap.is_empty(), "/messages filled nothing");
    let filled: Vec<&Value> = gap.iter().chain(&newest).collect();
    // Exactly the burst, each once, in order: nothing else in between.
    assert_eq!(event_ids(&filled), burst);
    for (n, event) in filled.iter().enumerate() {
        assert_eq!(event["content"]["body"], format!("burst {n}"));
    }

    // The whole history, as either member reads it.
    let history: Vec<String> = sent.iter().chain(&burst).cloned().collect();
    assert_eq!(event_ids(&room_messages(&human.messages(&room))), history);

    // Stopped, it refuses connections; started again, the tokens, the sync
    // position, the history and the media are all still there.
    let port = synapse.port();
    synapse.stop();
    assert!(anonymous
        .get(format!("{base}/_matrix/client/versions"))
        .send()
        .is_err());
    synapse.start_again();
    assert_eq!(synapse.port(), port);
    assert_eq!(human.whoami(), human.user_id());
    assert_eq!(bot.whoami(), bot.user_id());

    let after = human.send_text(&room, "After the restart.");
    let sync = sync_until(&bot, &mut since, |sync| {
        !room_messages(&synapse::timeline_events(sync, &room)).is_empty()
    });
    let events = synapse::timeline_events(&sync, &room);
    assert_eq!(
        event_ids(&room_messages(&events)),
        std::slice::from_ref(&after)
    );
    assert_ne!(
        sync["rooms"]["join"][&room]["timeline"]["limited"],
        json!(true)
    );
    let history: Vec<String> = history.into_iter().chain([after]).collect();
    assert_eq!(event_ids(&room_messages(&bot.messages(&room))), history);

    // Media: the bytes back through the authenticated v1 path only.
    assert_eq!(bot.download(&mxc), image);
    let media_id = mxc.rsplit('/').next().unwrap();
    let legacy = bot.raw(
        Method::GET,
        &format!("/_matrix/media/v3/download/localhost/{media_id}"),
        None,
    );
    assert_eq!(legacy.status, StatusCode::NOT_FOUND, "{}", legacy.raw);
    let unauthenticated = anonymous
        .get(format!(
            "{base}/_matrix/client/v1/media/download/localhost/{media_id}"
        ))
        .send()
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn synapse_with_a_tight_message_rate_limit_answers_429() {
    let synapse = Synapse::start_with_config(&json!({
        "rc_message": { "per_second": 0.1, "burst_count": 3 },
    }));
    let human = synapse.register("hasty", "hasty-password", false);
    let room = human.create_room(&json!({ "preset": "private_chat" }));
    let room = room.replace('!', "%21").replace(':', "%3A");
    let answers: Vec<_> = (0..6)
        .map(|n| {
            human.raw(
                Method::PUT,
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/hasty-{n}"),
                Some(&json!({ "msgtype": "m.text", "body": format!("hasty {n}") })),
            )
        })
        .collect();
    let statuses: Vec<StatusCode> = answers.iter().map(|answer| answer.status).collect();
    assert_eq!(statuses[0], StatusCode::OK, "{statuses:?}");
    let limited = answers
        .iter()
        .find(|answer| answer.status == StatusCode::TOO_MANY_REQUESTS)
        .unwrap_or_else(|| panic!("six quick messages, no 429: {statuses:?}"));
    assert_eq!(
        limited.body["errcode"], "M_LIMIT_EXCEEDED",
        "{}",
        limited.raw
    );
}
