//! Key layout of the state tree. Bot and conversation ids never contain `/`
//! (the channels validate them), so `/` separates key parts unambiguously.

/// Prefix of pending events: `q/<seq as 16 hex>`.
pub const PENDING: &[u8] = b"q/";
/// Prefix of dead letters: `d/<seq as 16 hex>`.
pub const DEAD_LETTER: &[u8] = b"d/";

/// `m/<bot>/<conversation>/` — all messages of one conversation.
pub fn conversation_prefix(bot: &str, conversation: &str) -> Vec<u8> {
    format!("m/{bot}/{conversation}/").into_bytes()
}

/// The key of message `id` in a conversation.
pub fn message(bot: &str, conversation: &str, id: &str) -> Vec<u8> {
    format!("m/{bot}/{conversation}/{id}").into_bytes()
}

/// The smallest key after message `id` (ids are fixed-width hex).
pub fn message_after(bot: &str, conversation: &str, id: &str) -> Vec<u8> {
    let mut key = message(bot, conversation, id);
    key.push(0);
    key
}

/// Marks that `sender` has been seen in a conversation.
pub fn sender(bot: &str, conversation: &str, sender: &str) -> Vec<u8> {
    format!("s/{bot}/{conversation}/{sender}").into_bytes()
}

/// A pending event, ordered by sequence number.
pub fn pending(seq: u64) -> Vec<u8> {
    format!("q/{seq:016x}").into_bytes()
}

/// A dead letter, ordered like the event it was.
pub fn dead_letter(seq: u64) -> Vec<u8> {
    format!("d/{seq:016x}").into_bytes()
}

/// `k/<bot>/` — the namespace of one bot's kv.
pub fn kv_prefix(bot: &str) -> Vec<u8> {
    format!("k/{bot}/").into_bytes()
}

/// The key of `key` in bot's kv.
pub fn kv(bot: &str, key: &str) -> Vec<u8> {
    let mut out = kv_prefix(bot);
    out.extend_from_slice(key.as_bytes());
    out
}

/// Prefix of the audit log: `a/<seq as 16 hex>`.
pub const AUDIT: &[u8] = b"a/";

/// An audit record.
pub fn audit(seq: u64) -> Vec<u8> {
    format!("a/{seq:016x}").into_bytes()
}

/// The sequence number in an audit key.
pub fn audit_seq(key: &[u8]) -> Option<u64> {
    let hex = std::str::from_utf8(key.strip_prefix(AUDIT)?).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

/// An approval of one build of a bot: `p/<bot>/<version>/<sha256>`.
pub fn approval(bot: &str, version: &str, sha256: &str) -> Vec<u8> {
    format!("p/{bot}/{version}/{sha256}").into_bytes()
}

/// A conversation token, by the sha256 of the token: `t/<hex>`.
pub fn token(hash: &str) -> Vec<u8> {
    format!("t/{hash}").into_bytes()
}

/// Prefix of conversation tokens.
pub const TOKEN: &[u8] = b"t/";

/// An `Idempotency-Key` seen in a conversation, by the key's sha256:
/// `i/<bot>/<conversation>/<hex>`.
pub fn idempotency(bot: &str, conversation: &str, hash: &str) -> Vec<u8> {
    format!("i/{bot}/{conversation}/{hash}").into_bytes()
}

/// Prefix of remembered idempotency keys.
pub const IDEMPOTENCY: &[u8] = b"i/";

/// `v/<bot>/` — the versions one bot served, in order.
pub fn version_prefix(bot: &str) -> Vec<u8> {
    format!("v/{bot}/").into_bytes()
}

/// One version record of a bot, ordered by the store's id `id`.
pub fn version(bot: &str, id: &str) -> Vec<u8> {
    format!("v/{bot}/{id}").into_bytes()
}

/// Present while the admin has disabled the bot: `x/<bot>`.
pub fn disabled(bot: &str) -> Vec<u8> {
    format!("x/{bot}").into_bytes()
}

/// `b/<blob>/` — every reference to one blob.
pub fn blob_refs(blob: &str) -> Vec<u8> {
    format!("b/{blob}/").into_bytes()
}

/// `b/<blob>/<bot>/` — the references to a blob from one bot's
/// conversations.
pub fn blob_refs_of(blob: &str, bot: &str) -> Vec<u8> {
    format!("b/{blob}/{bot}/").into_bytes()
}

/// `b/<blob>/<bot>/<conversation>/` — the references to a blob from one
/// conversation.
pub fn blob_refs_in(blob: &str, bot: &str, conversation: &str) -> Vec<u8> {
    format!("b/{blob}/{bot}/{conversation}/").into_bytes()
}

/// Message `id` of a conversation refers to `blob`.
pub fn blob_ref(blob: &str, bot: &str, conversation: &str, id: &str) -> Vec<u8> {
    format!("b/{blob}/{bot}/{conversation}/{id}").into_bytes()
}

/// The reference of a conversation a bot has seen: `c/<bot>/<conversation>`.
pub fn conversation_ref(bot: &str, conversation: &str) -> Vec<u8> {
    format!("c/{bot}/{conversation}").into_bytes()
}

/// `s/<bot>/<conversation>/`: the senders seen in a conversation.
pub fn senders_prefix(bot: &str, conversation: &str) -> Vec<u8> {
    format!("s/{bot}/{conversation}/").into_bytes()
}

/// `r/<bot>/`: one bot's timers.
pub fn timers_prefix(bot: &str) -> Vec<u8> {
    format!("r/{bot}/").into_bytes()
}

/// Prefix of every bot's timers.
pub const TIMERS: &[u8] = b"r/";

/// Timer `id` of a bot.
pub fn timer(bot: &str, id: &str) -> Vec<u8> {
    format!("r/{bot}/{id}").into_bytes()
}

/// How many timers a bot holds (read by every change, so that concurrent
/// events cannot pass the `timers` grant together): `n/<bot>`.
pub fn timer_count(bot: &str) -> Vec<u8> {
    format!("n/{bot}").into_bytes()
}

/// Prefix of outbox jobs: `o/<job as 16 hex>`.
pub const OUTBOX: &[u8] = b"o/";

/// An outbox job, ordered by its id (the order jobs were enqueued).
pub fn outbox_job(job: u64) -> Vec<u8> {
    format!("o/{job:016x}").into_bytes()
}

/// Prefix of outbox jobs that gave up: `D/<job as 16 hex>`.
pub const OUTBOX_DEAD: &[u8] = b"D/";

/// An outbox job that gave up, kept for admins.
pub fn outbox_dead(job: u64) -> Vec<u8> {
    format!("D/{job:016x}").into_bytes()
}

/// The lane name of a bot's outbox idempotency keys (see [`idempotency`]):
/// `#` is never in a conversation id.
pub const OUTBOX_LANE: &str = "#outbox";

/// A webhook signature already accepted: `h/<bot>/<hook>/<sha256 of it>`.
pub fn webhook_signature(bot: &str, hook: &str, hash: &str) -> Vec<u8> {
    format!("h/{bot}/{hook}/{hash}").into_bytes()
}

/// Prefix of accepted webhook signatures.
pub const WEBHOOK_SIGNATURE: &[u8] = b"h/";

/// `g/<channel>/<rest>`: the state a channel keeps for itself (Matrix: its
/// sync tokens, logins, rooms and delivery cursors).
pub fn channel(channel: &str, rest: &str) -> Vec<u8> {
    format!("g/{channel}/{rest}").into_bytes()
}
