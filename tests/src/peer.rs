//! What the drivers of the peer servers ([`crate::helpdesk`],
//! [`crate::synapse`]) share: reading their logs and their JSON answers.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::Value;

/// The JSON of a 2xx answer; panics with the body otherwise.
pub(crate) fn read_json(response: reqwest::blocking::Response, method: &str, url: &str) -> Value {
    let status = response.status();
    let body = response.text().unwrap_or_default();
    assert!(status.is_success(), "{method} {url}: {status}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {url}: {e}: {body}"))
}

/// The file from byte `start` on (empty when it cannot be read).
pub(crate) fn read_from(path: &Path, start: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let _ = file.seek(SeekFrom::Start(start));
    let mut buffer = Vec::new();
    let _ = file.read_to_end(&mut buffer);
    String::from_utf8_lossy(&buffer).into_owned()
}

/// The last `bytes` bytes of `text` (at a character boundary).
pub(crate) fn tail(text: &str, bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
