//! `aviary policy audit` and `aviary policy diff`: what a bot can reach,
//! what it asks for, what it is granted, and where those disagree.

use serde::{Deserialize, Serialize};

use super::imports::{requirement, Requirement};
use super::{Capabilities, Shortfall};

/// The audit of one bot build against its grant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BotAudit {
    pub bot: String,
    pub version: String,
    pub sha256: String,
    pub status: String,
    /// The interfaces the component really imports.
    pub imports: Vec<String>,
    pub asks: Capabilities,
    pub grant: Capabilities,
    /// Granted capabilities that no import of the component can use.
    pub unused_grants: Vec<String>,
    /// Asks beyond the grant.
    pub missing: Vec<Shortfall>,
    /// Imports that the grant does not cover.
    pub refused_imports: Vec<String>,
    pub risks: Vec<String>,
}

impl BotAudit {
    /// Audits a build: `imports` of the component, its `asks` and the `grant`.
    pub fn new(
        bot: &str,
        version: &str,
        sha256: &str,
        status: &str,
        imports: Vec<String>,
        asks: Capabilities,
        grant: Capabilities,
    ) -> BotAudit {
        let needs = |grant_name: &'static str| {
            imports
                .iter()
                .any(|i| requirement(i) == Requirement::Grant(grant_name))
        };
        let mut unused_grants = Vec::new();
        if grant.kv.is_some() && !needs("kv") {
            unused_grants.push("kv (the component does not import aviary:bot/kv)".to_string());
        }
        if grant.send.is_some() && !needs("send") {
            unused_grants
                .push("send (the component does not import aviary:bot/messaging)".to_string());
        }
        if !grant.http.is_empty() && !needs("http") {
            unused_grants.push(
                "http (the component does not import wasi:http/outgoing-handler)".to_string(),
            );
        }
        if !grant.llm_models.is_empty() && !needs("llm") {
            unused_grants
                .push("llm_models (the component does not import aviary:bot/llm)".to_string());
        }
        if grant.vision && !needs("vision") {
            unused_grants
                .push("vision (the component does not import aviary:bot/vision)".to_string());
        }
        for model in grant
            .llm_models
            .iter()
            .filter(|m| !asks.llm_models.contains(m))
        {
            unused_grants.push(format!("llm model {model} (not asked for)"));
        }
        for secret in grant.secrets.iter().filter(|s| !asks.secrets.contains(s)) {
            unused_grants.push(format!("secret {secret} (not asked for)"));
        }
        for target in grant.http.iter().filter(|t| !asks.http.contains(t)) {
            unused_grants.push(format!("http {target} (not asked for)"));
        }
        let refused_imports = super::BotPolicy::import_refusals_of(&grant, &imports);
        BotAudit {
            bot: bot.into(),
            version: version.into(),
            sha256: sha256.into(),
            status: status.into(),
            missing: grant.shortfalls(&asks),
            risks: grant.risks(),
            refused_imports,
            unused_grants,
            imports,
            asks,
            grant,
        }
    }

    /// Human-readable form, one section per bot.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "bot {} {} ({})\n  sha256   {}\n",
            self.bot, self.version, self.status, self.sha256
        );
        out += &format!("  imports  {}\n", self.imports.join("\n           "));
        out += &format!("  asks     {}\n", summary(&self.asks));
        out += &format!("  grant    {}\n", summary(&self.grant));
        let list = |title: &str, items: &[String]| {
            if items.is_empty() {
                format!("  {title:<8} none\n")
            } else {
                format!("  {title:<8} {}\n", items.join("\n           "))
            }
        };
        out += &list("unused", &self.unused_grants);
        let missing: Vec<String> = self
            .missing
            .iter()
            .map(|s| {
                format!(
                    "{}: asks {} but granted {}",
                    s.capability, s.asked, s.granted
                )
            })
            .chain(self.refused_imports.clone())
            .collect();
        out += &list("missing", &missing);
        out += &list("risks", &self.risks);
        out
    }
}

/// One line naming every non-empty capability.
pub fn summary(c: &Capabilities) -> String {
    let mut parts = Vec::new();
    if !c.http.is_empty() {
        parts.push(format!("http {}", c.http.join(" ")));
    }
    if let Some(kv) = c.kv {
        parts.push(format!("kv {kv}"));
    }
    if let Some(send) = c.send {
        parts.push(format!("send {send}"));
    }
    if let Some(m) = c.memory_mb {
        parts.push(format!("memory {m} MiB"));
    }
    if let Some(t) = c.timeout_ms {
        parts.push(format!("cpu {t} ms/event"));
    }
    if let Some(w) = c.wall_ms {
        parts.push(format!("wall {w} ms/event"));
    }
    if let Some(t) = c.timers {
        parts.push(format!("timers {t}"));
    }
    if let Some(a) = c.attachment_bytes {
        parts.push(format!("attachments {a} bytes"));
    }
    if !c.secrets.is_empty() {
        parts.push(format!("secrets {}", c.secrets.join(" ")));
    }
    if !c.llm_models.is_empty() {
        parts.push(format!("llm {}", c.llm_models.join(" ")));
    }
    if c.vision {
        parts.push("vision".into());
    }
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join("; ")
    }
}

/// What a new build adds or drops compared with an old one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BuildDiff {
    pub added_imports: Vec<String>,
    pub removed_imports: Vec<String>,
    /// Asks of the new build that the old one's asks did not cover.
    pub added_asks: Vec<Shortfall>,
    /// Asks of the old build that the new one's asks do not cover.
    pub dropped_asks: Vec<Shortfall>,
}

impl BuildDiff {
    pub fn new(
        old_imports: &[String],
        new_imports: &[String],
        old_asks: &Capabilities,
        new_asks: &Capabilities,
    ) -> BuildDiff {
        let unversioned = |i: &String| i.split('@').next().unwrap_or(i).to_owned();
        let old_names: Vec<String> = old_imports.iter().map(unversioned).collect();
        let new_names: Vec<String> = new_imports.iter().map(unversioned).collect();
        BuildDiff {
            added_imports: new_imports
                .iter()
                .filter(|i| !old_names.contains(&unversioned(i)))
                .cloned()
                .collect(),
            removed_imports: old_imports
                .iter()
                .filter(|i| !new_names.contains(&unversioned(i)))
                .cloned()
                .collect(),
            added_asks: old_asks.shortfalls(new_asks),
            dropped_asks: new_asks.shortfalls(old_asks),
        }
    }

    /// Whether the new build asks for or imports more.
    pub fn escalates(&self) -> bool {
        !self.added_imports.is_empty() || !self.added_asks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_finds_unused_grants_missing_asks_and_risks() {
        let imports = vec![
            "aviary:bot/messaging@0.1.0".to_string(),
            "wasi:cli/environment@0.2.6".to_string(),
        ];
        let asks = Capabilities {
            http: vec!["https://api.example.com:443".into()],
            ..Default::default()
        };
        let grant = Capabilities {
            kv: Some(super::super::KvQuota {
                max_bytes: 1,
                max_keys: 1,
            }),
            http: vec!["https://*.other.com:443".into()],
            ..Default::default()
        };
        let audit = BotAudit::new("b", "1", "00", "running", imports, asks, grant);
        assert!(audit.unused_grants.iter().any(|u| u.starts_with("kv")));
        assert!(audit
            .unused_grants
            .iter()
            .any(|u| u.starts_with("http (the component")));
        assert_eq!(audit.missing[0].capability, "http");
        assert!(
            audit.refused_imports[0].contains("aviary:bot/messaging"),
            "send is not granted"
        );
        assert_eq!(audit.risks, ["wildcard egress: https://*.other.com:443"]);
        assert!(audit.to_text().contains("missing"));
    }

    #[test]
    fn diff_reports_added_and_dropped_imports_and_asks() {
        let old = vec![
            "aviary:bot/messaging@0.1.0".to_string(),
            "aviary:bot/kv@0.1.0".to_string(),
        ];
        let new = vec![
            "aviary:bot/messaging@0.1.1".to_string(),
            "wasi:http/outgoing-handler@0.2.6".to_string(),
        ];
        let old_asks = Capabilities {
            memory_mb: Some(16),
            ..Default::default()
        };
        let new_asks = Capabilities {
            memory_mb: Some(64),
            http: vec!["https://a.com:443".into()],
            ..Default::default()
        };
        let diff = BuildDiff::new(&old, &new, &old_asks, &new_asks);
        assert_eq!(diff.added_imports, ["wasi:http/outgoing-handler@0.2.6"]);
        assert_eq!(diff.removed_imports, ["aviary:bot/kv@0.1.0"]);
        assert_eq!(
            diff.added_asks
                .iter()
                .map(|s| s.capability.as_str())
                .collect::<Vec<_>>(),
            ["http", "memory_mb"]
        );
        assert!(diff.dropped_asks.is_empty());
        assert!(diff.escalates());
    }
}
