//! Sends one job, to the very addresses that were checked: the name is
//! resolved here, every address checked against the bot's `http` grant
//! ([`check_address`]), and the client is handed only those addresses, for
//! HTTPS too (the certificate is still checked against the name). A name
//! that resolves elsewhere a moment later changes nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use parking_lot::Mutex;

use crate::policy::egress::{check_address, check_target, Target};
use crate::store::{Answer, OutboxJob};

/// Most bytes of an answer's body kept for the bot.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Clients kept for reuse (their connections stay open).
const MAX_CLIENTS: usize = 256;

/// Why a job got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The grant does not (or no longer) cover it: retrying cannot help.
    #[error("{0}")]
    Denied(String),
    /// No answer this time (DNS, connection, timeout).
    #[error("{0}")]
    Failed(String),
}

/// Clients by destination and the addresses they may connect to.
#[derive(Default)]
pub struct Clients {
    clients: Mutex<HashMap<(String, Vec<SocketAddr>), reqwest::Client>>,
}

impl Clients {
    /// Sends `job` under `grants` within `timeout`.
    pub async fn send(
        &self,
        grants: &[String],
        job: &OutboxJob,
        timeout: Duration,
    ) -> Result<Answer, SendError> {
        let target = Target::parse(&job.url).ok_or_else(|| {
            SendError::Denied(format!("`{}` is not an absolute http(s) URL", job.url))
        })?;
        check_target(grants, &target).map_err(SendError::Denied)?;
        let addrs = resolve(grants, &target).await?;
        let client = self.client(&target, addrs, timeout)?;
        let method = reqwest::Method::from_bytes(job.method.as_bytes())
            .map_err(|_| SendError::Denied(format!("`{}` is not an HTTP method", job.method)))?;
        let mut request = client
            .request(method, &job.url)
            .header("idempotency-key", &job.idempotency_key)
            .body(job.body.clone());
        for (name, value) in &job.headers {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| SendError::Failed(describe(&e)))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = read_capped(response).await?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    fn client(
        &self,
        target: &Target,
        addrs: Vec<SocketAddr>,
        timeout: Duration,
    ) -> Result<reqwest::Client, SendError> {
        let key = (target.to_string(), addrs);
        let mut clients = self.clients.lock();
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = reqwest::Client::builder()
            .resolve_to_addrs(&target.host, &key.1)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .timeout(timeout)
            .build()
            .map_err(|e| SendError::Failed(format!("cannot make an HTTP client: {e}")))?;
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// The addresses `target` resolves to, each allowed by `grants`.
async fn resolve(grants: &[String], target: &Target) -> Result<Vec<SocketAddr>, SendError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| SendError::Failed(format!("cannot resolve {}: {e}", target.host)))?
        .collect();
    if addrs.is_empty() {
        return Err(SendError::Failed(format!("{} has no address", target.host)));
    }
    for addr in &addrs {
        check_address(grants, target, addr.ip()).map_err(SendError::Denied)?;
    }
    Ok(addrs)
}

/// The body, up to [`MAX_ANSWER_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, SendError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| SendError::Failed(describe(&e)))?
    {
        let room = MAX_ANSWER_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(body)
}

/// An error with its causes, as one line.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
