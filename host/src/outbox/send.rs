//! Sends one job through the process's [pinned](crate::pinned) clients: to
//! the very addresses that were checked against the bot's `http` grant.

use std::time::Duration;

use crate::pinned::{clients, describe, resolve, EgressError};
use crate::policy::egress::{check_target, Target};
use crate::store::{Answer, OutboxJob};

/// Most bytes of an answer's body kept for the bot.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Sends `job` under `grants` within `timeout`.
pub async fn send(
    grants: &[String],
    job: &OutboxJob,
    timeout: Duration,
) -> Result<Answer, EgressError> {
    let target = Target::parse(&job.url).ok_or_else(|| {
        EgressError::Denied(format!("`{}` is not an absolute http(s) URL", job.url))
    })?;
    check_target(grants, &target).map_err(EgressError::Denied)?;
    let client = clients().client(&target, resolve(grants, &target).await?)?;
    let method = reqwest::Method::from_bytes(job.method.as_bytes())
        .map_err(|_| EgressError::Denied(format!("`{}` is not an HTTP method", job.method)))?;
    let mut request = client
        .request(method, &job.url)
        .timeout(timeout)
        .header("idempotency-key", &job.idempotency_key)
        .body(job.body.clone());
    for (name, value) in &job.headers {
        request = request.header(name, value);
    }
    let response = request
        .send()
        .await
        .map_err(|e| EgressError::Failed(describe(&e)))?;
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

/// The body, up to [`MAX_ANSWER_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, EgressError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| EgressError::Failed(describe(&e)))?
    {
        let room = MAX_ANSWER_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(body)
}
