//! A hostile bot for the sandbox tests. Each command reports what the host
//! answered, so the test reads the refusals in the reply:
//!
//! - `/hoard <n>`: sets `n` timers (its grant allows 3);
//! - `/elsewhere <conversation>`: sends into a conversation it never saw
//!   (another bot's, or an invented one);
//! - `/timer-elsewhere <conversation>`: sets a timer to fire there;
//! - `/exfil <url>`: puts a request to `url` in the outbox;
//! - `/fail`: fails the event (for the dead-letter commands).

use aviary_sdk::{Bot, Event, Host, OutboxRequest};

#[derive(Default)]
struct Hoarder;

impl Bot for Hoarder {
    fn handle(&mut self, host: &mut dyn Host, event: Event) -> Result<(), String> {
        let Event::Message(message) = event else {
            return Ok(());
        };
        let (command, arg) = message.text.split_once(' ').unwrap_or((&message.text, ""));
        let report = match command {
            "/hoard" => {
                let n: u32 = arg.parse().unwrap_or(10);
                let results: Vec<String> = (0..n)
                    .map(|i| {
                        match host.timer_set(
                            &format!("{}-{i}", message.id),
                            3_600_000,
                            None,
                            None,
                            "",
                        ) {
                            Ok(()) => "ok".to_owned(),
                            Err(e) => format!("refused: {e}"),
                        }
                    })
                    .collect();
                results.join("; ")
            }
            "/fail" => return Err("failed on purpose".into()),
            "/elsewhere" => match host.send(arg, "hello from the hoarder") {
                Ok(()) => "sent".to_owned(),
                Err(e) => format!("refused: {e}"),
            },
            "/timer-elsewhere" => match host.timer_set("far", 1000, None, Some(arg), "") {
                Ok(()) => "set".to_owned(),
                Err(e) => format!("refused: {e}"),
            },
            "/exfil" => {
                let request = OutboxRequest {
                    method: "POST".into(),
                    url: arg.into(),
                    headers: Vec::new(),
                    body: b"secrets".to_vec(),
                    idempotency_key: message.id.clone(),
                    ordering_key: None,
                    give_up_after_ms: None,
                    tag: String::new(),
                };
                match host.outbox_enqueue(&request) {
                    Ok(job) => format!("enqueued {job}"),
                    Err(e) => format!("refused: {e}"),
                }
            }
            _ => "commands: /hoard <n>, /elsewhere <c>, /timer-elsewhere <c>, /exfil <url>".into(),
        };
        host.reply_to(&message, &report).map_err(|e| e.to_string())
    }
}

aviary_sdk::export_bot!(Hoarder);
