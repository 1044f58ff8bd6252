//! llama.cpp's own speed, for comparison with the host: the same model and
//! chat template as the embedded backend, greedy sampling, one sequence,
//! and a plain decode loop with none of the host's machinery (no worker,
//! no queue, no batching across sequences, no streaming).

use std::num::NonZeroU32;
use std::path::Path;
use std::time::{Duration, Instant};

use aviary_host::runtime::capabilities::llm::embedded::llama;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;

/// Generates greedily from `prompt_messages` (`(role, content)` pairs)
/// until an end-of-generation token, `max_tokens` or a full context.
///
/// Returns the completion tokens, the time from the first decode (the
/// prompt's) to the last token sampled, and the time from that decode to
/// the first token sampled. Panics on any failure: it is a benchmark.
pub fn direct_generate(
    model_path: &Path,
    prompt_messages: &[(&str, &str)],
    max_tokens: u32,
    threads: u32,
    context_tokens: u32,
) -> (u32, Duration, Duration) {
    let backend = llama();
    let model = LlamaModel::load_from_file(backend, model_path, &LlamaModelParams::default())
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", model_path.display()));
    let threads = i32::try_from(threads).expect("threads fit an i32");
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(context_tokens))
        .with_n_batch(context_tokens)
        .with_n_ubatch(context_tokens.min(512))
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(backend, params).expect("a context");

    let template = model
        .chat_template(None)
        .expect("the model has a chat template");
    let chat: Vec<LlamaChatMessage> = prompt_messages
        .iter()
        .map(|(role, content)| {
            LlamaChatMessage::new((*role).into(), (*content).into()).expect("no NUL")
        })
        .collect();
    let prompt = model
        .apply_chat_template(&template, &chat, true)
        .expect("the template renders");
    let vocab = model.vocab();
    let tokens = vocab.tokenize(prompt.as_bytes(), true, true);
    assert!(
        tokens.len() < context_tokens as usize,
        "the prompt fills the context"
    );

    let mut sampler = LlamaSampler::greedy();
    let mut batch = LlamaBatch::new(tokens.len().max(1), 1);
    batch
        .add_sequence(&tokens, 0, false)
        .expect("the prompt fits the batch");

    let start = Instant::now();
    let mut first_token = None;
    let mut generated = 0u32;
    let mut position = i32::try_from(tokens.len()).expect("prompt length fits an i32");
    loop {
        ctx.decode(&mut batch).expect("decode");
        let token = sampler.sample(&ctx, batch.n_tokens() - 1);
        first_token.get_or_insert_with(|| start.elapsed());
        if vocab.is_eog(token) {
            break;
        }
        generated += 1;
        if generated >= max_tokens || position as u32 >= context_tokens {
            break;
        }
        batch.clear();
        batch
            .add(token, position, &[0], true)
            .expect("one token fits");
        position += 1;
    }
    let total = start.elapsed();
    (generated, total, first_token.unwrap_or(total))
}
