//! The records the store keeps. They are stored in the binary form of
//! [`codec`](super::codec) and shown (by the APIs) as JSON.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::codec::{Reader, Writer};

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From a person to the bot.
    In,
    /// From the bot to the conversation.
    Out,
}

/// A stored chat message, as the web API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// 16 hex digits, increasing in storage order within a conversation.
    pub id: String,
    pub sender: String,
    pub text: String,
    pub direction: Direction,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    pub reply_to: Option<String>,
    /// Files sent with the message, stored as blobs (see [`super::blobs`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// A file sent with a message: its bytes are the blob named by `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The SHA-256 of the bytes, as 64 hex digits.
    pub id: String,
    /// The file name the sender gave, if any.
    pub name: Option<String>,
    /// The media type, found from the content (never the sender's word).
    pub media_type: String,
    pub size: u64,
}

/// What happened, in the store's terms; the runtime maps it to the WIT event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EventRecord {
    Message {
        message: MessageRecord,
    },
    ContactAdded {
        contact: String,
    },
    Timer {
        id: String,
        payload: String,
    },
    /// A request to one of the bot's inbound webhooks, checked.
    Webhook {
        webhook: WebhookRecord,
    },
    /// The outcome of one of the bot's outbox jobs.
    Delivery {
        delivery: DeliveryRecord,
    },
}

/// An accepted inbound webhook request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRecord {
    pub hook: String,
    pub method: String,
    /// Names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    #[serde(with = "body_text")]
    pub body: Vec<u8>,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
}

/// What became of an outbox job, for the bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub job: String,
    pub tag: String,
    pub idempotency_key: String,
    pub conversation: Option<String>,
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    #[serde(with = "body_text")]
    pub body: Vec<u8>,
    pub error: Option<String>,
    pub attempts: u32,
}

/// Bodies shown as text (lossy) in the admin's JSON.
mod body_text {
    pub fn serialize<S: serde::Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(body))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        Ok(text.into_bytes())
    }
}

fn write_pairs(writer: &mut Writer, pairs: &[(String, String)]) {
    writer.u32(pairs.len() as u32);
    for (name, value) in pairs {
        writer.str(name).str(value);
    }
}

fn read_pairs(reader: &mut Reader) -> Result<Vec<(String, String)>> {
    let count = reader.u32()?;
    (0..count)
        .map(|_| Ok((reader.str()?, reader.str()?)))
        .collect()
}

/// An event accepted for a bot and not yet handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEvent {
    /// Global acceptance order; also the key in the pending queue.
    pub seq: u64,
    pub bot: String,
    pub conversation: String,
    pub event: EventRecord,
}

/// An event that failed on every attempt, kept for admins.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub event: PendingEvent,
    pub error: String,
    pub attempts: u32,
    pub at: u64,
}

/// Format of the binary records below; bump it when a layout changes and
/// keep reading the older ones. 2 added message attachments.
const VERSION: u8 = 2;

impl MessageRecord {
    fn write(&self, writer: &mut Writer) -> Result<()> {
        let id = u64::from_str_radix(&self.id, 16)
            .with_context(|| format!("message id {:?} is not 16 hex digits", self.id))?;
        writer
            .u64(id)
            .str(&self.sender)
            .str(&self.text)
            .u8(self.direction as u8)
            .u64(self.at)
            .opt_str(self.reply_to.as_deref())
            .u32(self.attachments.len() as u32);
        for attachment in &self.attachments {
            writer
                .str(&attachment.id)
                .opt_str(attachment.name.as_deref())
                .str(&attachment.media_type)
                .u64(attachment.size);
        }
        Ok(())
    }

    fn read(reader: &mut Reader) -> Result<MessageRecord> {
        Ok(MessageRecord {
            id: format!("{:016x}", reader.u64()?),
            sender: reader.str()?,
            text: reader.str()?,
            direction: match reader.u8()? {
                0 => Direction::In,
                1 => Direction::Out,
                other => bail!("message record has an unknown direction {other}"),
            },
            at: reader.u64()?,
            reply_to: reader.opt_str()?,
            attachments: if reader.version() >= 2 {
                read_attachments(reader)?
            } else {
                Vec::new()
            },
        })
    }

    /// The stored form.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut writer = Writer::new(VERSION, 48 + self.text.len());
        self.write(&mut writer)?;
        Ok(writer.finish())
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> Result<MessageRecord> {
        let mut reader = Reader::new(bytes, "message", VERSION)?;
        let message = MessageRecord::read(&mut reader)?;
        reader.end()?;
        Ok(message)
    }
}

fn read_attachments(reader: &mut Reader) -> Result<Vec<Attachment>> {
    let count = reader.u32()?;
    (0..count)
        .map(|_| {
            Ok(Attachment {
                id: reader.str()?,
                name: reader.opt_str()?,
                media_type: reader.str()?,
                size: reader.u64()?,
            })
        })
        .collect()
}

impl PendingEvent {
    fn write(&self, writer: &mut Writer) -> Result<()> {
        writer.u64(self.seq).str(&self.bot).str(&self.conversation);
        match &self.event {
            EventRecord::Message { message } => message.write(writer.u8(0))?,
            EventRecord::ContactAdded { contact } => {
                writer.u8(1).str(contact);
            }
            EventRecord::Timer { id, payload } => {
                writer.u8(2).str(id).str(payload);
            }
            EventRecord::Webhook { webhook } => {
                writer
                    .u8(3)
                    .str(&webhook.hook)
                    .str(&webhook.method)
                    .u64(webhook.at);
                write_pairs(writer, &webhook.headers);
                writer.bytes(&webhook.body);
            }
            EventRecord::Delivery { delivery } => {
                writer
                    .u8(4)
                    .str(&delivery.job)
                    .str(&delivery.tag)
                    .str(&delivery.idempotency_key)
                    .opt_str(delivery.conversation.as_deref())
                    .u32(delivery.status.map_or(0, u32::from))
                    .opt_str(delivery.error.as_deref())
                    .u32(delivery.attempts);
                write_pairs(writer, &delivery.headers);
                writer.bytes(&delivery.body);
            }
        }
        Ok(())
    }

    fn read(reader: &mut Reader) -> Result<PendingEvent> {
        Ok(PendingEvent {
            seq: reader.u64()?,
            bot: reader.str()?,
            conversation: reader.str()?,
            event: match reader.u8()? {
                0 => EventRecord::Message {
                    message: MessageRecord::read(reader)?,
                },
                1 => EventRecord::ContactAdded {
                    contact: reader.str()?,
                },
                2 => EventRecord::Timer {
                    id: reader.str()?,
                    payload: reader.str()?,
                },
                3 => EventRecord::Webhook {
                    webhook: WebhookRecord {
                        hook: reader.str()?,
                        method: reader.str()?,
                        at: reader.u64()?,
                        headers: read_pairs(reader)?,
                        body: reader.bytes()?.to_vec(),
                    },
                },
                4 => EventRecord::Delivery {
                    delivery: DeliveryRecord {
                        job: reader.str()?,
                        tag: reader.str()?,
                        idempotency_key: reader.str()?,
                        conversation: reader.opt_str()?,
                        status: match reader.u32()? {
                            0 => None,
                            status => Some(status as u16),
                        },
                        error: reader.opt_str()?,
                        attempts: reader.u32()?,
                        headers: read_pairs(reader)?,
                        body: reader.bytes()?.to_vec(),
                    },
                },
                other => bail!("pending event record has an unknown kind {other}"),
            },
        })
    }

    /// The stored form.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut writer = Writer::new(VERSION, 96);
        self.write(&mut writer)?;
        Ok(writer.finish())
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> Result<PendingEvent> {
        let mut reader = Reader::new(bytes, "pending event", VERSION)?;
        let event = PendingEvent::read(&mut reader)?;
        reader.end()?;
        Ok(event)
    }
}

impl DeadLetter {
    /// The stored form.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut writer = Writer::new(VERSION, 128 + self.error.len());
        self.event.write(&mut writer)?;
        writer.str(&self.error).u32(self.attempts).u64(self.at);
        Ok(writer.finish())
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> Result<DeadLetter> {
        let mut reader = Reader::new(bytes, "dead letter", VERSION)?;
        let letter = DeadLetter {
            event: PendingEvent::read(&mut reader)?,
            error: reader.str()?,
            attempts: reader.u32()?,
            at: reader.u64()?,
        };
        reader.end()?;
        Ok(letter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> MessageRecord {
        MessageRecord {
            id: "00000000000abc12".into(),
            sender: "alice".into(),
            text: "héllo".into(),
            direction: Direction::Out,
            at: 1_700_000_000_000,
            reply_to: Some("00000000000abc11".into()),
            attachments: vec![Attachment {
                id: "ab".repeat(32),
                name: Some("plate.jpg".into()),
                media_type: "image/jpeg".into(),
                size: 12345,
            }],
        }
    }

    #[test]
    fn a_message_of_format_1_reads_with_no_attachments() {
        let mut old = message();
        old.attachments.clear();
        let mut bytes = old.encode().unwrap();
        bytes[0] = 1;
        bytes.truncate(bytes.len() - 4); // format 1 has no attachment count
        assert_eq!(MessageRecord::decode(&bytes).unwrap(), old);
    }

    #[test]
    fn records_read_back_from_their_binary_form() {
        let message = message();
        let bytes = message.encode().unwrap();
        assert_eq!(bytes[0], VERSION);
        assert_eq!(MessageRecord::decode(&bytes).unwrap(), message);
        for event in [
            EventRecord::Message { message },
            EventRecord::ContactAdded {
                contact: "bob".into(),
            },
            EventRecord::Timer {
                id: "t".into(),
                payload: "p".into(),
            },
            EventRecord::Webhook {
                webhook: WebhookRecord {
                    hook: "monitor".into(),
                    method: "POST".into(),
                    headers: vec![("x-a".into(), "1".into())],
                    body: b"{\"alert\":1}".to_vec(),
                    at: 7,
                },
            },
            EventRecord::Delivery {
                delivery: DeliveryRecord {
                    job: "00000000000000ff".into(),
                    tag: "ticket".into(),
                    idempotency_key: "k".into(),
                    conversation: Some("c".into()),
                    status: Some(201),
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: b"{}".to_vec(),
                    error: None,
                    attempts: 2,
                },
            },
        ] {
            let pending = PendingEvent {
                seq: 9,
                bot: "echo".into(),
                conversation: "c".into(),
                event,
            };
            assert_eq!(
                PendingEvent::decode(&pending.encode().unwrap()).unwrap(),
                pending
            );
            let letter = DeadLetter {
                event: pending,
                error: "e".into(),
                attempts: 3,
                at: 5,
            };
            let back = DeadLetter::decode(&letter.encode().unwrap()).unwrap();
            assert_eq!(
                (back.event, back.error, back.attempts, back.at),
                (letter.event, letter.error, 3, 5)
            );
        }
    }

    #[test]
    fn a_record_of_another_format_or_cut_short_is_an_error() {
        let mut bytes = message().encode().unwrap();
        bytes[0] = 9;
        assert!(MessageRecord::decode(&bytes)
            .unwrap_err()
            .to_string()
            .contains("unknown format"));
        let bytes = message().encode().unwrap();
        assert!(MessageRecord::decode(&bytes[..bytes.len() - 2]).is_err());
    }
}
