//! What every model backend (embedded llama.cpp, an OpenAI-compatible
//! server) offers the capability: start a generation whose text arrives
//! piece by piece, and embed texts. Cancelling is dropping: when the
//! receiver of a generation is dropped (the event ended or ran out of
//! time), the backend stops generating for it.

use futures::future::BoxFuture;
use tokio::sync::mpsc;

/// Who said a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// The role's name in chat templates and the OpenAI API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// A generation to run, with every setting resolved.
#[derive(Debug, Clone)]
pub struct Job {
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// 0 is greedy: the likeliest token every time.
    pub temperature: f32,
    /// Generation ends before the first of these; it is not part of the text.
    pub stop: Vec<String>,
}

/// Why a generation ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model ended its turn or a stop sequence came.
    Stop,
    /// `max_tokens` or the context was reached.
    Length,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The whole text (the concatenation of every [`Update::Text`]).
    pub text: String,
    pub finish: Finish,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// What a generation reports while it runs.
#[derive(Debug)]
pub enum Update {
    /// It started computing (it left the queue): the first text follows.
    Started,
    /// Text appended to what came before (never a stop sequence, nor a
    /// piece of one that may still complete).
    Text(String),
    /// The end: nothing follows.
    Done(Result<Generated, LlmError>),
}

/// Why a backend could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// The model or its server cannot answer now (not installed, down).
    #[error("{0}")]
    Unavailable(String),
    /// The request cannot be done by this model (prompt too long, ...).
    #[error("{0}")]
    Invalid(String),
}

/// A model backend. One per configured model.
pub trait Backend: Send + Sync {
    /// Starts `job`. Updates come on the returned receiver, the last one
    /// being [`Update::Done`]; dropping the receiver cancels the job.
    fn generate(&self, job: Job) -> mpsc::UnboundedReceiver<Update>;

    /// One embedding vector per text, in order.
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, LlmError>>;
}
