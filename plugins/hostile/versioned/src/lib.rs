//! One compile, many builds: the end-to-end reload tests overwrite the
//! label after [`MARKER_PREFIX`] in the component's bytes (same length), so
//! each build has its own sha256 and says which build it is.
//!
//! - every message is answered with `<label>: <text>` and logged;
//! - `/fail` fails the event; `/secret` asks for a secret it is not granted;
//! - a label containing `trap-init` panics in `init`;
//! - a label containing `fail-migrate` fails `migrate`, `spin-migrate`
//!   loops in it forever, `send-migrate` sends from it (which the host
//!   must refuse: the build then fails to migrate unless it was refused);
//!   otherwise `migrate` records `migrated/<label>` = the version it came
//!   from.

use aviary_sdk::{Bot, Event, Host, Level};

/// What the tests search for in the component's bytes.
pub const MARKER_PREFIX: &[u8] = b"AVIARY-BUILD-LABEL:";

/// The marker: the prefix, then the label padded with `_` to 48 bytes.
#[used]
static MARKER: [u8; 67] = *b"AVIARY-BUILD-LABEL:unpatched_______________________________________";

/// The label as patched in, read so that the compiler cannot fold it.
fn label() -> String {
    let bytes: Vec<u8> = (MARKER_PREFIX.len()..MARKER.len())
        // SAFETY: reads within the bounds of a static array.
        .map(|i| unsafe { std::ptr::read_volatile(MARKER.as_ptr().add(i)) })
        .collect();
    String::from_utf8_lossy(&bytes)
        .trim_end_matches('_')
        .to_owned()
}

#[derive(Default)]
struct Versioned;

impl Bot for Versioned {
    fn init(_settings: &aviary_sdk::Settings) -> Result<(), String> {
        if label().contains("trap-init") {
            panic!("build {} traps in init", label());
        }
        Ok(())
    }

    fn handle(&mut self, host: &mut dyn Host, event: Event) -> Result<(), String> {
        let Event::Message(message) = event else {
            return Ok(());
        };
        let label = label();
        host.log(Level::Info, &format!("{label} handles {:?}", message.text));
        match message.text.as_str() {
            "/fail" => return Err(format!("{label} fails on purpose")),
            "/secret" => {
                let refused = host.secret("NOT_GRANTED").is_err();
                println!("{label}: the secret was refused: {refused}");
            }
            _ => {}
        }
        let answer = format!("{label}: {}", message.text);
        host.reply_to(&message, &answer).map_err(|e| e.to_string())
    }

    fn migrate(host: &mut dyn Host, from_version: &str) -> Result<(), String> {
        let label = label();
        if label.contains("fail-migrate") {
            return Err(format!("build {label} cannot migrate from {from_version}"));
        }
        if label.contains("spin-migrate") {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if label.contains("send-migrate") {
            if let Err(aviary_sdk::Error::Denied(reason)) = host.send("storm-0", "from migrate") {
                host.log(Level::Warn, &format!("send refused in migrate: {reason}"));
            } else {
                return Err("the host let migrate send".into());
            }
        }
        host.kv_set(&format!("migrated/{label}"), from_version.as_bytes())
            .map_err(|e| e.to_string())
    }
}

aviary_sdk::export_bot!(Versioned);
