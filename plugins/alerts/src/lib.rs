//! `alerts`: alerts from a monitoring system, broadcast to the people who
//! subscribed to their topic, repeated until someone acknowledges them.
//!
//! - `/subscribe <topic>` and `/unsubscribe <topic>` in any conversation;
//!   `/topics` lists the conversation's subscriptions.
//! - The monitoring system posts JSON `{"id": "...", "topic": "...",
//!   "text": "..."}` to the bot's webhook (hook `monitor`, signed; the host
//!   checks the signature). The bot sends the alert into every subscribed
//!   conversation (a proactive message) and sets a repeating timer.
//! - Every `repeat_ms` (setting, default 60000) the alert is sent again to
//!   the subscribers, until someone subscribed to its topic answers `/ack`
//!   (all open alerts of the conversation's topics) or `/ack <id>`.
//!
//! State lives in kv: `sub/<topic>/<conversation>`, `alert/<id>`.

use aviary_sdk::{Bot, Event, Host, Message, Settings, Timer, Webhook};
use serde::{Deserialize, Serialize};

/// Repeat period when the `repeat_ms` setting is absent.
pub const DEFAULT_REPEAT_MS: u64 = 60_000;
/// The hook the monitoring system posts to.
pub const HOOK: &str = "monitor";

/// An alert as the monitoring system posts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub topic: String,
    pub text: String,
    /// How many times it was sent (kept by the bot).
    #[serde(default)]
    pub sent: u32,
}

/// The alerts bot.
#[derive(Default)]
pub struct Alerts;

impl Bot for Alerts {
    fn init(settings: &Settings) -> Result<(), String> {
        match settings.get("repeat_ms").map(str::parse::<u64>) {
            Some(Ok(ms)) if ms < 1000 => Err("setting `repeat_ms` must be at least 1000".into()),
            Some(Err(_)) => Err("setting `repeat_ms` must be a number of milliseconds".into()),
            _ => Ok(()),
        }
    }

    fn handle(&mut self, host: &mut dyn Host, event: Event) -> Result<(), String> {
        match event {
            Event::Message(message) => on_message(host, &message),
            Event::Timer(timer) => on_timer(host, &timer),
            Event::ContactAdded(_) => Ok(()),
        }
    }

    fn webhook(&mut self, host: &mut dyn Host, request: Webhook) -> Result<(), String> {
        if request.hook != HOOK {
            return Ok(());
        }
        let alert: Alert = match serde_json::from_slice(&request.body) {
            Ok(alert) => alert,
            Err(error) => {
                // A malformed alert is the sender's mistake: retrying it
                // cannot help, so it is logged and dropped.
                host.log(aviary_sdk::Level::Warn, &format!("not an alert: {error}"));
                return Ok(());
            }
        };
        if !valid_part(&alert.topic) || !aviary_sdk::ids::is_valid_id(&alert.id) {
            host.log(
                aviary_sdk::Level::Warn,
                "an alert needs an id and a topic of A-Z a-z 0-9 . _ -",
            );
            return Ok(());
        }
        if kv(host.kv_get(&alert_key(&alert.id)))?.is_some() {
            return Ok(()); // The same alert again: it repeats already.
        }
        let alert = broadcast(host, Alert { sent: 0, ..alert })?;
        let every = repeat_ms(host);
        host.timer_set(&timer_id(&alert.id), every, Some(every), None, &alert.id)
            .map_err(|e| format!("cannot set the repeat timer: {e}"))
    }
}

fn on_message(host: &mut dyn Host, message: &Message) -> Result<(), String> {
    let text = message.text.trim();
    let (command, arg) = text.split_once(' ').unwrap_or((text, ""));
    let arg = arg.trim();
    let answer = match command {
        "/subscribe" if valid_part(arg) => {
            kv(host.kv_set(&sub_key(arg, &message.conversation), b""))?;
            format!("subscribed to `{arg}`; /ack acknowledges its alerts")
        }
        "/unsubscribe" if valid_part(arg) => {
            kv(host.kv_delete(&sub_key(arg, &message.conversation)))?;
            format!("unsubscribed from `{arg}`")
        }
        "/subscribe" | "/unsubscribe" => {
            "name a topic: letters, digits, `.`, `_` or `-`, e.g. /subscribe disk".into()
        }
        "/topics" => {
            let topics = topics_of(host, &message.conversation)?;
            if topics.is_empty() {
                "no subscriptions; /subscribe <topic>".into()
            } else {
                format!("subscribed to: {}", topics.join(", "))
            }
        }
        "/ack" => acknowledge(host, message, arg)?,
        _ => "commands: /subscribe <topic>, /unsubscribe <topic>, /topics, /ack [id]".into(),
    };
    host.reply_to(message, &answer)
        .map_err(|e| format!("reply failed: {e}"))
}

/// Acknowledges the open alerts of the conversation's topics (or alert
/// `only`): stops their repeats and tells every subscriber.
fn acknowledge(host: &mut dyn Host, message: &Message, only: &str) -> Result<String, String> {
    let topics = topics_of(host, &message.conversation)?;
    let mut acked = Vec::new();
    for key in kv(host.kv_list_keys("alert/"))? {
        let Some(alert) = read_alert(host, &key)? else {
            continue;
        };
        if !topics.contains(&alert.topic) || (!only.is_empty() && alert.id != only) {
            continue;
        }
        kv(host.kv_delete(&key))?;
        host.timer_cancel(&timer_id(&alert.id))
            .map_err(|e| format!("cannot cancel the repeat timer: {e}"))?;
        let note = format!(
            "✅ alert {} [{}] acknowledged by {}",
            alert.id, alert.topic, message.sender
        );
        for conversation in subscribers(host, &alert.topic)? {
            if conversation != message.conversation {
                send(host, &conversation, &note)?;
            }
        }
        acked.push(alert.id);
    }
    Ok(if acked.is_empty() {
        "no open alert to acknowledge".into()
    } else {
        format!("acknowledged: {}", acked.join(", "))
    })
}

fn on_timer(host: &mut dyn Host, timer: &Timer) -> Result<(), String> {
    match read_alert(host, &alert_key(&timer.payload))? {
        Some(alert) => {
            broadcast(host, alert)?;
            Ok(())
        }
        None => {
            // Acknowledged meanwhile: no more repeats.
            host.timer_cancel(&timer.id).map_err(|e| e.to_string())?;
            Ok(())
        }
    }
}

/// Sends `alert` to every subscriber of its topic and stores it, counted.
fn broadcast(host: &mut dyn Host, mut alert: Alert) -> Result<Alert, String> {
    alert.sent += 1;
    let text = if alert.sent == 1 {
        format!(
            "🔔 [{}] {} (alert {}; /ack to acknowledge)",
            alert.topic, alert.text, alert.id
        )
    } else {
        format!(
            "🔔 [{}] {} (alert {}, repeat {}; /ack to acknowledge)",
            alert.topic,
            alert.text,
            alert.id,
            alert.sent - 1
        )
    };
    for conversation in subscribers(host, &alert.topic)? {
        send(host, &conversation, &text)?;
    }
    let stored = serde_json::to_vec(&alert).map_err(|e| e.to_string())?;
    kv(host.kv_set(&alert_key(&alert.id), &stored))?;
    Ok(alert)
}

fn send(host: &mut dyn Host, conversation: &str, text: &str) -> Result<(), String> {
    host.send(conversation, text)
        .map_err(|e| format!("cannot send to {conversation}: {e}"))
}

fn subscribers(host: &mut dyn Host, topic: &str) -> Result<Vec<String>, String> {
    let prefix = format!("sub/{topic}/");
    Ok(kv(host.kv_list_keys(&prefix))?
        .into_iter()
        .map(|key| key[prefix.len()..].to_owned())
        .collect())
}

fn topics_of(host: &mut dyn Host, conversation: &str) -> Result<Vec<String>, String> {
    let suffix = format!("/{conversation}");
    Ok(kv(host.kv_list_keys("sub/"))?
        .into_iter()
        .filter_map(|key| Some(key.strip_prefix("sub/")?.strip_suffix(&suffix)?.to_owned()))
        .collect())
}

fn read_alert(host: &mut dyn Host, key: &str) -> Result<Option<Alert>, String> {
    Ok(kv(host.kv_get(key))?.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

fn repeat_ms(host: &mut dyn Host) -> u64 {
    host.config("repeat_ms")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(DEFAULT_REPEAT_MS)
}

/// Topics are one key part: no `/`.
fn valid_part(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 64
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn sub_key(topic: &str, conversation: &str) -> String {
    format!("sub/{topic}/{conversation}")
}

fn alert_key(id: &str) -> String {
    format!("alert/{id}")
}

fn timer_id(alert: &str) -> String {
    format!("repeat.{alert}")
}

fn kv<T>(result: Result<T, aviary_sdk::Error>) -> Result<T, String> {
    result.map_err(|e| format!("kv failed: {e}"))
}

aviary_sdk::export_bot!(Alerts);

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_sdk::testing::TestHost;

    fn say(host: &mut TestHost, conversation: &str, text: &str) -> String {
        let event = host.message(conversation, "alice", text);
        host.deliver::<Alerts>(event).unwrap();
        host.sent().last().unwrap().text.clone()
    }

    fn alert(host: &mut TestHost, body: &str) {
        host.deliver_webhook::<Alerts>(TestHost::webhook(HOOK, body))
            .unwrap();
    }

    #[test]
    fn an_alert_reaches_its_subscribers_and_repeats_until_acknowledged() {
        let mut host = TestHost::new().with_setting("repeat_ms", "5000");
        assert!(say(&mut host, "a", "/subscribe disk").contains("subscribed to `disk`"));
        say(&mut host, "b", "/subscribe disk");
        say(&mut host, "c", "/subscribe cpu");
        host.clear_records();
        alert(
            &mut host,
            r#"{"id":"a1","topic":"disk","text":"/var is 95% full"}"#,
        );
        let to: Vec<&str> = host
            .sent()
            .iter()
            .map(|s| s.conversation.as_str())
            .collect();
        assert_eq!(to, ["a", "b"], "subscribers of `disk` only");
        assert!(host.sent()[0].text.contains("/var is 95% full"));
        let timer = &host.timers()["repeat.a1"];
        assert_eq!((timer.every_ms, timer.payload.as_str()), (Some(5000), "a1"));

        alert(
            &mut host,
            r#"{"id":"a1","topic":"disk","text":"/var is 95% full"}"#,
        );
        assert_eq!(host.sent().len(), 2, "the same alert twice is sent once");

        host.deliver::<Alerts>(TestHost::timer("repeat.a1", None, "a1"))
            .unwrap();
        assert_eq!(host.sent().len(), 4);
        assert!(host.sent()[3].text.contains("repeat 1"));

        assert!(
            say(&mut host, "c", "/ack").contains("no open alert"),
            "not c's topic"
        );
        assert!(say(&mut host, "b", "/ack").contains("acknowledged: a1"));
        assert!(host.timers().is_empty(), "no more repeats");
        assert!(host
            .sent()
            .iter()
            .any(|s| s.conversation == "a" && s.text.contains("acknowledged by alice")));
        let before = host.sent().len();
        host.deliver::<Alerts>(TestHost::timer("repeat.a1", None, "a1"))
            .unwrap();
        assert_eq!(
            host.sent().len(),
            before,
            "a late repeat after the ack sends nothing"
        );
    }

    #[test]
    fn malformed_alerts_and_topics_are_refused_without_failing() {
        let mut host = TestHost::new();
        say(&mut host, "a", "/subscribe disk");
        host.clear_records();
        alert(&mut host, "not json");
        alert(&mut host, r#"{"id":"x/y","topic":"disk","text":"t"}"#);
        alert(&mut host, r#"{"id":"x","topic":"../disk","text":"t"}"#);
        assert!(host.sent().is_empty() && host.timers().is_empty());
        assert!(say(&mut host, "a", "/subscribe a/b").contains("name a topic"));
        assert!(say(&mut host, "a", "/topics").contains("disk"));
        assert!(TestHost::new()
            .with_setting("repeat_ms", "10")
            .init::<Alerts>()
            .is_err());
    }
}
