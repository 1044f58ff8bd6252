//! Inbound webhooks, proactive messages and timers end to end, through the
//! shipped `alerts` bot: a signed alert is broadcast to its topic's
//! subscribers and repeated on a timer (also after a restart) until someone
//! acknowledges it; forged, replayed and unsigned webhooks get a 401 and an
//! audit record and reach nobody. The hostile `hoarder` bot tries timers
//! past its grant, conversations it never saw and hosts outside its grant.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aviary_e2e::{hostile_dir, Host};
use hmac::{Hmac, Mac};
use serde_json::Value;

const SECRET: &str = "monitoring-signing-secret-0123";

fn config() -> String {
    format!(
        "[bots.alerts.settings]\nrepeat_ms = \"1500\"\n[bots.alerts.hooks.monitor]\nsecret = \"{SECRET}\"\n"
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `sha256=<hex>` over `<timestamp>.<body>`, as a monitoring system signs.
fn sign(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts `body` to the alerts bot's hook with these headers; the status.
fn post_hook(host: &Host, body: &str, headers: &[(&str, String)]) -> (u16, Value) {
    let mut request = host
        .client()
        .post(host.url("/api/v1/hooks/alerts/monitor"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().expect("post the webhook");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn signed(body: &str, timestamp: u64) -> Vec<(&'static str, String)> {
    let ts = timestamp.to_string();
    vec![
        ("x-aviary-timestamp", ts.clone()),
        ("x-aviary-signature", sign(SECRET, &ts, body)),
    ]
}

fn webhook_denials(host: &Host) -> Vec<String> {
    host.admin_get("/api/v1/admin/audit?n=100")["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["capability"] == "webhook")
        .map(|r| r["detail"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn a_signed_alert_is_broadcast_repeated_across_a_restart_and_stopped_by_ack() {
    let mut host = Host::start(&config());
    let a = host.conversation("alerts", "ops-a");
    let b = host.conversation("alerts", "ops-b");
    let c = host.conversation("alerts", "ops-c");
    for (conversation, topic) in [(&a, "disk"), (&b, "disk"), (&c, "cpu")] {
        let id = conversation.post_message("alice", &format!("/subscribe {topic}"));
        assert!(conversation.wait_for_reply(&id).text.contains("subscribed"));
    }
    let body = r#"{"id":"a1","topic":"disk","text":"/var is 95% full"}"#;

    // Forged, stale, unsigned and wrongly keyed requests reach nobody.
    let ts = now_secs().to_string();
    let forged = vec![
        ("x-aviary-timestamp", ts.clone()),
        (
            "x-aviary-signature",
            sign("not-the-secret-at-all", &ts, body),
        ),
    ];
    let stale = signed(body, now_secs() - 3600);
    let tampered = signed(r#"{"id":"a0","topic":"disk","text":"other"}"#, now_secs());
    for (what, headers) in [
        ("forged", forged),
        ("stale", stale),
        ("tampered", tampered),
        ("unsigned", vec![]),
    ] {
        let (status, answer) = post_hook(&host, body, &headers);
        assert_eq!(status, 401, "{what}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("webhook refused"),
            "{what}: {answer}"
        );
    }
    assert_eq!(
        webhook_denials(&host).len(),
        4,
        "one audit record per refused request"
    );

    let good = signed(body, now_secs());
    let (status, answer) = post_hook(&host, body, &good);
    assert_eq!(status, 202, "{answer}");
    let (status, _) = post_hook(&host, body, &good);
    assert_eq!(status, 401, "the same signature again is a replay");
    assert!(webhook_denials(&host).iter().any(|d| d.contains("replay")));

    let wait = Duration::from_secs(20);
    for conversation in [&a, &b] {
        conversation
            .wait_for_out(wait, |m| m.text.contains("/var is 95% full"))
            .expect("a subscriber of `disk` gets the alert");
    }
    a.wait_for_out(wait, |m| m.text.contains("repeat 1"))
        .expect("the alert repeats");
    assert!(
        c.out_texts().iter().all(|t| !t.contains("/var")),
        "not c's topic"
    );

    // The timer survives a restart: repeats go on afterwards.
    host.restart();
    let before = a.out_texts().iter().filter(|t| t.contains("/var")).count();
    a.wait_for_out(wait, |m| m.text.contains(&format!("repeat {before}")))
        .expect("the repeat timer fires after the restart");

    let id = b.post_message("bob", "/ack");
    assert!(b.wait_for_reply(&id).text.contains("acknowledged: a1"));
    a.wait_for_out(wait, |m| m.text.contains("acknowledged by bob"))
        .expect("the others hear of the ack");
    let settled = a.out_texts().len();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(a.out_texts().len(), settled, "no repeat after the ack");
}

#[test]
fn a_hook_that_is_not_configured_is_404_and_a_token_hook_needs_its_token() {
    let token = "url-token-0123456789abcdef";
    // Bodies past the host's own 64 KiB bound, as a helpdesk's are.
    let host = Host::start(&format!(
        "[bots.alerts.hooks.monitor]\ntoken = \"{token}\"\nmax_body_bytes = 200000\n"
    ));
    let a = host.conversation("alerts", "ops-a");
    let id = a.post_message("alice", "/subscribe disk");
    a.wait_for_reply(&id);
    let body = r#"{"id":"t1","topic":"disk","text":"token alert"}"#;
    let post = |path: &str| {
        host.client()
            .post(host.url(path))
            .body(body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(post("/api/v1/hooks/alerts/other"), 404);
    assert_eq!(post("/api/v1/hooks/echo/monitor"), 404);
    assert_eq!(post("/api/v1/hooks/alerts/monitor"), 401);
    assert_eq!(
        post("/api/v1/hooks/alerts/monitor?token=wrong-token-0123456789"),
        401
    );
    assert_eq!(
        post(&format!("/api/v1/hooks/alerts/monitor?token={token}")),
        202
    );
    a.wait_for_out(Duration::from_secs(20), |m| m.text.contains("token alert"))
        .expect("the alert arrives");

    let sized = |padding: usize| {
        let body = format!(
            r#"{{"id":"big","topic":"none","text":"big","padding":"{}"}}"#,
            "x".repeat(padding)
        );
        host.client()
            .post(host.url(&format!("/api/v1/hooks/alerts/monitor?token={token}")))
            .body(body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(sized(150_000), 202, "the hook's own bound applies");
    assert_eq!(sized(250_000), 413, "and holds");
    let page = host.post_raw("/api/v1/bots/alerts/conversations", "x".repeat(100_000));
    assert_eq!(page.status, 413, "other endpoints keep the host's bound");
}

#[test]
fn the_hoarder_is_held_to_its_timers_its_conversations_and_its_hosts() {
    let config = "[bots.hoarder.grant]\ntimers = 3\nhttp = [\"http://127.0.0.1:9\"]\nkv = { max_bytes = 65536, max_keys = 100 }\nsend = { per_conversation_per_minute = 600, per_bot_per_minute = 6000 }\n";
    let host = Host::start_with_plugins(config, &hostile_dir());
    let mine = host.conversation("hoarder", "mine");
    let say = |text: &str| {
        let id = mine.post_message("mallory", text);
        mine.wait_for_reply(&id).text
    };
    let hoard = say("/hoard 5");
    assert_eq!(hoard.matches("ok").count(), 3, "{hoard}");
    assert_eq!(hoard.matches("refused").count(), 2, "{hoard}");
    assert!(hoard.contains("`timers` grant"), "{hoard}");
    assert!(
        say("/hoard 2").matches("refused").count() == 2,
        "still full in a later event"
    );

    // Conversations it never saw (another bot's ids live in that bot's
    // namespace, which the hoarder cannot even name).
    for target in ["victim", "invented"] {
        let answer = say(&format!("/elsewhere {target}"));
        assert!(
            answer.contains("refused") && answer.contains("not one this bot has seen"),
            "{answer}"
        );
        let answer = say(&format!("/timer-elsewhere {target}"));
        assert!(answer.contains("refused"), "{answer}");
    }

    // Outbox destinations are checked by name before any socket.
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8080/api",
        "ftp://127.0.0.1:9/",
    ] {
        let answer = say(&format!("/exfil {url}"));
        assert!(answer.starts_with("refused"), "{url}: {answer}");
    }
    assert!(say("/exfil http://127.0.0.1:9/sink").starts_with("enqueued"));
    let denials: Vec<Value> = host.admin_get("/api/v1/admin/audit?n=200")["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "deny" && r["bot"] == "hoarder")
        .map(|r| r["capability"].clone())
        .collect();
    for capability in ["timers", "send", "outbox"] {
        assert!(
            denials.iter().any(|c| c == capability),
            "{capability} in {denials:?}"
        );
    }
}

#[test]
fn admins_retry_and_drop_outbox_jobs_and_dead_letters() {
    let config = "[bots.hoarder.grant]\ntimers = 3\nhttp = [\"http://127.0.0.1:9\"]\nkv = { max_bytes = 65536, max_keys = 100 }\nsend = { per_conversation_per_minute = 600, per_bot_per_minute = 6000 }\n[bots.hoarder]\nmax_retries = 0\n";
    let host = Host::start_with_plugins(config, &hostile_dir());
    let mine = host.conversation("hoarder", "mine");
    let id = mine.post_message("mallory", "/exfil http://127.0.0.1:9/nobody-listens");
    let job = mine
        .wait_for_reply(&id)
        .text
        .trim_start_matches("enqueued ")
        .to_owned();
    assert_eq!(job.len(), 16, "{job}");
    // Port 9 on loopback refuses: the job is retried, never lost.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let (ok, out, err) = host.cli(&["outbox", "list"]);
        assert!(ok, "{err}");
        if out.contains("attempts=2") || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        listed.contains(&job) && listed.contains("127.0.0.1:9/nobody-listens"),
        "{listed}"
    );
    let (ok, _, err) = host.cli(&["outbox", "retry", &job]);
    assert!(ok, "{err}");
    let (ok, _, err) = host.cli(&["outbox", "drop", &job]);
    assert!(ok, "{err}");
    let (_, out, _) = host.cli(&["outbox", "list"]);
    assert!(out.contains("the outbox is empty"), "{out}");
    let (ok, _, err) = host.cli(&["outbox", "drop", &job]);
    assert!(!ok && err.contains("no job"), "{err}");
    let (ok, _, err) = host.cli(&["outbox", "retry", "not-hex"]);
    assert!(!ok && err.contains("not a job id"), "{err}");

    // An event that keeps failing is a dead letter an admin can retry or drop.
    mine.post_message("mallory", "/fail");
    let letters = |host: &Host| -> Vec<Value> {
        host.admin_get("/api/v1/admin/dead-letters")["dead_letters"]
            .as_array()
            .unwrap()
            .clone()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while letters(&host).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let seq = letters(&host)[0]["event"]["seq"].to_string();
    let (ok, out, _) = host.cli(&["dead-letters"]);
    assert!(
        ok && out.contains(&format!("#{seq}")) && out.contains("failed on purpose"),
        "{out}"
    );
    let (ok, _, err) = host.cli(&["dead-letters", "retry", &seq]);
    assert!(ok, "{err}");
    std::thread::sleep(Duration::from_millis(500));
    let again = letters(&host);
    assert_eq!(again.len(), 1, "it ran again and failed again: {again:?}");
    let (ok, _, err) = host.cli(&["dead-letters", "drop", &seq]);
    assert!(ok, "{err}");
    assert!(letters(&host).is_empty());
    let (_, out, _) = host.cli(&["dead-letters"]);
    assert!(out.contains("no dead letters"), "{out}");
    let (ok, _, err) = host.cli(&["dead-letters", "retry", "12345"]);
    assert!(!ok && err.contains("no dead letter"), "{err}");
    let (ok, _, err) = host.cli(&["dead-letters", "drop", "job:zz"]);
    assert!(!ok && err.contains("not a job id"), "{err}");
}
