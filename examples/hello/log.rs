//! The example's logger: the libraries report through `tracing` and never
//! print; this prints their events to stderr, one line each (`LEVEL message
//! key=value ...`). `TIDEPOOL_LOG=error|warn|info|debug|trace` sets the
//! most verbose level shown (default `info`). An application would install
//! `tracing-subscriber` instead; this keeps the example's dependencies few.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

struct Stderr {
    max: Level,
}

/// Collects an event's message and its other fields.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl Subscriber for Stderr {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        // More verbose levels compare greater.
        *meta.level() <= self.max
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        // Spans are not shown; every span shares one id.
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = Line::default();
        event.record(&mut line);
        eprintln!(
            "{:5} {}{}",
            event.metadata().level(),
            line.message,
            line.fields
        );
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Installs the logger for the whole process.
pub fn install() {
    let max = match std::env::var("TIDEPOOL_LOG").as_deref() {
        Ok("error") => Level::ERROR,
        Ok("warn") => Level::WARN,
        Ok("debug") => Level::DEBUG,
        Ok("trace") => Level::TRACE,
        _ => Level::INFO,
    };
    let _ = tracing::subscriber::set_global_default(Stderr { max });
}
