//! The conversation WebSocket: history after `after`, then live messages.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use aviary_e2e::{Conversation, Host, Message};
use tungstenite::{Message as Frame, WebSocket};

/// A synchronous WebSocket client with a read timeout.
struct Socket {
    socket: WebSocket<TcpStream>,
    url: String,
}

impl Socket {
    fn open(url: &str) -> Socket {
        Socket::try_open(url).unwrap_or_else(|e| panic!("WebSocket {url}: {e}"))
    }

    fn try_open(url: &str) -> Result<Socket, tungstenite::Error> {
        let address = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let stream = TcpStream::connect(&address).expect("connect to the host");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match tungstenite::client(url, stream) {
            Ok((socket, _response)) => Ok(Socket {
                socket,
                url: url.to_owned(),
            }),
            Err(tungstenite::HandshakeError::Failure(error)) => Err(error),
            Err(tungstenite::HandshakeError::Interrupted(_)) => {
                panic!("handshake with {url} timed out")
            }
        }
    }

    /// The next message frame within `timeout`, or `None`.
    fn next_within(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.socket.read() {
                Ok(Frame::Text(text)) => {
                    return Some(
                        serde_json::from_str(&text)
                            .unwrap_or_else(|e| panic!("bad frame {text:?}: {e}")),
                    )
                }
                Ok(Frame::Ping(_) | Frame::Pong(_)) => {}
                Ok(other) => panic!("unexpected frame on {}: {other:?}", self.url),
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading {}: {e}", self.url),
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    fn next(&mut self) -> Message {
        self.next_within(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("no frame on {} within 30 s", self.url))
    }

    /// Asserts that nothing arrives for a while.
    fn assert_quiet(&mut self, what: &str) {
        if let Some(message) = self.next_within(Duration::from_millis(700)) {
            panic!("{what}: unexpected frame {message:?}");
        }
    }
}

/// Posts `text`, waits for its reply, returns (inbound, reply) as stored.
fn exchange(chat: &Conversation, text: &str) -> (Message, Message) {
    let id = chat.post_message("alice", text);
    let reply = chat.wait_for_reply(&id);
    let inbound = chat
        .messages(None, None)
        .into_iter()
        .find(|m| m.id == id)
        .expect("inbound message stored");
    (inbound, reply)
}

#[test]
fn history_after_cursor_then_live_messages() {
    let host = Host::start("");
    let chat = host.conversation("echo", "ws-history");
    let (in1, out1) = exchange(&chat, "first");
    let (in2, out2) = exchange(&chat, "second");

    let mut socket = Socket::open(&chat.ws_url(Some(&in1.id)));
    assert_eq!(socket.next(), out1, "history starts right after `after`");
    assert_eq!(socket.next(), in2);
    assert_eq!(socket.next(), out2);
    socket.assert_quiet("after the history");

    // A live message and its reply arrive on the open socket, as stored.
    let id = chat.post_message("bob", "live one");
    let live_in = socket.next();
    assert_eq!(
        (
            live_in.id.as_str(),
            live_in.sender.as_str(),
            live_in.text.as_str(),
            live_in.direction.as_str()
        ),
        (id.as_str(), "bob", "live one", "in")
    );
    let live_out = socket.next();
    assert_eq!(live_out.text, "echo: live one");
    assert_eq!(live_out.direction, "out");
    assert_eq!(live_out.reply_to.as_deref(), Some(id.as_str()));
    socket.assert_quiet("after the live reply");
    assert_eq!(
        chat.messages(Some(&out2.id), None),
        vec![live_in, live_out],
        "frames equal the stored messages"
    );
}

#[test]
fn without_cursor_the_whole_conversation_is_sent() {
    let host = Host::start("");
    let chat = host.conversation("echo", "ws-all");
    exchange(&chat, "one");
    exchange(&chat, "two");
    let stored = chat.messages(None, None);
    assert_eq!(stored.len(), 4);

    let mut socket = Socket::open(&chat.ws_url(None));
    let received: Vec<Message> = (0..4).map(|_| socket.next()).collect();
    assert_eq!(received, stored);
    socket.assert_quiet("after the whole history");

    // Reconnecting after the last id seen sends nothing old, then live ones.
    drop(socket);
    let last = stored.last().unwrap().id.clone();
    let mut socket = Socket::open(&chat.ws_url(Some(&last)));
    socket.assert_quiet("after reconnecting at the last id");
    let id = chat.post_message("alice", "three");
    assert_eq!(socket.next().id, id);
    assert_eq!(socket.next().reply_to.as_deref(), Some(id.as_str()));
}

#[test]
fn live_messages_reach_every_socket_of_the_conversation_only() {
    let host = Host::start("");
    let chat = host.conversation("echo", "ws-shared");
    let elsewhere = host.conversation("echo", "ws-elsewhere");
    let mut first = Socket::open(&chat.ws_url(None));
    let mut second = Socket::open(&chat.ws_url(None));
    let mut other = Socket::open(&elsewhere.ws_url(None));
    first.assert_quiet("an empty conversation");

    let id = chat.post_message("alice", "to all");
    for socket in [&mut first, &mut second] {
        assert_eq!(socket.next().id, id);
        assert_eq!(socket.next().text, "echo: to all");
    }
    other.assert_quiet("a socket of another conversation");
}

#[test]
fn bad_websocket_requests_are_refused() {
    let host = Host::start("");
    let status = |url: String| match Socket::try_open(&url) {
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let body: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{url}: the refusal is not JSON ({e})"));
            assert!(body["error"].is_string(), "{url}: {body}");
            response.status().as_u16()
        }
        Err(e) => panic!("{url}: expected an HTTP error, got {e}"),
        Ok(_) => panic!("{url}: the handshake succeeded"),
    };
    assert_eq!(
        status(host.conversation("no-such-bot", "x").ws_url(None)),
        404
    );
    assert_eq!(
        status(host.conversation("echo", "bad%20id").ws_url(None)),
        400
    );
    assert_eq!(
        status(host.conversation("echo", "ok").ws_url(Some("not-an-id"))),
        400
    );
    // Tokens: none, a made-up one, another conversation's.
    let chat = host.conversation("echo", "guarded");
    let other = host.conversation("echo", "elsewhere");
    let url = chat.ws_url(None);
    let without = url.split('?').next().unwrap().to_owned();
    assert_eq!(status(without), 401, "no token");
    assert_eq!(
        status(chat.ws_url_with(&"0".repeat(64), None)),
        401,
        "a made-up token"
    );
    let foreign = other.token("alice").unwrap().unwrap();
    assert_eq!(
        status(chat.ws_url_with(&foreign, None)),
        403,
        "another conversation's token"
    );
}

#[test]
fn a_socket_whose_token_is_replaced_is_closed() {
    let host = Host::start("");
    let chat = host.conversation("echo", "revoked");
    let token = chat.token("mallory").unwrap().unwrap();
    let mut socket = Socket::open(&chat.ws_url_with(&token, None));
    socket.assert_quiet("an empty conversation");
    // The holder refreshes: the old token, still held by this socket, dies.
    let answer = aviary_e2e::Answer::read(
        reqwest::blocking::Client::new()
            .post(host.url(&format!(
                "/api/v1/bots/echo/conversations/{}/token",
                chat.conversation
            )))
            .bearer_auth(&token)
            .send()
            .unwrap(),
    );
    assert_eq!(answer.status, 200, "{}", answer.raw);
    // The next message would go out on the socket: it is closed instead.
    let id = chat.post_message("alice", "not for mallory's old socket");
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed = loop {
        match socket.socket.read() {
            Ok(Frame::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(Frame::Text(text)) => panic!("a revoked socket got {text}"),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("expected a close frame, got {e}"),
        }
        assert!(Instant::now() < deadline, "the revoked socket stayed open");
    };
    assert_eq!(closed, Some(1008), "closed as a policy violation");
    chat.wait_for_reply(&id);
}

#[test]
fn a_quiet_socket_outlasts_the_idle_limit() {
    let host = Host::start("[web]\nheader_timeout_ms = 500\n");
    let chat = host.conversation("echo", "quiet-socket");
    let mut socket = Socket::open(&chat.ws_url(None));
    std::thread::sleep(Duration::from_millis(1500));
    let id = chat.post_message("alice", "still there?");
    assert_eq!(socket.next().id, id);
    assert_eq!(socket.next().text, "echo: still there?");
}
