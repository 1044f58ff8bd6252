//! What the host takes out of a prompt before it leaves this machine:
//! e-mail addresses, phone numbers and digits by default, or the admin's own
//! patterns. Each match becomes `[label]`; the count per label goes to the
//! audit log, the matched text goes nowhere.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Context, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// One pattern and the label its matches are replaced with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pattern {
    pub label: String,
    pub pattern: String,
}

/// The default patterns, applied in this order (e-mail addresses and phone
/// numbers before the digits inside them).
pub const DEFAULT_PATTERNS: &[(&str, &str)] = &[
    (
        "email",
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    ),
    ("phone", r"\+?\d[\d ()./-]{5,}\d"),
    ("digits", r"\d+"),
];

/// Compiled patterns.
#[derive(Debug, Clone)]
pub struct Redactor {
    patterns: Vec<(String, Regex)>,
}

/// How much one text or request lost, by label.
pub type Counts = BTreeMap<String, u32>;

impl Redactor {
    /// The admin's patterns, or the defaults when `None`.
    pub fn new(patterns: Option<&[Pattern]>) -> Result<Redactor> {
        let pairs: Vec<(String, String)> = match patterns {
            Some(list) => list
                .iter()
                .map(|p| (p.label.clone(), p.pattern.clone()))
                .collect(),
            None => DEFAULT_PATTERNS
                .iter()
                .map(|(l, p)| (l.to_string(), p.to_string()))
                .collect(),
        };
        let patterns = pairs
            .into_iter()
            .map(|(label, pattern)| {
                let regex = Regex::new(&pattern).with_context(|| {
                    format!("redact pattern `{label}` is not a valid regular expression")
                })?;
                Ok((label, regex))
            })
            .collect::<Result<_>>()?;
        Ok(Redactor { patterns })
    }

    /// `text` with every match replaced, counting matches into `counts`.
    pub fn redact(&self, text: &str, counts: &mut Counts) -> String {
        let mut text = text.to_owned();
        for (label, regex) in &self.patterns {
            let found = regex.find_iter(&text).count() as u32;
            if found > 0 {
                *counts.entry(label.clone()).or_default() += found;
                text = regex.replace_all(&text, format!("[{label}]")).into_owned();
            }
        }
        text
    }
}

/// Whether `base_url` names this machine: a loopback address or
/// `localhost`. Anything else (a private, link-local or metadata address,
/// any other name) counts as leaving the machine. Decided on the URL alone,
/// with no lookup, so it cannot be fooled by DNS.
pub fn is_on_this_machine(base_url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(base_url) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A short account of `counts` for the audit log: `email 1, digits 3`.
pub fn describe(counts: &Counts) -> String {
    if counts.is_empty() {
        return "nothing redacted".into();
    }
    let parts: Vec<String> = counts.iter().map(|(l, n)| format!("{l} {n}")).collect();
    format!("redacted {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_take_out_emails_phones_and_digits() {
        let redactor = Redactor::new(None).unwrap();
        let mut counts = Counts::new();
        let text = redactor.redact(
            "Mail bob.smith42@example.co.uk or call +44 20 7946 0958 about order 12345.",
            &mut counts,
        );
        assert_eq!(text, "Mail [email] or call [phone] about order [digits].");
        assert_eq!(counts["email"], 1);
        assert_eq!(counts["phone"], 1);
        assert_eq!(counts["digits"], 1);
        assert!(!text.chars().any(|c| c.is_ascii_digit()));
        assert_eq!(describe(&counts), "redacted digits 1, email 1, phone 1");
    }

    #[test]
    fn the_admins_patterns_replace_the_defaults() {
        let redactor = Redactor::new(Some(&[Pattern {
            label: "plate".into(),
            pattern: r"\b[A-Z]{2}\d{2} ?[A-Z]{3}\b".into(),
        }]))
        .unwrap();
        let mut counts = Counts::new();
        assert_eq!(
            redactor.redact("Seen AB12 CDE at 10:30", &mut counts),
            "Seen [plate] at 10:30"
        );
        assert!(Redactor::new(Some(&[Pattern {
            label: "x".into(),
            pattern: "(".into()
        }]))
        .unwrap_err()
        .to_string()
        .contains("`x`"));
    }

    #[test]
    fn only_loopback_counts_as_this_machine() {
        for local in [
            "http://127.0.0.1:8000/v1",
            "http://127.9.9.9/",
            "http://[::1]:80",
            "http://LOCALHOST:1/v1",
        ] {
            assert!(is_on_this_machine(local), "{local}");
        }
        for remote in [
            "http://10.0.0.5:8000/v1",
            "http://192.168.1.2/",
            "http://169.254.169.254/latest",
            "http://metadata.google.internal/",
            "https://api.openai.com/v1",
            "http://localhost.example.com/",
            "http://[fe80::1]/",
            "not a url",
        ] {
            assert!(!is_on_this_machine(remote), "{remote}");
        }
    }
}
