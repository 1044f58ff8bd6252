//! The capabilities a bot can ask for (in its manifest) and be granted (in
//! its policy). Both use this one schema so that they compare field by field.
//! Everything absent is nothing: deny by default.

use serde::{Deserialize, Serialize};

/// A set of capabilities, as asked or as granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Capabilities {
    /// Outbound HTTP targets, `scheme://host:port`; the host may start with
    /// `*.` to cover its subdomains.
    pub http: Vec<String>,
    /// The bot's kv store and its size.
    pub kv: Option<KvQuota>,
    /// Sending messages, and how fast.
    pub send: Option<SendRate>,
    /// Cap on linear memory, in MiB.
    pub memory_mb: Option<u64>,
    /// CPU time of one event, in milliseconds. Waits inside host calls
    /// (sleeps, HTTP answers) do not count; `wall_ms` bounds those.
    pub timeout_ms: Option<u64>,
    /// Wall-clock time of one event, waits included, in milliseconds.
    pub wall_ms: Option<u64>,
    /// Timers the bot may have set at once.
    pub timers: Option<u32>,
    /// Largest attachment the bot may read, in bytes.
    pub attachment_bytes: Option<u64>,
    /// Secrets the bot may read, by name.
    pub secrets: Vec<String>,
    /// LLM models the bot may use, by name.
    pub llm_models: Vec<String>,
    /// Text recognition on images.
    pub vision: bool,
}

/// Size of a bot's kv store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvQuota {
    pub max_bytes: u64,
    pub max_keys: u64,
}

/// How many messages a bot may send per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRate {
    pub per_conversation_per_minute: u32,
    pub per_bot_per_minute: u32,
}

impl std::fmt::Display for KvQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes in {} keys", self.max_bytes, self.max_keys)
    }
}

impl std::fmt::Display for SendRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} a minute per conversation, {} a minute in all",
            self.per_conversation_per_minute, self.per_bot_per_minute
        )
    }
}

/// A grant's part as an admin reads it: its words, or "none".
fn words(part: Option<impl std::fmt::Display>) -> String {
    part.map_or_else(|| "none".to_owned(), |part| part.to_string())
}

/// A list as an admin reads it: "a, b", or "none".
fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// Memory cap when the policy names none, in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 32;
/// CPU time per event when the policy names none, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 1_000;
/// Wall-clock time per event when the policy names none, in milliseconds.
pub const DEFAULT_WALL_MS: u64 = 5_000;

/// One thing asked for and not granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortfall {
    pub capability: String,
    pub asked: String,
    pub granted: String,
}

impl Capabilities {
    /// What `asks` wants beyond `self` (the grant).
    pub fn shortfalls(&self, asks: &Capabilities) -> Vec<Shortfall> {
        let mut out = Vec::new();
        let mut short = |capability: &str, asked: String, granted: String| {
            out.push(Shortfall {
                capability: capability.to_owned(),
                asked,
                granted,
            })
        };
        for target in &asks.http {
            if !self
                .http
                .iter()
                .any(|pattern| super::egress::pattern_covers(pattern, target))
            {
                short("http", target.clone(), list(&self.http));
            }
        }
        if let Some(asked) = asks.kv {
            match self.kv {
                Some(granted)
                    if granted.max_bytes >= asked.max_bytes
                        && granted.max_keys >= asked.max_keys => {}
                granted => short("kv", asked.to_string(), words(granted)),
            }
        }
        if let Some(asked) = asks.send {
            match self.send {
                Some(granted)
                    if granted.per_bot_per_minute >= asked.per_bot_per_minute
                        && granted.per_conversation_per_minute
                            >= asked.per_conversation_per_minute => {}
                granted => short("send", asked.to_string(), words(granted)),
            }
        }
        let mut above =
            |capability: &str, asked: Option<u64>, granted: Option<u64>, default: u64| {
                if let Some(asked) = asked {
                    let granted = granted.unwrap_or(default);
                    if asked > granted {
                        short(capability, asked.to_string(), granted.to_string());
                    }
                }
            };
        above(
            "memory_mb",
            asks.memory_mb,
            self.memory_mb,
            DEFAULT_MEMORY_MB,
        );
        above(
            "timeout_ms",
            asks.timeout_ms,
            self.timeout_ms,
            DEFAULT_TIMEOUT_MS,
        );
        above("wall_ms", asks.wall_ms, self.wall_ms, DEFAULT_WALL_MS);
        above(
            "timers",
            asks.timers.map(u64::from),
            self.timers.map(u64::from),
            0,
        );
        above(
            "attachment_bytes",
            asks.attachment_bytes,
            self.attachment_bytes,
            0,
        );
        for secret in &asks.secrets {
            if !self.secrets.contains(secret) {
                short("secrets", secret.clone(), list(&self.secrets));
            }
        }
        for model in &asks.llm_models {
            if !self.llm_models.contains(model) {
                short("llm_models", model.clone(), list(&self.llm_models));
            }
        }
        if asks.vision && !self.vision {
            short("vision", "true".into(), "false".into());
        }
        out
    }

    /// The wall-clock limit of one event: `wall_ms`, or the default but
    /// never less than the CPU limit.
    pub fn wall_ms(&self) -> u64 {
        self.wall_ms
            .unwrap_or_else(|| DEFAULT_WALL_MS.max(self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)))
    }

    /// Whether the named capability is present at all (as imports need it).
    pub fn includes(&self, capability: &str) -> bool {
        match capability {
            "send" => self.send.is_some(),
            "kv" => self.kv.is_some(),
            "http" => !self.http.is_empty(),
            "llm" => !self.llm_models.is_empty(),
            "attachment_bytes" => self.attachment_bytes.is_some_and(|n| n > 0),
            "vision" => self.vision,
            "timers" => self.timers.is_some_and(|n| n > 0),
            _ => false,
        }
    }

    /// This grant widened to cover `asks` too (what an approval does).
    pub fn widened_by(&self, asks: &Capabilities) -> Capabilities {
        fn union(a: &[String], b: &[String]) -> Vec<String> {
            let mut all = a.to_vec();
            all.extend(b.iter().filter(|x| !a.contains(x)).cloned());
            all
        }
        let kv = match (self.kv, asks.kv) {
            (Some(g), Some(a)) => Some(KvQuota {
                max_bytes: g.max_bytes.max(a.max_bytes),
                max_keys: g.max_keys.max(a.max_keys),
            }),
            (g, a) => g.or(a),
        };
        let send = match (self.send, asks.send) {
            (Some(g), Some(a)) => Some(SendRate {
                per_conversation_per_minute: g
                    .per_conversation_per_minute
                    .max(a.per_conversation_per_minute),
                per_bot_per_minute: g.per_bot_per_minute.max(a.per_bot_per_minute),
            }),
            (g, a) => g.or(a),
        };
        let max = |g: Option<u64>, a: Option<u64>| match (g, a) {
            (Some(g), Some(a)) => Some(g.max(a)),
            (g, a) => g.or(a),
        };
        Capabilities {
            http: union(&self.http, &asks.http),
            kv,
            send,
            memory_mb: max(self.memory_mb, asks.memory_mb),
            timeout_ms: max(self.timeout_ms, asks.timeout_ms),
            wall_ms: max(self.wall_ms, asks.wall_ms),
            timers: max(self.timers.map(u64::from), asks.timers.map(u64::from)).map(|t| t as u32),
            attachment_bytes: max(self.attachment_bytes, asks.attachment_bytes),
            secrets: union(&self.secrets, &asks.secrets),
            llm_models: union(&self.llm_models, &asks.llm_models),
            vision: self.vision || asks.vision,
        }
    }

    /// Notes for reviewers: grants that deserve a second look.
    pub fn risks(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for target in &self.http {
            if target.contains('*') {
                notes.push(format!("wildcard egress: {target}"));
            }
        }
        if let Some(kv) = self.kv {
            if kv.max_bytes > 100 * 1024 * 1024 {
                notes.push(format!(
                    "large kv quota: {} MiB",
                    kv.max_bytes / (1024 * 1024)
                ));
            }
        }
        if self.memory_mb.unwrap_or(DEFAULT_MEMORY_MB) > 512 {
            notes.push(format!(
                "large memory cap: {} MiB",
                self.memory_mb.unwrap_or(DEFAULT_MEMORY_MB)
            ));
        }
        if let Some(send) = self.send {
            if send.per_bot_per_minute > 100_000 {
                notes.push(format!("high send rate: {}/min", send.per_bot_per_minute));
            }
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_granted_covers_no_ask() {
        let asks: Capabilities = toml::from_str(
            "http = [\"https://api.example.com:443\"]\nsecrets = [\"TOKEN\"]\nvision = true\n[kv]\nmax_bytes = 10\nmax_keys = 1\n",
        )
        .unwrap();
        let missing: Vec<_> = Capabilities::default()
            .shortfalls(&asks)
            .into_iter()
            .map(|s| s.capability)
            .collect();
        assert_eq!(missing, ["http", "kv", "secrets", "vision"]);
    }

    #[test]
    fn shortfalls_read_as_words() {
        let asks = Capabilities {
            kv: Some(KvQuota {
                max_bytes: 65536,
                max_keys: 1000,
            }),
            send: Some(SendRate {
                per_conversation_per_minute: 60,
                per_bot_per_minute: 600,
            }),
            secrets: vec!["TOKEN".into()],
            ..Default::default()
        };
        let grant = Capabilities {
            kv: Some(KvQuota {
                max_bytes: 1024,
                max_keys: 10,
            }),
            ..Default::default()
        };
        let text: Vec<(String, String)> = grant
            .shortfalls(&asks)
            .into_iter()
            .map(|s| (s.asked, s.granted))
            .collect();
        assert_eq!(
            text,
            [
                (
                    "65536 bytes in 1000 keys".into(),
                    "1024 bytes in 10 keys".into()
                ),
                (
                    "60 a minute per conversation, 600 a minute in all".into(),
                    "none".into()
                ),
                ("TOKEN".into(), "none".into()),
            ]
        );
    }

    #[test]
    fn larger_grants_and_wildcards_cover_asks() {
        let asks = Capabilities {
            http: vec!["https://api.example.com:443".into()],
            memory_mb: Some(16),
            ..Default::default()
        };
        let grant = Capabilities {
            http: vec!["https://*.example.com:443".into()],
            memory_mb: Some(16),
            ..Default::default()
        };
        assert!(grant.shortfalls(&asks).is_empty());
        let greedy = Capabilities {
            memory_mb: Some(64),
            ..asks.clone()
        };
        assert_eq!(grant.shortfalls(&greedy)[0].capability, "memory_mb");
        assert_eq!(
            grant.risks(),
            ["wildcard egress: https://*.example.com:443"]
        );
        assert!(
            grant.widened_by(&greedy).shortfalls(&greedy).is_empty(),
            "an approval covers what was asked"
        );
    }
}
