//! Inbound webhook requests: stored as the bot's events, with the
//! signatures already accepted remembered until they could no longer pass
//! the time check, so a replayed request is refused even after a restart.

use anyhow::Result;

use super::{keys, EventRecord, Op, PendingEvent, Store, WebhookRecord};

/// What [`Store::accept_webhook`] did.
#[derive(Debug)]
pub enum HookAccepted {
    /// Stored and queued for the bot.
    Stored(PendingEvent),
    /// The same signature was accepted before: nothing stored.
    Replayed,
}

/// The lane of a hook's events (`#` is never in a conversation id).
pub fn hook_lane(hook: &str) -> String {
    format!("#hook:{hook}")
}

impl Store {
    /// Stores a checked webhook request as an event of `bot`, refusing a
    /// signature (its sha256, `signature`) already accepted; the signature
    /// is remembered until `expires_at`, in the same write as the event.
    pub fn accept_webhook(
        &self,
        bot: &str,
        webhook: WebhookRecord,
        signature: Option<(&str, u64)>,
    ) -> Result<HookAccepted> {
        self.inner.state.admit()?;
        let lane = hook_lane(&webhook.hook);
        let _lane = self.lane_lock(bot, &lane);
        let mut ops = Vec::with_capacity(2);
        if let Some((hash, expires_at)) = signature {
            let key = keys::webhook_signature(bot, &webhook.hook, hash);
            if self.remembered(&key)?.is_some() {
                return Ok(HookAccepted::Replayed);
            }
            let remembered = super::tokens::Remembered {
                id: String::new(),
                expires_at,
            };
            ops.push(Op::Put(key, serde_json::to_vec(&remembered)?));
        }
        let event = self.pending(bot, &lane, EventRecord::Webhook { webhook })?;
        ops.push(Op::New(keys::pending(event.seq), event.encode()?));
        self.inner.state.write(ops);
        Ok(HookAccepted::Stored(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_accepted_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let hook = WebhookRecord {
            hook: "monitor".into(),
            method: "POST".into(),
            headers: vec![],
            body: b"{}".to_vec(),
            at: 1,
        };
        let later = super::super::now_ms() + 60_000;
        let first = store
            .accept_webhook("alerts", hook.clone(), Some(("aa", later)))
            .unwrap();
        let HookAccepted::Stored(event) = first else {
            panic!("{first:?}")
        };
        assert_eq!(event.conversation, "#hook:monitor");
        let again = store
            .accept_webhook("alerts", hook.clone(), Some(("aa", later)))
            .unwrap();
        assert!(matches!(again, HookAccepted::Replayed));
        assert!(matches!(
            store.accept_webhook("alerts", hook, None).unwrap(),
            HookAccepted::Stored(_)
        ));
        assert_eq!(store.pending_events().unwrap().len(), 2);
    }
}
