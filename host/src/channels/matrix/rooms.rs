//! What the Matrix channel keeps in the store for each account, under
//! `g/matrix/<bot>/`: its login, its `/sync` token, its rooms (a room's
//! conversation id is derived from the account and the room, since room
//! ids hold characters conversation ids may not), the event id of each
//! message (for replies) and how far each room's delivery got.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::store::{keys, Op, Store};

/// An account's login, kept so that a restart reuses the device (the
/// homeserver deduplicates transaction ids per device).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Login {
    pub access_token: String,
    pub device_id: String,
}

/// One account's records.
#[derive(Clone)]
pub struct Rooms {
    store: Store,
    bot: String,
}

/// The conversation id of `room` for the account of `user`.
pub fn conversation_of(user: &str, room: &str) -> String {
    let digest = crate::store::sha256_hex(format!("{user}\n{room}").as_bytes());
    format!("mx-{}", &digest[..24])
}

impl Rooms {
    pub fn new(store: Store, bot: &str) -> Rooms {
        Rooms {
            store,
            bot: bot.to_owned(),
        }
    }

    fn key(&self, rest: &str) -> Vec<u8> {
        keys::channel(super::super::MATRIX, &format!("{}/{rest}", self.bot))
    }

    fn get(&self, rest: &str) -> Result<Option<String>> {
        Ok(self
            .store
            .state()
            .get(&self.key(rest))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn put(&self, rest: &str, value: &str) {
        let op = Op::Put(self.key(rest), value.as_bytes().to_vec());
        self.store.state().write(vec![op]);
    }

    pub fn login(&self) -> Result<Option<Login>> {
        self.get("login")?
            .map(|text| serde_json::from_str(&text).context("corrupt Matrix login"))
            .transpose()
    }

    pub fn set_login(&self, login: &Login) -> Result<()> {
        self.put("login", &serde_json::to_string(login)?);
        Ok(())
    }

    /// The `next_batch` of the last `/sync` whose events are all stored.
    pub fn since(&self) -> Result<Option<String>> {
        self.get("since")
    }

    pub fn set_since(&self, token: &str) {
        self.put("since", token);
    }

    /// The room of a conversation, if it is one of this account's.
    pub fn room(&self, conversation: &str) -> Result<Option<String>> {
        self.get(&format!("room/{conversation}"))
    }

    /// Records `room`, returning its conversation id and whether it was
    /// known before.
    pub fn add_room(&self, user: &str, room: &str) -> Result<(String, bool)> {
        let conversation = conversation_of(user, room);
        let known = self.room(&conversation)?.is_some();
        if !known {
            self.put(&format!("room/{conversation}"), room);
        }
        Ok((conversation, known))
    }

    /// Every room of the account, as (conversation, room).
    pub fn all(&self) -> Result<Vec<(String, String)>> {
        let prefix = self.key("room/");
        self.store
            .state()
            .scan_prefix(&prefix)
            .map(|item| {
                let (key, value) = item?;
                let conversation = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                Ok((conversation, String::from_utf8_lossy(&value).into_owned()))
            })
            .collect()
    }

    /// The Matrix event of message `id` of `conversation`, if known.
    pub fn event_of(&self, conversation: &str, id: &str) -> Result<Option<String>> {
        self.get(&format!("event/{conversation}/{id}"))
    }

    pub fn set_event(&self, conversation: &str, id: &str, event: &str) {
        self.put(&format!("event/{conversation}/{id}"), event);
    }

    /// The last message of `conversation` that delivery is done with.
    pub fn delivered(&self, conversation: &str) -> Result<Option<String>> {
        self.get(&format!("delivered/{conversation}"))
    }

    pub fn set_delivered(&self, conversation: &str, id: &str) {
        self.put(&format!("delivered/{conversation}"), id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_is_one_conversation_per_account_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rooms = Rooms::new(store.clone(), "echo");
        let (c, known) = rooms.add_room("@echo:hs", "!abc:hs").unwrap();
        assert!(crate::ids::is_valid_id(&c), "{c}");
        assert!(!known);
        assert_eq!(
            rooms.add_room("@echo:hs", "!abc:hs").unwrap(),
            (c.clone(), true)
        );
        assert_ne!(conversation_of("@other:hs", "!abc:hs"), c);
        rooms.set_since("s1");
        store.flush().unwrap();
        drop((rooms, store));
        let store = Store::open(dir.path()).unwrap();
        let rooms = Rooms::new(store.clone(), "echo");
        assert_eq!(rooms.room(&c).unwrap().as_deref(), Some("!abc:hs"));
        assert_eq!(rooms.all().unwrap(), vec![(c, "!abc:hs".to_owned())]);
        assert_eq!(rooms.since().unwrap().as_deref(), Some("s1"));
        assert!(Rooms::new(store, "llm").since().unwrap().is_none());
    }
}
