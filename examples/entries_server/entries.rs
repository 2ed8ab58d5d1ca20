//! Entries, and the checks a `POST /entries` body goes through.

use std::collections::HashMap;
use std::io;

use serde::Serialize;
use serde_json::{Value, json};
use tiny_http::Response;

use crate::http::json_response;

const MAX_TEXT_CHARS: usize = 10_000;
const MAX_CATEGORY_CHARS: usize = 100;

/// A 400 that names the field at fault (`null` for the body as a whole).
pub(crate) struct Invalid {
    pub(crate) field: Option<String>,
    pub(crate) error: String,
}

impl Invalid {
    pub(crate) fn field(field: &str, error: impl Into<String>) -> Self {
        Invalid {
            field: Some(field.to_owned()),
            error: error.into(),
        }
    }

    pub(crate) fn response(&self) -> Response<io::Cursor<Vec<u8>>> {
        json_response(400, &json!({"error": self.error, "field": self.field}))
    }
}

/// A checked `POST /entries` body.
pub(crate) struct NewEntry {
    pub(crate) text: String,
    pub(crate) mood: u8,
    pub(crate) category: String,
}

impl NewEntry {
    const FIELDS: [&'static str; 3] = ["text", "mood", "category"];

    /// Checks the body; the first problem found is reported. Unknown fields
    /// are refused, so a misspelt one is not silently dropped.
    pub(crate) fn parse(body: &[u8]) -> Result<NewEntry, Invalid> {
        let whole = |error: String| Invalid { field: None, error };
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| whole(format!("the body is not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(whole("the body must be a JSON object".into()));
        };
        if let Some(unknown) = map.keys().find(|k| !Self::FIELDS.contains(&k.as_str())) {
            return Err(Invalid::field(
                unknown,
                format!("unknown field {unknown:?}: expected text, mood and category"),
            ));
        }
        let text = non_empty_string(&map, "text", MAX_TEXT_CHARS)?;
        let mood = match map.get("mood") {
            None | Some(Value::Null) => return Err(Invalid::field("mood", "mood is required")),
            Some(v) => v
                .as_u64()
                .filter(|m| (1..=10).contains(m))
                .and_then(|m| u8::try_from(m).ok())
                .ok_or_else(|| Invalid::field("mood", "mood must be an integer from 1 to 10"))?,
        };
        let category = non_empty_string(&map, "category", MAX_CATEGORY_CHARS)?;
        Ok(NewEntry {
            text,
            mood,
            category,
        })
    }
}

fn non_empty_string(
    map: &serde_json::Map<String, Value>,
    field: &'static str,
    max_chars: usize,
) -> Result<String, Invalid> {
    match map.get(field) {
        None | Some(Value::Null) => Err(Invalid::field(field, format!("{field} is required"))),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(Invalid::field(field, format!("{field} must not be empty")))
        }
        Some(Value::String(s)) if s.chars().count() > max_chars => Err(Invalid::field(
            field,
            format!("{field} must be at most {max_chars} characters"),
        )),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Invalid::field(field, format!("{field} must be a string"))),
    }
}

/// A saved entry, as answered to the client.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Entry {
    pub(crate) id: u64,
    pub(crate) user_id: String,
    pub(crate) text: String,
    pub(crate) mood: u8,
    pub(crate) category: String,
    /// Unix seconds.
    pub(crate) created_at: u64,
}

#[derive(Default)]
pub(crate) struct Entries {
    /// The last id handed out; ids start at 1 and are never reused.
    pub(crate) next_id: u64,
    pub(crate) by_id: HashMap<u64, Entry>,
}
