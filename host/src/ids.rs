//! Ids: validation of the ids that appear in URLs and store keys (the rule
//! lives in `aviary-rules`, shared with the SDK, so bots and host agree on
//! it) and the random ones the host makes.

pub use aviary_rules::ids::is_valid_id;

/// `bytes` random bytes from the operating system, in hex: tokens, ids,
/// transaction ids.
pub fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(hex::encode(buffer))
}
