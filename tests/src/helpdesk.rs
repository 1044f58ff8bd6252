//! A real django-helpdesk 2.6.1 server on loopback, the peer of the helpdesk
//! tests: `tests/peers/helpdesk/serve.py`, run by the venv `cargo xtask
//! test` installs into `target/peers/helpdesk` (`AVIARY_HELPDESK_PYTHON`
//! names another python).
//!
//! Each [`Helpdesk`] has its own temp dir: the sqlite database under
//! `data/` and the server's output in `helpdesk.log`. It holds one queue
//! ([`Helpdesk::queue_id`]) and two staff superusers: the API user
//! ([`API_USER`], whose credentials [`Helpdesk::auth_header`] gives, the
//! one an integration talks as) and an operator ([`OPERATOR`]), who answers
//! tickets ([`Helpdesk::post_followup_as_operator`],
//! [`Helpdesk::close_ticket`]). The `user` of a follow-up (also inside
//! webhook payloads) is [`Helpdesk::api_user_id`] or
//! [`Helpdesk::operator_id`] accordingly.
//!
//! Webhooks are sent by the helpdesk synchronously, while it handles the
//! request that caused them, with a 3 s timeout: a receiver must answer
//! while that request is still in flight. A receiver that refuses the
//! connection makes that request fail with a 500 although the ticket or
//! follow-up is saved.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{json, Value};

use crate::peer::{read_from, read_json, tail};
use crate::{free_port, workspace_dir};

/// The staff user an integration talks to the API as.
pub const API_USER: &str = "aviary";
/// [`API_USER`]'s password (Basic auth works too).
pub const API_PASSWORD: &str = "aviary-helpdesk-password";
/// [`API_USER`]'s REST framework token.
pub const API_TOKEN: &str = "aviary-e2e-api-token-0123456789abcdef012";
/// The staff user who answers tickets.
pub const OPERATOR: &str = "operator";
/// [`OPERATOR`]'s password.
pub const OPERATOR_PASSWORD: &str = "operator-helpdesk-password";
/// [`OPERATOR`]'s REST framework token.
pub const OPERATOR_TOKEN: &str = "aviary-e2e-operator-token-0123456789abcd";

/// Ticket statuses, as the API's `status` and a follow-up's `new_status`.
pub const STATUS_OPEN: i64 = 1;
pub const STATUS_REOPENED: i64 = 2;
pub const STATUS_RESOLVED: i64 = 3;
pub const STATUS_CLOSED: i64 = 4;
pub const STATUS_DUPLICATE: i64 = 5;

/// How long a start may take: migrating a new database from nothing takes
/// seconds (later fresh starts copy a migrated template, under one).
pub const HELPDESK_START_TIMEOUT: Duration = Duration::from_secs(90);

/// The python of the helpdesk venv.
pub fn helpdesk_python() -> PathBuf {
    std::env::var_os("AVIARY_HELPDESK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target/peers/helpdesk/bin/python"))
}

/// A running django-helpdesk; dropping it kills the server (and keeps its
/// temp dir, printing where, when the test panics).
pub struct Helpdesk {
    dir: tempfile::TempDir,
    port: u16,
    new_ticket_webhooks: Vec<String>,
    followup_webhooks: Vec<String>,
    child: Option<Child>,
    client: Client,
    /// What the server printed when it was set up (`helpdesk peer ready ...`).
    ready_line: String,
}

impl Helpdesk {
    /// Starts a helpdesk on a free port with a fresh database, posting the
    /// new-ticket webhook to each of `webhook_new_ticket` and the follow-up
    /// webhook to each of `webhook_followup`; returns once it answers.
    pub fn start(webhook_new_ticket: &[String], webhook_followup: &[String]) -> Helpdesk {
        let python = helpdesk_python();
        assert!(
            python.exists(),
            "no {}: `cargo xtask test` installs django-helpdesk there (or set AVIARY_HELPDESK_PYTHON)",
            python.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("aviary-helpdesk-")
            .tempdir()
            .expect("create a temp dir");
        let client = Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("build the HTTP client");
        let mut helpdesk = Helpdesk {
            dir,
            port: free_port(),
            new_ticket_webhooks: webhook_new_ticket.to_vec(),
            followup_webhooks: webhook_followup.to_vec(),
            child: None,
            client,
            ready_line: String::new(),
        };
        helpdesk.launch();
        helpdesk
    }

    /// Posts the webhooks to these URLs from the next start on
    /// ([`Helpdesk::start_again`]): for a receiver whose port is known only
    /// once the helpdesk's is.
    pub fn set_webhooks(&mut self, new_ticket: &[String], followup: &[String]) {
        self.new_ticket_webhooks = new_ticket.to_vec();
        self.followup_webhooks = followup.to_vec();
    }

    /// Kills the server, keeping its database.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs and starts it again: same port, same
    /// database, same webhooks.
    pub fn start_again(&mut self) {
        self.stop();
        self.launch();
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `Authorization` header value for [`API_USER`]: `Token <key>`.
    pub fn auth_header(&self) -> String {
        format!("Token {API_TOKEN}")
    }

    /// Writes `ticket-forward`'s grant for this helpdesk into `policies`:
    /// its base URL, its credentials' secret, and room to send and keep a
    /// ticket per customer.
    pub fn write_grant(&self, policies: &Path) {
        std::fs::write(
            policies.join("ticket-forward.toml"),
            format!(
                "http = [\"{}\"]\nsecrets = [\"HELPDESK_AUTH\"]\nmemory_mb = 16\ntimeout_ms = 2000\n\
                 [send]\nper_conversation_per_minute = 600\nper_bot_per_minute = 6000\n\
                 [kv]\nmax_bytes = 4194304\nmax_keys = 100000\n",
                self.base_url()
            ),
        )
        .expect("write the ticket-forward grant");
    }

    /// `Authorization` header value for [`OPERATOR`].
    pub fn operator_auth_header(&self) -> String {
        format!("Token {OPERATOR_TOKEN}")
    }

    /// The id of the queue tickets go to (slug `support`).
    pub fn queue_id(&self) -> i64 {
        self.ready_id("queue support id ")
    }

    /// [`API_USER`]'s id: the `user` of the follow-ups it posts.
    pub fn api_user_id(&self) -> i64 {
        self.ready_id(&format!("api user {API_USER} id "))
    }

    /// [`OPERATOR`]'s id: the `user` of the follow-ups the operator posts.
    pub fn operator_id(&self) -> i64 {
        self.ready_id(&format!("operator {OPERATOR} id "))
    }

    /// The temp dir: `data/` (the database) and `helpdesk.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("helpdesk.log")
    }

    /// Everything the server printed, over all its runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Every ticket, as `GET /api/tickets/` lists them (all pages).
    pub fn tickets(&self) -> Vec<Value> {
        let mut tickets = Vec::new();
        let mut url = format!("{}/api/tickets/?page_size=100", self.base_url());
        loop {
            let page = self.get(&url);
            tickets.extend(page["results"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(next) => url = next.to_owned(),
                None => return tickets,
            }
        }
    }

    /// `GET /api/tickets/<id>/`: the ticket with its `followup_set`.
    pub fn ticket(&self, id: i64) -> Value {
        self.get(&format!("{}/api/tickets/{id}/", self.base_url()))
    }

    /// The ticket's follow-ups in creation order, the first being the
    /// "Ticket Opened" one the helpdesk adds to a new ticket.
    pub fn followups(&self, ticket_id: i64) -> Vec<Value> {
        let mut followups = self.ticket(ticket_id)["followup_set"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        followups.sort_by_key(|followup| followup["id"].as_i64());
        followups
    }

    /// The operator answers the ticket with a public follow-up (which fires
    /// the follow-up webhook); returns the follow-up.
    pub fn post_followup_as_operator(&self, ticket_id: i64, text: &str) -> Value {
        self.operator_followup(json!({ "ticket": ticket_id, "comment": text, "public": true }))
    }

    /// The operator closes the ticket the way the helpdesk's own ticket page
    /// does: a follow-up with `new_status` closed (which fires the follow-up
    /// webhook; the ticket's `status` becomes [`STATUS_CLOSED`]). Returns
    /// the follow-up.
    pub fn close_ticket(&self, ticket_id: i64) -> Value {
        let followup = self.operator_followup(json!({
            "ticket": ticket_id,
            "comment": "Closed.",
            "public": true,
            "new_status": STATUS_CLOSED,
        }));
        let status = self.ticket(ticket_id)["status"].clone();
        assert_eq!(
            status,
            json!(STATUS_CLOSED),
            "ticket {ticket_id} not closed"
        );
        followup
    }

    /// Sets the ticket's status with `PATCH /api/tickets/<id>/` as the
    /// operator: no follow-up is written and no webhook fires.
    pub fn set_status_quietly(&self, ticket_id: i64, status: i64) -> Value {
        let url = format!("{}/api/tickets/{ticket_id}/", self.base_url());
        let response = self
            .client
            .patch(&url)
            .header("authorization", self.operator_auth_header())
            .json(&json!({ "status": status }))
            .send()
            .unwrap_or_else(|e| panic!("PATCH {url}: {e}"));
        read_json(response, "PATCH", &url)
    }

    fn operator_followup(&self, body: Value) -> Value {
        let url = format!("{}/api/followups/", self.base_url());
        let response = self
            .client
            .post(&url)
            .header("authorization", self.operator_auth_header())
            .json(&body)
            .send()
            .unwrap_or_else(|e| panic!("POST {url} {body}: {e}"));
        read_json(response, "POST", &url)
    }

    fn get(&self, url: &str) -> Value {
        let response = self
            .client
            .get(url)
            .header("authorization", self.auth_header())
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        read_json(response, "GET", url)
    }

    fn ready_id(&self, prefix: &str) -> i64 {
        self.ready_line
            .split(", ")
            .find_map(|part| part.strip_prefix(prefix))
            .and_then(|id| id.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{prefix}<id>` in {:?}", self.ready_line))
    }

    /// Spawns the server on `self.port` and waits until it answers; retries
    /// a few times while the port is still held by the previous run.
    fn launch(&mut self) {
        for attempt in 1.. {
            let run_start = std::fs::metadata(self.log_path()).map_or(0, |m| m.len());
            self.spawn();
            match self.wait_ready(run_start) {
                Ok(()) => {
                    self.ready_line = self.read_ready_line(run_start);
                    return;
                }
                Err(why) => {
                    self.stop();
                    let run = read_from(&self.log_path(), run_start);
                    if run.contains("port is already in use") && attempt < 10 {
                        std::thread::sleep(Duration::from_millis(300));
                        continue;
                    }
                    panic!(
                        "the helpdesk on port {} {why}; tail of {}:\n{}",
                        self.port,
                        self.log_path().display(),
                        tail(&run, 8192)
                    );
                }
            }
        }
    }

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        let template = workspace_dir().join("target/peers/helpdesk/template.sqlite3");
        if let Some(parent) = template.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open helpdesk.log");
        let mut command = Command::new(helpdesk_python());
        command
            .arg(workspace_dir().join("tests/peers/helpdesk/serve.py"))
            .arg("--data")
            .arg(&data)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--user", API_USER, "--password", API_PASSWORD])
            .args(["--token", API_TOKEN])
            .args([
                "--operator",
                OPERATOR,
                "--operator-password",
                OPERATOR_PASSWORD,
            ])
            .args(["--operator-token", OPERATOR_TOKEN])
            .arg("--template")
            .arg(&template)
            .env("PYTHONUNBUFFERED", "1")
            // No __pycache__ in the source tree.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        // Webhooks go straight to loopback, never through a proxy.
        for proxy in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
            command.env_remove(proxy).env_remove(proxy.to_lowercase());
        }
        command.env("NO_PROXY", "*").env("no_proxy", "*");
        for (variable, urls) in [
            (
                "HELPDESK_NEW_TICKET_WEBHOOK_URLS",
                &self.new_ticket_webhooks,
            ),
            ("HELPDESK_FOLLOWUP_WEBHOOK_URLS", &self.followup_webhooks),
        ] {
            if urls.is_empty() {
                command.env_remove(variable);
            } else {
                command.env(variable, urls.join(","));
            }
        }
        self.child = Some(command.spawn().expect("start the helpdesk server"));
    }

    /// Waits until an authenticated `GET /api/tickets/` succeeds.
    fn wait_ready(&mut self, run_start: u64) -> Result<(), String> {
        let deadline = Instant::now() + HELPDESK_START_TIMEOUT;
        let url = format!("{}/api/tickets/", self.base_url());
        loop {
            let child = self.child.as_mut().expect("a spawned server");
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status}"));
            }
            // The log must show this run's setup: an answer before it
            // would come from someone else's server on the port.
            let set_up = read_from(&self.log_path(), run_start).contains("helpdesk peer ready");
            if set_up {
                let answer = self
                    .client
                    .get(&url)
                    .header("authorization", self.auth_header())
                    .timeout(Duration::from_secs(5))
                    .send();
                if answer.is_ok_and(|r| r.status().is_success()) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("did not answer within {HELPDESK_START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn read_ready_line(&self, run_start: u64) -> String {
        read_from(&self.log_path(), run_start)
            .lines()
            .find(|line| line.starts_with("helpdesk peer ready"))
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for Helpdesk {
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
