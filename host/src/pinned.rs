//! HTTP clients that connect only to addresses that were checked: the one
//! way bots reach the network, shared by `wasi:http` and the outbox.
//!
//! A destination's name is resolved here, every address it resolves to is
//! checked against the bot's `http` grant ([`check_address`]), and the
//! client is handed only those addresses (`resolve_to_addrs`), for HTTPS
//! too: the TLS certificate is still checked against the name. A name that
//! resolves elsewhere a moment later (DNS rebinding) changes nothing.
//! Redirects are never followed and no proxy is used.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use parking_lot::Mutex;

use crate::policy::egress::{check_address, Target};

/// Longest wait for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients kept for reuse (their connections stay open).
const MAX_CLIENTS: usize = 256;

/// Why a destination cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The grant does not (or no longer) cover it: retrying cannot help.
    #[error("{0}")]
    Denied(String),
    /// No answer this time (DNS, connection, timeout).
    #[error("{0}")]
    Failed(String),
}

/// The addresses `target` resolves to, each allowed by `grants`.
pub async fn resolve(grants: &[String], target: &Target) -> Result<Vec<SocketAddr>, EgressError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| EgressError::Failed(format!("cannot resolve {}: {e}", target.host)))?
        .collect();
    if addrs.is_empty() {
        return Err(EgressError::Failed(format!(
            "{} has no address",
            target.host
        )));
    }
    for addr in &addrs {
        check_address(grants, target, addr.ip()).map_err(EgressError::Denied)?;
    }
    Ok(addrs)
}

/// The process's clients, by destination and the addresses they may use.
pub fn clients() -> &'static Clients {
    static CLIENTS: LazyLock<Clients> = LazyLock::new(Clients::default);
    &CLIENTS
}

/// Clients by destination and the addresses they may connect to.
#[derive(Default)]
pub struct Clients {
    clients: Mutex<HashMap<(String, Vec<SocketAddr>), reqwest::Client>>,
}

impl Clients {
    /// A client for `target` that connects to `addrs` and nowhere else.
    pub fn client(
        &self,
        target: &Target,
        addrs: Vec<SocketAddr>,
    ) -> Result<reqwest::Client, EgressError> {
        let key = (target.to_string(), addrs);
        let mut clients = self.clients.lock();
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = reqwest::Client::builder()
            .resolve_to_addrs(&target.host, &key.1)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| EgressError::Failed(format!("cannot make an HTTP client: {e}")))?;
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// An error with its causes, as one line.
pub fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// A listener that answers one plain-HTTP request with 200 and hands
    /// back the first bytes it read.
    fn one_shot_server() -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut read = vec![0; 4096];
            let n = stream.read(&mut read).unwrap();
            read.truncate(n);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            read
        });
        (addr, server)
    }

    fn target(url: &str) -> Target {
        Target::parse(url).unwrap()
    }

    #[tokio::test]
    async fn a_client_connects_to_the_checked_address_not_to_a_fresh_lookup() {
        let (addr, server) = one_shot_server();
        // `.invalid` never resolves: only the pinned address can be used.
        let url = format!("http://pinned.invalid:{}/path", addr.port());
        let client = Clients::default()
            .client(&target(&url), vec![addr])
            .unwrap();
        let answer = client.get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        let request = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(request.starts_with("GET /path HTTP/1.1"), "{request}");
        assert!(
            request.contains(&format!("host: pinned.invalid:{}", addr.port())),
            "the name is kept for the Host header: {request}"
        );
    }

    #[tokio::test]
    async fn https_goes_to_the_checked_address_and_keeps_the_name_for_tls() {
        let (addr, server) = one_shot_server();
        let url = format!("https://pinned.invalid:{}/", addr.port());
        let client = Clients::default()
            .client(&target(&url), vec![addr])
            .unwrap();
        // The listener speaks no TLS: the handshake fails, but only after
        // the client connected to the pinned address and named the host.
        assert!(client.get(&url).send().await.is_err());
        let hello = server.join().unwrap();
        assert_eq!(hello.first(), Some(&0x16), "a TLS handshake record");
        assert!(
            hello.windows(14).any(|w| w == b"pinned.invalid"),
            "the server name (SNI) is the URL's host"
        );
    }

    #[tokio::test]
    async fn resolve_refuses_a_granted_name_that_resolves_to_loopback() {
        let refused = resolve(
            &["http://localhost:1".into()],
            &target("http://localhost:1/"),
        )
        .await;
        assert!(
            matches!(refused, Err(EgressError::Denied(_))),
            "{refused:?}"
        );
        let allowed = resolve(
            &["http://127.0.0.1:1".into()],
            &target("http://127.0.0.1:1/"),
        )
        .await
        .unwrap();
        assert_eq!(allowed, vec![SocketAddr::from(([127, 0, 0, 1], 1))]);
    }
}
