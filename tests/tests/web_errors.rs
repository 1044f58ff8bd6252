//! Loose edges of the web channel: every error is JSON, whatever layer
//! refuses the request, and the data directory is the owner's only.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use aviary_e2e::{raw_http, Host, RawAnswer};
use reqwest::blocking::Client;

fn request(host: &Host, head: &str) -> RawAnswer {
    let request = format!("{head}\r\nHost: x\r\nConnection: close\r\n\r\n");
    raw_http(host.port(), request.as_bytes(), Duration::from_secs(5))
}

/// Asserts `status` with a JSON body `{"error": "<something>"}`.
fn assert_json_error(answer: &RawAnswer, status: u16, what: &str) {
    assert_eq!(answer.status, status, "{what}: {:?}", answer.text);
    assert_eq!(
        answer.header("content-type").as_deref(),
        Some("application/json"),
        "{what}: {:?}",
        answer.text
    );
    let error = answer.json()["error"].as_str().map(str::to_owned);
    assert!(
        error.is_some_and(|e| !e.is_empty()),
        "{what}: no error text in {:?}",
        answer.text
    );
}

#[test]
fn every_refusal_is_a_json_error() {
    let host = Host::start("");
    let chat = host.conversation("echo", "edges");
    let token = chat.token("alice").unwrap().unwrap();

    let answer = request(&host, "DELETE /api/v1/bots HTTP/1.1");
    assert_json_error(&answer, 405, "a wrong method");
    assert!(
        answer.header("allow").is_some(),
        "405 keeps Allow: {:?}",
        answer.text
    );
    assert_json_error(
        &request(
            &host,
            "GET /api/v1/bots/%FF%FE/conversations/x/messages HTTP/1.1",
        ),
        400,
        "a path that is not UTF-8 once decoded",
    );
    for dots in ["%2e%2e", "%2E", ".", ".."] {
        assert_json_error(
            &request(
                &host,
                &format!("GET /api/v1/bots/echo/conversations/{dots}/messages HTTP/1.1"),
            ),
            400,
            dots,
        );
    }
    assert_json_error(
        &request(
            &host,
            &format!(
                "GET {}?limit=lots HTTP/1.1\r\nAuthorization: Bearer {token}",
                chat.path()
            ),
        ),
        400,
        "a query that does not parse",
    );

    // WebSocket handshakes that axum refuses before the handler.
    let ws = chat.ws_url(None).replacen("ws://127.0.0.1:", "", 1);
    let target = &ws[ws.find('/').unwrap()..];
    assert_json_error(
        &request(&host, &format!("GET {target} HTTP/1.1")),
        400,
        "a WebSocket URL without the upgrade",
    );
    let handshake = |key: Option<&str>| {
        let mut head = format!(
            "GET {target} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13"
        );
        if let Some(key) = key {
            head.push_str(&format!("\r\nSec-WebSocket-Key: {key}"));
        }
        let request = format!("{head}\r\nHost: x\r\n\r\n");
        raw_http(host.port(), request.as_bytes(), Duration::from_secs(2))
    };
    assert_json_error(&handshake(None), 400, "no Sec-WebSocket-Key");
    assert_json_error(
        &handshake(Some("not base64 at all")),
        400,
        "a malformed Sec-WebSocket-Key",
    );
    assert_json_error(&handshake(Some("c2hvcnQ=")), 400, "a key of 5 bytes");
    let accepted = handshake(Some("dGhlIHNhbXBsZSBub25jZQ=="));
    assert_eq!(
        accepted.status, 101,
        "a valid key is accepted: {:?}",
        accepted.text
    );

    // The admin API's input errors.
    let admin_token = std::fs::read_to_string(host.data_dir().join("admin.token")).unwrap();
    let client = Client::new();
    for (what, body, content_type) in [
        ("malformed JSON", "{", "application/json"),
        ("missing fields", "{}", "application/json"),
        ("not JSON", "bot=echo", "application/x-www-form-urlencoded"),
    ] {
        let response = client
            .post(host.url("/api/v1/admin/policy/approve"))
            .bearer_auth(admin_token.trim())
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap();
        let status = response.status();
        let content = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().unwrap();
        assert!(status.is_client_error(), "admin {what}: {status} {text}");
        assert_eq!(
            content.as_deref(),
            Some("application/json"),
            "admin {what}: {text}"
        );
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(body["error"].is_string(), "admin {what}: {text}");
    }
}

#[test]
fn the_data_directory_is_the_owners_only() {
    let mut host = Host::start("");
    let chat = host.conversation("echo", "private");
    let id = chat.post_message("alice", "a secret");
    chat.wait_for_reply(&id);
    host.kill();
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&host.data_dir()), 0o700, "the data dir");
    // After a restart too (sled writes more files), nothing is open to others.
    host.restart();
    let id = chat.post_message("alice", "another");
    chat.wait_for_reply(&id);
    host.kill();
    host.restart();
    host.kill();
    let mut pending = vec![host.data_dir()];
    let mut checked = 0;
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            assert_eq!(
                mode(&path) & 0o077,
                0,
                "{} is open to others",
                path.display()
            );
        } else if meta.is_file() {
            checked += 1;
            if path.parent() == Some(&host.data_dir())
                || path.starts_with(host.data_dir().join("store"))
            {
                assert_eq!(
                    mode(&path) & 0o077,
                    0,
                    "{} is open to others",
                    path.display()
                );
            }
        }
    }
    assert!(checked > 0, "the store has files");
}
