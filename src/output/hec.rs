//! Splunk HTTP Event Collector events: one per row, one per line, each
//! the row in its format (an ndjson object, or with `--format ocsf` its
//! OCSF finding) inside HEC's envelope:
//!
//! ```text
//! {"time":1764993600.123,"host":"<cluster>","source":"kubeanon","sourcetype":"kubeanon:finding",
//!  "index":"<--hec-index>","fields":{"severity":..,"rule":..,"cluster":..,"account":..,"region":..,"id":..},
//!  "event":{..the row..}}
//! ```
//!
//! `time` is the row's latest request (a rollup group's last seen; the
//! run's time when it has none) in epoch seconds with milliseconds.
//! `fields` (indexed fields) are what a Splunk search filters on, and
//! carry the row's stable `id`: HEC keeps no idempotency key, so a search
//! deduplicates on it. Values are attacker-controlled: the JSON escapes
//! every character `is_hidden` names, as ndjson does.

use std::io::{self, Write};

use serde_json::{Map, Value};

use super::json::escape_hidden;
use super::{Formatter, Row, Sink};
use crate::detect::FILL;
use crate::detect::rollup::parse_time;

/// The envelope's settings.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `kubeanon:finding`, or `kubeanon:ocsf` for OCSF events.
    pub sourcetype: &'static str,
    /// `--hec-index`; None: the token's default index.
    pub index: Option<String>,
    pub run_ms: i64,
}

/// The indexed fields, by column name.
const FIELDS: [&str; 6] = ["severity", "rule", "cluster", "account", "region", "id"];

#[derive(Debug, Clone)]
pub struct Hec {
    inner: Box<Formatter>,
    envelope: Envelope,
    columns: Vec<String>,
    event: Vec<u8>,
}

impl Hec {
    pub(super) fn new(inner: Formatter, envelope: Envelope) -> Hec {
        Hec {
            inner: Box::new(inner),
            envelope,
            columns: Vec::new(),
            event: Vec::new(),
        }
    }
}

impl Sink for Hec {
    fn begin(&mut self, columns: &[&str], out: &mut dyn Write) -> io::Result<()> {
        self.columns = columns.iter().map(|c| c.to_string()).collect();
        self.inner.sink().begin(columns, out)
    }

    fn row(&mut self, row: &Row<'_>, out: &mut dyn Write) -> io::Result<()> {
        // The row in its own format: one line, without its newline.
        self.event.clear();
        let inner = self.inner.sink();
        inner.row(row, &mut self.event)?;
        inner.finish(&mut self.event)?;
        while self.event.last() == Some(&b'\n') {
            self.event.pop();
        }
        let cells = row.cells();
        let cell = |name: &str| {
            let i = self.columns.iter().position(|c| c == name)?;
            Some(cells[i].as_str()).filter(|v| *v != FILL)
        };
        let ms = cell("last_seen")
            .or_else(|| cell("requestReceivedTimestamp"))
            .and_then(parse_time)
            .map_or(self.envelope.run_ms, |t| t.timestamp_millis());
        let mut head = Map::new();
        head.insert(
            "time".into(),
            Value::Number(
                serde_json::Number::from_f64(ms as f64 / 1000.0).unwrap_or_else(|| 0.into()),
            ),
        );
        if let Some(cluster) = cell("cluster") {
            head.insert("host".into(), cluster.into());
        }
        head.insert("source".into(), "kubeanon".into());
        head.insert("sourcetype".into(), self.envelope.sourcetype.into());
        if let Some(index) = &self.envelope.index {
            head.insert("index".into(), index.as_str().into());
        }
        let mut fields = Map::new();
        for name in FIELDS {
            if let Some(v) = cell(name) {
                fields.insert(name.into(), v.into());
            }
        }
        if !fields.contains_key("id") {
            fields.insert("id".into(), row.uid().into());
        }
        head.insert("fields".into(), fields.into());
        let head = serde_json::to_string(&head).map_err(io::Error::other)?;
        let mut line = Vec::with_capacity(head.len() + self.event.len() + 12);
        escape_hidden(&head[..head.len() - 1], &mut line);
        line.extend_from_slice(b",\"event\":");
        line.extend_from_slice(&self.event);
        line.extend_from_slice(b"}\n");
        out.write_all(&line)
    }

    fn finish(&mut self, _out: &mut dyn Write) -> io::Result<()> {
        Ok(())
    }

    fn close(&mut self, _columns: &[&str], _out: &mut dyn Write) -> io::Result<()> {
        Ok(())
    }
}
