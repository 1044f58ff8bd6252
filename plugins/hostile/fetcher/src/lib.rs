//! A bot that fetches whatever URL it is sent, over wasi:http. The host's
//! egress policy decides what it may reach; it replies with what happened.

wit_bindgen::generate!({ path: "../../../wit", world: "bot" });

use aviary::bot::messaging;
use aviary::bot::types::Event;
use exports::aviary::bot::handler::Guest;
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, OutgoingRequest, Scheme};

struct Fetcher;

impl Guest for Fetcher {
    fn init(_settings: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        let Event::Message(message) = event else {
            return Ok(());
        };
        let outcome = match fetch(message.text.trim()) {
            Ok(status) => format!("status {status}"),
            Err(error) => format!("error: {error}"),
        };
        messaging::reply(&message.conversation, &message.id, &outcome).map_err(|e| format!("{e:?}"))
    }
}

fn fetch(url: &str) -> Result<u16, String> {
    let (scheme, rest) = url.split_once("://").ok_or("not a URL")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_scheme(Some(&if scheme == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        }))
        .map_err(|_| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|_| "bad authority")?;
    request
        .set_path_with_query(Some(path))
        .map_err(|_| "bad path")?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|_| "response taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    Ok(response.status())
}

export!(Fetcher);
