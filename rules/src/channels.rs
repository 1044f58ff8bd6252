//! The channels a conversation can be on, and what each can show people:
//! the host answers `messaging.channel` from this table, and the SDK's test
//! host describes the same channels, so a bot tested against it sees what
//! it will see when deployed.

/// What a channel can show people, so that a bot can adapt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// A typing indicator.
    pub typing: bool,
    /// Drafts: the growing text of an answer before it is sent.
    pub drafts: bool,
    /// Files sent with messages, both ways.
    pub attachments: bool,
    /// Messages changed after they were sent (Matrix shows drafts as edits).
    pub edits: bool,
    /// Conversations with more than one person in them.
    pub groups: bool,
}

/// The channel of conversations started through the web API.
pub const WEB: &str = "web";
/// The channel of Matrix rooms.
pub const MATRIX: &str = "matrix";

/// The web channel: typing and drafts over the conversation's WebSocket,
/// files both ways; one person per conversation, no edits.
pub const WEB_FEATURES: Features = Features {
    typing: true,
    drafts: true,
    attachments: true,
    edits: false,
    groups: false,
};

/// Matrix: typing, drafts (one message edited as it grows), files both
/// ways, group rooms.
pub const MATRIX_FEATURES: Features = Features {
    typing: true,
    drafts: true,
    attachments: true,
    edits: true,
    groups: true,
};

/// The features of the channel named `name`, if there is one.
pub fn features(name: &str) -> Option<Features> {
    match name {
        WEB => Some(WEB_FEATURES),
        MATRIX => Some(MATRIX_FEATURES),
        _ => None,
    }
}
