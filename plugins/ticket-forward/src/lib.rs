//! `ticket-forward`: a support chat in front of a django-helpdesk.
//!
//! - A new contact gets the `welcome` setting (licence or activation links,
//!   opening hours) before anything else.
//! - The first message of a conversation opens a ticket (title from the
//!   message, the contact as submitter, the conversation as reference);
//!   every later message becomes a follow-up on that ticket, in order.
//!   Messages written while the ticket is being opened wait in kv and go
//!   as follow-ups once its id is known. Attachments go as links.
//! - Every request goes through the host's outbox (ordered per
//!   conversation, retried while the helpdesk is down, never twice: each
//!   carries an idempotency key), so nothing is lost or doubled.
//! - The helpdesk's webhook (hook `helpdesk`) reports follow-ups: the
//!   operators' public answers reach the customer's conversation; the
//!   bot's own follow-ups are ignored: they are those of its helpdesk user
//!   (setting `helpdesk_user_id`, or learnt from the first ticket it
//!   opens, whose opening follow-up is its own). A closed ticket is
//!   announced once.
//! - `/status` tells the ticket's state; `/operator` asks for a human: the
//!   ticket's priority goes to 1 (critical) with a follow-up saying so.
//!
//! Settings: `helpdesk_url` (base URL, the bot's only http grant), `queue`
//! (id, default 1), `welcome`, `helpdesk_user_id`, `submitter_domain`;
//! secret `HELPDESK_AUTH` (the `Authorization` header value).

use aviary_sdk::{Bot, Delivery, Event, Host, Message, OutboxRequest, Settings, Webhook};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The hook the helpdesk's webhooks post to.
pub const HOOK: &str = "helpdesk";
/// Welcome when the `welcome` setting is absent.
pub const DEFAULT_WELCOME: &str =
    "Hello! Write your question here; an operator will answer in this chat.";
/// Status names of django-helpdesk, by number.
const STATUSES: [&str; 5] = ["open", "reopened", "resolved", "closed", "duplicate"];

/// What the bot keeps of one conversation.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Conversation {
    ticket: Option<i64>,
    /// The ticket is being opened.
    opening: bool,
    /// Follow-ups written before the ticket had an id, in order.
    waiting: Vec<String>,
    closed: bool,
}

/// The ticket-forward bot.
#[derive(Default)]
pub struct TicketForward;

impl Bot for TicketForward {
    fn init(settings: &Settings) -> Result<(), String> {
        match settings.get("helpdesk_url") {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {}
            _ => return Err("setting `helpdesk_url` must be the helpdesk's base URL, e.g. https://help.example.com".into()),
        }
        if settings
            .get("queue")
            .is_some_and(|q| q.parse::<i64>().is_err())
        {
            return Err("setting `queue` must be the helpdesk queue's id (a number)".into());
        }
        Ok(())
    }

    fn handle(&mut self, host: &mut dyn Host, event: Event) -> Result<(), String> {
        match event {
            Event::ContactAdded(added) => {
                let welcome = host
                    .config("welcome")
                    .unwrap_or_else(|| DEFAULT_WELCOME.into());
                host.send(&added.conversation, &welcome)
                    .map_err(|e| e.to_string())
            }
            Event::Message(message) => on_message(host, &message),
            Event::Timer(_) => Ok(()),
        }
    }

    fn delivery(&mut self, host: &mut dyn Host, delivery: Delivery) -> Result<(), String> {
        let Some(conversation) = delivery.conversation.clone() else {
            return Ok(());
        };
        match delivery.tag.as_str() {
            "open" => opened(host, &conversation, &delivery),
            "status" => status_answer(host, &conversation, &delivery),
            _ if delivery.error.is_some() || !ok(&delivery) => {
                let why = delivery
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("HTTP {}", delivery.status.unwrap_or(0)));
                send(
                    host,
                    &conversation,
                    &format!("⚠️ The helpdesk did not take a message ({why})."),
                )
            }
            _ => Ok(()),
        }
    }

    fn webhook(&mut self, host: &mut dyn Host, request: Webhook) -> Result<(), String> {
        if request.hook != HOOK {
            return Ok(());
        }
        let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
            host.log(
                aviary_sdk::Level::Warn,
                "the helpdesk's webhook sent no JSON",
            );
            return Ok(());
        };
        let ticket = &body["ticket"];
        let Some(id) = ticket["id"].as_i64() else {
            return Ok(());
        };
        let Some(conversation) = kv(host.kv_get(&format!("ticket/{id}")))? else {
            return Ok(()); // A ticket that did not come from the chat.
        };
        let conversation = String::from_utf8_lossy(&conversation).into_owned();
        let own_user = own_user(host)?;
        if let Some(followup_id) = body["followup_id"].as_i64() {
            let followups = ticket["followup_set"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if let Some(followup) = followups
                .iter()
                .find(|f| f["id"].as_i64() == Some(followup_id))
            {
                let comment = followup["comment"].as_str().unwrap_or("").trim();
                let mine = own_user.is_some() && followup["user"].as_i64() == own_user;
                let seen_key = format!("seen/{followup_id}");
                if !mine
                    && followup["public"].as_bool() != Some(false)
                    && !comment.is_empty()
                    && kv(host.kv_get(&seen_key))?.is_none()
                {
                    kv(host.kv_set(&seen_key, b""))?;
                    send(host, &conversation, &format!("💬 {comment}"))?;
                }
            }
        }
        let mut state = load(host, &conversation)?;
        if ticket["status"].as_i64() == Some(4) && !state.closed {
            state.closed = true;
            save(host, &conversation, &state)?;
            send(
                host,
                &conversation,
                &format!("✅ Your ticket #{id} was closed. Write again to open a new one."),
            )?;
        }
        Ok(())
    }
}

fn on_message(host: &mut dyn Host, message: &Message) -> Result<(), String> {
    let text = message.text.trim();
    let mut state = load(host, &message.conversation)?;
    match (text, state.ticket) {
        ("/status", None) if state.opening => reply(host, message, "Your ticket is being opened."),
        ("/status", None) => reply(
            host,
            message,
            "You have no ticket yet: write your question.",
        ),
        ("/status", Some(id)) => enqueue(
            host,
            "GET",
            &format!("/api/tickets/{id}/"),
            Value::Null,
            &format!("status-{}", message.id),
            "status",
        ),
        ("/operator", Some(id)) => {
            enqueue(
                host,
                "PATCH",
                &format!("/api/tickets/{id}/"),
                json!({ "priority": 1 }),
                &format!("prio-{}", message.id),
                "priority",
            )?;
            followup(
                host,
                id,
                "The customer asks for a human operator.",
                &format!("op-{}", message.id),
            )?;
            reply(host, message, "An operator has been asked to take over.")
        }
        ("/operator", None) => reply(
            host,
            message,
            "Write your question first; then /operator asks for a human.",
        ),
        _ => {
            let comment = comment_of(host, message);
            match state.ticket {
                Some(id) if !state.closed => {
                    followup(host, id, &comment, &format!("fu-{}", message.id))
                }
                _ if state.opening => {
                    state.waiting.push(comment);
                    save(host, &message.conversation, &state)
                }
                _ => {
                    state = Conversation {
                        opening: true,
                        ..Conversation::default()
                    };
                    save(host, &message.conversation, &state)?;
                    open_ticket(host, message, &comment)
                }
            }
        }
    }
}

/// `text` with Django's template tags broken by a zero-width space:
/// django-helpdesk renders follow-ups and titles as templates, so a
/// customer typing `{{ ticket.submitter_email }}` would see it expanded.
fn inert(text: &str) -> String {
    text.replace("{{", "{\u{200b}{")
        .replace("{%", "{\u{200b}%")
        .replace("{#", "{\u{200b}#")
}

/// The message's text, with its attachments as links.
fn comment_of(host: &mut dyn Host, message: &Message) -> String {
    let base = host.config("public_url").unwrap_or_default();
    let mut comment = inert(&format!("{}: {}", message.sender, message.text));
    for file in &message.attachments {
        comment.push_str(&format!(
            "\nAttachment {} ({}, {} bytes): {base}/api/v1/bots/ticket-forward/conversations/{}/attachments/{}",
            file.name.as_deref().unwrap_or("file"),
            file.media_type,
            file.size,
            message.conversation,
            file.id
        ));
    }
    comment
}

fn open_ticket(host: &mut dyn Host, message: &Message, comment: &str) -> Result<(), String> {
    let queue: i64 = host
        .config("queue")
        .and_then(|q| q.parse().ok())
        .unwrap_or(1);
    let domain = host
        .config("submitter_domain")
        .unwrap_or_else(|| "chat.invalid".into());
    let title: String = inert(message.text.trim()).chars().take(100).collect();
    // Operators see where the customer writes from (web chat, Matrix).
    let channel = host
        .channel(&message.conversation)
        .map_or_else(|_| "web".to_owned(), |c| c.name);
    let body = json!({
        "queue": queue,
        "title": if title.is_empty() { "Chat".to_owned() } else { title },
        "description": format!(
            "{comment}\n\n(chat conversation {} on {channel})",
            message.conversation
        ),
        "submitter_email": format!("{}@{domain}", email_part(&message.sender)),
        "priority": 3,
    });
    enqueue(
        host,
        "POST",
        "/api/tickets/",
        body,
        &format!("open-{}", message.id),
        "open",
    )
}

/// Called when the ticket's creation was answered.
fn opened(host: &mut dyn Host, conversation: &str, delivery: &Delivery) -> Result<(), String> {
    let mut state = load(host, conversation)?;
    state.opening = false;
    let id = ok(delivery)
        .then(|| serde_json::from_slice::<Value>(&delivery.body).ok()?["id"].as_i64())
        .flatten();
    let Some(id) = id else {
        save(host, conversation, &state)?;
        let why = delivery
            .error
            .clone()
            .unwrap_or_else(|| format!("HTTP {}", delivery.status.unwrap_or(0)));
        return send(
            host,
            conversation,
            &format!(
                "⚠️ The helpdesk could not open a ticket ({why}). Write again to try once more."
            ),
        );
    };
    state.ticket = Some(id);
    state.closed = false;
    let body: Value = serde_json::from_slice(&delivery.body).unwrap_or_default();
    if let Some(user) = body["followup_set"][0]["user"].as_i64() {
        kv(host.kv_set("self/user", user.to_string().as_bytes()))?;
    }
    kv(host.kv_set(&format!("ticket/{id}"), conversation.as_bytes()))?;
    for (n, comment) in std::mem::take(&mut state.waiting).iter().enumerate() {
        followup(host, id, comment, &format!("wait-{}-{n}", delivery.job))?;
    }
    save(host, conversation, &state)?;
    send(
        host,
        conversation,
        &format!("🎫 Ticket #{id} is open; an operator will answer here. /status tells its state."),
    )
}

fn status_answer(
    host: &mut dyn Host,
    conversation: &str,
    delivery: &Delivery,
) -> Result<(), String> {
    let status = ok(delivery)
        .then(|| serde_json::from_slice::<Value>(&delivery.body).ok()?["status"].as_i64())
        .flatten();
    let text = match status {
        Some(n) if (1..=5).contains(&n) => format!("Your ticket is {}.", STATUSES[n as usize - 1]),
        _ => "The helpdesk did not say; try /status again later.".into(),
    };
    send(host, conversation, &text)
}

/// The bot's own helpdesk user: the setting, or the one learnt.
fn own_user(host: &mut dyn Host) -> Result<Option<i64>, String> {
    if let Some(id) = host
        .config("helpdesk_user_id")
        .and_then(|id| id.parse().ok())
    {
        return Ok(Some(id));
    }
    Ok(kv(host.kv_get("self/user"))?.and_then(|v| String::from_utf8_lossy(&v).parse().ok()))
}

/// A follow-up; no title, for the helpdesk renames the ticket after one.
fn followup(host: &mut dyn Host, ticket: i64, comment: &str, key: &str) -> Result<(), String> {
    let body = json!({ "ticket": ticket, "comment": comment, "public": true });
    enqueue(host, "POST", "/api/followups/", body, key, "followup")
}

/// Puts a request to the helpdesk in the outbox, in the conversation's order.
fn enqueue(
    host: &mut dyn Host,
    method: &str,
    path: &str,
    body: Value,
    key: &str,
    tag: &str,
) -> Result<(), String> {
    let base = host.config("helpdesk_url").unwrap_or_default();
    let mut headers = vec![("accept".to_owned(), "application/json".to_owned())];
    if let Ok(auth) = host.secret("HELPDESK_AUTH") {
        headers.push(("authorization".into(), auth));
    }
    let body = if body.is_null() {
        Vec::new()
    } else {
        headers.push(("content-type".into(), "application/json".into()));
        body.to_string().into_bytes()
    };
    let request = OutboxRequest {
        method: method.into(),
        url: format!("{}{path}", base.trim_end_matches('/')),
        headers,
        body,
        idempotency_key: key.into(),
        ordering_key: None,
        give_up_after_ms: None,
        tag: tag.into(),
    };
    host.outbox_enqueue(&request)
        .map(drop)
        .map_err(|e| format!("cannot enqueue for the helpdesk: {e}"))
}

fn ok(delivery: &Delivery) -> bool {
    delivery.error.is_none() && delivery.status.is_some_and(|s| (200..300).contains(&s))
}

fn email_part(sender: &str) -> String {
    let part: String = sender
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if part.is_empty() {
        "customer".into()
    } else {
        part
    }
}

fn load(host: &mut dyn Host, conversation: &str) -> Result<Conversation, String> {
    Ok(kv(host.kv_get(&format!("conv/{conversation}")))?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default())
}

fn save(host: &mut dyn Host, conversation: &str, state: &Conversation) -> Result<(), String> {
    let bytes = serde_json::to_vec(state).map_err(|e| e.to_string())?;
    kv(host.kv_set(&format!("conv/{conversation}"), &bytes))
}

fn send(host: &mut dyn Host, conversation: &str, text: &str) -> Result<(), String> {
    host.send(conversation, text)
        .map_err(|e| format!("send failed: {e}"))
}

fn reply(host: &mut dyn Host, message: &Message, text: &str) -> Result<(), String> {
    host.reply_to(message, text)
        .map_err(|e| format!("reply failed: {e}"))
}

fn kv<T>(result: Result<T, aviary_sdk::Error>) -> Result<T, String> {
    result.map_err(|e| format!("kv failed: {e}"))
}

aviary_sdk::export_bot!(TicketForward);

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_sdk::testing::TestHost;

    fn host() -> TestHost {
        TestHost::new()
            .with_setting("helpdesk_url", "http://127.0.0.1:8000/")
            .with_secret("HELPDESK_AUTH", "Basic eA==")
    }

    fn say(host: &mut TestHost, text: &str) {
        let event = host.message("c1", "alice", text);
        host.deliver::<TicketForward>(event).unwrap();
    }

    fn answer(host: &mut TestHost, index: usize, status: u16, body: &str) {
        let request = host.outbox()[index].clone();
        host.deliver_delivery::<TicketForward>(Delivery {
            job: format!("{index}"),
            tag: request.tag,
            idempotency_key: request.idempotency_key,
            conversation: Some("c1".into()),
            status: Some(status),
            headers: vec![],
            body: body.as_bytes().to_vec(),
            error: None,
            attempts: 1,
        })
        .unwrap();
    }

    #[test]
    fn the_first_message_opens_a_ticket_and_the_rest_follow_in_order() {
        let mut host = host();
        say(&mut host, "My licence key is refused");
        say(&mut host, "It says error 42");
        say(&mut host, "Please help");
        assert_eq!(
            host.outbox().len(),
            1,
            "follow-ups wait for the ticket's id"
        );
        let open = &host.outbox()[0];
        assert_eq!(
            (open.method.as_str(), open.url.as_str()),
            ("POST", "http://127.0.0.1:8000/api/tickets/")
        );
        let body: Value = serde_json::from_slice(&open.body).unwrap();
        assert_eq!(body["title"], "My licence key is refused");
        assert_eq!(body["submitter_email"], "alice@chat.invalid");
        let description = body["description"].as_str().unwrap();
        assert!(description.ends_with(" on web)"), "{description}");
        assert!(open
            .headers
            .contains(&("authorization".into(), "Basic eA==".into())));
        answer(&mut host, 0, 201, r#"{"id": 17}"#);
        let comments: Vec<String> = host.outbox()[1..]
            .iter()
            .map(|r| {
                serde_json::from_slice::<Value>(&r.body).unwrap()["comment"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(comments, ["alice: It says error 42", "alice: Please help"]);
        assert!(host.sent().last().unwrap().text.contains("#17"));
        say(&mut host, "Thanks");
        let last: Value = serde_json::from_slice(&host.outbox().last().unwrap().body).unwrap();
        assert_eq!(
            (last["ticket"].as_i64(), last["comment"].as_str()),
            (Some(17), Some("alice: Thanks"))
        );
    }

    #[test]
    fn template_tags_typed_by_a_customer_reach_the_helpdesk_inert() {
        let mut host = host();
        say(&mut host, "{{ ticket.submitter_email }} {% now 'Y' %}");
        answer(&mut host, 0, 201, r#"{"id": 17}"#);
        say(&mut host, "{# a comment #} {{x}}");
        let title = serde_json::from_slice::<Value>(&host.outbox()[0].body).unwrap()["title"]
            .as_str()
            .unwrap()
            .to_owned();
        let comment = serde_json::from_slice::<Value>(&host.outbox()[1].body).unwrap()["comment"]
            .as_str()
            .unwrap()
            .to_owned();
        for text in [&title, &comment] {
            assert!(
                !text.contains("{{") && !text.contains("{%") && !text.contains("{#"),
                "{text}"
            );
        }
        assert_eq!(
            comment.replace('\u{200b}', ""),
            "alice: {# a comment #} {{x}}",
            "only a zero-width space is added"
        );
    }

    #[test]
    fn operators_answers_come_back_and_the_bots_own_followups_do_not() {
        let mut host = host();
        say(&mut host, "Hello");
        answer(
            &mut host,
            0,
            201,
            r#"{"id": 5, "followup_set": [{"id": 1, "user": 7}]}"#,
        );
        host.clear_records();
        let hook = |followup_id: i64, _title: &str, status: i64| {
            TestHost::webhook(
                HOOK,
                &json!({
                    "ticket": { "id": 5, "status": status, "followup_set": [
                        { "id": 1, "user": 7, "comment": "alice: Hello", "public": true },
                        { "id": 2, "user": 8, "comment": "Try restarting", "public": true },
                    ]},
                    "followup_id": followup_id,
                })
                .to_string(),
            )
        };
        host.deliver_webhook::<TicketForward>(hook(1, "x", 1))
            .unwrap();
        assert!(
            host.sent().is_empty(),
            "the bot's own follow-up is not echoed"
        );
        host.deliver_webhook::<TicketForward>(hook(2, "Comment", 1))
            .unwrap();
        assert_eq!(host.sent()[0].text, "💬 Try restarting");
        host.deliver_webhook::<TicketForward>(hook(2, "Comment", 1))
            .unwrap();
        assert_eq!(host.sent().len(), 1, "a repeated webhook is shown once");
        host.deliver_webhook::<TicketForward>(hook(1, "x", 4))
            .unwrap();
        assert!(host.sent()[1].text.contains("closed"));
    }

    #[test]
    fn welcome_status_and_operator() {
        let mut host = host().with_setting("welcome", "Welcome! Hours 9-17.");
        host.deliver::<TicketForward>(TestHost::contact_added("c1", "alice"))
            .unwrap();
        assert_eq!(host.sent()[0].text, "Welcome! Hours 9-17.");
        say(&mut host, "/status");
        assert!(host.sent()[1].text.contains("no ticket"));
        say(&mut host, "Question");
        answer(&mut host, 0, 201, r#"{"id": 9}"#);
        say(&mut host, "/status");
        let status = host.outbox().last().unwrap().clone();
        assert_eq!(
            (status.method.as_str(), status.url.as_str()),
            ("GET", "http://127.0.0.1:8000/api/tickets/9/")
        );
        let index = host.outbox().len() - 1;
        answer(&mut host, index, 200, r#"{"id": 9, "status": 1}"#);
        assert_eq!(host.sent().last().unwrap().text, "Your ticket is open.");
        say(&mut host, "/operator");
        let n = host.outbox().len();
        let patch: Value = serde_json::from_slice(&host.outbox()[n - 2].body).unwrap();
        assert_eq!(patch["priority"], 1);
        assert!(
            TestHost::new().init::<TicketForward>().is_err(),
            "helpdesk_url is required"
        );
    }
}
