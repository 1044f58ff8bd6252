//! Validation of the ids that appear in URLs and store keys: the rule lives
//! in `aviary-rules`, shared with the SDK, so bots and host agree on it.

pub use aviary_rules::ids::is_valid_id;
