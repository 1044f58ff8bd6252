//! `wasi:http/outgoing-handler`, gated by the bot's `http` grant.
//!
//! Every request is checked by name against the grant, then every address
//! its host resolves to is checked again (loopback, private, link-local and
//! metadata addresses only when a grant names that address). Requests then
//! connect to the very addresses that were checked, HTTPS ones too (see
//! [`crate::pinned`]). Redirects are
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

use crate::pinned::{clients, describe, resolve, EgressError};
use crate::policy::egress::{check_target, Target};
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
        request: http::Request<WasiBody>,
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
        let options = self.capped(options);
        let grants = self.policy.grant.http.clone();
        let denials = self.denials.clone();
        Box::new(async move {
            let addrs = match resolve(&grants, &target).await {
                Ok(addrs) => addrs,
                Err(EgressError::Denied(reason)) => {
                    return Err(denied(&denials, target.to_string(), reason))
                }
                Err(EgressError::Failed(reason)) => {
                    return Err(HttpError::DnsError {
                        rcode: Some(reason),
                        info_code: None,
                    })
                }
            };
            let client = clients()
                .client(&target, addrs)
                .map_err(|e| HttpError::InternalError(Some(e.to_string())))?;
            let response = send_pinned(&client, request, options).await?;
            Ok((
                response,
                Box::new(async { Ok(()) }) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}

/// Sends `request` with `client` (pinned to the checked addresses), its
/// body streamed both ways, within `options`' timeouts.
async fn send_pinned(
    client: &reqwest::Client,
    request: http::Request<WasiBody>,
    options: RequestOptions,
) -> Result<http::Response<WasiBody>, HttpError> {
    use http_body_util::BodyExt;
    let (parts, body) = request.into_parts();
    let url = parts.uri.to_string();
    let request = client
        .request(parts.method, url)
        .headers(parts.headers)
        .body(reqwest::Body::wrap_stream(
            http_body_util::BodyDataStream::new(body),
        ));
    let first_byte = options.connect_timeout.unwrap_or(MAX_CONNECT_TIMEOUT)
        + options.first_byte_timeout.unwrap_or(MAX_FIRST_BYTE_TIMEOUT);
    let response = tokio::time::timeout(first_byte, request.send())
        .await
        .map_err(|_| HttpError::HttpResponseTimeout)?
        .map_err(|e| error_of(&e))?;
    let between = options
        .between_bytes_timeout
        .unwrap_or(MAX_BETWEEN_BYTES_TIMEOUT);
    let response: http::Response<reqwest::Body> = response.into();
    Ok(response.map(|body| {
        let frames = futures::stream::unfold(Some(body), move |body| async move {
            let mut body = body?;
            match tokio::time::timeout(between, body.frame()).await {
                Ok(Some(Ok(frame))) => Some((Ok(frame), Some(body))),
                Ok(Some(Err(e))) => Some((Err(error_of(&e)), None)),
                Ok(None) => None,
                Err(_) => Some((Err(HttpError::ConnectionReadTimeout), None)),
            }
        });
        http_body_util::StreamBody::new(frames).boxed_unsync()
    }))
}

/// The `wasi:http` error code closest to `error`.
fn error_of(error: &reqwest::Error) -> HttpError {
    if error.is_timeout() {
        HttpError::ConnectionReadTimeout
    } else if error.is_connect() {
        HttpError::ConnectionRefused
    } else {
        HttpError::InternalError(Some(describe(error)))
    }
}

impl WasiHttpView for EventState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let (http, table) = self.http_parts();
        http.view(table)
    }
}
