//! ndjson (one object per line) and json (one array). Keys are the fixed
//! column names in order; `count` is a number, every other value a string.

use std::io::{self, Write};

use super::{Row, Rows};
use crate::audit::json_stop;

/// Rows are rendered into a buffer of this size that is then written
/// whole (a write this large goes past the writer's own buffer).
const CHUNK: usize = 256 * 1024;

pub fn write_lines(rows: &Rows<'_>, out: &mut dyn Write) -> io::Result<()> {
    let keys = keys(rows);
    let mut chunk = Vec::with_capacity(CHUNK);
    for row in rows.iter() {
        push_object(&keys, &row, &mut chunk);
        chunk.push(b'\n');
        if chunk.len() >= CHUNK {
            out.write_all(&chunk)?;
            chunk.clear();
        }
    }
    out.write_all(&chunk)
}

pub fn write_array(rows: &Rows<'_>, out: &mut dyn Write) -> io::Result<()> {
    let keys = keys(rows);
    let mut chunk = Vec::with_capacity(CHUNK);
    chunk.push(b'[');
    for (i, row) in rows.iter().enumerate() {
        chunk.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
        push_object(&keys, &row, &mut chunk);
        if chunk.len() >= CHUNK {
            out.write_all(&chunk)?;
            chunk.clear();
        }
    }
    chunk.extend_from_slice(b"\n]\n");
    out.write_all(&chunk)
}

/// What goes before each column's value, in header order, made once:
/// `{"name":` for the first, `,"name":` for the others.
fn keys(rows: &Rows<'_>) -> Vec<Vec<u8>> {
    rows.header()
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut key = vec![if i == 0 { b'{' } else { b',' }];
            push_string(&mut key, name);
            key.push(b':');
            key
        })
        .collect()
}

/// One row as a JSON object; `count` is a number, the rest strings.
fn push_object(keys: &[Vec<u8>], row: &Row, out: &mut Vec<u8>) {
    // Header order: the 13 values, count, the extra columns.
    let mut keys = keys.iter().map(Vec::as_slice);
    let mut key = || keys.next().unwrap_or_default();
    for (i, col) in row.cols.iter().enumerate() {
        out.extend_from_slice(key());
        if row.plain >> i & 1 == 1 {
            out.push(b'"');
            out.extend_from_slice(col.as_bytes());
            out.push(b'"');
        } else {
            push_string(out, col);
        }
    }
    out.extend_from_slice(key());
    out.extend_from_slice(itoa::Buffer::new().format(row.count).as_bytes());
    for extra in &row.extra {
        out.extend_from_slice(key());
        push_string(out, extra);
    }
    out.push(b'}');
}

/// A JSON string literal, escaped exactly as serde_json escapes: `"`, `\`
/// and control characters; everything else (UTF-8 included) as is.
fn push_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
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
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

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
