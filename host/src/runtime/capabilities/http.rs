//! `wasi:http/outgoing-handler`, gated by the bot's `http` grant.
//!
//! Every request is checked by name against the grant, then every address
//! its host resolves to is checked again (loopback, private, link-local and
//! metadata addresses only when a grant names that address). Plain-HTTP
//! requests then connect to the very address that was checked. Redirects are
//! not followed by the host: a redirected bot makes a new request, checked
//! the same way. Connect, first-byte and between-bytes timeouts are capped
//! by the host and by the event's wall deadline: a bot can shorten them,
//! never lift them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

use crate::policy::egress::{check_address, check_target, Target};
use crate::policy::BotPolicy;
use crate::runtime::budget::Refusals;
use crate::runtime::state::EventState;

/// Longest wait for a connection.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the first byte of an answer.
pub const MAX_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between two bytes of an answer.
pub const MAX_BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-event HTTP state.
pub struct Http {
    ctx: WasiHttpCtx,
    hooks: EgressHooks,
}

impl Http {
    /// HTTP for one event that must be over by `wall_deadline`.
    pub fn new(policy: Arc<BotPolicy>, wall_deadline: Instant) -> Http {
        Http {
            ctx: WasiHttpCtx::new(),
            hooks: EgressHooks {
                policy,
                wall_deadline,
                denials: Arc::default(),
            },
        }
    }

    /// Requests the policy refused during the event.
    pub fn take_refusals(&mut self) -> Refusals {
        std::mem::take(&mut *self.hooks.denials.lock())
    }

    /// The view wasmtime-wasi-http works through.
    pub fn view<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView {
            ctx: &mut self.ctx,
            table,
            hooks: &mut self.hooks,
        }
    }
}

/// Links `wasi:http/types` and `wasi:http/outgoing-handler`.
pub fn link(linker: &mut Linker<EventState>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}

struct EgressHooks {
    policy: Arc<BotPolicy>,
    wall_deadline: Instant,
    /// Shared with the request future, which checks resolved addresses.
    denials: Arc<Mutex<Refusals>>,
}

impl EgressHooks {
    /// The bot's timeouts, capped by the host's and by the time left.
    fn capped(&self, asked: Option<RequestOptions>) -> RequestOptions {
        let left = self
            .wall_deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let cap = |asked: Option<Duration>, max: Duration| {
            Some(asked.map_or(max, |a| a.min(max)).min(left))
        };
        let asked = asked.unwrap_or_default();
        RequestOptions {
            connect_timeout: cap(asked.connect_timeout, MAX_CONNECT_TIMEOUT),
            first_byte_timeout: cap(asked.first_byte_timeout, MAX_FIRST_BYTE_TIMEOUT),
            between_bytes_timeout: cap(asked.between_bytes_timeout, MAX_BETWEEN_BYTES_TIMEOUT),
        }
    }
}

type ResponseFuture = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        drop(fut);
        let url = request.uri().to_string();
        let denied = |denials: &Mutex<Refusals>, target: String, reason: String| {
            denials.lock().deny("http", &target, || reason);
            HttpError::HttpRequestDenied
        };
        let target = match Target::parse(&url) {
            Some(target) => target,
            None => {
                let error = denied(
                    &self.denials,
                    url.clone(),
                    "not an absolute http(s) URL".into(),
                );
                return Box::new(async move { Err(error) });
            }
        };
        if let Err(reason) = check_target(&self.policy.grant.http, &target) {
            let error = denied(&self.denials, target.to_string(), reason);
            return Box::new(async move { Err(error) });
        }
        let options = Some(self.capped(options));
        let grants = self.policy.grant.http.clone();
        let denials = self.denials.clone();
        Box::new(async move {
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((target.host.as_str(), target.port))
                    .await
                    .map_err(|e| HttpError::DnsError {
                        rcode: Some(e.to_string()),
                        info_code: None,
                    })?
                    .collect();
            if addrs.is_empty() {
                return Err(HttpError::DestinationNotFound);
            }
            for addr in &addrs {
                if let Err(reason) = check_address(&grants, &target, addr.ip()) {
                    return Err(denied(&denials, target.to_string(), reason));
                }
            }
            if target.scheme == "http" {
                // Connect to the address just checked, not to a fresh lookup.
                let path = request
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                *request.uri_mut() = format!("http://{}{path}", addrs[0])
                    .parse()
                    .map_err(|_| HttpError::HttpRequestUriInvalid)?;
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            use http_body_util::BodyExt;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}

impl WasiHttpView for EventState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let (http, table) = self.http_parts();
        http.view(table)
    }
}
