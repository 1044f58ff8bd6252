//! The durability promise: a message that got its 202 is on disk, and after
//! SIGKILL and a restart on the same data dir it is answered exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use aviary_e2e::{assert_increasing, Conversation, Host, Message};
use reqwest::StatusCode;

const SENDERS: usize = 8;
/// Kill once this many posts have been acknowledged (the senders keep going).
const KILL_AFTER_ACKS: usize = 150;

#[test]
fn acknowledged_messages_survive_sigkill_and_are_answered_exactly_once() {
    // One worker, so that events queue up behind the posts and some are
    // still waiting for the bot when the host dies.
    let mut host = Host::start("workers = 1\n");
    // Six senders in conversations of their own, two sharing one.
    let chats: Vec<Conversation> = (0..SENDERS)
        .map(|n| {
            host.conversation(
                "echo",
                &if n < 6 {
                    format!("durable-{n}")
                } else {
                    "durable-shared".to_owned()
                },
            )
        })
        .collect();

    let acked: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default(); // (conversation, id, text)
    let ack_count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = chats
        .iter()
        .cloned()
        .enumerate()
        .map(|(n, chat)| {
            let (acked, ack_count, stop) = (acked.clone(), ack_count.clone(), stop.clone());
            thread::spawn(move || {
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) && sent < 10_000 {
                    let text = format!("sender {n} message {sent}");
                    sent += 1;
                    match chat.try_post(&format!("sender-{n}"), &text) {
                        Ok(answer) if answer.status == StatusCode::ACCEPTED => {
                            let id = answer.body["id"].as_str().expect("id").to_owned();
                            acked
                                .lock()
                                .unwrap()
                                .push((chat.conversation.clone(), id, text));
                            ack_count.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(answer) => panic!("POST answered {} {}", answer.status, answer.raw),
                        // The host was killed under us: stop sending.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(120);
    while ack_count.load(Ordering::Relaxed) < KILL_AFTER_ACKS {
        assert!(
            Instant::now() < deadline,
            "only {} posts acknowledged in 120 s",
            ack_count.load(Ordering::Relaxed)
        );
        thread::sleep(Duration::from_millis(5));
    }
    host.kill();
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().expect("a sender thread panicked");
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() >= KILL_AFTER_ACKS);

    host.restart();
    let chats: Vec<Conversation> = {
        let names: BTreeSet<String> = chats.iter().map(|c| c.conversation.clone()).collect();
        names
            .iter()
            .map(|name| host.conversation("echo", name))
            .collect()
    };

    // Wait until every acknowledged message has a reply (they are queued
    // again on start), then let the host settle and look at everything.
    let resumed = host
        .log()
        .lines()
        .filter(|l| l.contains("resuming"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    eprintln!(
        "{} posts acknowledged before SIGKILL; host on restart: {resumed:?}",
        acked.len()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let unanswered = unanswered(&chats, &acked);
        if unanswered.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged messages have no reply 120 s after the restart, e.g. {:?}",
            unanswered.len(),
            acked.len(),
            &unanswered[..unanswered.len().min(5)]
        );
        thread::sleep(Duration::from_millis(250));
    }
    thread::sleep(Duration::from_secs(2));

    let mut stored: BTreeMap<(String, String), Message> = BTreeMap::new();
    let mut replies: BTreeMap<(String, String), Vec<Message>> = BTreeMap::new();
    for chat in &chats {
        let all = chat.all_messages();
        assert_increasing(&all);
        for message in all {
            let key = (chat.conversation.clone(), message.id.clone());
            if let Some(to) = &message.reply_to {
                replies
                    .entry((chat.conversation.clone(), to.clone()))
                    .or_default()
                    .push(message.clone());
            }
            stored.insert(key, message);
        }
    }
    for (conversation, id, text) in &acked {
        let key = (conversation.clone(), id.clone());
        let message = stored
            .get(&key)
            .unwrap_or_else(|| panic!("acknowledged {id} ({text:?}) in {conversation} is lost"));
        assert_eq!(
            (message.text.as_str(), message.direction.as_str()),
            (text.as_str(), "in"),
            "{id} in {conversation}"
        );
        let answers = replies.get(&key).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            answers.len(),
            1,
            "{id} ({text:?}) in {conversation} was answered {} times: {answers:#?}",
            answers.len()
        );
        assert_eq!(answers[0].text, format!("echo: {text}"));
    }
    // Messages stored without a 202 reaching us (in flight at the kill) must
    // be answered at most once too, and every reply answers a stored message.
    for ((conversation, to), answers) in &replies {
        assert_eq!(
            answers.len(),
            1,
            "{to} in {conversation} was answered {} times: {answers:#?}",
            answers.len()
        );
        let answered = stored.get(&(conversation.clone(), to.clone()));
        assert!(
            answered.is_some_and(Message::is_in),
            "a reply answers {to}, which is no stored inbound message"
        );
    }

    // The restarted host still takes new messages.
    let id = chats[0].post_message("alice", "after the crash");
    assert_eq!(chats[0].wait_for_reply(&id).text, "echo: after the crash");
}

/// Acknowledged messages that have no reply yet.
fn unanswered(chats: &[Conversation], acked: &[(String, String, String)]) -> Vec<(String, String)> {
    let mut answered: BTreeSet<(String, String)> = BTreeSet::new();
    for chat in chats {
        for message in chat.all_messages() {
            if let Some(to) = message.reply_to {
                answered.insert((chat.conversation.clone(), to));
            }
        }
    }
    acked
        .iter()
        .map(|(conversation, id, _)| (conversation.clone(), id.clone()))
        .filter(|key| !answered.contains(key))
        .collect()
}

#[test]
fn served_history_survives_sigkill_unchanged() {
    let mut host = Host::start("");
    let chat = host.conversation("echo", "kept");
    let id = chat.post_message("alice", "/remember across restarts");
    chat.wait_for_reply(&id);
    let id = chat.post_message("alice", "/inc restarts");
    assert_eq!(chat.wait_for_reply(&id).text.trim(), "1");
    let before = chat.all_messages();

    host.kill();
    host.restart();
    let chat = host.conversation("echo", "kept");
    thread::sleep(Duration::from_millis(500));
    // Every message the host served before the kill (ids, texts, replies)
    // is still there, unchanged: a client that saw a reply must not see it
    // vanish, nor a second answer to the same message appear.
    assert_eq!(
        chat.all_messages(),
        before,
        "history served before SIGKILL changed after the restart"
    );

    // The bot's own storage survived, and new ids sort after the old ones.
    let id = chat.post_message("alice", "/recall");
    assert!(
        id > before.last().unwrap().id,
        "new id {id} sorts before the old {}",
        before.last().unwrap().id
    );
    assert_eq!(chat.wait_for_reply(&id).text, "across restarts");
    let id = chat.post_message("alice", "/inc restarts");
    assert_eq!(chat.wait_for_reply(&id).text.trim(), "2");
}
