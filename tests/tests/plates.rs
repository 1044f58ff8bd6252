//! The licence-plate lookup end to end: photos posted over HTTP to the real
//! host, read by its text recognition (PP-OCRv5, from `AVIARY_MODELS_DIR`),
//! looked up in a register imported with the CLI; uploads the host must
//! refuse; the register replaced while the bot serves; lookups audited.

use std::time::Duration;

use aviary_e2e::photos;
use aviary_e2e::{workspace_dir, Conversation, Host};
use reqwest::StatusCode;

const REGISTER: &str = "plate,status,make,colour,notes\n\
AB-123-CD,stolen,Renault Clio,grey,Reported stolen in Lyon\n\
FG-456-HJ,ok,Peugeot 208,white,\n";

/// A host with plate-lookup serving and `REGISTER` imported.
fn host() -> Host {
    host_with("")
}

/// [`host`] with more configuration.
fn host_with(config: &str) -> Host {
    let host = Host::start(config);
    let out = host.import_data("plate-lookup", "register", REGISTER);
    assert!(out.contains("imported 2 rows"), "{out}");
    host
}

/// Posts `photo` and waits for the bot's answer.
fn ask_with_photo(chat: &Conversation, photo: &[u8]) -> String {
    let answer = chat.post_files("agent-7", "", &[("car.jpg", photo)]);
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.raw);
    let id = answer.body["id"].as_str().unwrap().to_owned();
    chat.wait_for_reply_within(&id, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no answer to the photo"))
        .text
}

fn ask(chat: &Conversation, text: &str) -> String {
    let id = chat.post_message("agent-7", text);
    chat.wait_for_reply(&id).text
}

/// Every file under the host's attachment store.
fn blob_files(host: &Host) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(shards) = std::fs::read_dir(host.data_dir().join("blobs")) else {
        return out;
    };
    for shard in shards.flatten() {
        if shard.file_name() == "tmp" {
            continue;
        }
        if let Ok(files) = std::fs::read_dir(shard.path()) {
            out.extend(files.flatten().map(|f| f.path()));
        }
    }
    out
}

#[test]
fn a_photo_of_a_registered_plate_gets_its_entry_and_an_unregistered_one_is_said_so() {
    let host = host();
    let chat = host.conversation("plate-lookup", "patrol-1");
    let answer = ask_with_photo(&chat, &photos::car("AB-123-CD", 70, 90));
    assert!(
        answer.contains("AB-123-CD") && answer.contains("status: stolen"),
        "{answer}"
    );
    assert!(
        answer.contains("make: Renault Clio") && answer.contains("% confidence"),
        "{answer}"
    );

    let answer = ask_with_photo(&chat, &photos::car("KL-789-MN", 70, 90));
    assert!(
        answer.contains("KL789MN is not in the register"),
        "{answer}"
    );

    // The photo is downloadable from the conversation with its token only.
    let messages = chat.all_messages();
    let photo = &messages[0].attachments[0];
    assert_eq!(photo["media_type"], "image/jpeg");
    let url = photo["url"].as_str().unwrap();
    let (status, media, bytes) = chat.download("agent-7", url);
    assert_eq!(
        (status, media.as_deref()),
        (StatusCode::OK, Some("image/jpeg"))
    );
    assert_eq!(bytes, photos::car("AB-123-CD", 70, 90));
    let other = host.conversation("plate-lookup", "patrol-2");
    let elsewhere = url.replace("patrol-1", "patrol-2");
    assert_eq!(
        other.download("agent-9", &elsewhere).0,
        StatusCode::NOT_FOUND
    );

    // Each lookup is in the audit log, with who asked.
    let audit = host.admin_get("/api/v1/admin/audit?limit=100");
    let reads: Vec<&serde_json::Value> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "data_read")
        .collect();
    assert!(
        reads.iter().any(|r| r["target"] == "data/register/AB123CD"
            && r["detail"]
                .as_str()
                .unwrap()
                .contains("by agent-7 in conversation patrol-1")),
        "{audit}"
    );
    // And counted in the bot's stats: two lookups, one found.
    let (ok, out, err) = host.cli(&["plugin", "stats", "plate-lookup"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("data        register: 2 lookups, 1 found"),
        "{out}"
    );
}

#[test]
fn an_unreadable_photo_asks_for_a_better_one_and_a_typed_plate_works() {
    let host = host();
    let chat = host.conversation("plate-lookup", "patrol-3");
    let answer = ask_with_photo(&chat, &photos::car("AB-123-CD", 8, 30));
    assert!(answer.to_lowercase().contains("closer"), "{answer}");
    assert!(!answer.contains("status: stolen"), "{answer}");

    let answer = ask(&chat, "/plate fg 456-hj");
    assert!(
        answer.contains("status: ok") && answer.contains("make: Peugeot 208"),
        "{answer}"
    );
}

#[test]
fn oversized_truncated_and_non_image_uploads_get_a_4xx_and_store_nothing() {
    // Forms up to 32 MiB are read whole, so the 17 MiB file meets the bot's
    // 16 MiB grant (a form over the host's bound is refused before it is
    // read, and the connection closed: see web_limits).
    let host = host_with("[web]\nmax_upload_bytes = 33554432\n");
    let chat = host.conversation("plate-lookup", "patrol-4");
    let before = blob_files(&host);
    let photo = photos::car("AB-123-CD", 70, 90);
    let cases: [(&str, Vec<u8>, StatusCode, &str); 4] = [
        (
            "truncated",
            photo[..photo.len() / 2].to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "truncated",
        ),
        (
            "a PDF",
            b"%PDF-1.7\n1 0 obj <<>> endobj\n".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/pdf",
        ),
        (
            "text",
            b"just some text, not a photo".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "takes image/*",
        ),
        (
            "oversized",
            vec![0xff; 17 << 20],
            StatusCode::PAYLOAD_TOO_LARGE,
            "bytes",
        ),
    ];
    for (what, bytes, status, says) in cases {
        let answer = chat.post_files("agent-7", "look", &[("car.jpg", &bytes)]);
        assert_eq!(answer.status, status, "{what}: {}", answer.raw);
        assert!(answer.error().contains(says), "{what}: {}", answer.raw);
    }
    assert!(chat.all_messages().is_empty(), "nothing refused was stored");
    assert_eq!(
        blob_files(&host),
        before,
        "no file of a refused upload was kept"
    );

    // Echo has no `attachment_bytes` grant: it takes no files at all.
    let echo = host.conversation("echo", "files");
    let answer = echo.post_files("agent-7", "look", &[("car.jpg", &photo)]);
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.raw
    );
    assert!(
        answer.error().contains("attachment_bytes"),
        "{}",
        answer.raw
    );
}

#[test]
fn the_register_is_replaced_while_the_bot_serves_and_bad_csv_changes_nothing() {
    let host = host();
    let chat = host.conversation("plate-lookup", "patrol-5");
    assert!(ask(&chat, "/plate AB-123-CD").contains("status: stolen"));

    let csv = host.dir().join("register.csv");
    std::fs::write(
        &csv,
        "plate,status,make\nAB-123-CD,recovered,Renault Clio\n",
    )
    .unwrap();
    let (ok, out, err) = host.cli(&[
        "plugin",
        "data",
        "import",
        "plate-lookup",
        csv.to_str().unwrap(),
    ]);
    assert!(
        ok && out.contains("imported 1 rows") && out.contains("replacing 2"),
        "{out}{err}"
    );
    assert!(ask(&chat, "/plate AB-123-CD").contains("status: recovered"));
    assert!(ask(&chat, "/plate FG-456-HJ").contains("not in the register"));

    std::fs::write(&csv, "make,status\nRenault,stolen\n").unwrap();
    let (ok, _, err) = host.cli(&[
        "plugin",
        "data",
        "import",
        "plate-lookup",
        csv.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("no column `plate`"), "{err}");
    assert!(
        ask(&chat, "/plate AB-123-CD").contains("status: recovered"),
        "a refused import changes nothing"
    );

    let out = host.dir().join("export.csv");
    let (ok, _, err) = host.cli(&[
        "plugin",
        "data",
        "export",
        "plate-lookup",
        "register",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "plate,make,status\nAB-123-CD,Renault Clio,recovered\n"
    );
}

#[test]
fn plate_lookup_without_the_vision_grant_is_refused_at_load() {
    let policies = tempfile::tempdir().unwrap();
    let grant =
        std::fs::read_to_string(workspace_dir().join("policies/plate-lookup.toml")).unwrap();
    let grant: String = grant
        .lines()
        .filter(|l| !l.starts_with("vision"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(policies.path().join("plate-lookup.toml"), grant).unwrap();
    let host = Host::start(&format!(
        "policies_dir = \"{}\"\n",
        policies.path().display()
    ));
    let (ok, out, err) = host.cli(&["plugin", "list", "--json"]);
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bot = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == "plate-lookup")
        .unwrap_or_else(|| panic!("plate-lookup is listed: {out}"));
    let shown = bot.to_string();
    assert!(
        shown.contains("vision"),
        "the refusal names the grant: {shown}"
    );
    let refused = host
        .conversation("plate-lookup", "patrol-6")
        .try_post("agent-7", "/plate AB-123-CD")
        .unwrap();
    assert_eq!(
        refused.status,
        StatusCode::NOT_FOUND,
        "a refused bot takes no messages: {}",
        refused.raw
    );
}

/// The hostile `file-snoop` (granted 1 KiB attachments and vision) beside
/// plate-lookup, whose photo it tries to read.
#[test]
fn a_hostile_bot_gets_every_abuse_of_attachments_and_vision_refused() {
    let plugins = tempfile::tempdir().unwrap();
    let policies = tempfile::tempdir().unwrap();
    let copy = |dir: std::path::PathBuf, file: &str| {
        std::fs::copy(dir.join(file), plugins.path().join(file)).unwrap()
    };
    for file in ["plate-lookup.wasm", "plate-lookup.toml"] {
        copy(aviary_e2e::bots_dir(), file);
    }
    for file in ["file-snoop.wasm", "file-snoop.toml"] {
        copy(aviary_e2e::hostile_dir(), file);
    }
    std::fs::copy(
        workspace_dir().join("policies/plate-lookup.toml"),
        policies.path().join("plate-lookup.toml"),
    )
    .unwrap();
    std::fs::write(
        policies.path().join("file-snoop.toml"),
        aviary_e2e::FILE_SNOOP_POLICY,
    )
    .unwrap();
    let host = Host::start_with_plugins(
        &format!("policies_dir = \"{}\"\n", policies.path().display()),
        plugins.path(),
    );
    let victim = host.conversation("plate-lookup", "victim");
    let posted = victim.post_files(
        "agent-7",
        "",
        &[("car.jpg", &photos::car("AB-123-CD", 70, 90))],
    );
    assert_eq!(posted.status, StatusCode::ACCEPTED, "{}", posted.raw);
    let photo = posted.body["attachments"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let snoop = host.conversation("file-snoop", "snoop");
    let expect = |abuse: &str, answer: &str| {
        let got = ask(&snoop, abuse);
        assert!(got.starts_with(answer), "{abuse}: {got}");
    };
    expect(&format!("read {photo}"), "invalid: no attachment");
    expect(&format!("read-text {photo}"), "invalid: no attachment");
    expect("traversal", "invalid: no attachment");
    expect("oversized", "denied: the file is 4096 bytes");
    expect("bad-name", "invalid: a file name is");
    expect(&format!("send-unknown {photo}"), "invalid: no attachment");
    expect("not-an-image", "invalid: attachment");
    expect(
        &format!("nan-region {photo}"),
        "invalid: a region's corners are finite",
    );
    expect(
        &format!("three-corners {photo}"),
        "invalid: a region is 4 corners",
    );
    expect(
        &format!("many-calls {photo}"),
        "quota: at most 32 vision calls per event",
    );

    // The refusals are in the audit log, and the victim still gets its answer.
    let audit = host.admin_get("/api/v1/admin/audit?limit=200").to_string();
    assert!(
        audit.contains("file-snoop") && audit.contains("attachments"),
        "{audit}"
    );
    let reply = victim.wait_for_reply(posted.body["id"].as_str().unwrap());
    assert!(reply.text.contains("AB-123-CD"), "{}", reply.text);
}
