//! `wasi:http/outgoing-handler`, gated by the bot's `http` grant.
//!
//! Every request is checked by name against the grant, then every address
//! its host resolves to is checked again (loopback, private, link-local and
//! metadata addresses only when a grant names that address). Plain-HTTP
//! requests then connect to the very address that was checked. Redirects are
//! not followed by the host: a redirected bot makes a new request, checked
//! the same way.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

use crate::policy::egress::{check_address, check_target, Target};
use crate::policy::{BotPolicy, Denial};
use crate::runtime::state::EventState;

/// Longest wait for a connection when the bot sets no timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-event HTTP state.
pub struct Http {
    ctx: WasiHttpCtx,
    hooks: EgressHooks,
}

impl Http {
    pub fn new(policy: Arc<BotPolicy>) -> Http {
        Http {
            ctx: WasiHttpCtx::new(),
            hooks: EgressHooks {
                policy,
                denials: Arc::default(),
            },
        }
    }

    /// Requests the policy refused during the event.
    pub fn take_denials(&mut self) -> Vec<Denial> {
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
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(linker)
}

struct EgressHooks {
    policy: Arc<BotPolicy>,
    /// Shared with the request future, which checks resolved addresses.
    denials: Arc<Mutex<Vec<Denial>>>,
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
        let denied = |denials: &Mutex<Vec<Denial>>, target: String, reason: String| {
            denials.lock().push(Denial {
                capability: "http",
                target,
                reason,
            });
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
            let options = Some(RequestOptions {
                connect_timeout: Some(
                    options
                        .and_then(|o| o.connect_timeout)
                        .unwrap_or(CONNECT_TIMEOUT),
                ),
                ..options.unwrap_or_default()
            });
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
