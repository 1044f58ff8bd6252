//! `[matrix]` in `aviary.toml`: the homeserver, who may invite the bots, and
//! one account per bot.

use serde::{Deserialize, Serialize};

/// The Matrix channel's configuration. With no accounts it does nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatrixConfig {
    /// The homeserver's client-server API base URL, e.g.
    /// `https://matrix.example.org`.
    pub homeserver: Option<String>,
    /// Users (`@alice:example.org`) whose invites the bots accept.
    pub allow_inviters: Vec<String>,
    /// Servers (`example.org`) whose users' invites the bots accept.
    pub allow_servers: Vec<String>,
    /// How long one `/sync` long-poll waits for news, in milliseconds.
    pub sync_timeout_ms: u64,
    /// One Matrix account per bot.
    pub accounts: Vec<AccountConfig>,
}

/// A bot's Matrix identity. Give either `password` (the host logs in once
/// and keeps the access token and device in its store) or `access_token`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountConfig {
    /// The bot that answers as this account.
    pub bot: String,
    /// Its full user id, `@echo:example.org`.
    pub user: String,
    pub password: Option<String>,
    pub access_token: Option<String>,
}

impl MatrixConfig {
    /// Refuses a configuration the channel could not run with, naming the fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.accounts.is_empty() {
            return Ok(());
        }
        let Some(homeserver) = &self.homeserver else {
            anyhow::bail!("`matrix.accounts` needs `matrix.homeserver` (its base URL)");
        };
        let url = url::Url::parse(homeserver)
            .map_err(|e| anyhow::anyhow!("`matrix.homeserver` is not a URL: {e}"))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "`matrix.homeserver` must be an http or https URL"
        );
        anyhow::ensure!(
            !self.allow_inviters.is_empty() || !self.allow_servers.is_empty(),
            "set `matrix.allow_inviters` or `matrix.allow_servers`: nobody could invite the bots"
        );
        let mut bots = std::collections::BTreeSet::new();
        for account in &self.accounts {
            anyhow::ensure!(
                crate::ids::is_valid_id(&account.bot),
                "matrix.accounts: `{}` is not a bot id",
                account.bot
            );
            anyhow::ensure!(
                bots.insert(account.bot.as_str()),
                "matrix.accounts: bot `{}` has two accounts; give each bot one",
                account.bot
            );
            anyhow::ensure!(
                account.user.starts_with('@') && account.user.contains(':'),
                "matrix.accounts: user `{}` must be a full user id, `@name:server`",
                account.user
            );
            anyhow::ensure!(
                account.password.is_some() != account.access_token.is_some(),
                "matrix.accounts: `{}` needs exactly one of `password` and `access_token`",
                account.user
            );
        }
        Ok(())
    }

    /// Whether an invite from `inviter` is accepted.
    pub fn allows(&self, inviter: &str) -> bool {
        let server = inviter.split_once(':').map_or("", |(_, server)| server);
        self.allow_inviters.iter().any(|u| u == inviter)
            || self.allow_servers.iter().any(|s| s == server)
    }

    /// The long-poll's wait (default 30 s).
    pub fn sync_timeout(&self) -> u64 {
        if self.sync_timeout_ms == 0 {
            30_000
        } else {
            self.sync_timeout_ms
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invites_are_accepted_from_listed_users_and_servers_only() {
        let config = MatrixConfig {
            allow_inviters: vec!["@alice:a.org".into()],
            allow_servers: vec!["b.org".into()],
            ..MatrixConfig::default()
        };
        assert!(config.allows("@alice:a.org"));
        assert!(!config.allows("@mallory:a.org"));
        assert!(config.allows("@bob:b.org"));
        assert!(!config.allows("@bob:b.org.evil"));
        assert!(!config.allows("@b.org"));
    }

    #[test]
    fn an_account_needs_one_credential_and_a_homeserver() {
        let mut config = MatrixConfig {
            allow_servers: vec!["a.org".into()],
            accounts: vec![AccountConfig {
                bot: "echo".into(),
                user: "@echo:a.org".into(),
                ..AccountConfig::default()
            }],
            ..MatrixConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("homeserver"), "{err}");
        config.homeserver = Some("http://127.0.0.1:8008".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("exactly one"), "{err}");
        config.accounts[0].password = Some("pw".into());
        config.validate().unwrap();
        config.accounts.push(config.accounts[0].clone());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("two accounts"), "{err}");
    }
}
