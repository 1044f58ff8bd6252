//! The django-helpdesk peer itself: tickets and follow-ups through its REST
//! API, both webhooks reaching a receiver on loopback, and a restart that
//! keeps the database.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use aviary_e2e::helpdesk::{self, Helpdesk};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// One webhook POST as it arrived.
#[derive(Debug)]
struct Hook {
    method: String,
    path: String,
    /// Lower-cased header names.
    headers: BTreeMap<String, String>,
    body: Value,
}

/// A bare HTTP receiver on loopback answering every request `200 OK`.
struct WebhookReceiver {
    base: String,
    hooks: Receiver<Hook>,
}

impl WebhookReceiver {
    fn start() -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook receiver");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (sender, hooks) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let sender = sender.clone();
                std::thread::spawn(move || serve(stream, &sender));
            }
        });
        WebhookReceiver { base, hooks }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The next webhook; the helpdesk sends them before it answers the
    /// request that caused them, so it is normally there already.
    fn next(&self) -> Hook {
        self.hooks
            .recv_timeout(Duration::from_secs(10))
            .expect("a webhook within 10 s")
    }

    fn assert_none(&self) {
        if let Ok(hook) = self.hooks.recv_timeout(Duration::from_millis(500)) {
            panic!("unexpected webhook: {hook:?}");
        }
    }
}

fn serve(stream: TcpStream, sender: &Sender<Hook>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("a header line");
        headers.insert(name.trim().to_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers
        .get("content-length")
        .map_or(0, |n| n.parse().expect("a numeric content-length"));
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let mut stream = stream;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("webhook body is not JSON ({e}): {body:?}"));
    let _ = sender.send(Hook {
        method,
        path,
        headers,
        body,
    });
}

/// The follow-up `id` out of a follow-up webhook's `ticket.followup_set`.
fn followup_in<'a>(hook: &'a Hook, id: &Value) -> &'a Value {
    hook.body["ticket"]["followup_set"]
        .as_array()
        .expect("followup_set in the webhook's ticket")
        .iter()
        .find(|followup| &followup["id"] == id)
        .unwrap_or_else(|| {
            panic!(
                "follow-up {id} not in the webhook's ticket: {:?}",
                hook.body
            )
        })
}

#[test]
fn helpdesk_tickets_followups_webhooks_and_restart() {
    let receiver = WebhookReceiver::start();
    let mut helpdesk =
        Helpdesk::start(&[receiver.url("/new-ticket")], &[receiver.url("/followup")]);
    let client = Client::builder().no_proxy().build().unwrap();
    let base = helpdesk.base_url();
    assert_eq!(base, format!("http://127.0.0.1:{}", helpdesk.port()));

    // Without credentials the API refuses; Basic auth works as well as the token.
    let anonymous = client.get(format!("{base}/api/tickets/")).send().unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let basic = client
        .get(format!("{base}/api/tickets/"))
        .basic_auth(helpdesk::API_USER, Some(helpdesk::API_PASSWORD))
        .send()
        .unwrap();
    assert_eq!(basic.status(), StatusCode::OK);
    assert!(helpdesk.tickets().is_empty());

    // A ticket, created the way an integration does.
    let created = client
        .post(format!("{base}/api/tickets/"))
        .header("authorization", helpdesk.auth_header())
        .json(&json!({
            "title": "The printer is on fire",
            "queue": helpdesk.queue_id(),
            "priority": 3,
            "submitter_email": "alice@example.com",
            "description": "Smoke everywhere since this morning.",
        }))
        .send()
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let ticket: Value = created.json().unwrap();
    let id = ticket["id"].as_i64().expect("a ticket id");
    assert_eq!(ticket["status"], json!(helpdesk::STATUS_OPEN));
    assert_eq!(ticket["submitter_email"], "alice@example.com");

    let hook = receiver.next();
    assert_eq!(
        (hook.method.as_str(), hook.path.as_str()),
        ("POST", "/new-ticket")
    );
    assert_eq!(hook.headers["content-type"], "application/json");
    assert_eq!(hook.body["queue_slug"], "support");
    assert_eq!(hook.body["ticket"]["id"], json!(id));
    assert_eq!(hook.body["ticket"]["title"], "The printer is on fire");
    assert_eq!(hook.body["ticket"]["submitter_email"], "alice@example.com");
    assert_eq!(
        hook.body["ticket"]["description"],
        "Smoke everywhere since this morning."
    );
    assert!(hook.body.get("followup_id").is_none(), "{:?}", hook.body);

    // A follow-up by the API user.
    let posted = client
        .post(format!("{base}/api/followups/"))
        .header("authorization", helpdesk.auth_header())
        .json(&json!({ "ticket": id, "comment": "It spreads to the scanner." }))
        .send()
        .unwrap();
    assert_eq!(posted.status(), StatusCode::CREATED);
    let followup: Value = posted.json().unwrap();
    assert_eq!(followup["user"], json!(helpdesk.api_user_id()));
    assert_eq!(followup["public"], json!(false));

    let hook = receiver.next();
    assert_eq!(hook.path, "/followup");
    assert_eq!(hook.body["followup_id"], followup["id"]);
    assert_eq!(hook.body["ticket"]["id"], json!(id));
    let in_hook = followup_in(&hook, &followup["id"]);
    assert_eq!(in_hook["comment"], "It spreads to the scanner.");
    assert_eq!(in_hook["user"], json!(helpdesk.api_user_id()));

    // The operator answers: the webhook tells it apart by `user`.
    let answer = helpdesk.post_followup_as_operator(id, "The fire brigade is on its way.");
    assert_eq!(answer["user"], json!(helpdesk.operator_id()));
    assert_ne!(helpdesk.operator_id(), helpdesk.api_user_id());
    let hook = receiver.next();
    assert_eq!(hook.path, "/followup");
    assert_eq!(hook.body["followup_id"], answer["id"]);
    let in_hook = followup_in(&hook, &answer["id"]);
    assert_eq!(in_hook["comment"], "The fire brigade is on its way.");
    assert_eq!(in_hook["user"], json!(helpdesk.operator_id()));
    assert_eq!(in_hook["public"], json!(true));
    receiver.assert_none();

    // Both are listed, in order, after the helpdesk's own "Ticket Opened".
    let tickets = helpdesk.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    assert_eq!(tickets[0]["id"], json!(id));
    let followups = helpdesk.followups(id);
    let comments: Vec<&str> = followups
        .iter()
        .map(|f| f["comment"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        comments,
        [
            "Smoke everywhere since this morning.",
            "It spreads to the scanner.",
            "The fire brigade is on its way."
        ]
    );
    assert_eq!(followups[0]["title"], "Ticket Opened");

    // Closing goes through a follow-up, so it fires the webhook too.
    let closing = helpdesk.close_ticket(id);
    let hook = receiver.next();
    assert_eq!(hook.body["followup_id"], closing["id"]);
    assert_eq!(
        hook.body["ticket"]["status"],
        json!(helpdesk::STATUS_CLOSED)
    );
    assert_eq!(
        followup_in(&hook, &closing["id"])["new_status"],
        json!(helpdesk::STATUS_CLOSED)
    );

    // Stopped, it refuses connections; started again, it has it all.
    let port = helpdesk.port();
    helpdesk.stop();
    assert!(client.get(format!("{base}/api/")).send().is_err());
    helpdesk.start_again();
    assert_eq!(helpdesk.port(), port);
    let ticket = helpdesk.ticket(id);
    assert_eq!(ticket["title"], "The printer is on fire");
    assert_eq!(ticket["status"], json!(helpdesk::STATUS_CLOSED));
    assert_eq!(helpdesk.followups(id).len(), 4);
    assert_eq!(helpdesk.tickets().len(), 1);

    // ... and the same webhooks.
    let later = helpdesk.post_followup_as_operator(id, "Inspection report: all clear.");
    let hook = receiver.next();
    assert_eq!(hook.path, "/followup");
    assert_eq!(hook.body["followup_id"], later["id"]);
    receiver.assert_none();
}
