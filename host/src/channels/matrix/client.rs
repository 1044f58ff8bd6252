//! A thin client of the Matrix client-server API: the dozen calls the
//! channel makes, over reqwest, with JSON bodies read into `serde_json`
//! values where the channel only picks a few fields.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// Why a call failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// 429: the server said when to try again (`retry_after_ms`).
    #[error("rate limited by the homeserver")]
    RateLimited(Option<Duration>),
    /// 5xx, or no answer at all: try again later.
    #[error("the homeserver is unavailable: {0}")]
    Unavailable(String),
    /// Another 4xx: trying again will not mend it.
    #[error("the homeserver refused: {status} {errcode}: {message}")]
    Refused {
        status: u16,
        errcode: String,
        message: String,
    },
}

impl CallError {
    /// How long to wait before trying again; `None` when it is pointless.
    pub fn retry_after(&self, failures: u32) -> Option<Duration> {
        match self {
            CallError::RateLimited(Some(wait)) => Some(*wait),
            CallError::RateLimited(None) | CallError::Unavailable(_) => {
                Some(crate::dispatch::backoff(failures))
            }
            CallError::Refused { .. } => None,
        }
    }
}

/// One account's connection to the homeserver.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: url::Url,
    token: String,
}

impl Client {
    /// A client that calls `homeserver` as the holder of `token`.
    pub fn new(homeserver: &str, token: String) -> Result<Client> {
        let base = url::Url::parse(homeserver).context("`matrix.homeserver` is not a URL")?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Client { http, base, token })
    }

    /// Logs in with a password, keeping `device_id` when given (so the
    /// server's transaction-id deduplication carries across logins).
    pub async fn login(
        homeserver: &str,
        user: &str,
        password: &str,
        device_id: Option<&str>,
    ) -> Result<(String, String), CallError> {
        let client = Client::new(homeserver, String::new())
            .map_err(|e| CallError::Unavailable(format!("{e:#}")))?;
        let mut body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
            "initial_device_display_name": "aviary",
        });
        if let Some(device) = device_id {
            body["device_id"] = device.into();
        }
        let answer = client
            .call(
                reqwest::Method::POST,
                &["_matrix", "client", "v3", "login"],
                &[],
                Some(body),
            )
            .await?;
        let field = |name: &str| answer[name].as_str().map(str::to_owned);
        match (field("access_token"), field("device_id")) {
            (Some(token), Some(device)) => Ok((token, device)),
            _ => Err(CallError::Unavailable(
                "a login answer without a token".into(),
            )),
        }
    }

    /// `/sync`, waiting up to `timeout_ms` for news after `since`.
    pub async fn sync(&self, since: Option<&str>, timeout_ms: u64) -> Result<Value, CallError> {
        let filter = json!({ "room": { "timeline": { "limit": 100 } } }).to_string();
        let timeout = timeout_ms.to_string();
        let mut query = vec![("timeout", timeout.as_str()), ("filter", filter.as_str())];
        if let Some(since) = since {
            query.push(("since", since));
        }
        self.get(&["_matrix", "client", "v3", "sync"], &query).await
    }

    /// One page of `/messages`, newest first, from `from` back towards `to`.
    pub async fn messages_back(
        &self,
        room: &str,
        from: &str,
        to: &str,
    ) -> Result<Value, CallError> {
        let query = [("from", from), ("to", to), ("dir", "b"), ("limit", "1000")];
        self.get(
            &["_matrix", "client", "v3", "rooms", room, "messages"],
            &query,
        )
        .await
    }

    /// Joins `room`.
    pub async fn join(&self, room: &str) -> Result<(), CallError> {
        self.post(&["_matrix", "client", "v3", "join", room], json!({}))
            .await
            .map(drop)
    }

    /// Leaves (or declines the invite to) `room`.
    pub async fn leave(&self, room: &str) -> Result<(), CallError> {
        let path = ["_matrix", "client", "v3", "rooms", room, "leave"];
        self.post(&path, json!({})).await.map(drop)
    }

    /// Sends an `m.room.message`; the same `txn` is never posted twice.
    /// Returns the event's id.
    pub async fn send(&self, room: &str, txn: &str, content: Value) -> Result<String, CallError> {
        let path = [
            "_matrix",
            "client",
            "v3",
            "rooms",
            room,
            "send",
            "m.room.message",
            txn,
        ];
        let answer = self
            .call(reqwest::Method::PUT, &path, &[], Some(content))
            .await?;
        Ok(answer["event_id"].as_str().unwrap_or_default().to_owned())
    }

    /// Shows `user` as typing in `room` for a few seconds (or stops).
    pub async fn typing(&self, room: &str, user: &str, typing: bool) -> Result<(), CallError> {
        let path = ["_matrix", "client", "v3", "rooms", room, "typing", user];
        let body = json!({ "typing": typing, "timeout": 10_000 });
        self.call(reqwest::Method::PUT, &path, &[], Some(body))
            .await
            .map(drop)
    }

    /// Marks `event` and everything before it in `room` read.
    pub async fn receipt(&self, room: &str, event: &str) -> Result<(), CallError> {
        let path = [
            "_matrix", "client", "v3", "rooms", room, "receipt", "m.read", event,
        ];
        self.post(&path, json!({})).await.map(drop)
    }

    /// Uploads a file; returns its `mxc://` URI.
    pub async fn upload(
        &self,
        bytes: Vec<u8>,
        media_type: &str,
        name: &str,
    ) -> Result<String, CallError> {
        let url = self.url(&["_matrix", "media", "v3", "upload"], &[("filename", name)]);
        let request = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, media_type)
            .body(bytes);
        let answer = answer(request.send().await).await?;
        answer["content_uri"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| CallError::Unavailable("an upload answer without a URI".into()))
    }

    /// Downloads `mxc://server/id` through the authenticated media API, up
    /// to `max_bytes`.
    pub async fn download(&self, mxc: &str, max_bytes: usize) -> Result<Vec<u8>, CallError> {
        let refused = |message: &str| CallError::Refused {
            status: 400,
            errcode: "M_INVALID_PARAM".into(),
            message: message.into(),
        };
        let (server, id) = parse_mxc(mxc).ok_or_else(|| refused("not an mxc:// URI"))?;
        let path = ["_matrix", "client", "v1", "media", "download", server, id];
        let request = self.http.get(self.url(&path, &[])).bearer_auth(&self.token);
        let response = request.send().await.map_err(unavailable)?;
        if !response.status().is_success() {
            return Err(error_of(response).await);
        }
        let mut bytes = Vec::new();
        let mut response = response;
        while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > max_bytes {
                return Err(refused("the file is over the bot's attachment bound"));
            }
        }
        Ok(bytes)
    }

    async fn get(&self, path: &[&str], query: &[(&str, &str)]) -> Result<Value, CallError> {
        self.call(reqwest::Method::GET, path, query, None).await
    }

    async fn post(&self, path: &[&str], body: Value) -> Result<Value, CallError> {
        self.call(reqwest::Method::POST, path, &[], Some(body))
            .await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, CallError> {
        let mut request = self.http.request(method, self.url(path, query));
        if !self.token.is_empty() {
            request = request.bearer_auth(&self.token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await).await
    }

    /// The URL of `path`, each segment percent-encoded (room ids hold `!`).
    fn url(&self, path: &[&str], query: &[(&str, &str)]) -> url::Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has a path")
            .pop_if_empty()
            .extend(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }
}

/// The server name and media id of `mxc://<server>/<id>`, if both are
/// what the spec allows (a server name: letters, digits, `.-:[]`; a media
/// id: letters, digits, `_-`). The URI comes from whoever wrote the
/// message, and both parts become path segments of a request the host
/// makes with the bot's token: nothing else may get through.
pub fn parse_mxc(mxc: &str) -> Option<(&str, &str)> {
    let (server, id) = mxc.strip_prefix("mxc://")?.split_once('/')?;
    let server_ok = server
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    let id_ok = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
    let named = |part: &str| !part.is_empty() && part.chars().any(|c| c.is_ascii_alphanumeric());
    (server_ok && id_ok && named(server) && named(id)).then_some((server, id))
}

fn unavailable(error: reqwest::Error) -> CallError {
    CallError::Unavailable(error.to_string())
}

/// The JSON of a successful answer, or what went wrong.
async fn answer(sent: reqwest::Result<reqwest::Response>) -> Result<Value, CallError> {
    let response = sent.map_err(unavailable)?;
    if !response.status().is_success() {
        return Err(error_of(response).await);
    }
    response.json().await.map_err(unavailable)
}

/// Reads a failed answer's Matrix error (`errcode`, `error`,
/// `retry_after_ms`).
async fn error_of(response: reqwest::Response) -> CallError {
    let status = response.status();
    let header_wait = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map(Duration::from_secs);
    let body: Value = response.json().await.unwrap_or_default();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let wait = body["retry_after_ms"]
            .as_u64()
            .map(Duration::from_millis)
            .or(header_wait);
        return CallError::RateLimited(wait);
    }
    if status.is_server_error() {
        return CallError::Unavailable(format!("{status}"));
    }
    CallError::Refused {
        status: status.as_u16(),
        errcode: body["errcode"].as_str().unwrap_or("?").to_owned(),
        message: body["error"].as_str().unwrap_or_default().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mxc_uri_gives_a_server_and_id_and_nothing_else() {
        assert_eq!(
            parse_mxc("mxc://hs.example:8448/AbC_12-x"),
            Some(("hs.example:8448", "AbC_12-x"))
        );
        assert_eq!(parse_mxc("mxc://[::1]:8008/id"), Some(("[::1]:8008", "id")));
        for hostile in [
            "https://evil.example/id",
            "mxc://hs/../../../v3/admin",
            "mxc://../id",
            "mxc://hs/..",
            "mxc://hs/a/b",
            "mxc://hs/id?access_token=x",
            "mxc://hs/id#x",
            "mxc://hs%2F..%2F/id",
            "mxc://hs/",
            "mxc:///id",
            "mxc://hs",
            "mxc://hs/ïd",
        ] {
            assert_eq!(parse_mxc(hostile), None, "{hostile}");
        }
    }

    #[test]
    fn every_accepted_uri_stays_under_the_media_download_path() {
        let client = Client::new("http://127.0.0.1:8008/base/", String::new()).unwrap();
        let (server, id) = parse_mxc("mxc://[::1]:8008/A-b_c").unwrap();
        let url = client.url(
            &["_matrix", "client", "v1", "media", "download", server, id],
            &[],
        );
        let segments: Vec<&str> = url.path_segments().unwrap().collect();
        assert_eq!(segments.len(), 8, "{url}");
        assert_eq!(
            segments[..6],
            ["base", "_matrix", "client", "v1", "media", "download"]
        );
        assert_eq!(segments[7], "A-b_c");
        assert_eq!((url.host_str(), url.query()), (Some("127.0.0.1"), None));
    }
}
