//! A model behind an OpenAI-compatible server (llama.cpp's server, vLLM,
//! Ollama, llama-cpp-python): `POST {base_url}/chat/completions` streamed
//! as server-sent events, `POST {base_url}/embeddings`. Redaction and its
//! audit happen before a job gets here (see [`super::redact`]).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::backend::{Backend, Finish, Generated, Job, LlmError, Update};
use super::config::OpenAiConfig;

/// Most bytes of one server-sent line (a chunk of a few tokens is far less).
const MAX_LINE_BYTES: usize = 1 << 20;

/// An OpenAI-compatible endpoint.
pub struct OpenAi {
    endpoint: Arc<Endpoint>,
    /// Runs the requests (a backend is called from any thread).
    io: tokio::runtime::Handle,
}

/// The server and how to talk to it.
struct Endpoint {
    name: String,
    config: OpenAiConfig,
    api_key: Option<String>,
    client: reqwest::Client,
}

impl OpenAi {
    /// A client of `config`'s server; reads the API key from its
    /// environment variable now, so a missing one fails at start.
    pub fn new(
        name: &str,
        config: &OpenAiConfig,
        io: tokio::runtime::Handle,
    ) -> anyhow::Result<OpenAi> {
        let api_key = match &config.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                anyhow::anyhow!("`llm.models.{name}.api_key_env` names `{var}`, which is not set in the host's environment")
            })?),
            None => None,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.timeout_secs))
            .read_timeout(Duration::from_secs(config.timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let endpoint = Endpoint {
            name: name.to_owned(),
            config: config.clone(),
            api_key,
            client,
        };
        Ok(OpenAi {
            endpoint: Arc::new(endpoint),
            io,
        })
    }
}

impl Endpoint {
    fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        let url = format!("{}/{path}", self.config.base_url.trim_end_matches('/'));
        let request = self.client.post(url).json(&body);
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    fn unavailable(&self, what: impl std::fmt::Display) -> LlmError {
        LlmError::Unavailable(format!(
            "model `{}` at {}: {what}",
            self.name, self.config.base_url
        ))
    }

    /// Sends the request and checks its status.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, LlmError> {
        let response = request
            .send()
            .await
            .map_err(|e| self.unavailable(format!("cannot reach the server: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        let body = crate::text::cut(&body, 300).into_owned();
        Err(self.unavailable(format!("the server answered {status}: {body}")))
    }

    async fn stream(
        &self,
        job: Job,
        updates: &mpsc::UnboundedSender<Update>,
    ) -> Result<Generated, LlmError> {
        let messages: Vec<Value> = job
            .messages
            .iter()
            .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
            .collect();
        let mut body = json!({
            "model": self.config.model,
            "messages": messages,
            "max_tokens": job.max_tokens,
            "temperature": job.temperature,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if !job.stop.is_empty() {
            body["stop"] = json!(job.stop);
        }
        let response = self.send(self.post("chat/completions", body)).await?;
        let _ = updates.send(Update::Started);
        let mut reader = Sse::default();
        let mut bytes = response.bytes_stream();
        while let Some(chunk) = bytes.next().await {
            let chunk =
                chunk.map_err(|e| self.unavailable(format!("the answer broke off: {e}")))?;
            for data in reader.push(&chunk).map_err(|e| self.unavailable(e))? {
                if let Some(text) = reader.take(&data).map_err(|e| self.unavailable(e))? {
                    if updates.send(Update::Text(text)).is_err() {
                        // Cancelled: dropping the stream closes the request.
                        return Err(LlmError::Unavailable("cancelled".into()));
                    }
                }
            }
            if reader.done {
                break;
            }
        }
        Ok(reader.finish())
    }

    async fn embeddings(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, LlmError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let count = texts.len();
        let body = json!({"model": self.config.model, "input": texts});
        let answer: Value = self
            .send(self.post("embeddings", body))
            .await?
            .json()
            .await
            .map_err(|e| self.unavailable(format!("the embeddings are not JSON: {e}")))?;
        let vectors: Option<Vec<Vec<f32>>> = answer["data"].as_array().map(|items| {
            items
                .iter()
                .filter_map(|item| serde_json::from_value(item["embedding"].clone()).ok())
                .collect()
        });
        match vectors {
            Some(vectors) if vectors.len() == count => Ok(vectors),
            _ => Err(self.unavailable(format!("the server did not return {count} embeddings"))),
        }
    }
}

impl Backend for OpenAi {
    fn generate(&self, job: Job) -> mpsc::UnboundedReceiver<Update> {
        let (updates, receiver) = mpsc::unbounded_channel();
        let this = self.endpoint.clone();
        self.io.spawn(async move {
            let result = tokio::select! {
                result = this.stream(job, &updates) => result,
                () = updates.closed() => return,
            };
            let _ = updates.send(Update::Done(result));
        });
        receiver
    }

    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, LlmError>> {
        let this = self.endpoint.clone();
        let task = self.io.spawn(async move { this.embeddings(texts).await });
        Box::pin(async move {
            task.await
                .unwrap_or_else(|e| Err(LlmError::Unavailable(format!("embedding failed: {e}"))))
        })
    }
}

/// Reads `data:` lines of a server-sent event stream of chat chunks.
#[derive(Default)]
struct Sse {
    line: Vec<u8>,
    text: String,
    finish: Option<Finish>,
    usage: Option<(u32, u32)>,
    chunks: u32,
    done: bool,
}

impl Sse {
    /// Feeds bytes; returns the `data:` payloads of the lines they completed.
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        let mut payloads = Vec::new();
        for &byte in bytes {
            if byte != b'\n' {
                self.line.push(byte);
                if self.line.len() > MAX_LINE_BYTES {
                    return Err("a streamed line is over 1 MiB".into());
                }
                continue;
            }
            let line = String::from_utf8_lossy(&self.line)
                .trim_end_matches('\r')
                .to_owned();
            self.line.clear();
            if let Some(data) = line.strip_prefix("data:") {
                payloads.push(data.trim_start().to_owned());
            }
        }
        Ok(payloads)
    }

    /// Takes one payload in; returns the text it adds, if any.
    fn take(&mut self, data: &str) -> Result<Option<String>, String> {
        if data == "[DONE]" {
            self.done = true;
            return Ok(None);
        }
        let chunk: Value =
            serde_json::from_str(data).map_err(|e| format!("a streamed chunk is not JSON: {e}"))?;
        if let Some(error) = chunk.get("error") {
            return Err(format!("the server reported: {error}"));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            let count = |key: &str| usage[key].as_u64().unwrap_or(0) as u32;
            self.usage = Some((count("prompt_tokens"), count("completion_tokens")));
        }
        let choice = &chunk["choices"][0];
        match choice["finish_reason"].as_str() {
            Some("length") => self.finish = Some(Finish::Length),
            Some(_) => self.finish = Some(Finish::Stop),
            None => {}
        }
        let text = choice["delta"]["content"].as_str().unwrap_or("");
        if text.is_empty() {
            return Ok(None);
        }
        self.chunks += 1;
        self.text.push_str(text);
        Ok(Some(text.to_owned()))
    }

    /// The generation as the server told it; a server that sends no usage
    /// streams one token per chunk, so chunks count the completion.
    fn finish(self) -> Generated {
        let (prompt_tokens, completion_tokens) = self.usage.unwrap_or((0, self.chunks));
        Generated {
            text: self.text,
            finish: self.finish.unwrap_or(Finish::Stop),
            prompt_tokens,
            completion_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_sent_chunks_make_the_text_finish_and_usage() {
        let mut sse = Sse::default();
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\r\n\r\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"length\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n"
        );
        let mut texts = Vec::new();
        // Fed in small pieces: lines split across network reads.
        for piece in stream.as_bytes().chunks(7) {
            for data in sse.push(piece).unwrap() {
                texts.extend(sse.take(&data).unwrap());
            }
        }
        assert!(sse.done);
        assert_eq!(texts, ["Hel", "lo"]);
        assert_eq!(
            sse.finish(),
            Generated {
                text: "Hello".into(),
                finish: Finish::Length,
                prompt_tokens: 12,
                completion_tokens: 2
            }
        );
    }

    #[test]
    fn a_server_error_in_the_stream_is_an_error() {
        let mut sse = Sse::default();
        assert!(sse
            .take("{\"error\":{\"message\":\"boom\"}}")
            .unwrap_err()
            .contains("boom"));
        assert!(sse.take("not json").is_err());
    }
}
