//! The transactional outbox: HTTP requests bots enqueued as effects of an
//! event (written in the event's commit), their delivery bookkeeping, and
//! the jobs that gave up (kept for admins). Settling a job removes it and
//! queues its `delivery` event in one write, so a crash neither loses the
//! outcome nor reports it twice.

use anyhow::{Context, Result};
use serde::Serialize;

use super::codec::{Reader, Writer};
use super::{keys, DeliveryRecord, EventRecord, Op, PendingEvent, Store};

/// Format of the stored job.
const VERSION: u8 = 1;

/// One outbound HTTP request a bot put in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxJob {
    /// Enqueue order, host-wide; also its key. Shown as 16 hex digits.
    #[serde(serialize_with = "as_hex")]
    pub id: u64,
    pub bot: String,
    /// The lane of the event that enqueued it: where its delivery event runs.
    pub lane: String,
    /// Jobs of one bot and ordering key go one after another, by id.
    pub ordering_key: String,
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    #[serde(skip)]
    pub body: Vec<u8>,
    pub idempotency_key: String,
    pub tag: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    pub give_up_at: u64,
    /// Times it was sent.
    pub attempts: u32,
    /// Not sent again before this time.
    pub next_at: u64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

impl OutboxJob {
    /// The job's id as bots and admins see it: 16 hex digits.
    pub fn name(&self) -> String {
        format!("{:016x}", self.id)
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(VERSION, 256 + self.body.len());
        w.u64(self.id)
            .str(&self.bot)
            .str(&self.lane)
            .str(&self.ordering_key)
            .str(&self.method)
            .str(&self.url)
            .u32(self.headers.len() as u32);
        for (name, value) in &self.headers {
            w.str(name).str(value);
        }
        w.bytes(&self.body)
            .str(&self.idempotency_key)
            .str(&self.tag)
            .u64(self.created_at)
            .u64(self.give_up_at)
            .u32(self.attempts)
            .u64(self.next_at)
            .u32(self.last_status.map_or(0, u32::from))
            .opt_str(self.last_error.as_deref());
        w.finish()
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> Result<OutboxJob> {
        let mut r = Reader::new(bytes, "outbox job", VERSION)?;
        let (id, bot, lane, ordering_key, method, url) =
            (r.u64()?, r.str()?, r.str()?, r.str()?, r.str()?, r.str()?);
        let count = r.u32()?;
        let headers = (0..count)
            .map(|_| Ok((r.str()?, r.str()?)))
            .collect::<Result<_>>()?;
        let job = OutboxJob {
            id,
            bot,
            lane,
            ordering_key,
            method,
            url,
            headers,
            body: r.bytes()?.to_vec(),
            idempotency_key: r.str()?,
            tag: r.str()?,
            created_at: r.u64()?,
            give_up_at: r.u64()?,
            attempts: r.u32()?,
            next_at: r.u64()?,
            last_status: match r.u32()? {
                0 => None,
                status => Some(status as u16),
            },
            last_error: r.opt_str()?,
        };
        r.end()?;
        Ok(job)
    }

    /// The delivery event of this job's outcome.
    pub fn delivery(&self, answer: Option<Answer>, error: Option<String>) -> EventRecord {
        let (status, headers, body) = match answer {
            Some(a) => (Some(a.status), a.headers, a.body),
            None => (self.last_status, Vec::new(), Vec::new()),
        };
        EventRecord::Delivery {
            delivery: DeliveryRecord {
                job: self.name(),
                tag: self.tag.clone(),
                idempotency_key: self.idempotency_key.clone(),
                conversation: (!self.lane.starts_with('#')).then(|| self.lane.clone()),
                status,
                headers,
                body,
                error,
                attempts: self.attempts,
            },
        }
    }
}

fn as_hex<S: serde::Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{id:016x}"))
}

/// An HTTP answer to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Parses a job id as admins type it (16 hex digits, or fewer).
pub fn parse_job_id(text: &str) -> Option<u64> {
    (!text.is_empty() && text.len() <= 16)
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
}

impl Store {
    /// Every job waiting in the outbox, in enqueue order.
    pub fn outbox_jobs(&self) -> Result<Vec<OutboxJob>> {
        self.jobs_under(keys::OUTBOX)
    }

    /// Every job that gave up, in enqueue order.
    pub fn outbox_dead_letters(&self) -> Result<Vec<OutboxJob>> {
        self.jobs_under(keys::OUTBOX_DEAD)
    }

    fn jobs_under(&self, prefix: &[u8]) -> Result<Vec<OutboxJob>> {
        self.inner
            .state
            .scan_prefix(prefix)
            .map(|item| OutboxJob::decode(&item?.1))
            .collect()
    }

    /// Job `id` of the outbox, if it waits there.
    pub fn outbox_job(&self, id: u64) -> Result<Option<OutboxJob>> {
        self.inner
            .state
            .get(&keys::outbox_job(id))?
            .map(|v| OutboxJob::decode(&v))
            .transpose()
    }

    /// Stores a job's delivery bookkeeping (attempts, next time, last error).
    pub fn update_job(&self, job: &OutboxJob) {
        self.inner
            .state
            .write(vec![Op::Put(keys::outbox_job(job.id), job.encode())]);
    }

    /// Removes a settled job and queues its delivery event, in one write;
    /// a job that gave up (`dead`) is kept among the outbox's dead letters.
    pub fn settle_job(
        &self,
        job: &OutboxJob,
        event: EventRecord,
        dead: bool,
    ) -> Result<PendingEvent> {
        let event = self.pending(&job.bot, &job.lane, event)?;
        let mut ops = vec![
            Op::Delete(keys::outbox_job(job.id)),
            Op::New(keys::pending(event.seq), event.encode()?),
        ];
        if dead {
            ops.push(Op::Put(keys::outbox_dead(job.id), job.encode()));
        }
        self.inner.state.write(ops);
        Ok(event)
    }

    /// Moves dead job `id` back into the outbox, to be tried again from now
    /// for as long as it was given at first. Returns it.
    pub fn revive_job(&self, id: u64) -> Result<Option<OutboxJob>> {
        let Some(value) = self.inner.state.get(&keys::outbox_dead(id))? else {
            return Ok(None);
        };
        let mut job = OutboxJob::decode(&value).context("corrupt dead outbox job")?;
        let now = super::now_ms();
        job.give_up_at = now + job.give_up_at.saturating_sub(job.created_at);
        job.attempts = 0;
        job.next_at = 0;
        self.inner.state.write(vec![
            Op::Delete(keys::outbox_dead(id)),
            Op::Put(keys::outbox_job(id), job.encode()),
        ]);
        Ok(Some(job))
    }

    /// Deletes dead job `id`; returns whether it was there.
    pub fn drop_dead_job(&self, id: u64) -> Result<bool> {
        let key = keys::outbox_dead(id);
        let found = self.inner.state.get(&key)?.is_some();
        if found {
            self.inner.state.write(vec![Op::Delete(key)]);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn job(id: u64) -> OutboxJob {
        OutboxJob {
            id,
            bot: "tickets".into(),
            lane: "c1".into(),
            ordering_key: "c1".into(),
            method: "POST".into(),
            url: "http://127.0.0.1:9/api/tickets/".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{\"title\":\"x\"}".to_vec(),
            idempotency_key: "k1".into(),
            tag: "ticket".into(),
            created_at: 10,
            give_up_at: 1_000,
            attempts: 3,
            next_at: 20,
            last_status: Some(503),
            last_error: Some("503 Service Unavailable".into()),
        }
    }

    #[test]
    fn jobs_read_back_and_settle_into_one_delivery_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let job = job(42);
        assert_eq!(OutboxJob::decode(&job.encode()).unwrap(), job);
        store.update_job(&job);
        assert_eq!(store.outbox_jobs().unwrap(), vec![job.clone()]);
        let answer = Answer {
            status: 201,
            headers: vec![],
            body: b"{\"id\":7}".to_vec(),
        };
        let event = store
            .settle_job(&job, job.delivery(Some(answer), None), false)
            .unwrap();
        assert_eq!(event.conversation, "c1");
        let EventRecord::Delivery { delivery } = &event.event else {
            panic!("{event:?}")
        };
        assert_eq!((delivery.status, delivery.attempts), (Some(201), 3));
        assert_eq!(delivery.job, "000000000000002a");
        assert!(store.outbox_jobs().unwrap().is_empty());
        assert_eq!(store.pending_events().unwrap(), vec![event]);
    }

    #[test]
    fn a_dead_job_is_kept_and_can_be_revived_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let job = job(7);
        store.update_job(&job);
        store
            .settle_job(&job, job.delivery(None, Some("gave up".into())), true)
            .unwrap();
        assert_eq!(store.outbox_dead_letters().unwrap().len(), 1);
        let revived = store.revive_job(7).unwrap().unwrap();
        assert_eq!(revived.attempts, 0);
        assert!(revived.give_up_at > super::super::now_ms());
        assert!(store.outbox_dead_letters().unwrap().is_empty());
        assert_eq!(store.outbox_jobs().unwrap().len(), 1);
        assert!(!store.drop_dead_job(7).unwrap());
        assert_eq!(parse_job_id("0000000000000007"), Some(7));
        assert_eq!(parse_job_id("xyz"), None);
    }
}
