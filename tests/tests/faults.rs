//! Faults the store must survive: SIGKILL at random moments, a torn or a
//! corrupt write-ahead journal, a full disk.
//!
//! Random choices (kill moments, garbage bytes) come from a seed printed at
//! the start of each test; set `AVIARY_FAULTS_SEED` to replay one.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use aviary_e2e::{
    fill_disk, journal_frames, wait_until_drained, Acked, Conversation, Flood, Host, SeededRng,
    Stored, JOURNAL_HEADER_LEN, JOURNAL_MAGIC,
};
use reqwest::StatusCode;

/// The environment variable that replays a run's random choices.
const SEED_VAR: &str = "AVIARY_FAULTS_SEED";
/// How long the bot may take to answer everything queued after a restart.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

const ROUNDS: usize = 5;

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged_over_several_rounds() {
    let mut rng = SeededRng::from_env_or_clock(SEED_VAR);
    // One worker, so that events queue up behind the posts and some are
    // still waiting for the bot when the host dies.
    let mut host = Host::start("workers = 1\n");
    let mut acked: Vec<Acked> = Vec::new();
    for round in 1..=ROUNDS {
        // Four senders in conversations of their own, two sharing one.
        let senders: Vec<(Conversation, String)> = (0..6)
            .map(|n| {
                let name = if n < 4 {
                    format!("rounds-{n}")
                } else {
                    "rounds-shared".to_owned()
                };
                (host.conversation("echo", &name), format!("sender-{n}"))
            })
            .collect();
        let flood = Flood::start(&senders, &format!("round {round}"));
        let moment = if rng.range(0, 1) == 0 {
            let delay = rng.range(20, 400);
            std::thread::sleep(Duration::from_millis(delay));
            format!("{delay} ms after the senders started")
        } else {
            let count = rng.range(1, 250) as usize;
            flood.wait_for_acks(count, Duration::from_secs(30));
            format!("at the {count}th acknowledgement")
        };
        host.kill();
        let this_round = flood.stop();
        acked.extend(this_round.iter().cloned());

        host.restart();
        let chats = conversations(&host, &senders);
        // Right after the restart: nothing acknowledged in any round is
        // lost, and nothing is answered twice, whatever is still queued.
        let stored = Stored::read(&chats);
        stored.assert_holds(&acked);
        stored.assert_answered_at_most_once();
        let queued = stored.unanswered().len();
        // Once the queue drains: every acknowledged message answered once.
        let stored = wait_until_drained(&chats, DRAIN_TIMEOUT);
        stored.assert_holds(&acked);
        stored.assert_echoed_once(&acked);
        let inbound = stored.messages.values().filter(|m| m.is_in()).count();
        eprintln!(
            "round {round}: SIGKILL {moment}; {} acknowledged this round, {} in all; \
             {} stored unacknowledged in all; {queued} unanswered at the restart",
            this_round.len(),
            acked.len(),
            inbound - acked.len(),
        );
    }
    assert!(
        !acked.is_empty(),
        "no post was acknowledged in {ROUNDS} rounds: the test checked nothing"
    );

    // The host still takes new messages after all that.
    let chat = host.conversation("echo", "rounds-0");
    let id = chat.post_message("sender-0", "after the rounds");
    assert_eq!(chat.wait_for_reply(&id).text, "echo: after the rounds");
}

#[test]
fn a_torn_journal_tail_is_dropped_and_everything_acknowledged_before_it_survives() {
    let mut rng = SeededRng::from_env_or_clock(SEED_VAR);
    let mut host = Host::start("");
    let names = ["torn-a", "torn-b"];
    let mut acked = post_and_wait_for_replies(&host, &names, "before the cut", 12);

    // The last frame of the newest journal file, cut in half.
    host.kill();
    let file = host.newest_journal_file();
    let (offset, length) = *whole_frames(&file).last().unwrap();
    set_len(&file, offset + length / 2);
    eprintln!(
        "cut {} to {} bytes, inside its last frame ({length} bytes at {offset})",
        file.display(),
        offset + length / 2
    );
    host.restart();
    assert_torn_tail_dropped(&host);
    assert_all_answered_once(&host, &names, &acked);

    // Garbage after the last whole frame. Messages acknowledged after the
    // first restart are in it too: the host went on after the cut frame.
    acked.extend(post_and_wait_for_replies(
        &host,
        &names,
        "before the garbage",
        12,
    ));
    host.kill();
    let file = host.newest_journal_file();
    let frames = whole_frames(&file);
    let mut garbage = rng.bytes(37);
    if garbage.starts_with(&JOURNAL_MAGIC[..1]) {
        garbage[0] ^= 0xff; // no frame starts here
    }
    append(&file, &garbage);
    eprintln!(
        "appended 37 bytes after the {} frames of {}",
        frames.len(),
        file.display()
    );
    host.restart();
    assert_torn_tail_dropped(&host);
    assert_all_answered_once(&host, &names, &acked);

    // The dropped bytes stay dropped: after another SIGKILL the journal,
    // torn files included, replays cleanly and keeps what came after.
    acked.extend(post_and_wait_for_replies(
        &host,
        &names,
        "after the garbage",
        6,
    ));
    host.restart();
    assert_all_answered_once(&host, &names, &acked);
}

#[test]
fn a_corrupt_record_in_the_middle_of_the_journal_stops_the_start_naming_file_and_offset() {
    let mut host = Host::start("");
    let names = ["corrupt-a", "corrupt-b"];
    let acked = post_and_wait_for_replies(&host, &names, "journalled", 16);
    host.kill();

    let file = host.newest_journal_file();
    let frames = whole_frames(&file);
    assert!(
        frames.len() >= 3,
        "{} holds {} frames after {} messages and their replies; expected at least 3",
        file.display(),
        frames.len(),
        acked.len()
    );
    // A frame in the middle, with a payload, and whole frames after it.
    let (offset, length) = frames[frames.len() / 2..frames.len() - 1]
        .iter()
        .copied()
        .find(|&(_, length)| length > JOURNAL_HEADER_LEN)
        .unwrap_or_else(|| panic!("no frame with a payload in the second half of {frames:?}"));
    let original = std::fs::read(&file).expect("read the journal file");
    let mut corrupted = original.clone();
    let flipped = (offset + JOURNAL_HEADER_LEN + (length - JOURNAL_HEADER_LEN) / 2) as usize;
    corrupted[flipped] ^= 0xff;
    std::fs::write(&file, &corrupted).expect("write the corrupted journal file");
    eprintln!(
        "flipped the byte at {flipped} of {}, in its frame at {offset} ({} of {} frames)",
        file.display(),
        frames.iter().position(|&(o, _)| o == offset).unwrap() + 1,
        frames.len()
    );

    let log = host.restart_expecting_failure();
    let expected = format!(
        "corrupt journal record in {} at offset {offset}",
        file.display()
    );
    assert!(
        log.contains(&expected),
        "the refusal should say {expected:?}; the host printed:\n{log}"
    );
    assert!(
        std::fs::read(&file).expect("read the journal file") == corrupted,
        "the failed start changed {}",
        file.display()
    );

    // Repaired, the journal replays whole: the failed start dropped nothing.
    std::fs::write(&file, &original).expect("restore the journal file");
    host.restart();
    assert!(
        !host.run_log().contains("corrupt journal record"),
        "the repaired journal is still reported corrupt:\n{}",
        host.run_log()
    );
    assert_all_answered_once(&host, &names, &acked);
}

#[test]
fn a_full_disk_answers_503_and_the_host_serves_again_once_space_is_freed() {
    const MIB: u64 = 1 << 20;
    let mut host = Host::start_on_tmpfs(
        &format!("[store]\nmin_free_bytes = {}\n", 16 * MIB),
        64 * MIB,
    );
    let names = ["full-disk"];
    // Tokens are minted (and stored) here, before the disk fills.
    let mut acked = post_and_wait_for_replies(&host, &names, "before the disk filled", 5);
    let chat = host.conversation("echo", names[0]);
    let before = chat.all_messages();

    let filler = fill_disk(&host.data_dir());
    // The host reads the free space at most every 50 ms (the reserve covers
    // what it accepts meanwhile); past that, every message is refused.
    std::thread::sleep(Duration::from_millis(100));
    for n in 1..=3 {
        let text = format!("while the disk is full {n}");
        let answer = chat
            .try_post("sender-0", &text)
            .unwrap_or_else(|e| panic!("POST {text:?} on a full disk: {e}"));
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "POST {text:?} on a full disk: {}",
            answer.raw
        );
        let error = answer.error().to_lowercase();
        assert!(
            error.contains("disk") || error.contains("space"),
            "the 503's error should name the disk or its space: {:?}",
            answer.raw
        );
    }
    // What was accepted is still served, and nothing refused was stored.
    assert_eq!(
        chat.all_messages(),
        before,
        "the history changed while the disk was full"
    );

    std::fs::remove_file(&filler).expect("remove the filler");
    // Taking messages again is allowed a moment (the host may look at the
    // free space now and then); each refusal meanwhile must still be a 503.
    let text = "after the space was freed";
    let deadline = Instant::now() + Duration::from_secs(5);
    let answer = loop {
        let answer = chat.try_post("sender-0", text).expect("POST after freeing");
        if answer.status != StatusCode::SERVICE_UNAVAILABLE || Instant::now() >= deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        answer.status,
        StatusCode::ACCEPTED,
        "POST {text:?} once the space was freed: {}",
        answer.raw
    );
    let id = answer.body["id"].as_str().expect("an id").to_owned();
    assert_eq!(chat.wait_for_reply(&id).text, format!("echo: {text}"));
    acked.push(Acked {
        bot: "echo".into(),
        conversation: names[0].into(),
        id,
        text: text.into(),
    });

    host.restart();
    let stored = assert_all_answered_once(&host, &names, &acked);
    assert!(
        !stored
            .messages
            .values()
            .any(|m| m.text.contains("while the disk is full")),
        "a message refused with 503 was stored"
    );
}

/// The conversations of `senders`, on the host as it runs now (a restart
/// may have moved it to another port).
fn conversations(host: &Host, senders: &[(Conversation, String)]) -> Vec<Conversation> {
    let names: BTreeSet<&str> = senders
        .iter()
        .map(|(chat, _)| chat.conversation.as_str())
        .collect();
    names
        .into_iter()
        .map(|name| host.conversation("echo", name))
        .collect()
}

/// Posts `count` messages round-robin to the echo conversations `names`
/// and waits for each reply; returns them acknowledged.
fn post_and_wait_for_replies(host: &Host, names: &[&str], label: &str, count: usize) -> Vec<Acked> {
    (0..count)
        .map(|n| {
            let chat = host.conversation("echo", names[n % names.len()]);
            let message = chat.post_acked("sender-0", &format!("{label} {n}"));
            assert_eq!(
                chat.wait_for_reply(&message.id).text,
                format!("echo: {}", message.text)
            );
            message
        })
        .collect()
}

/// After the restart, every message of `acked` in `names` is stored and,
/// once the queue drains, answered exactly once.
fn assert_all_answered_once(host: &Host, names: &[&str], acked: &[Acked]) -> Stored {
    let chats: Vec<Conversation> = names
        .iter()
        .map(|name| host.conversation("echo", name))
        .collect();
    let stored = Stored::read(&chats);
    stored.assert_holds(acked);
    stored.assert_answered_at_most_once();
    let stored = wait_until_drained(&chats, DRAIN_TIMEOUT);
    stored.assert_holds(acked);
    stored.assert_echoed_once(acked);
    stored
}

/// The frames of journal file `path`, asserting that there are some and
/// that they are all the file holds (as after a SIGKILL with nothing in
/// flight), so that the test's reading of the format matches the host's.
fn whole_frames(path: &Path) -> Vec<(u64, u64)> {
    let frames = journal_frames(path);
    let file_len = std::fs::metadata(path)
        .expect("stat the journal file")
        .len();
    let walked = frames.last().map_or(0, |&(offset, length)| offset + length);
    assert!(
        !frames.is_empty() && walked == file_len,
        "{} ({file_len} bytes) should hold whole frames only; the walk found {} frames over {walked} bytes",
        path.display(),
        frames.len()
    );
    frames
}

/// Asserts that the latest start reported dropping a torn journal tail.
fn assert_torn_tail_dropped(host: &Host) {
    let log = host.run_log();
    assert!(
        log.contains("torn"),
        "the host should report the torn journal tail it dropped; it printed:\n{log}"
    );
}

fn set_len(path: &Path, length: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| file.set_len(length))
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
}

fn append(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}
