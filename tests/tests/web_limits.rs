//! Slow, idle and greedy clients against the real binary, over raw TCP on
//! loopback: each is cut off within the configured limits, and the host
//! keeps serving everyone else. Every client here is bounded in count and
//! time.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use aviary_e2e::{raw_http, Host};

/// Tight limits so that the tests are quick: a second for headers and for
/// bodies, eight connections.
const TIGHT: &str =
    "[web]\nheader_timeout_ms = 1000\nbody_timeout_ms = 1000\nmax_connections = 8\n";
/// How long any cut-off may take beyond its limit on a loaded machine.
const SLACK: Duration = Duration::from_secs(4);

fn connect(host: &Host) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", host.port())).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    stream
}

/// Writes `drip` one byte at a time, `every` apart, reading what comes
/// back, until the host closes the connection or `within` passes. Returns
/// what the host sent and when it closed, if it did.
fn drip(
    stream: &mut TcpStream,
    drip: &[u8],
    every: Duration,
    within: Duration,
) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut bytes = drip.iter().cycle();
    let mut buffer = [0u8; 4096];
    while started.elapsed() < within {
        match stream.read(&mut buffer) {
            Ok(0) => {
                return (
                    String::from_utf8_lossy(&received).into(),
                    Some(started.elapsed()),
                )
            }
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                return (
                    String::from_utf8_lossy(&received).into(),
                    Some(started.elapsed()),
                )
            }
        }
        if stream.write_all(&[*bytes.next().unwrap()]).is_err() {
            return (
                String::from_utf8_lossy(&received).into(),
                Some(started.elapsed()),
            );
        }
        std::thread::sleep(every);
    }
    (String::from_utf8_lossy(&received).into(), None)
}

/// The host still answers a plain request.
fn assert_serving(host: &Host) {
    let answer = host.get("/healthz");
    assert_eq!(answer.status, 200, "{}", answer.raw);
}

#[test]
fn a_client_that_sends_its_headers_slowly_is_disconnected() {
    let host = Host::start(TIGHT);
    let mut stream = connect(&host);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let (_, closed) = drip(
        &mut stream,
        b"X-Slow: a\r\n",
        Duration::from_millis(200),
        Duration::from_secs(1) + SLACK,
    );
    assert!(
        closed.is_some(),
        "a header sent at 5 bytes/s kept its connection for {:?}",
        Duration::from_secs(1) + SLACK
    );
    assert_serving(&host);
}

#[test]
fn an_idle_kept_alive_connection_is_closed() {
    let host = Host::start(TIGHT);
    let mut stream = connect(&host);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    let closed = loop {
        match stream.read(&mut buffer) {
            Ok(0) => break Some(started.elapsed()),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break Some(started.elapsed()),
        }
        if started.elapsed() > Duration::from_secs(1) + SLACK {
            break None;
        }
    };
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "the request was answered: {text:?}"
    );
    assert!(
        closed.is_some(),
        "an idle connection stayed open past the idle limit"
    );
}

#[test]
fn a_body_sent_slowly_gets_408_and_is_not_stored() {
    let host = Host::start(TIGHT);
    let chat = host.conversation("echo", "slow-body");
    let token = chat.token("alice").unwrap().unwrap();
    let body = br#"{"text":"dripped"}"#;
    let mut stream = connect(&host);
    write!(
        stream,
        "POST {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        chat.path(),
        body.len() * 100
    )
    .unwrap();
    let (answer, closed) = drip(
        &mut stream,
        body,
        Duration::from_millis(200),
        Duration::from_secs(1) + SLACK,
    );
    assert!(
        closed.is_some(),
        "a body at 5 bytes/s kept its connection: {answer:?}"
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains(r#""error""#), "a JSON error: {answer:?}");
    assert!(
        chat.messages(None, None).is_empty(),
        "the dripped body was stored"
    );
    assert_serving(&host);
}

#[test]
fn a_declared_oversized_body_is_refused_before_it_is_read() {
    let host = Host::start(TIGHT);
    let chat = host.conversation("echo", "too-big");
    let token = chat.token("alice").unwrap().unwrap();
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n",
        chat.path()
    );
    // Nothing of the body is sent: the answer comes from the header alone.
    let started = Instant::now();
    let answer = raw_http(host.port(), request.as_bytes(), Duration::from_secs(3));
    assert_eq!(answer.status, 413, "{:?}", answer.text);
    assert!(answer.json()["error"].as_str().unwrap().contains("bytes"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the host waited for the body"
    );
    assert!(chat.messages(None, None).is_empty());
}

#[test]
fn connections_over_the_cap_get_503_and_the_host_recovers() {
    let host = Host::start("[web]\nmax_connections = 8\nheader_timeout_ms = 20000\n");
    // Let the start-up probe's connection close, then eight clients open
    // a connection each and say nothing; each holds a slot (none was
    // refused).
    std::thread::sleep(Duration::from_millis(500));
    let mut idle: Vec<TcpStream> = (0..8).map(|_| connect(&host)).collect();
    std::thread::sleep(Duration::from_millis(300));
    for stream in &mut idle {
        let mut byte = [0u8; 1];
        let held = matches!(stream.read(&mut byte), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
        assert!(held, "an idle client within the cap was answered or closed");
    }
    let refused = raw_http(
        host.port(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    );
    assert_eq!(refused.status, 503, "{:?}", refused.text);
    assert!(refused.json()["error"]
        .as_str()
        .unwrap()
        .contains("connections"));
    assert_eq!(refused.header("connection").as_deref(), Some("close"));

    // Once they leave, others are served again.
    idle.clear();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = raw_http(
            host.port(),
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(3),
        );
        if answer.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after the idle clients left: {:?}",
            answer.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn long_polls_outlast_the_idle_limit() {
    let host = Host::start(TIGHT);
    let chat = host.conversation("echo", "patient");
    let started = Instant::now();
    let page = chat.get_page(None, Some(3.0), None);
    assert_eq!(page.status, 200, "{}", page.raw);
    assert!(
        started.elapsed() >= Duration::from_millis(2800),
        "a 3 s long-poll ended after {:?}",
        started.elapsed()
    );
}

#[test]
fn oversized_and_flooded_headers_are_refused_and_the_host_keeps_serving() {
    let host = Host::start(TIGHT);
    let chat = host.conversation("echo", "flood");
    let huge = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        chat.path(),
        "a".repeat(64 * 1024)
    );
    let answer = raw_http(host.port(), huge.as_bytes(), Duration::from_secs(3));
    assert_eq!(
        answer.status,
        431,
        "a 64 KiB Authorization header: {:?}",
        answer.text.get(..200)
    );
    let mut flood = format!("GET {} HTTP/1.1\r\nHost: x\r\n", chat.path());
    for n in 0..500 {
        flood.push_str(&format!("X-Flood-{n}: {n}\r\n"));
    }
    flood.push_str("\r\n");
    let answer = raw_http(host.port(), flood.as_bytes(), Duration::from_secs(3));
    assert_eq!(
        answer.status,
        431,
        "500 headers: {:?}",
        answer.text.get(..200)
    );
    assert_serving(&host);
    assert!(chat.messages(None, None).is_empty());
}
