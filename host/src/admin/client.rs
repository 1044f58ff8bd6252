//! The CLI's side of the admin API.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// Talks to a running host's admin API.
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl AdminClient {
    /// A client for the host at `url`, with the token from `data_dir`.
    pub fn new(url: &str, data_dir: &Path) -> Result<AdminClient> {
        let path = data_dir.join(super::TOKEN_FILE);
        let token = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read the admin token {} (pass --data-dir of the running host)",
                path.display()
            )
        })?;
        Ok(AdminClient {
            base: url.trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
            http: reqwest::blocking::Client::new(),
        })
    }

    /// GET an admin path and return its JSON.
    pub fn get(&self, path: &str) -> Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    /// POST JSON to an admin path and return its JSON.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
    }

    /// PUT a CSV document to an admin path and return its JSON.
    pub fn put_csv(&self, path: &str, csv: Vec<u8>) -> Result<Value> {
        let request = self
            .http
            .put(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "text/csv")
            .body(csv);
        self.send(request)
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Result<Value> {
        let request = request.bearer_auth(&self.token).build()?;
        let url = request.url().to_string();
        let response = self.http.execute(request).with_context(|| {
            format!(
                "cannot reach the host at {} (is `aviary up` running? pass --url)",
                self.base
            )
        })?;
        let status = response.status();
        let body: Value = response
            .json()
            .with_context(|| format!("{url} did not answer JSON"))?;
        anyhow::ensure!(
            status.is_success(),
            "{url} answered {status}: {}",
            body["error"].as_str().unwrap_or("no message")
        );
        Ok(body)
    }
}
