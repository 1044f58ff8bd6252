//! The Matrix channel end to end, against a real Synapse on loopback
//! (installed by `cargo xtask test` into target/peers/synapse), with a
//! plain HTTP client as the human: invite a bot and get its echo, two bot
//! identities in one host answering each in its own rooms, a plate photo
//! answered, two bots in a group room answering people but never each
//! other, a text over the bound cut, an invite from a user not allowed
//! declined, a photo a bot sends uploaded into the room, a burst of 300
//! messages while the host is stopped (the next sync comes back `limited`)
//! answered once each, and Synapse then the host restarted mid-conversation
//! with nothing lost and nothing twice; llm-chat drafting its answer as
//! one message edited as it grows, typing meanwhile.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aviary_e2e::photos;
use aviary_e2e::synapse::{Account, Synapse};
use aviary_e2e::Host;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(90);

/// The `[matrix]` section for `accounts` (bot, localpart, password).
fn matrix_config(synapse: &Synapse, accounts: &[(&str, &str, &str)]) -> String {
    let mut out = format!(
        "[matrix]\nhomeserver = \"{}\"\nallow_inviters = [\"{}\"]\nsync_timeout_ms = 5000\n",
        synapse.base_url(),
        synapse.user_id("alice"),
    );
    for (bot, localpart, password) in accounts {
        out.push_str(&format!(
            "[[matrix.accounts]]\nbot = \"{bot}\"\nuser = \"{}\"\npassword = \"{password}\"\n",
            synapse.user_id(localpart)
        ));
    }
    out
}

/// A direct room from `human` to `bot`, joined by the bot.
fn room_with(human: &Account, bot_user: &str) -> String {
    let room = human.create_direct_room(bot_user);
    wait_until("the bot joins", || {
        human.messages(&room).iter().any(|e| {
            e["type"] == "m.room.member"
                && e["state_key"] == bot_user
                && e["content"]["membership"] == "join"
        })
    });
    room
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The bodies of the `m.room.message`s `sender` sent in `room`, oldest first.
fn said_by(human: &Account, room: &str, sender: &str) -> Vec<Value> {
    human
        .messages(room)
        .into_iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] == sender)
        .collect()
}

fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits until `sender` said `count` messages in `room`; returns them.
fn wait_for_said(human: &Account, room: &str, sender: &str, count: usize) -> Vec<Value> {
    let mut said = Vec::new();
    wait_until(&format!("{sender} says {count} messages"), || {
        said = said_by(human, room, sender);
        said.len() >= count
    });
    said
}

#[test]
fn invited_bots_answer_in_their_own_rooms_with_replies_photos_and_allowlist() {
    let synapse = Synapse::start();
    let alice = synapse.register("alice", "alice-password", false);
    let mallory = synapse.register("mallory", "mallory-password", false);
    synapse.register("echo-bot", "echo-password", false);
    synapse.register("plate-bot", "plate-password", false);
    let echo = synapse.user_id("echo-bot");
    let plates = synapse.user_id("plate-bot");
    let host = Host::start(&matrix_config(
        &synapse,
        &[
            ("echo", "echo-bot", "echo-password"),
            ("plate-lookup", "plate-bot", "plate-password"),
        ],
    ));
    let out = host.import_data(
        "plate-lookup",
        "register",
        "plate,status,make,colour,notes\nAB-123-CD,stolen,Renault Clio,grey,Reported stolen\n",
    );
    assert!(out.contains("imported 1 rows"), "{out}");

    // Invite, write, get the echo as a reply to the message.
    let echo_room = room_with(&alice, &echo);
    let asked = alice.send_text(&echo_room, "hello **Matrix**");
    let said = wait_for_said(&alice, &echo_room, &echo, 1);
    assert_eq!(bodies(&said), ["echo: hello **Matrix**"]);
    let content = &said[0]["content"];
    assert_eq!(
        content["m.relates_to"]["m.in_reply_to"]["event_id"],
        asked.as_str()
    );
    wait_until("echo marks the message read", || {
        let sync = alice.sync(None, 0);
        let ephemeral = sync["rooms"]["join"][&echo_room]["ephemeral"]["events"].as_array();
        ephemeral
            .into_iter()
            .flatten()
            .any(|e| e["type"] == "m.receipt" && e["content"][&asked]["m.read"][&echo].is_object())
    });
    assert_eq!(content["format"], "org.matrix.custom.html");
    assert!(
        content["formatted_body"]
            .as_str()
            .unwrap()
            .contains("<strong>Matrix</strong>"),
        "{content}"
    );

    // The second identity answers in its own room, and only there.
    let plate_room = room_with(&alice, &plates);
    let photo = photos::car("AB-123-CD", 70, 90);
    let mxc = alice.upload(&photo, "image/jpeg");
    alice.send_image(&plate_room, &mxc, "car.jpg", "image/jpeg", photo.len());
    let said = wait_for_said(&alice, &plate_room, &plates, 1);
    let answer = &bodies(&said)[0];
    assert!(
        answer.contains("AB-123-CD") && answer.contains("status: stolen"),
        "{answer}"
    );
    assert!(
        said_by(&alice, &plate_room, &echo).is_empty(),
        "echo spoke in the plate room"
    );
    assert_eq!(said_by(&alice, &echo_room, &plates).len(), 0);

    // A group room: the bot hears who wrote, and answers each. Both bots
    // are in it and answer every message, but never each other: what they
    // say is a notice, which bots leave unanswered (else they would answer
    // each other forever).
    let group = alice.create_room(&json!({ "preset": "public_chat", "name": "group" }));
    mallory.join(&group);
    for bot in [&echo, &plates] {
        alice.invite(&group, bot);
        wait_until("the bot joins the group", || {
            alice
                .messages(&group)
                .iter()
                .any(|e| e["state_key"] == bot.as_str() && e["content"]["membership"] == "join")
        });
    }
    alice.send_text(&group, "from alice");
    mallory.send_text(&group, "from mallory");
    let said = wait_for_said(&alice, &group, &echo, 2);
    assert_eq!(bodies(&said), ["echo: from alice", "echo: from mallory"]);
    assert!(said.iter().all(|e| e["content"]["msgtype"] == "m.notice"));
    wait_for_said(&alice, &group, &plates, 2);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        said_by(&alice, &group, &echo).len(),
        2,
        "echo answered a bot"
    );
    assert_eq!(
        said_by(&alice, &group, &plates).len(),
        2,
        "plates answered a bot"
    );
    let senders: Vec<String> = host
        .conversation("echo", &conversation_of(&echo, &group))
        .all_messages()
        .into_iter()
        .filter(|m| !m.is_out())
        .map(|m| m.sender)
        .collect();
    assert_eq!(senders, [alice.user_id(), mallory.user_id()]);

    // A text over the channel's bound (a homeserver takes 64 KiB) reaches
    // the bot cut, with a marker, rather than whole.
    alice.send_text(&echo_room, &"long ".repeat(8000));
    wait_for_said(&alice, &echo_room, &echo, 2);
    let heard = host
        .conversation("echo", &conversation_of(&echo, &echo_room))
        .all_messages()
        .into_iter()
        .filter(|m| !m.is_out())
        .last()
        .unwrap()
        .text;
    assert!(
        heard.len() <= 16 * 1024 && heard.ends_with('…'),
        "{}",
        heard.len()
    );

    // An invite from a user not on the allowlist is declined.
    let refused = mallory.create_direct_room(&echo);
    wait_until("echo declines mallory's invite", || {
        mallory
            .messages(&refused)
            .iter()
            .any(|e| e["state_key"] == echo.as_str() && e["content"]["membership"] == "leave")
    });
    assert!(host.log().contains("declining an invite"), "{}", host.log());
}

#[test]
fn a_burst_while_the_host_is_down_and_restarts_of_both_lose_nothing_and_double_nothing() {
    let mut synapse = Synapse::start();
    let alice = synapse.register("alice", "alice-password", false);
    synapse.register("echo-bot", "echo-password", false);
    let echo = synapse.user_id("echo-bot");
    let mut host = Host::start(&matrix_config(
        &synapse,
        &[("echo", "echo-bot", "echo-password")],
    ));
    let room = room_with(&alice, &echo);
    alice.send_text(&room, "first");
    wait_for_said(&alice, &room, &echo, 1);

    // 300 messages while the host is down: more than one sync timeline holds.
    host.kill();
    let sent: Vec<String> = (0..300).map(|n| format!("burst {n}")).collect();
    for text in &sent {
        alice.send_text(&room, text);
    }
    host.restart();
    wait_for_said(&alice, &room, &echo, 301);
    assert!(
        host.log().contains("filled a cut Matrix timeline"),
        "no limited sync was seen"
    );
    let mut expected = vec!["echo: first".to_owned()];
    expected.extend(sent.iter().map(|t| format!("echo: {t}")));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        bodies(&said_by(&alice, &room, &echo)),
        expected,
        "each answered once, in order"
    );

    // Synapse restarts mid-conversation, then the host.
    for n in 0..5 {
        alice.send_text(&room, &format!("before {n}"));
    }
    synapse.stop();
    synapse.start_again();
    host.restart();
    for n in 0..5 {
        alice.send_text(&room, &format!("after {n}"));
    }
    let said = wait_for_said(&alice, &room, &echo, 311);
    std::thread::sleep(Duration::from_secs(3));
    let said_now = said_by(&alice, &room, &echo);
    assert_eq!(said_now.len(), said.len(), "an answer came twice");
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for body in bodies(&said_now) {
        *counts.entry(body).or_default() += 1;
    }
    for n in 0..5 {
        assert_eq!(
            counts.get(&format!("echo: before {n}")),
            Some(&1),
            "{counts:?}"
        );
        assert_eq!(
            counts.get(&format!("echo: after {n}")),
            Some(&1),
            "{counts:?}"
        );
    }
    assert!(counts.values().all(|&c| c == 1), "{counts:?}");
}

/// The `alerts` bot over Matrix: a subscription made in a room, then an
/// alert from its webhook broadcast into that room (a proactive message,
/// sent from an event of no conversation), and `/ack` answered there.
#[test]
fn alerts_subscribed_in_a_matrix_room_arrive_there_from_the_webhook() {
    let token = "matrix-alerts-token-0123456789";
    let synapse = Synapse::start();
    let alice = synapse.register("alice", "alice-password", false);
    synapse.register("alerts-bot", "alerts-password", false);
    let bot = synapse.user_id("alerts-bot");
    let host = Host::start(&format!(
        "{}[bots.alerts.settings]\nrepeat_ms = \"60000\"\n[bots.alerts.hooks.monitor]\ntoken = \"{token}\"\n",
        matrix_config(&synapse, &[("alerts", "alerts-bot", "alerts-password")])
    ));
    let room = room_with(&alice, &bot);
    alice.send_text(&room, "/subscribe disk");
    wait_for_said(&alice, &room, &bot, 1);
    let status = host
        .client()
        .post(host.url(&format!("/api/v1/hooks/alerts/monitor?token={token}")))
        .header("content-type", "application/json")
        .body(r#"{"id":"m1","topic":"disk","text":"/var is 95% full"}"#)
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 202);
    let said = wait_for_said(&alice, &room, &bot, 2);
    assert!(
        bodies(&said)[1].contains("/var is 95% full"),
        "{:?}",
        bodies(&said)
    );
}

/// `ticket-forward` over Matrix, in front of the real django-helpdesk: the
/// room's first message opens a ticket that says it came from Matrix, and
/// the operator's answer comes back into the room.
#[test]
fn a_matrix_room_becomes_a_helpdesk_ticket_and_the_operator_answers_there() {
    use aviary_e2e::helpdesk::Helpdesk;
    let hook_token = "matrix-helpdesk-hook-token-0123456789";
    let policies = tempfile::tempdir().unwrap();
    let mut helpdesk = Helpdesk::start(&[], &[]);
    helpdesk.write_grant(policies.path());
    let synapse = Synapse::start();
    let alice = synapse.register("alice", "alice-password", false);
    synapse.register("support", "support-password", false);
    let bot = synapse.user_id("support");
    let host = Host::start(&format!(
        "policies_dir = \"{}\"\n[bots.ticket-forward.settings]\nhelpdesk_url = \"{}\"\n\
         [bots.ticket-forward.secrets]\nHELPDESK_AUTH = \"{}\"\n\
         [bots.ticket-forward.hooks.helpdesk]\ntoken = \"{hook_token}\"\nmax_body_bytes = 1048576\n{}",
        policies.path().display(),
        helpdesk.base_url(),
        helpdesk.auth_header(),
        matrix_config(&synapse, &[("ticket-forward", "support", "support-password")])
    ));
    let hook = host.url(&format!(
        "/api/v1/hooks/ticket-forward/helpdesk?token={hook_token}"
    ));
    helpdesk.set_webhooks(&[hook.clone()], &[hook]);
    helpdesk.start_again();

    let room = room_with(&alice, &bot);
    alice.send_text(&room, "The printer is on fire");
    let mut opened = Vec::new();
    wait_until("the bot says the ticket is open", || {
        opened = bodies(&said_by(&alice, &room, &bot));
        opened.iter().any(|b| b.starts_with("🎫 Ticket #"))
    });
    let tickets = helpdesk.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    assert_eq!(tickets[0]["title"], "The printer is on fire");
    let description = tickets[0]["description"].as_str().unwrap();
    assert!(description.contains(" on matrix)"), "{description}");
    let id = tickets[0]["id"].as_i64().unwrap();
    helpdesk.post_followup_as_operator(id, "Please step away from it.");
    wait_until("the operator's answer reaches the room", || {
        bodies(&said_by(&alice, &room, &bot))
            .iter()
            .any(|b| b.contains("Please step away from it."))
    });
}

/// The conversation id the host gives `room` for the account of `user`
/// (as `channels::matrix::rooms::conversation_of` derives it).
fn conversation_of(user: &str, room: &str) -> String {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(format!("{user}\n{room}")));
    format!("mx-{}", &digest[..24])
}

/// Whether `event` edits another (`m.replace`).
fn is_edit(event: &Value) -> bool {
    event["content"]["m.relates_to"]["rel_type"] == "m.replace"
}

/// llm-chat over Matrix: the bot shows as typing while the model starts,
/// its drafts are one message edited as the answer grows, the answer is the
/// last edit of that message (not a second one), and typing stops then.
#[test]
fn llm_chat_drafts_its_answer_as_one_edited_message_and_types_meanwhile() {
    let synapse = Synapse::start();
    let alice = synapse.register("alice", "alice-password", false);
    synapse.register("llm-bot", "llm-password", false);
    let bot = synapse.user_id("llm-bot");
    let settings = "[bots.llm-chat.settings]\nmax_tokens = \"48\"\ntemperature = \"0\"\n";
    let host = Host::start(&format!(
        "{}{settings}",
        matrix_config(&synapse, &[("llm-chat", "llm-bot", "llm-password")])
    ));
    let room = room_with(&alice, &bot);
    let chat = host.conversation("llm-chat", &conversation_of(&bot, &room));
    let mut since = alice.sync(None, 0)["next_batch"]
        .as_str()
        .map(str::to_owned);

    alice.send_text(&room, "Hello! Tell me about the sea.");
    // Follow the room as a client would, noting who is typing, until the
    // host has the bot's answer and the room shows it.
    let mut typing = Typing::default();
    let deadline = Instant::now() + WAIT;
    let answer = loop {
        assert!(Instant::now() < deadline, "no answer from llm-chat");
        typing.follow(&alice, &room, &bot, &mut since);
        let out = chat.all_messages().into_iter().find(|m| m.is_out());
        if let Some(out) = out {
            break out.text;
        }
    };
    assert!(!answer.is_empty());
    wait_until("the answer is the draft's last edit", || {
        said_by(&alice, &room, &bot)
            .iter()
            .filter(|e| is_edit(e))
            .any(|e| e["content"]["m.new_content"]["body"] == answer.as_str())
    });
    let said = said_by(&alice, &room, &bot);
    let (edits, drafts): (Vec<Value>, Vec<Value>) = said.into_iter().partition(is_edit);
    assert_eq!(drafts.len(), 1, "one message, edited: {drafts:#?}");
    let draft = &drafts[0];
    assert!(!draft["content"]["body"].as_str().unwrap().is_empty());
    assert!(
        edits
            .iter()
            .all(|e| e["content"]["m.relates_to"]["event_id"] == draft["event_id"]),
        "every edit replaces the draft: {edits:#?}"
    );
    let last = &edits.last().unwrap()["content"];
    assert_eq!(last["m.new_content"]["body"], answer.as_str());
    assert_eq!(last["body"], format!("* {answer}").as_str(), "the fallback");

    assert!(typing.seen, "the bot never showed as typing");
    let deadline = Instant::now() + Duration::from_secs(20);
    while typing.now.iter().any(|u| u == bot.as_str()) {
        assert!(
            Instant::now() < deadline,
            "the bot still types: {:?}",
            typing.now
        );
        typing.follow(&alice, &room, &bot, &mut since);
    }
}

/// Who types in a room, as a client following it sees.
#[derive(Default)]
struct Typing {
    /// `bot` was seen typing.
    seen: bool,
    /// Who types now.
    now: Vec<Value>,
}

impl Typing {
    /// One `/sync` of `human` (up to a second) from `since`, which moves on.
    fn follow(&mut self, human: &Account, room: &str, bot: &str, since: &mut Option<String>) {
        let sync = human.sync(since.as_deref(), 1000);
        *since = sync["next_batch"].as_str().map(str::to_owned);
        let ephemeral = sync["rooms"]["join"][room]["ephemeral"]["events"].as_array();
        for event in ephemeral.into_iter().flatten() {
            if event["type"] == "m.typing" {
                self.now = event["content"]["user_ids"].as_array().cloned().unwrap();
                self.seen |= self.now.iter().any(|u| u == bot);
            }
        }
    }
}

/// A file a bot sends goes out as an upload: the room shows an `m.image`
/// whose `mxc://` URI, fetched through the authenticated media API, gives
/// the bot's bytes. (No shipped bot sends files; `file-snoop` makes one.)
#[test]
fn a_photo_the_bot_sends_is_uploaded_into_the_room() {
    let synapse = Synapse::start();
    let alice = synapse.register("alice", "alice-password", false);
    synapse.register("snoop-bot", "snoop-password", false);
    let bot = synapse.user_id("snoop-bot");
    let plugins = tempfile::tempdir().unwrap();
    let policies = tempfile::tempdir().unwrap();
    for file in ["file-snoop.wasm", "file-snoop.toml"] {
        let from = aviary_e2e::hostile_dir().join(file);
        std::fs::copy(from, plugins.path().join(file)).unwrap();
    }
    std::fs::write(
        policies.path().join("file-snoop.toml"),
        aviary_e2e::FILE_SNOOP_POLICY,
    )
    .unwrap();
    let config = format!(
        "policies_dir = \"{}\"\n{}",
        policies.path().display(),
        matrix_config(&synapse, &[("file-snoop", "snoop-bot", "snoop-password")])
    );
    let _host = Host::start_with_plugins(&config, plugins.path());
    let room = room_with(&alice, &bot);
    alice.send_text(&room, "send-made");
    let said = wait_for_said(&alice, &room, &bot, 3);
    assert_eq!(bodies(&said), ["a dot", "dot.png", "ok"]);
    let image = &said[1]["content"];
    assert_eq!(image["msgtype"], "m.image", "{image}");
    assert_eq!(image["info"]["mimetype"], "image/png", "{image}");
    let bytes = alice.download(image["url"].as_str().unwrap());
    assert_eq!(bytes.len() as u64, image["info"]["size"].as_u64().unwrap());
    assert!(bytes.starts_with(b"\x89PNG"), "{bytes:?}");
}

/// The homeserver answers the bot's sends 429 (a tight `rc_message` for
/// everyone but the human): the replies wait out `retry_after_ms` and all
/// arrive, once each and in order.
#[test]
fn replies_past_the_rate_limit_wait_it_out_and_arrive_once_in_order() {
    let synapse =
        Synapse::start_with_config(&json!({ "rc_message": { "per_second": 1, "burst_count": 2 } }));
    let alice = synapse.register("alice", "alice-password", true);
    let exempt = alice.raw(
        reqwest::Method::POST,
        &format!(
            "/_synapse/admin/v1/users/{}/override_ratelimit",
            alice.user_id()
        ),
        Some(&json!({ "messages_per_second": 0, "burst_count": 0 })),
    );
    assert!(exempt.status.is_success(), "{}", exempt.raw);
    synapse.register("echo-bot", "echo-password", false);
    let echo = synapse.user_id("echo-bot");
    let host = Host::start(&matrix_config(
        &synapse,
        &[("echo", "echo-bot", "echo-password")],
    ));
    let room = room_with(&alice, &echo);
    let sent: Vec<String> = (0..8).map(|n| format!("quick {n}")).collect();
    for text in &sent {
        alice.send_text(&room, text);
    }
    wait_for_said(&alice, &room, &echo, sent.len());
    std::thread::sleep(Duration::from_secs(2));
    let expected: Vec<String> = sent.iter().map(|t| format!("echo: {t}")).collect();
    assert_eq!(bodies(&said_by(&alice, &room, &echo)), expected);
    assert!(
        host.log().contains("rate limited by the homeserver"),
        "the homeserver never said 429: {}",
        host.log()
    );
}
