//! The built-in chat page at `/`, driven in headless Chromium through
//! chromedriver: pick the bot, type, send, see the bot's answer arrive live.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aviary_e2e::{free_port, Host};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver process on a port of its own, killed on drop.
struct Driver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
    log: tempfile::NamedTempFile,
}

impl Driver {
    fn start() -> Driver {
        for tool in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: the chat page test needs Chromium and chromedriver; run `cargo xtask test`, which installs them \
                 (or `apt-get install -y chromium chromium-driver`)"
            );
        }
        let log = tempfile::NamedTempFile::new().unwrap();
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let driver = Driver {
            child,
            port,
            profile: tempfile::tempdir().unwrap(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}: {}",
                driver.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    async fn session(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1200,900",
                    format!("--user-data-dir={}", self.profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no Chromium session: {e}\nchromedriver log:\n{}",
                    self.log()
                )
            })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `script` (a function body that returns a value) until it returns
/// something truthy, and returns that; panics after `timeout`.
async fn wait_for(client: &Client, what: &str, script: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let value = client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{what}: script failed: {e}"));
        let truthy = match &value {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        if truthy {
            return value;
        }
        if Instant::now() >= deadline {
            let page = client.source().await.unwrap_or_default();
            panic!("timed out after {timeout:?} waiting for {what}; page:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The messages shown on the page: (classes, text content).
async fn shown(client: &Client) -> Vec<(String, String)> {
    let value = client
        .execute(
            "return [...document.querySelectorAll('#messages .message')].map(e => [e.className, e.textContent]);",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(value).unwrap()
}

/// Waits until a `.message.out` holds `text`.
async fn wait_for_reply_text(client: &Client, text: &str) {
    let script = format!(
        "return [...document.querySelectorAll('#messages .message.out')].some(e => e.textContent.includes({}));",
        json!(text)
    );
    wait_for(
        client,
        &format!("the reply {text:?} in #messages"),
        &script,
        Duration::from_secs(30),
    )
    .await;
}

async fn type_into(client: &Client, id: &str, text: &str) {
    let field = client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id}: {e}"));
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The session the page keeps in localStorage for echo: (conversation, token).
async fn stored_session(client: &Client) -> (String, String) {
    let value = wait_for(
        client,
        "a session in localStorage",
        "return localStorage.getItem('aviary.chat.echo');",
        Duration::from_secs(20),
    )
    .await;
    let session: Value = serde_json::from_str(value.as_str().unwrap()).unwrap();
    (
        session["conversation"].as_str().unwrap().to_owned(),
        session["token"].as_str().unwrap().to_owned(),
    )
}

async fn field_value(client: &Client, id: &str) -> String {
    client
        .find(Locator::Id(id))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

#[test]
fn chat_page_sends_a_message_and_shows_the_reply_live() {
    // An open host: the page creates its conversation itself.
    let mut host = Host::start_open("");
    let driver = Driver::start();
    let rt = runtime();
    let url = host.url("/");

    let (client, conversation, token) = rt.block_on(async {
        let client = driver.session().await;
        client.goto(&url).await.unwrap();
        assert_eq!(client.title().await.unwrap(), "Aviary chat");

        // The selector is filled from /api/v1/bots; no conversation yet.
        wait_for(&client, "the echo bot in #bot", "return document.querySelector('#bot').value === 'echo';", Duration::from_secs(20)).await;
        assert_eq!(field_value(&client, "sender").await, "you", "the sender defaults to `you`");
        assert_eq!(field_value(&client, "conversation").await, "", "a conversation starts with the first message");

        // Type, click Send: the page creates the conversation, sends, shows the echo.
        type_into(&client, "sender", "tester").await;
        type_into(&client, "text", "hello from chromium").await;
        client.find(Locator::Id("send")).await.unwrap().click().await.unwrap();
        wait_for_reply_text(&client, "echo: hello from chromium").await;
        let text_value = client.find(Locator::Id("text")).await.unwrap().prop("value").await.unwrap();
        assert_eq!(text_value.as_deref(), Some(""), "the text box is cleared after sending");
        let (conversation, token) = stored_session(&client).await;
        assert_eq!(field_value(&client, "conversation").await, conversation, "the page shows its conversation");
        let disabled = client.execute("return document.querySelector('#sender').disabled;", vec![]).await.unwrap();
        assert_eq!(disabled, json!(true), "the name is fixed for the conversation");

        // Enter sends too.
        let enter: char = Key::Enter.into();
        client.find(Locator::Id("text")).await.unwrap().send_keys(&format!("second line{enter}")).await.unwrap();
        wait_for_reply_text(&client, "echo: second line").await;

        let messages = shown(&client).await;
        assert_eq!(messages.len(), 4, "two messages and two replies, no duplicates: {messages:#?}");
        let kinds: Vec<bool> = messages.iter().map(|(class, _)| class.split(' ').any(|c| c == "in")).collect();
        assert_eq!(kinds, [true, false, true, false], "in, out, in, out: {messages:#?}");
        assert!(messages.iter().all(|(class, _)| class.split(' ').any(|c| c == "message")));
        assert!(messages[0].1.contains("hello from chromium") && messages[0].1.contains("tester"), "{messages:#?}");
        assert!(messages[2].1.contains("second line"), "{messages:#?}");
        let error_hidden = client.execute("return document.querySelector('#error').hidden || document.querySelector('#error').offsetParent === null;", vec![]).await.unwrap();
        assert_eq!(error_hidden, json!(true), "#error shows while nothing failed");
        (client, conversation, token)
    });

    // What the page sent is what the host stored, under its conversation
    // and as the user it named.
    let chat = host.joined("echo", &conversation, "tester", &token);
    let stored = chat.messages(None, None);
    let seen: Vec<(&str, &str, &str)> = stored
        .iter()
        .map(|m| (m.direction.as_str(), m.sender.as_str(), m.text.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("in", "tester", "hello from chromium"),
            ("out", "echo", "echo: hello from chromium"),
            ("in", "tester", "second line"),
            ("out", "echo", "echo: second line")
        ]
    );

    // A message from another client holding the token shows up live.
    let id = chat.post_message("tester", "from the API");
    rt.block_on(wait_for_reply_text(&client, "echo: from the API"));

    // The host goes away and comes back: the page reconnects after the last
    // id it saw and shows new messages without repeating old ones. (The pause
    // lets the host settle its writes: whether a reply served just before a
    // SIGKILL survives it is durability.rs's concern, not the page's.)
    std::thread::sleep(Duration::from_secs(2));
    host.kill();
    host.restart();
    assert_eq!(
        url,
        host.url("/"),
        "the restarted host took another port; the page cannot follow"
    );
    rt.block_on(async {
        wait_for(
            &client,
            "the page to reconnect",
            "return document.querySelector('#status').dataset.state === 'live';",
            Duration::from_secs(30),
        )
        .await;
        type_into(&client, "text", "after the restart").await;
        client
            .find(Locator::Id("send"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for_reply_text(&client, "echo: after the restart").await;
        let messages = shown(&client).await;
        assert_eq!(
            messages.len(),
            8,
            "each message once after reconnecting: {messages:#?}"
        );
    });
    let stored = chat.messages(None, None);
    assert_eq!(stored.len(), 8);
    assert_eq!(stored[4].id, id);

    // API errors are shown: a body over 64 KiB is refused with 413.
    rt.block_on(async {
        client
            .execute("document.querySelector('#text').value = 'x'.repeat(70000);", vec![])
            .await
            .unwrap();
        client.find(Locator::Id("send")).await.unwrap().click().await.unwrap();
        let error = wait_for(
            &client,
            "a visible #error",
            "const e = document.querySelector('#error'); return !e.hidden && e.offsetParent !== null && e.textContent.trim();",
            Duration::from_secs(20),
        )
        .await;
        assert!(error.as_str().unwrap().contains("413"), "the error names the HTTP status: {error}");
        client.close().await.unwrap();
    });
    assert_eq!(
        chat.messages(None, None).len(),
        8,
        "a refused message was stored"
    );
    drop(driver);
}

#[test]
fn chat_page_continues_its_conversation_after_a_reload() {
    let host = Host::start_open("");
    let driver = Driver::start();
    let url = host.url("/");
    let rt = runtime();
    let (client, conversation, token) = rt.block_on(async {
        let client = driver.session().await;
        client.goto(&url).await.unwrap();
        wait_for(
            &client,
            "the echo bot in #bot",
            "return document.querySelector('#bot').value === 'echo';",
            Duration::from_secs(20),
        )
        .await;
        for text in ["first", "/inc page-views", "third"] {
            type_into(&client, "text", text).await;
            client
                .find(Locator::Id("send"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            wait_for(
                &client,
                "the reply",
                &format!(
                    "return document.querySelectorAll('#messages .message.out').length >= {};",
                    ["first", "/inc page-views", "third"]
                        .iter()
                        .position(|t| *t == text)
                        .unwrap()
                        + 1
                ),
                Duration::from_secs(30),
            )
            .await;
        }
        let (conversation, token) = stored_session(&client).await;
        (client, conversation, token)
    });
    let stored: Vec<(String, String)> = host
        .joined("echo", &conversation, "you", &token)
        .messages(None, None)
        .into_iter()
        .map(|m| (m.direction, m.text))
        .collect();
    assert_eq!(stored.len(), 6, "{stored:?}");
    rt.block_on(async {
        // A reload continues the same conversation, history and all.
        client.refresh().await.unwrap();
        wait_for(
            &client,
            "six messages after the reload",
            "return document.querySelectorAll('#messages .message').length >= 6;",
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(field_value(&client, "conversation").await, conversation);
        assert_eq!(
            stored_session(&client).await,
            (conversation.clone(), token.clone())
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let messages = shown(&client).await;
        assert_eq!(messages.len(), stored.len(), "{messages:#?}");
        for ((class, content), (direction, text)) in messages.iter().zip(&stored) {
            assert!(
                class.split(' ').any(|c| c == direction),
                "{class} for a message {direction}"
            );
            assert!(
                content.contains(text.as_str()),
                "{content:?} lacks {text:?}"
            );
        }
        type_into(&client, "text", "after the reload").await;
        client
            .find(Locator::Id("send"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for_reply_text(&client, "echo: after the reload").await;
    });
    assert_eq!(
        host.joined("echo", &conversation, "you", &token)
            .messages(None, None)
            .len(),
        8,
        "the reloaded page posted into the same conversation"
    );
    rt.block_on(async {
        // "New conversation" starts another one on the next message.
        client
            .find(Locator::Id("new-conversation"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert_eq!(
            shown(&client).await.len(),
            0,
            "a new conversation shows nothing old"
        );
        type_into(&client, "text", "fresh start").await;
        client
            .find(Locator::Id("send"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for_reply_text(&client, "echo: fresh start").await;
        let (fresh, _) = stored_session(&client).await;
        assert_ne!(fresh, conversation, "a new conversation id");
        client.close().await.unwrap();
    });
}

#[test]
fn chat_page_shows_the_local_models_answer_growing_then_the_answer() {
    let host =
        Host::start_open("[bots.llm-chat.settings]\nmax_tokens = \"64\"\ntemperature = \"0\"\n");
    let driver = Driver::start();
    let rt = runtime();
    let url = host.url("/");
    rt.block_on(async {
        let client = driver.session().await;
        client.goto(&url).await.unwrap();
        wait_for(
            &client,
            "llm-chat in #bot",
            "return [...document.querySelector('#bot').options].some(o => o.value === 'llm-chat');",
            Duration::from_secs(20),
        )
        .await;
        // Pick the bot, and record every text the draft shows as it changes.
        client
            .execute(
                "const s = document.querySelector('#bot'); s.value = 'llm-chat'; s.dispatchEvent(new Event('change'));
                 window.drafts = [];
                 new MutationObserver(() => {
                   const d = document.querySelector('#draft .text');
                   if (d && d.textContent && window.drafts[window.drafts.length - 1] !== d.textContent) window.drafts.push(d.textContent);
                 }).observe(document.querySelector('#messages'), { subtree: true, childList: true, characterData: true });",
                vec![],
            )
            .await
            .unwrap();
        type_into(&client, "text", "Tell me about lighthouses.").await;
        client.find(Locator::Id("send")).await.unwrap().click().await.unwrap();
        let answer = wait_for(
            &client,
            "the model's answer",
            "const out = document.querySelector('#messages .message.out:not(.draft) .text'); return out && out.textContent;",
            Duration::from_secs(90),
        )
        .await;
        let answer = answer.as_str().unwrap().trim().to_owned();
        let drafts: Vec<String> =
            serde_json::from_value(client.execute("return window.drafts;", vec![]).await.unwrap()).unwrap();
        assert!(drafts.len() >= 2, "the draft grew in steps before the answer: {drafts:?}");
        for pair in drafts.windows(2) {
            assert!(pair[1].starts_with(pair[0].as_str()), "each draft extends the one before: {drafts:?}");
        }
        assert_eq!(drafts.last().unwrap().trim(), answer, "the last draft is the answer");
        let draft_left = client.execute("return document.querySelector('#draft') !== null;", vec![]).await.unwrap();
        assert_eq!(draft_left, json!(false), "the answer replaced the draft");
        let messages = shown(&client).await;
        assert_eq!(messages.len(), 2, "the question and the answer, no draft: {messages:#?}");
        client.close().await.unwrap();
    });
}

#[test]
fn chat_page_uploads_a_photo_and_shows_the_plate_lookups_answer() {
    let host = Host::start_open("");
    host.import_data(
        "plate-lookup",
        "register",
        "plate,status,make
AB-123-CD,stolen,Renault Clio
",
    );
    let photo = aviary_e2e::photos::car("AB-123-CD", 70, 90);
    let driver = Driver::start();
    let rt = runtime();
    let url = host.url("/");
    rt.block_on(async {
        let client = driver.session().await;
        client.goto(&url).await.unwrap();
        wait_for(
            &client,
            "plate-lookup in #bot",
            "return [...document.querySelector('#bot').options].some(o => o.value === 'plate-lookup');",
            Duration::from_secs(20),
        )
        .await;
        // Pick the bot and attach the photo as the file picker would.
        client
            .execute(
                "const s = document.querySelector('#bot'); s.value = 'plate-lookup'; s.dispatchEvent(new Event('change'));
                 const file = new File([new Uint8Array(arguments[0])], 'car.jpg', { type: 'image/jpeg' });
                 const picked = new DataTransfer(); picked.items.add(file);
                 const input = document.querySelector('#file'); input.files = picked.files;
                 input.dispatchEvent(new Event('change'));",
                vec![json!(photo)],
            )
            .await
            .unwrap();
        let attached = client.find(Locator::Id("attached")).await.unwrap().text().await.unwrap();
        assert_eq!(attached, "car.jpg", "the page says what is attached");
        client.find(Locator::Id("send")).await.unwrap().click().await.unwrap();
        wait_for_reply_text(&client, "status: stolen").await;
        // The photo shows in the conversation, loaded from its download URL.
        let loaded = wait_for(
            &client,
            "the photo shown",
            "const img = document.querySelector('#messages .message.in img.photo'); return img && img.complete && img.naturalWidth;",
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(loaded, json!(1280), "the page shows the stored photo");
        client.close().await.unwrap();
    });
}
