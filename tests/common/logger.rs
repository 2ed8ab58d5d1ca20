//! A `log` logger that records every record, so tests can assert on what was
//! logged. Tests in one binary run in parallel, so filter by a unique pool
//! name in the message.

use std::sync::{Mutex, OnceLock};

/// One captured log line.
#[derive(Debug, Clone)]
pub struct Line {
    pub level: log::Level,
    pub target: String,
    pub message: String,
}

struct Capture {
    lines: Mutex<Vec<Line>>,
}

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        self.lines.lock().unwrap().push(Line {
            level: record.level(),
            target: record.target().to_owned(),
            message: record.args().to_string(),
        });
    }

    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::new(Capture {
            lines: Mutex::new(Vec::new()),
        }));
        log::set_logger(capture).expect("only this module installs a logger");
        log::set_max_level(log::LevelFilter::Trace);
        capture
    })
}

/// Installs the capturing logger (idempotent).
pub fn install() {
    capture();
}

/// Every line logged so far whose message contains `needle`.
pub fn lines_containing(needle: &str) -> Vec<Line> {
    capture()
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.message.contains(needle))
        .cloned()
        .collect()
}

/// Every line logged so far.
pub fn all_lines() -> Vec<Line> {
    capture().lines.lock().unwrap().clone()
}
