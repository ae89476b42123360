//! ndjson (one object per line) and json (one array). Keys are the fixed
//! column names in order; `count` is a number, every other value a string.

use std::io::{self, Write};

use super::{Row, Rows};
use crate::audit::json_stop;
use crate::detect::COLUMNS;

/// Rows are rendered into a buffer of this size that is then written
/// whole (a write this large goes past the writer's own buffer).
const CHUNK: usize = 256 * 1024;

pub fn write_lines(rows: &Rows<'_>, out: &mut dyn Write) -> io::Result<()> {
    let keys = keys(&rows.header());
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
    let keys = keys(&rows.header());
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

/// What goes before each column's value, in header order, made once, with
/// the quotes around string values folded in: `{"name":"` for the first,
/// `","name":"` after a value, `","count":` before the count and `,"name":"`
/// after it. A row is then two copies per value, most of them short.
fn keys(header: &[&str]) -> Vec<Vec<u8>> {
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
            key
        })
        .collect()
}

/// Where `count` stands in the header: last of the fixed columns.
const COUNT_COLUMN: usize = COLUMNS.len() - 1;

/// One row as a JSON object; `count` is a number, the rest strings.
fn push_object(keys: &[Vec<u8>], row: &Row, out: &mut Vec<u8>) {
    // Header order: the 13 values, count, the extra columns.
    let mut keys = keys.iter().map(Vec::as_slice);
    let mut key = || keys.next().unwrap_or_default();
    for (i, col) in row.cols.iter().enumerate() {
        out.extend_from_slice(key());
        if row.plain >> i & 1 == 1 {
            out.extend_from_slice(col.as_bytes());
        } else {
            push_escaped(out, col);
        }
    }
    out.extend_from_slice(key());
    out.extend_from_slice(itoa::Buffer::new().format(row.count).as_bytes());
    for extra in &row.extra {
        out.extend_from_slice(key());
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
    use std::borrow::Cow;

    use super::*;

    /// Rows with values that need escaping (or not), a count and extra
    /// columns read back through serde_json exactly: names in order, values
    /// as given, `count` a number.
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
        let extra_columns = ["cluster", "id"];
        let mut want = Vec::new();
        let mut rows = Vec::new();
        for (n, first) in nasty.iter().enumerate() {
            let cols: [Cow<'_, str>; 13] =
                std::array::from_fn(|i| Cow::Borrowed(nasty[(n + i) % nasty.len()]));
            let plain = (0..13).fold(0, |m, i| {
                m | u16::from(json_stop(cols[i].as_bytes()).is_none()) << i
            });
            let extra = vec![(*first).to_owned(), format!("id{n}")];
            let mut object = serde_json::Map::new();
            for (name, value) in COLUMNS.iter().zip(&cols) {
                object.insert((*name).into(), value.to_string().into());
            }
            object.insert("count".into(), (n as u64 * 1000).into());
            for (name, value) in extra_columns.iter().zip(&extra) {
                object.insert((*name).into(), value.clone().into());
            }
            want.push(object);
            rows.push(Row {
                cols,
                plain,
                count: n as u64 * 1000,
                extra,
            });
        }
        let names: Vec<&str> = COLUMNS.iter().chain(&extra_columns).copied().collect();
        let keys = keys(&names);
        for (row, want) in rows.iter().zip(&want) {
            let mut out = Vec::new();
            push_object(&keys, row, &mut out);
            let got: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&out).expect("valid JSON");
            assert_eq!(&got, want);
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
