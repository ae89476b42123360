//! ndjson (one object per line) and json (one array). Keys are the fixed
//! column names in order; `count` is a number, every other value a string.

use std::io::{self, Write};

use super::Rows;
use crate::audit::json_stop;
use crate::detect::{COLUMNS, Finding};

/// Rows are rendered into a buffer of this size that is then written
/// whole (a write this large goes past the writer's own buffer).
const CHUNK: usize = 256 * 1024;

pub fn write_lines(rows: &Rows<'_>, out: &mut dyn Write) -> io::Result<()> {
    let keys = keys(&rows.header());
    let mut chunk = Vec::with_capacity(CHUNK);
    for f in rows.findings.iter() {
        push_object(&keys, &f, &(rows.extra)(&f), &mut chunk);
        chunk.push(b'\n');
        if chunk.len() >= CHUNK {
            out.write_all(&chunk)?;
            chunk.clear();
        }
    }
    out.write_all(&chunk)
}

/// The objects of a JSON array, each after a line break and, when it is
/// not the array's first (`more`: an earlier part wrote some), a comma.
pub fn write_elements(rows: &Rows<'_>, out: &mut dyn Write, more: bool) -> io::Result<()> {
    let keys = keys(&rows.header());
    let mut chunk = Vec::with_capacity(CHUNK);
    for (i, f) in rows.findings.iter().enumerate() {
        chunk.extend_from_slice(if i == 0 && !more { b"\n" } else { b",\n" });
        push_object(&keys, &f, &(rows.extra)(&f), &mut chunk);
        if chunk.len() >= CHUNK {
            out.write_all(&chunk)?;
            chunk.clear();
        }
    }
    out.write_all(&chunk)
}

/// What goes before each column's value, in header order, made once, with
/// the quotes around string values folded in: `{"name":"` for the first,
/// `","name":"` after a value, `","count":` before the count and `,"name":"`
/// after it. A row is then two copies per value, most of them short.
fn keys(header: &[&str]) -> Vec<ColumnKey> {
    let count = COUNT_COLUMN;
    header
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut key = match i {
                0 => b"{".to_vec(),
                i if i <= count => b"\",".to_vec(),
                _ => b",".to_vec(),
            };
            push_string(&mut key, name);
            key.push(b':');
            if i != count {
                key.push(b'"');
            }
            ColumnKey::new(key)
        })
        .collect()
}

/// One of [`keys`], also kept padded to a fixed size when it fits: a copy
/// of a known size is a few moves instead of a call, and each row copies
/// 14 of them.
struct ColumnKey {
    bytes: Vec<u8>,
    padded: Option<[u8; ColumnKey::PADDED]>,
}

impl ColumnKey {
    /// Fits every fixed column's key (the longest is 30 bytes).
    const PADDED: usize = 32;

    fn new(bytes: Vec<u8>) -> Self {
        let padded = (bytes.len() <= Self::PADDED).then(|| {
            let mut padded = [0; Self::PADDED];
            padded[..bytes.len()].copy_from_slice(&bytes);
            padded
        });
        ColumnKey { bytes, padded }
    }

    #[inline(always)]
    fn push(&self, out: &mut Vec<u8>) {
        match &self.padded {
            Some(padded) => {
                out.extend_from_slice(padded);
                out.truncate(out.len() - (Self::PADDED - self.bytes.len()));
            }
            None => out.extend_from_slice(&self.bytes),
        }
    }
}

/// Where `count` stands in the header: last of the fixed columns.
const COUNT_COLUMN: usize = COLUMNS.len() - 1;

/// One row as a JSON object; `count` is a number, the rest strings. The
/// values are copied straight out of the finding, not collected first.
fn push_object(keys: &[ColumnKey], f: &Finding<'_>, extra: &[String], out: &mut Vec<u8>) {
    // Header order: the 13 values, count, the extra columns.
    let mut keys = keys.iter();
    let mut key = |out: &mut Vec<u8>| {
        if let Some(key) = keys.next() {
            key.push(out);
        }
    };
    f.each_value(|value, plain| {
        key(out);
        if plain {
            out.extend_from_slice(value.as_bytes());
        } else {
            push_escaped(out, &value);
        }
    });
    key(out);
    out.extend_from_slice(itoa::Buffer::new().format(f.count).as_bytes());
    for extra in extra {
        key(out);
        push_escaped(out, extra);
        out.push(b'"');
    }
    out.push(b'}');
}

/// A JSON string literal, escaped exactly as serde_json escapes: `"`, `\`
/// and control characters; everything else (UTF-8 included) as is.
fn push_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    push_escaped(out, s);
    out.push(b'"');
}

/// The inside of [`push_string`]'s literal.
fn push_escaped(out: &mut Vec<u8>, s: &str) {
    let mut rest = s.as_bytes();
    while let Some(at) = json_stop(rest) {
        out.extend_from_slice(&rest[..at]);
        match rest[at] {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            c => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xf)]);
            }
        }
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::detect::{Detector, FILL, Origin};

    /// Rows with values that need escaping (or not), a count and extra
    /// columns read back through serde_json exactly: names in order, values
    /// as the events held them, `count` a number.
    #[test]
    fn rows_read_back_through_serde_json() {
        let nasty = [
            "",
            "plain",
            "a\"b",
            "back\\slash",
            "\u{0}nul",
            "\n\t\u{1b}[2J",
            "é😀\u{202e}",
        ];
        let mut det = Detector::new(Vec::new());
        let mut want = BTreeMap::new();
        for (n, agent) in nasty.iter().enumerate() {
            let uri = nasty[(n + 1) % nasty.len()];
            let event = serde_json::json!({
                "user": {"username": "system:anonymous", "groups": ["system:unauthenticated"]},
                "sourceIPs": ["1.2.3.4"], "userAgent": agent, "requestURI": uri, "verb": "get",
            });
            for _ in 0..=n {
                det.feed(event.to_string().as_bytes(), Origin::default());
            }
            let or_fill = |s: &str| if s.is_empty() { FILL } else { s }.to_owned();
            let mut object = serde_json::Map::new();
            for (name, value) in COLUMNS.iter().zip([
                FILL,
                FILL,
                FILL,
                FILL,
                &or_fill(uri),
                FILL,
                "1.2.3.4",
                FILL,
                "system:unauthenticated",
                FILL,
                "system:anonymous",
                &or_fill(agent),
                "get",
            ]) {
                object.insert((*name).into(), value.into());
            }
            object.insert("count".into(), (n + 1).into());
            object.insert("cluster".into(), (*agent).into());
            object.insert(LONG.into(), "x".into());
            want.insert((or_fill(uri), or_fill(agent)), object);
        }
        // A key longer than the padded copies holds goes the other way.
        const LONG: &str = "an extra column whose name is longer than most";
        let names: Vec<&str> = COLUMNS.iter().chain(&["cluster", LONG]).copied().collect();
        let keys = keys(&names);
        let findings = det.finish().0.into_findings();
        assert_eq!(findings.len(), nasty.len());
        for f in findings.iter() {
            let mut out = Vec::new();
            let cols = f.cols();
            let agent = &cols[COLUMNS.iter().position(|&c| c == "userAgent").unwrap()];
            let cluster = if agent == FILL { "" } else { agent };
            let extra = [cluster.to_owned(), "x".to_owned()];
            push_object(&keys, &f, &extra, &mut out);
            let got: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&out).expect("valid JSON");
            let uri = got["requestURI"].as_str().unwrap().to_owned();
            assert_eq!(got, want[&(uri, agent.to_string())]);
            // No value holds a quoted name followed by a colon.
            let text = String::from_utf8(out).expect("UTF-8");
            let at: Vec<usize> = names
                .iter()
                .map(|n| text.find(&format!("\"{n}\":")).expect("every name"))
                .collect();
            assert!(at.is_sorted(), "names in header order: {text}");
        }
    }

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_does() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é\u{202e}\u{2028}😀\"\\");
        for s in [
            all.as_str(),
            "",
            "plain",
            "\"",
            "a\\b",
            "\u{1b}[2J",
            "x\u{7f}y",
        ] {
            let mut ours = Vec::new();
            push_string(&mut ours, s);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
        }
    }
}
