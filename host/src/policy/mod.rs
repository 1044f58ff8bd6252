//! Sandbox policy: what each bot asks for (its manifest), what the admin
//! grants (its policy file), and the checks that keep the two honest — at
//! load time against the component's real imports, and at run time in every
//! host import.

pub mod capabilities;
pub mod egress;
pub mod imports;

pub use capabilities::{Capabilities, KvQuota, SendRate, Shortfall};
pub mod rate;
pub mod report;
pub mod usage;

use std::collections::BTreeMap;

pub use rate::SendLimiter;
pub use usage::{KvDelta, KvUsage};

/// The grant of one loaded bot, with the run-time state that enforces it.
pub struct BotPolicy {
    pub grant: Capabilities,
    pub send: SendLimiter,
    pub kv: KvUsage,
    /// Secret values the grant names (and only those).
    pub secrets: BTreeMap<String, String>,
}

impl BotPolicy {
    /// Builds the policy of bot `bot` from its grant and the configured
    /// secrets, measuring its current kv usage.
    pub fn new(
        bot: &str,
        grant: Capabilities,
        configured_secrets: &BTreeMap<String, String>,
        state: &crate::store::State,
    ) -> anyhow::Result<BotPolicy> {
        let secrets = configured_secrets
            .iter()
            .filter(|(name, _)| grant.secrets.contains(name))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(BotPolicy {
            send: SendLimiter::new(grant.send),
            kv: KvUsage::measure(state, bot, grant.kv)?,
            secrets,
            grant,
        })
    }

    /// The same grant with the run-time send checks switched off: the
    /// baseline of the benchmark's `policy_overhead_pct`, never used to run bots.
    pub fn unchecked(
        bot: &str,
        grant: Capabilities,
        state: &crate::store::State,
    ) -> anyhow::Result<BotPolicy> {
        Ok(BotPolicy {
            send: SendLimiter::unchecked(),
            ..BotPolicy::new(bot, grant, &BTreeMap::new(), state)?
        })
    }

    /// Every import of `imports` that this policy's grant does not allow.
    pub fn import_refusals(&self, imports: &[String]) -> Vec<String> {
        Self::import_refusals_of(&self.grant, imports)
    }

    /// Every import of `imports` that `grant` does not allow, explained.
    pub fn import_refusals_of(grant: &Capabilities, imports: &[String]) -> Vec<String> {
        imports
            .iter()
            .filter_map(|import| imports::refusal(import, |g| grant.includes(g)))
            .collect()
    }
}

/// A refusal by the policy during an event, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub capability: &'static str,
    pub target: String,
    pub reason: String,
    /// How many times the event was refused this, with this target.
    pub count: u64,
}
