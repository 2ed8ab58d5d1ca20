//! The webhook each change promises: its body, and what logs may show of it.

use hookpool::Webhook;
use serde::Serialize;

use crate::app::App;
use crate::entries::Entry;

/// The webhook body: exactly these fields, nothing internal.
#[derive(Serialize)]
struct Payload<'a> {
    event: &'a str,
    entry_id: u64,
    user_id: &'a str,
    text: &'a str,
    mood: u8,
    category: &'a str,
    /// Unix seconds.
    timestamp: u64,
}

/// A webhook promised by an answer, with what the logs may show of it.
pub(crate) struct Event {
    pub(crate) webhook: Webhook,
    pub(crate) name: &'static str,
    pub(crate) entry_id: u64,
}

impl Event {
    pub(crate) fn new(
        app: &App,
        name: &'static str,
        entry: &Entry,
        timestamp: u64,
    ) -> Result<Event, hookpool::WebhookError> {
        let payload = Payload {
            event: name,
            entry_id: entry.id,
            user_id: &entry.user_id,
            text: &entry.text,
            mood: entry.mood,
            category: &entry.category,
            timestamp,
        };
        Ok(Event {
            webhook: Webhook::new(&app.webhook_url, &payload)?,
            name,
            entry_id: entry.id,
        })
    }
}
