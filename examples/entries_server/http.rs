//! The HTTP side: one loop per thread, routing, the two entry handlers, and
//! reading and answering requests.

use std::collections::hash_map::Entry as Slot;
use std::io::{self, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::app::{App, lock, unix_seconds};
use crate::entries::{Entry, Invalid, NewEntry};
use crate::shutdown::Stop;
use crate::webhook::Event;

/// Threads answering HTTP requests. Handlers never block on delivery, so a
/// few are plenty.
pub(crate) const HTTP_THREADS: usize = 4;
const MAX_BODY: usize = 64 * 1024;
const MAX_USER_ID_CHARS: usize = 128;

/// One HTTP thread: answers requests until unblocked at shutdown.
pub(crate) fn serve(app: &App, server: &Server, stopping: &AtomicBool, stop: &mpsc::Sender<Stop>) {
    loop {
        match server.recv() {
            Ok(request) => {
                // A bug in one request must not take an HTTP thread down.
                if catch_unwind(AssertUnwindSafe(|| handle(app, request))).is_err() {
                    log::error!("a request handler panicked; the request was answered 500");
                }
            }
            // The unblock marker, or the listener failing at shutdown.
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            // tiny_http's accept thread has stopped: nothing more will come.
            Err(e) => {
                let _ = stop.send(Stop::ListenerFailed(e.to_string()));
                return;
            }
        }
    }
}

/// Answers one request. A change is answered only once its webhook is
/// kept (see [`App::keep`]): the answer waits for the journal's commit, never
/// for room in the dispatcher's queue.
fn handle(app: &App, mut request: Request) {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request
        .url()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let response = route(app, &mut request, &method, &path);
    let status = response.status_code().0;
    if let Err(e) = request.respond(response) {
        log::debug!("{method} {path}: could not send the answer: {e}");
    }
    log::debug!("{method} {path} -> {status} in {:?}", started.elapsed());
}

type Answer = Response<io::Cursor<Vec<u8>>>;

fn route(app: &App, request: &mut Request, method: &Method, path: &str) -> Answer {
    let not_allowed = |allow: &str| {
        json_response(
            405,
            &json!({"error": format!("method {method} is not allowed on {path}")}),
        )
        .with_header(header("Allow", allow))
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (Method::Post, ["entries"]) => create_entry(app, request),
        (_, ["entries"]) => not_allowed("POST"),
        (Method::Delete, ["entries", id]) => delete_entry(app, id),
        (_, ["entries", _]) => not_allowed("DELETE"),
        (Method::Get | Method::Head, ["metrics"]) => {
            text_response(200, app.metrics(), hookpool::prometheus::CONTENT_TYPE)
        }
        (_, ["metrics"]) => not_allowed("GET, HEAD"),
        _ => json_response(404, &json!({"error": format!("no route for {path}")})),
    }
}

fn create_entry(app: &App, request: &mut Request) -> Answer {
    let user_id = match user_id(request) {
        Ok(user) => user,
        Err(e) => return e.response(),
    };
    let body = match read_body(request) {
        Ok(body) => body,
        Err(response) => return response,
    };
    let new = match NewEntry::parse(&body) {
        Ok(new) => new,
        Err(e) => return e.response(),
    };
    let Some(_promise) = app.promise() else {
        return shutting_down();
    };
    let created = {
        let mut entries = lock(&app.entries);
        let entry = Entry {
            id: entries.next_id + 1,
            user_id,
            text: new.text,
            mood: new.mood,
            category: new.category,
            created_at: unix_seconds(),
        };
        // The id is taken only once its webhook exists. Serializing is all
        // this does: no I/O under the lock.
        Event::new(app, "entry_created", &entry, entry.created_at).map(|event| {
            entries.next_id = entry.id;
            (entry, event)
        })
    };
    let (entry, event) = match created {
        Ok(created) => created,
        Err(e) => return webhook_error(&e),
    };
    // Saved only once its webhook is kept: a refused one leaves nothing to
    // undo but a skipped id.
    if app.keep(event).is_err() {
        return unkept();
    }
    lock(&app.entries).by_id.insert(entry.id, entry.clone());
    json_response(201, &entry).with_header(header("Location", &format!("/entries/{}", entry.id)))
}

fn delete_entry(app: &App, id: &str) -> Answer {
    let not_found = || json_response(404, &json!({"error": format!("no entry with id {id}")}));
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    let Some(_promise) = app.promise() else {
        return shutting_down();
    };
    let deleted = {
        let mut entries = lock(&app.entries);
        match entries.by_id.entry(id) {
            Slot::Vacant(_) => None,
            // Removed only once its webhook exists, as for a creation.
            Slot::Occupied(slot) => Some(
                Event::new(app, "entry_deleted", slot.get(), unix_seconds())
                    .map(|event| (slot.remove(), event)),
            ),
        }
    };
    match deleted {
        None => not_found(),
        Some(Ok((entry, event))) => {
            if app.keep(event).is_err() {
                // Put back: the deletion did not happen. (A concurrent
                // DELETE of it meanwhile got 404.)
                lock(&app.entries).by_id.insert(entry.id, entry);
                return unkept();
            }
            json_response(200, &entry)
        }
        Some(Err(e)) => webhook_error(&e),
    }
}

/// The URL was checked at startup and the payload is plain data, so this
/// is not expected; the entry was left unchanged.
fn webhook_error(e: &hookpool::WebhookError) -> Answer {
    log::error!("cannot build a webhook: {e}");
    json_response(
        500,
        &json!({"error": "internal error: the webhook could not be built"}),
    )
}

/// The change's webhook could not be kept, so the change was undone.
fn unkept() -> Answer {
    json_response(
        503,
        &json!({"error": "the change could not be saved durably and was not made; retry later"}),
    )
    .with_header(header("Retry-After", "5"))
}

pub(crate) fn shutting_down() -> Response<io::Cursor<Vec<u8>>> {
    json_response(503, &json!({"error": "the server is shutting down"}))
        .with_header(header("Retry-After", "5"))
}

/// The user from `X-User-Id`, or `anonymous`.
fn user_id(request: &Request) -> Result<String, Invalid> {
    let Some(h) = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("X-User-Id"))
    else {
        return Ok("anonymous".into());
    };
    let user = h.value.as_str().trim();
    let chars = user.chars().count();
    if chars == 0 || chars > MAX_USER_ID_CHARS || user.chars().any(char::is_control) {
        return Err(Invalid::field(
            "user_id",
            format!("X-User-Id must be 1 to {MAX_USER_ID_CHARS} printable characters"),
        ));
    }
    Ok(user.to_owned())
}

/// The body, at most `MAX_BODY` bytes.
fn read_body(request: &mut Request) -> Result<Vec<u8>, Response<io::Cursor<Vec<u8>>>> {
    let too_large = || {
        json_response(
            413,
            &json!({"error": format!("the body must be at most {MAX_BODY} bytes")}),
        )
    };
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let limit = u64::try_from(MAX_BODY).unwrap_or(u64::MAX) + 1;
    if let Err(e) = request.as_reader().take(limit).read_to_end(&mut body) {
        return Err(json_response(
            400,
            &json!({"error": format!("could not read the body: {e}"), "field": null}),
        ));
    }
    if body.len() > MAX_BODY {
        return Err(too_large());
    }
    Ok(body)
}

pub(crate) fn json_response<T: Serialize + ?Sized>(
    status: u16,
    body: &T,
) -> Response<io::Cursor<Vec<u8>>> {
    let text = serde_json::to_string(body).unwrap_or_else(|e| {
        log::error!("cannot serialize an answer: {e}");
        r#"{"error":"internal error"}"#.to_owned()
    });
    text_response(status, text, "application/json")
}

fn text_response(status: u16, body: String, content_type: &str) -> Response<io::Cursor<Vec<u8>>> {
    Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("header names and values built here are ASCII")
}
