//! A bot that misbehaves on purpose, in the way its `mode` setting names.
//! The end-to-end suite runs it under the real host and checks that the
//! sandbox contains each misbehaviour. Written against the raw bindings
//! (not the SDK) so it can call imports exactly as an attacker would.

wit_bindgen::generate!({ path: "../../../wit", world: "bot" });

use aviary::bot::types::{Event, Message};
use aviary::bot::{config, kv, log, messaging};
use exports::aviary::bot::handler::Guest;

struct Mischief;

impl Guest for Mischief {
    fn init(settings: Vec<(String, String)>) -> Result<(), String> {
        let mode = settings
            .iter()
            .find(|(k, _)| k == "mode")
            .map_or("", |(_, v)| v.as_str());
        match mode {
            "init-trap" => panic!("trapping in init on purpose"),
            "init-huge-error" => Err("e".repeat(8 << 20)),
            _ => Ok(()),
        }
    }

    fn handle(event: Event) -> Result<(), String> {
        let Event::Message(message) = event else {
            return Ok(());
        };
        let mode = config::get("mode").unwrap_or_default();
        if message.text == "ping" {
            return reply(&message, "pong");
        }
        match mode.as_str() {
            "loop" => endless_loop(),
            "memory-growth" => grow_memory(),
            "huge-alloc" => huge_allocation(&message),
            "recursion" => recurse(std::hint::black_box(1))
                .to_string()
                .len()
                .try_into()
                .map(|_: u8| ())
                .map_err(|_| "unreachable".into()),
            "panic" => panic!("panicking on purpose"),
            "kv-flood" => kv_flood(&message),
            "send-flood" => send_flood(&message),
            "oversized" => oversized(&message),
            "log-flood" => log_flood(&message),
            "snoop" => snoop(&message),
            "sleep" => sleep(&message),
            "huge-error" => Err("e".repeat(8 << 20)),
            "secret-flood" => secret_flood(&message),
            "long-secret-name" => long_secret_name(&message),
            "kv-refusal-flood" => kv_refusal_flood(&message),
            "one-key-refusals" => one_key_refusals(&message),
            "absent-deletes" => absent_deletes(&message),
            "absent-reads" => absent_reads(&message),
            "huge-reply-to" => huge_reply_to(&message),
            "typing-elsewhere" => typing_elsewhere(&message),
            other => Err(format!("unknown mode `{other}`")),
        }
    }
}

fn reply(message: &Message, text: &str) -> Result<(), String> {
    messaging::reply(&message.conversation, &message.id, text).map_err(|e| format!("{e:?}"))
}

fn endless_loop() -> Result<(), String> {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn grow_memory() -> Result<(), String> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 1024 * 1024]);
        std::hint::black_box(&hoard);
    }
}

fn huge_allocation(message: &Message) -> Result<(), String> {
    let huge: Vec<u8> = vec![7u8; 1536 * 1024 * 1024];
    reply(
        message,
        &format!("allocated {}", std::hint::black_box(huge).len()),
    )
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    frame[0] + recurse(depth + 1)
}

/// Writes 1 KiB values until the host refuses, then reports how far it got.
fn kv_flood(message: &Message) -> Result<(), String> {
    let value = vec![b'x'; 1024];
    for n in 0..100_000 {
        if let Err(error) = kv::set(&format!("flood/{n}"), &value) {
            return reply(message, &format!("kv refused after {n} writes: {error:?}"));
        }
    }
    reply(message, "kv never refused")
}

/// Sends as many messages as it can; the host commits only those allowed.
fn send_flood(message: &Message) -> Result<(), String> {
    let mut refused = 0;
    for n in 0..1000 {
        if messaging::send(&message.conversation, &format!("flood {n}")).is_err() {
            refused += 1;
        }
    }
    log::log(log::Level::Info, &format!("{refused} sends refused"));
    Ok(())
}

fn oversized(message: &Message) -> Result<(), String> {
    let huge = "x".repeat(4 * 1024 * 1024);
    match messaging::send(&message.conversation, &huge) {
        Ok(()) => reply(message, "oversized message accepted"),
        Err(error) => reply(message, &format!("oversized refused: {error:?}")),
    }
}

fn log_flood(message: &Message) -> Result<(), String> {
    let line = "y".repeat(10_000);
    for _ in 0..10_000 {
        log::log(log::Level::Info, &line);
    }
    for _ in 0..10_000 {
        println!("{line}");
        eprintln!("{line}");
    }
    reply(message, "flooded")
}

/// Tries to read other bots' data: their kv and their secrets.
fn snoop(message: &Message) -> Result<(), String> {
    let mut found = Vec::new();
    for key in ["../echo/memo", "k/echo/memo", "echo/memo", "/memo"] {
        if let Ok(Some(value)) = kv::get(&format!("{key}/{}", message.conversation)) {
            found.push(String::from_utf8_lossy(&value).into_owned());
        }
    }
    for key in kv::list_keys("").unwrap_or_default() {
        found.push(key);
    }
    let secret = match config::secret("ECHO_TOKEN") {
        Ok(value) => format!("secret {value}"),
        Err(error) => format!("secret refused: {error:?}"),
    };
    reply(message, &format!("found [{}]; {secret}", found.join(", ")))
}

/// Blocks inside a host call (WASI poll through `std::thread::sleep`)
/// far past any deadline; the wasm itself uses no CPU while it waits.
fn sleep(message: &Message) -> Result<(), String> {
    std::thread::sleep(std::time::Duration::from_secs(3600));
    reply(message, "woke up")
}

/// A million refused `secret()` calls, each for another name.
fn secret_flood(message: &Message) -> Result<(), String> {
    let refused = (0..1_000_000)
        .filter(|n| config::secret(&format!("S{n}")).is_err())
        .count();
    reply(message, &format!("{refused} secrets refused"))
}

/// An 8 MiB secret name, asked for again and again.
fn long_secret_name(message: &Message) -> Result<(), String> {
    let name = "n".repeat(8 << 20);
    let refused = (0..100).filter(|_| config::secret(&name).is_err()).count();
    reply(message, &format!("{refused} long names refused"))
}

/// Fills the kv quota, then 40,000 refused writes to distinct keys.
fn kv_refusal_flood(message: &Message) -> Result<(), String> {
    let value = vec![b'x'; 1024];
    let mut refused = 0;
    for n in 0..40_100 {
        if kv::set(&format!("flood/{n}"), &value).is_err() {
            refused += 1;
        }
    }
    reply(message, &format!("{refused} kv writes refused"))
}

/// A million refused writes to one key.
fn one_key_refusals(message: &Message) -> Result<(), String> {
    let value = vec![b'x'; 100_000];
    let refused = (0..1_000_000)
        .filter(|_| kv::set("the-key", &value).is_err())
        .count();
    reply(message, &format!("{refused} writes to one key refused"))
}

/// Deletes a million keys that were never there.
fn absent_deletes(message: &Message) -> Result<(), String> {
    let failed = (0..1_000_000)
        .filter(|n| kv::delete(&format!("absent/{n:0>400}")).is_err())
        .count();
    reply(message, &format!("{failed} deletes failed"))
}

/// Reads a million distinct keys that were never there.
fn absent_reads(message: &Message) -> Result<(), String> {
    let failed = (0..1_000_000)
        .filter(|n| kv::get(&format!("absent/{n:0>400}")).is_err())
        .count();
    reply(message, &format!("{failed} reads failed"))
}

/// A reply whose `reply-to` is megabytes long.
fn huge_reply_to(message: &Message) -> Result<(), String> {
    let outcome = messaging::reply(&message.conversation, &"1".repeat(4 << 20), "hi");
    reply(message, &format!("huge reply-to: {outcome:?}"))
}

/// Shows typing in its own conversation, in one it never saw and in a
/// thousand more: only the first may reach anyone.
fn typing_elsewhere(message: &Message) -> Result<(), String> {
    let own = messaging::typing(&message.conversation);
    let elsewhere = messaging::typing("never-seen");
    let refused = (0..1000)
        .filter(|n| messaging::typing(&format!("flood-{n}")).is_err())
        .count();
    reply(
        message,
        &format!("own {own:?}; elsewhere {elsewhere:?}; {refused} of 1000 refused"),
    )
}

export!(Mischief);
