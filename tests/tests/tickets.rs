//! Ticket forwarding end to end: the shipped `ticket-forward` bot in front
//! of a real django-helpdesk 2.6.1 on loopback (installed by `cargo xtask
//! test` into target/peers/helpdesk). A customer's messages become a ticket
//! and its follow-ups, in order and once each, also while the helpdesk is
//! down and when the host is killed mid-backlog; the operator's answers
//! come back into the chat; /status and closing are reported.

use std::time::{Duration, Instant};

use aviary_e2e::helpdesk::Helpdesk;
use aviary_e2e::{Conversation, Host};
use serde_json::Value;

const HOOK_TOKEN: &str = "helpdesk-hook-token-0123456789";
const WAIT: Duration = Duration::from_secs(60);

/// The host's config and the bot's grant for a helpdesk on `helpdesk`.
fn config(helpdesk: &Helpdesk, policies: &std::path::Path) -> String {
    helpdesk.write_grant(policies);
    format!(
        "policies_dir = \"{}\"\n[outbox]\nretry_first_ms = 100\nretry_max_ms = 1000\n\
         [bots.ticket-forward.settings]\nhelpdesk_url = \"{}\"\nwelcome = \"Welcome! We answer 9-17.\"\n\
         [bots.ticket-forward.secrets]\nHELPDESK_AUTH = \"{}\"\n\
         [bots.ticket-forward.hooks.helpdesk]\ntoken = \"{HOOK_TOKEN}\"\nmax_body_bytes = 1048576\n",
        policies.display(),
        helpdesk.base_url(),
        helpdesk.auth_header()
    )
}

/// The customer's follow-ups on ticket `id`, oldest first (after the
/// helpdesk's own opening one, which holds the first message).
fn comments(helpdesk: &Helpdesk, id: i64) -> Vec<String> {
    helpdesk
        .followups(id)
        .iter()
        .skip(1)
        .filter_map(|f| {
            f["comment"]
                .as_str()?
                .strip_prefix("carol: ")
                .map(str::to_owned)
        })
        .collect()
}

/// Waits until the ticket holds `expected` (the customer's comments) and
/// asserts it holds them once each, in order.
fn wait_for_comments(helpdesk: &Helpdesk, id: i64, expected: &[String]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = comments(helpdesk, id);
        if got.len() >= expected.len() || Instant::now() > deadline {
            assert_eq!(got, expected, "every message once, in order");
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until every outbox job is answered. django-helpdesk ignores
/// `Idempotency-Key`: a server killed after storing a follow-up but before
/// answering gets it again on the retry, so the test stops it only between
/// requests.
fn wait_outbox_empty(host: &Host) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let (ok, listed, err) = host.cli(&["outbox", "list"]);
        assert!(ok, "{err}");
        if listed.contains("the outbox is empty") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the outbox did not empty");
}

fn ticket_id(customer: &Conversation) -> i64 {
    let opened = customer
        .wait_for_out(WAIT, |m| m.text.starts_with("🎫 Ticket #"))
        .expect("the bot says the ticket is open");
    let digits: String = opened.text["🎫 Ticket #".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[test]
fn a_conversation_becomes_a_ticket_and_nothing_is_lost_or_doubled() {
    let policies = tempfile::tempdir().unwrap();
    let mut helpdesk = Helpdesk::start(&[], &[]);
    let mut host = Host::start(&config(&helpdesk, policies.path()));
    let hook = host.url(&format!(
        "/api/v1/hooks/ticket-forward/helpdesk?token={HOOK_TOKEN}"
    ));
    helpdesk.set_webhooks(&[hook.clone()], &[hook]);
    helpdesk.start_again();

    let customer = host.conversation("ticket-forward", "customer-1");
    let mut sent = Vec::new();
    for text in [
        "My licence key is refused",
        "It says error 42",
        "On Windows 11",
    ] {
        customer.post_message("carol", text);
        sent.push(text.to_owned());
    }
    customer
        .wait_for_out(WAIT, |m| m.text == "Welcome! We answer 9-17.")
        .expect("a new contact is welcomed");
    let id = ticket_id(&customer);
    let ticket = helpdesk.ticket(id);
    assert_eq!(ticket["title"], "My licence key is refused");
    assert!(
        ticket["description"]
            .as_str()
            .unwrap()
            .contains("customer-1 on web"),
        "{ticket}"
    );
    wait_for_comments(&helpdesk, id, &sent[1..]);

    // The operator's answer reaches the customer; the bot's own follow-ups
    // (reported by the same webhook) do not come back.
    helpdesk.post_followup_as_operator(id, "Please try the key again now.");
    customer
        .wait_for_out(WAIT, |m| m.text == "💬 Please try the key again now.")
        .expect("the operator's answer reaches the chat");
    assert!(
        customer.out_texts().iter().all(|t| !t.contains("💬 carol")),
        "own follow-ups ignored"
    );

    // The helpdesk goes down while the customer writes.
    helpdesk.stop();
    for n in 1..=5 {
        let text = format!("while down {n}");
        customer.post_message("carol", &text);
        sent.push(text);
    }
    std::thread::sleep(Duration::from_secs(3));
    let (ok, listed, err) = host.cli(&["outbox", "list"]);
    assert!(ok, "{err}");
    assert!(
        listed.contains("/api/followups/") && listed.contains("attempts="),
        "{listed}"
    );
    helpdesk.start_again();
    wait_for_comments(&helpdesk, id, &sent[1..]);
    wait_outbox_empty(&host);

    // The host is killed with a backlog and started again.
    helpdesk.stop();
    for n in 1..=5 {
        let text = format!("backlog {n}");
        customer.post_message("carol", &text);
        sent.push(text);
    }
    std::thread::sleep(Duration::from_millis(500));
    host.kill();
    helpdesk.start_again();
    host.restart();
    wait_for_comments(&helpdesk, id, &sent[1..]);

    let asked = customer.post_message("carol", "/status");
    customer
        .wait_for_out(WAIT, |m| {
            m.text == "Your ticket is open." || m.reply_to.as_deref() == Some(asked.as_str())
        })
        .expect("/status answers");
    helpdesk.close_ticket(id);
    customer
        .wait_for_out(WAIT, |m| {
            m.text.contains(&format!("ticket #{id} was closed"))
        })
        .expect("the closed ticket is announced");
    let tickets: Vec<Value> = helpdesk.tickets();
    assert_eq!(tickets.len(), 1, "one ticket for the conversation");
}
