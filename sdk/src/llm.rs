//! Language models: the types of [`Host::llm_chat`](crate::Host::llm_chat)
//! and a few helpers to build requests (feature `llm`).
//!
//! ```
//! use aviary_sdk::llm::{ChatMessage, ChatRequest};
//!
//! let mut request = ChatRequest::new(
//!     "smollm2",
//!     vec![ChatMessage::system("Answer briefly."), ChatMessage::user("Hi!")],
//! );
//! request.max_tokens = Some(64);
//! request.stream_to = Some("room".into());
//! assert_eq!(request.messages.len(), 2);
//! ```

pub use crate::bindings::aviary::bot::llm::{
    ChatMessage, ChatRequest, Completion, FinishReason, Role, Usage,
};

impl ChatMessage {
    /// A message of `role` saying `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
    /// A system message: instructions the model follows.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    /// A message of the user the model answers.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    /// A message the model (the assistant) said before.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

impl ChatRequest {
    /// A request for `model` to answer after `messages`, with the model's
    /// default `max_tokens` and `temperature`, no stop sequences and no
    /// streaming; set the public fields to change them.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        ChatRequest {
            model: model.into(),
            messages,
            max_tokens: None,
            temperature: None,
            stop: Vec::new(),
            stream_to: None,
        }
    }
}

/// Field by field; `temperature` compares as `f32` (so a NaN is unequal to
/// itself), which is why the type has no `Eq`.
impl PartialEq for ChatRequest {
    fn eq(&self, other: &Self) -> bool {
        self.model == other.model
            && self.messages == other.messages
            && self.max_tokens == other.max_tokens
            && self.temperature == other.temperature
            && self.stop == other.stop
            && self.stream_to == other.stream_to
    }
}

/// A rough count of the tokens of `text`: its bytes of UTF-8 divided by 4,
/// rounded up. Real tokenizers differ by model; this is for budgets, not
/// for billing.
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(4)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_constructors_set_the_role() {
        assert_eq!(ChatMessage::system("s").role, Role::System);
        assert_eq!(ChatMessage::user("u").role, Role::User);
        let said = ChatMessage::assistant("a");
        assert_eq!((said.role, said.content.as_str()), (Role::Assistant, "a"));
    }

    #[test]
    fn a_new_request_uses_the_models_defaults() {
        let request = ChatRequest::new("m", vec![ChatMessage::user("hi")]);
        assert_eq!(request.model, "m");
        assert_eq!(request.max_tokens, None);
        assert_eq!(request.temperature, None);
        assert!(request.stop.is_empty() && request.stream_to.is_none());
        let mut warmer = request.clone();
        assert_eq!(warmer, request);
        warmer.temperature = Some(1.0);
        assert_ne!(warmer, request);
    }

    #[test]
    fn tokens_are_estimated_as_a_quarter_of_the_bytes_rounded_up() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("🦜"), 1);
    }
}
