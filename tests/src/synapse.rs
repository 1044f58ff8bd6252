//! A real Synapse 1.163.2 (Matrix homeserver) on loopback, the peer of the
//! Matrix channel tests: `tests/peers/synapse/serve.py`, run by the venv
//! `cargo xtask test` installs into `target/peers/synapse`
//! (`AVIARY_SYNAPSE_PYTHON` names another python).
//!
//! Each [`Synapse`] has its own temp dir: the homeserver's config, sqlite
//! database, signing key and media store under `data/`, and its output in
//! `synapse.log`. Its server name is [`SERVER_NAME`], so user ids read
//! `@name:localhost`; it serves the client API, the admin API and the media
//! repository on `127.0.0.1:<port>` and talks to nobody (no federation, no
//! key servers, no URL previews). Rate limits are far above any test's
//! bursts; [`Synapse::start_with_config`] sets tighter ones.
//!
//! Open registration is off: [`Synapse::register`] makes accounts through
//! the shared-secret admin API and gives an [`Account`], a small client
//! for one user (rooms, messages, media, `/sync`) holding its access
//! token. Tokens live in the database, so they outlive
//! [`Synapse::start_again`].
//!
//! Media uploaded since Synapse 1.120 is served only by the authenticated
//! endpoints (`/_matrix/client/v1/media/...`, [`Account::download`]); the
//! old `/_matrix/media/v3/download` answers 404 for it.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::{Method, Url};
use serde_json::{json, Value};
use sha1::Sha1;

use crate::peer::{read_from, read_json, tail};
use crate::{free_port, workspace_dir, Answer};

/// The homeserver's name: the part after the `:` of its user and room ids.
pub const SERVER_NAME: &str = "localhost";
/// The secret of the shared-secret registration admin API.
pub const SHARED_SECRET: &str = "aviary-e2e-synapse-shared-secret-0123456789";

/// How long a start may take: creating the schema of a new database takes
/// seconds (later fresh starts copy a template of it), starting Synapse
/// about two.
pub const SYNAPSE_START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long one request may take; a `/sync` must ask for less.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The python of the Synapse venv.
pub fn synapse_python() -> PathBuf {
    std::env::var_os("AVIARY_SYNAPSE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target/peers/synapse/bin/python"))
}

/// A running Synapse; dropping it kills the server (and keeps its temp
/// dir, printing where, when the test panics).
pub struct Synapse {
    dir: tempfile::TempDir,
    port: u16,
    /// Config read after the generated one, replacing its top-level keys.
    extra_config: Option<PathBuf>,
    child: Option<Child>,
    client: Client,
}

impl Synapse {
    /// Starts a homeserver on a free port with a fresh database; returns
    /// once `/_matrix/client/versions` answers.
    pub fn start() -> Synapse {
        Synapse::launch_new(None)
    }

    /// Like [`start`](Self::start), with `extra` (a JSON object) read after
    /// the generated config: each of its top-level keys replaces the
    /// generated one, e.g. `{"rc_message": {"per_second": 1,
    /// "burst_count": 5}}` to be answered 429 after five quick messages.
    pub fn start_with_config(extra: &Value) -> Synapse {
        assert!(extra.is_object(), "extra config {extra} is not an object");
        Synapse::launch_new(Some(extra))
    }

    fn launch_new(extra: Option<&Value>) -> Synapse {
        let python = synapse_python();
        assert!(
            python.exists(),
            "no {}: `cargo xtask test` installs Synapse there (or set AVIARY_SYNAPSE_PYTHON)",
            python.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("aviary-synapse-")
            .tempdir()
            .expect("create a temp dir");
        let extra_config = extra.map(|extra| {
            // YAML is a superset of JSON.
            let path = dir.path().join("extra.yaml");
            std::fs::write(&path, extra.to_string())
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            path
        });
        let mut synapse = Synapse {
            dir,
            port: free_port(),
            extra_config,
            child: None,
            client: loopback_client(),
        };
        synapse.launch();
        synapse
    }

    /// Kills the server, keeping its data dir.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs and starts it again: same port, same
    /// database, signing key and media.
    pub fn start_again(&mut self) {
        self.stop();
        self.launch();
    }

    /// `http://127.0.0.1:<port>`: the client-server API's base URL.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The homeserver's name, [`SERVER_NAME`].
    pub fn server_name(&self) -> &'static str {
        SERVER_NAME
    }

    /// The full user id of the local user `localpart`: `@localpart:localhost`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{SERVER_NAME}")
    }

    /// The temp dir: `data/` (config, database, keys, media) and
    /// `synapse.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("synapse.log")
    }

    /// Everything the server printed, over all its runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Registers the local user `localpart` with `password` (a server
    /// admin when `admin`) through the shared-secret admin API, and returns
    /// the account logged in on the device that registration made.
    pub fn register(&self, localpart: &str, password: &str, admin: bool) -> Account {
        let url = format!("{}/_synapse/admin/v1/register", self.base_url());
        let nonce = send_json(self.client.get(&url), "GET", &url)["nonce"]
            .as_str()
            .unwrap_or_else(|| panic!("GET {url}: no string `nonce`"))
            .to_owned();
        let body = json!({
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": registration_mac(SHARED_SECRET, &nonce, localpart, password, admin),
        });
        let registered = send_json(self.client.post(&url).json(&body), "POST", &url);
        let field = |name: &str| {
            registered[name]
                .as_str()
                .unwrap_or_else(|| panic!("POST {url}: no string `{name}` in {registered}"))
                .to_owned()
        };
        Account {
            base: self.base_url(),
            client: self.client.clone(),
            user_id: field("user_id"),
            access_token: field("access_token"),
            device_id: field("device_id"),
        }
    }

    /// Spawns the server on `self.port` and waits until it answers; retries
    /// a few times while the port is still held by the previous run.
    fn launch(&mut self) {
        for attempt in 1.. {
            let run_start = std::fs::metadata(self.log_path()).map_or(0, |m| m.len());
            self.spawn();
            match self.wait_ready(run_start) {
                Ok(()) => return,
                Err(why) => {
                    self.stop();
                    let run = read_from(&self.log_path(), run_start);
                    if run.contains("Address already in use") && attempt < 10 {
                        std::thread::sleep(Duration::from_millis(300));
                        continue;
                    }
                    panic!(
                        "Synapse on port {} {why}; tail of {}:\n{}",
                        self.port,
                        self.log_path().display(),
                        tail(&run, 8192)
                    );
                }
            }
        }
    }

    fn spawn(&mut self) {
        let template = workspace_dir().join("target/peers/synapse/template.db");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open synapse.log");
        let mut command = Command::new(synapse_python());
        command
            .arg(workspace_dir().join("tests/peers/synapse/serve.py"))
            .arg("--data")
            .arg(self.dir.path().join("data"))
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--server-name", SERVER_NAME])
            .args(["--shared-secret", SHARED_SECRET])
            .arg("--template")
            .arg(&template)
            .env("PYTHONUNBUFFERED", "1")
            // No __pycache__ in the source tree.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        if let Some(extra) = &self.extra_config {
            command.arg("--extra-config").arg(extra);
        }
        // Nothing it might fetch goes through a proxy.
        for proxy in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
            command.env_remove(proxy).env_remove(proxy.to_lowercase());
        }
        command.env("NO_PROXY", "*").env("no_proxy", "*");
        self.child = Some(command.spawn().expect("start Synapse"));
    }

    /// Waits until this run logged that it listens on the port and
    /// `GET /_matrix/client/versions` succeeds.
    fn wait_ready(&mut self, run_start: u64) -> Result<(), String> {
        let deadline = Instant::now() + SYNAPSE_START_TIMEOUT;
        let url = format!("{}/_matrix/client/versions", self.base_url());
        let listening = format!("Synapse now listening on TCP port {}", self.port);
        loop {
            let child = self.child.as_mut().expect("a spawned server");
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status}"));
            }
            // An answer before this run listens would come from someone
            // else's server on the port.
            if read_from(&self.log_path(), run_start).contains(&listening) {
                let answer = self.client.get(&url).timeout(Duration::from_secs(5)).send();
                if answer.is_ok_and(|r| r.status().is_success()) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("did not answer within {SYNAPSE_START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        // A failed start has shown the log in its panic already.
        let running = self.child.is_some();
        self.stop();
        if std::thread::panicking() {
            if running {
                eprintln!(
                    "----- tail of {} -----\n{}",
                    self.log_path().display(),
                    tail(&self.log(), 8192)
                );
            }
            // Keep the log and the database to look at.
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
            eprintln!("(kept {})", dir.keep().display());
        }
    }
}

/// The `mac` of a shared-secret registration: the hex HMAC-SHA1, keyed
/// with the secret, of `nonce\0user\0password\0admin` (or `notadmin`).
pub fn registration_mac(
    secret: &str,
    nonce: &str,
    user: &str,
    password: &str,
    admin: bool,
) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    let role = if admin { "admin" } else { "notadmin" };
    for (i, part) in [nonce, user, password, role].into_iter().enumerate() {
        if i > 0 {
            mac.update(b"\0");
        }
        mac.update(part.as_bytes());
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// One user logged in on one device: a small client of the client-server
/// API, each call panicking with the request and the answer unless it
/// succeeds. Cheap to clone; clones share the transaction ids' counter, so
/// they never repeat one.
#[derive(Clone)]
pub struct Account {
    base: String,
    client: Client,
    user_id: String,
    access_token: String,
    device_id: String,
}

impl Account {
    /// The full user id, `@name:localhost`.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The access token (`Authorization: Bearer ...`).
    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    /// The device the access token belongs to.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// `GET /_matrix/client/v3/account/whoami`: the user id the server
    /// takes the token for.
    pub fn whoami(&self) -> String {
        let answer = self.call(Method::GET, &["account", "whoami"], &[], None);
        answer["user_id"]
            .as_str()
            .unwrap_or_else(|| panic!("whoami: no string `user_id` in {answer}"))
            .to_owned()
    }

    /// `POST /_matrix/client/v3/createRoom` with `body` (e.g. `{"name": ...,
    /// "preset": "private_chat", "invite": [...]}`); returns the room id.
    pub fn create_room(&self, body: &Value) -> String {
        let answer = self.call(Method::POST, &["createRoom"], &[], Some(body));
        string_field(&answer, "room_id", "createRoom")
    }

    /// Creates a private room flagged as a direct chat with `user_id` and
    /// invites them (the way clients start a DM); returns the room id.
    pub fn create_direct_room(&self, user_id: &str) -> String {
        self.create_room(&json!({
            "preset": "trusted_private_chat",
            "is_direct": true,
            "invite": [user_id],
        }))
    }

    /// `POST /_matrix/client/v3/rooms/{room}/invite`: invites `user_id`.
    pub fn invite(&self, room_id: &str, user_id: &str) {
        self.call(
            Method::POST,
            &["rooms", room_id, "invite"],
            &[],
            Some(&json!({ "user_id": user_id })),
        );
    }

    /// `POST /_matrix/client/v3/join/{room}`: joins a room by id or alias;
    /// returns the room id.
    pub fn join(&self, room: &str) -> String {
        let answer = self.call(Method::POST, &["join", room], &[], Some(&json!({})));
        string_field(&answer, "room_id", "join")
    }

    /// Sends an `m.room.message` of msgtype `m.text`; returns the event id.
    pub fn send_text(&self, room_id: &str, text: &str) -> String {
        self.send_message(room_id, &json!({ "msgtype": "m.text", "body": text }))
    }

    /// Sends an `m.image` message showing the uploaded `mxc` (named
    /// `name`, of `content_type` and `size` bytes); returns the event id.
    pub fn send_image(
        &self,
        room_id: &str,
        mxc: &str,
        name: &str,
        content_type: &str,
        size: usize,
    ) -> String {
        self.send_message(
            room_id,
            &json!({
                "msgtype": "m.image",
                "body": name,
                "url": mxc,
                "info": { "mimetype": content_type, "size": size },
            }),
        )
    }

    /// `PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}` with
    /// `content` and a transaction id never used before; returns the event
    /// id.
    pub fn send_message(&self, room_id: &str, content: &Value) -> String {
        let txn = transaction_id();
        let answer = self.call(
            Method::PUT,
            &["rooms", room_id, "send", "m.room.message", &txn],
            &[],
            Some(content),
        );
        string_field(&answer, "event_id", "send")
    }

    /// `POST /_matrix/media/v3/upload` of `bytes` as `content_type`;
    /// returns the `mxc://` URI.
    pub fn upload(&self, bytes: &[u8], content_type: &str) -> String {
        let mut url = self.url(&["_matrix", "media", "v3", "upload"]);
        url.query_pairs_mut().append_pair("filename", "upload");
        let request = self
            .client
            .post(url.clone())
            .bearer_auth(&self.access_token)
            .header("content-type", content_type)
            .body(bytes.to_vec());
        let answer = send_json(request, "POST", url.as_str());
        string_field(&answer, "content_uri", "upload")
    }

    /// Downloads `mxc://server/media_id` through the authenticated
    /// `GET /_matrix/client/v1/media/download/{server}/{media_id}`.
    pub fn download(&self, mxc: &str) -> Vec<u8> {
        let (server, media_id) = mxc
            .strip_prefix("mxc://")
            .and_then(|rest| rest.split_once('/'))
            .unwrap_or_else(|| panic!("{mxc:?} is not an mxc://server/media_id URI"));
        let url = self.url(&[
            "_matrix", "client", "v1", "media", "download", server, media_id,
        ]);
        let response = self
            .client
            .get(url.clone())
            .bearer_auth(&self.access_token)
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status();
        let bytes = response
            .bytes()
            .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"));
        assert!(
            status.is_success(),
            "GET {url}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.to_vec()
    }

    /// `GET /_matrix/client/v3/sync` since the `next_batch` token `since`
    /// (an initial sync when `None`), with the default filter, waiting up
    /// to `timeout_ms` for something new; returns the whole answer.
    pub fn sync(&self, since: Option<&str>, timeout_ms: u64) -> Value {
        assert!(
            Duration::from_millis(timeout_ms) < REQUEST_TIMEOUT,
            "a sync of {timeout_ms} ms outlasts the request timeout {REQUEST_TIMEOUT:?}"
        );
        let timeout = timeout_ms.to_string();
        let mut query = vec![("timeout", timeout.as_str())];
        if let Some(since) = since {
            query.push(("since", since));
        }
        self.call(Method::GET, &["sync"], &query, None)
    }

    /// One page of `GET /_matrix/client/v3/rooms/{room}/messages`, going
    /// backwards (`dir=b`) from the token `from` (the newest event when
    /// `None`), stopping at the token `to` when given; returns the whole
    /// answer (`chunk`, newest first, and `end`, the next page's `from`,
    /// absent after the last page).
    pub fn messages_page(
        &self,
        room_id: &str,
        from: Option<&str>,
        to: Option<&str>,
        limit: u32,
    ) -> Value {
        let limit = limit.to_string();
        let mut query = vec![("dir", "b"), ("limit", limit.as_str())];
        if let Some(from) = from {
            query.push(("from", from));
        }
        if let Some(to) = to {
            query.push(("to", to));
        }
        self.call(Method::GET, &["rooms", room_id, "messages"], &query, None)
    }

    /// The room's events backwards from the token `from` (the newest when
    /// `None`) down to the token `to` (the room's creation when `None`),
    /// every page of [`messages_page`](Self::messages_page) of them,
    /// returned oldest first: with `from` a sync timeline's `prev_batch`
    /// and `to` the `since` of that sync, the events a `limited` timeline
    /// left out.
    pub fn messages_between(
        &self,
        room_id: &str,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from = from.map(str::to_owned);
        loop {
            let page = self.messages_page(room_id, from.as_deref(), to, 100);
            let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
            let end = page["end"].as_str().map(str::to_owned);
            let done = chunk.is_empty() || end.is_none() || end == from;
            events.extend(chunk);
            if done {
                break;
            }
            from = end;
        }
        events.reverse();
        events
    }

    /// Every event of the room this user may see, oldest first.
    pub fn messages(&self, room_id: &str) -> Vec<Value> {
        self.messages_between(room_id, None, None)
    }

    /// A request to any path of the server (`/_matrix/...`) with this
    /// account's token and `body` as JSON when given, whatever the status:
    /// for tests that expect an error.
    pub fn raw(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .client
            .request(method.clone(), &url)
            .bearer_auth(&self.access_token);
        if let Some(body) = body {
            request = request.json(body);
        }
        Answer::read(
            request
                .send()
                .unwrap_or_else(|e| panic!("{method} {url}: {e}")),
        )
    }

    /// `/_matrix/client/v3/<segments>` (each percent-encoded) with `query`.
    fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Value {
        let mut path = vec!["_matrix", "client", "v3"];
        path.extend_from_slice(segments);
        let mut url = self.url(&path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self
            .client
            .request(method.clone(), url.clone())
            .bearer_auth(&self.access_token);
        if let Some(body) = body {
            request = request.json(body);
        }
        send_json(request, method.as_str(), url.as_str())
    }

    /// The base URL with `segments` appended, each percent-encoded (room
    /// ids hold `!` and `:`, aliases `#`).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = Url::parse(&self.base).expect("the base URL parses");
        url.path_segments_mut()
            .expect("an http URL has a path")
            .extend(segments);
        url
    }
}

/// The events of the `timeline` of joined room `room_id` in a `/sync`
/// answer, oldest first (none when the room is not in it).
pub fn timeline_events(sync: &Value, room_id: &str) -> Vec<Value> {
    sync["rooms"]["join"][room_id]["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A transaction id unique to this process run and never repeated in it.
fn transaction_id() -> String {
    static RUN: OnceLock<u128> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let run = RUN.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos()
    });
    format!("aviary-{run}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A client for loopback only: never through a proxy.
fn loopback_client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("build the HTTP client")
}

/// The string `name` of `answer`; panics naming the call otherwise.
fn string_field(answer: &Value, name: &str, call: &str) -> String {
    answer[name]
        .as_str()
        .unwrap_or_else(|| panic!("{call}: no string `{name}` in {answer}"))
        .to_owned()
}

/// Sends `request` and returns the JSON of a 2xx answer; panics with the
/// body otherwise.
fn send_json(request: RequestBuilder, method: &str, url: &str) -> Value {
    let response = request
        .send()
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    read_json(response, method, url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_mac_is_hmac_sha1_over_nul_separated_fields() {
        // The crates' HMAC-SHA1 gives the well-known value for this input.
        let mac = Hmac::<Sha1>::new_from_slice(b"key")
            .unwrap()
            .chain_update(b"The quick brown fox jumps over the lazy dog")
            .finalize()
            .into_bytes();
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9");

        let mac = registration_mac("s3cret", "abc", "bot", "pw", false);
        let expected = Hmac::<Sha1>::new_from_slice(b"s3cret")
            .unwrap()
            .chain_update(b"abc\0bot\0pw\0notadmin")
            .finalize()
            .into_bytes();
        let expected: String = expected.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(mac, expected);
        assert_ne!(mac, registration_mac("s3cret", "abc", "bot", "pw", true));
    }
}
