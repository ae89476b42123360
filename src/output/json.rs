//! ndjson (one object per line) and json (one array). Keys are the fixed
//! column names in order; `count` is a number, every other value a string.

use std::io::{self, Write};

use super::{Cell, Row, Sink, is_hidden};
use crate::audit::json_stop;

/// Rows are rendered into a buffer of this size that is then written
/// whole (a write this large goes past the writer's own buffer).
const CHUNK: usize = 256 * 1024;

/// ndjson (`lines`) or one JSON array across the stream's parts.
#[derive(Debug, Clone)]
pub struct Json {
    lines: bool,
    keys: Vec<ColumnKey>,
    /// Whether the last column is text (its value's closing quote is
    /// written after it).
    last_is_text: bool,
    chunk: Vec<u8>,
    /// An array: `[` written; elements written.
    opened: bool,
    elements: u64,
    /// The escaped text of shared cells (a row's triage values, which many
    /// rows share), by the text's address and length, for this part.
    escaped: Escaped,
}

/// A few escaped texts, the oldest replaced first.
#[derive(Debug, Clone, Default)]
struct Escaped {
    texts: Vec<((usize, usize), Vec<u8>)>,
    next: usize,
}

impl Escaped {
    const KEPT: usize = 12;

    fn push(&mut self, text: &str, out: &mut Vec<u8>) {
        let key = (text.as_ptr() as usize, text.len());
        if let Some((_, bytes)) = self.texts.iter().find(|(k, _)| *k == key) {
            out.extend_from_slice(bytes);
            return;
        }
        let mut bytes = Vec::with_capacity(text.len());
        push_escaped(&mut bytes, text);
        out.extend_from_slice(&bytes);
        if self.texts.len() < Self::KEPT {
            self.texts.push((key, bytes));
        } else {
            self.texts[self.next] = (key, bytes);
            self.next = (self.next + 1) % Self::KEPT;
        }
    }
}

impl Json {
    pub fn new(lines: bool) -> Json {
        Json {
            lines,
            keys: Vec::new(),
            last_is_text: true,
            chunk: Vec::new(),
            opened: false,
            elements: 0,
            escaped: Escaped::default(),
        }
    }

    fn flush(&mut self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&self.chunk)?;
        self.chunk.clear();
        Ok(())
    }
}

impl Sink for Json {
    fn begin(&mut self, columns: &[&str], out: &mut dyn Write) -> io::Result<()> {
        // The addresses were a finished part's: they may be reused.
        self.escaped = Escaped::default();
        self.keys = keys(columns);
        self.last_is_text = columns.last().is_none_or(|c| !is_number(c));
        if self.chunk.capacity() == 0 {
            self.chunk.reserve(CHUNK);
        }
        if !self.lines && !self.opened {
            self.opened = true;
            out.write_all(b"[")?;
        }
        Ok(())
    }

    fn row(&mut self, row: &Row<'_>, out: &mut dyn Write) -> io::Result<()> {
        if !self.lines {
            self.chunk
                .extend_from_slice(if self.elements == 0 { b"\n" } else { b",\n" });
            self.elements += 1;
        }
        push_object(
            &self.keys,
            self.last_is_text,
            row,
            &mut self.escaped,
            &mut self.chunk,
        );
        if self.lines {
            self.chunk.push(b'\n');
        }
        if self.chunk.len() >= CHUNK {
            self.flush(out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        self.flush(out)
    }

    /// ndjson: a line holds its row alone. (An array's elements are
    /// separated by what came before.)
    fn rows_stand_alone(&self) -> bool {
        self.lines
    }

    /// The rendered rows handed over whole when nothing is there before
    /// them (a rendering thread's batch, see `render_parallel`): the
    /// buffers trade places, no copy.
    fn finish_into(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if out.is_empty() {
            std::mem::swap(&mut self.chunk, out);
            return Ok(());
        }
        self.finish(out)
    }

    fn close(&mut self, _columns: &[&str], out: &mut dyn Write) -> io::Result<()> {
        if self.lines {
            return Ok(());
        }
        if !self.opened {
            self.opened = true;
            out.write_all(b"[")?;
        }
        out.write_all(b"\n]\n")
    }
}

/// The columns written as JSON numbers; every other value is a string.
fn is_number(column: &str) -> bool {
    column == "count"
}

/// What goes before each column's value, in header order, made once, with
/// the quotes around string values folded in: `{"name":"` for a first
/// text column, `","name":"` after a text value, `","count":` before the
/// count and `,"name":"` after it. A row is then two copies per value,
/// most of them short.
fn keys(header: &[&str]) -> Vec<ColumnKey> {
    let mut after_text = false;
    header
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut key = match i {
                0 => b"{".to_vec(),
                _ if after_text => b"\",".to_vec(),
                _ => b",".to_vec(),
            };
            push_string(&mut key, name);
            key.push(b':');
            after_text = !is_number(name);
            if after_text {
                key.push(b'"');
            }
            ColumnKey::new(key)
        })
        .collect()
}

/// One of [`keys`], also kept padded to a fixed size when it fits: a copy
/// of a known size is a few moves instead of a call, and each row copies
/// 18 of them or more.
#[derive(Debug, Clone)]
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

/// One row as a JSON object; `count` is a number, the rest strings. The
/// values are copied straight out of the row, not collected first; a
/// finding's walk over its key already tells which are plain (ASCII
/// without controls, DEL, quotes or backslashes: nothing to escape), and
/// only the others are looked at again.
fn push_object(
    keys: &[ColumnKey],
    last_is_text: bool,
    row: &Row<'_>,
    escaped: &mut Escaped,
    out: &mut Vec<u8>,
) {
    let mut keys = keys.iter();
    row.each_cell(
        |Cell {
             text,
             plain,
             shared,
             ..
         }| {
            if let Some(key) = keys.next() {
                key.push(out);
            }
            if plain {
                out.extend_from_slice(text.as_bytes());
            } else if shared {
                escaped.push(text, out);
            } else {
                push_escaped(out, text);
            }
        },
    );
    if last_is_text {
        out.push(b'"');
    }
    out.push(b'}');
}

/// `json` (serde_json's output) with every character [`is_hidden`] names
/// that serde_json leaves raw written as a `\uXXXX` escape: they can only
/// stand inside its strings, where the escape means the same character.
pub(super) fn escape_hidden(json: &str, out: &mut Vec<u8>) {
    let mut copied = 0;
    for (i, c) in json.char_indices() {
        if is_hidden(c) {
            out.extend_from_slice(&json.as_bytes()[copied..i]);
            for &unit in c.encode_utf16(&mut [0; 2]).iter() {
                push_unit(out, unit);
            }
            copied = i + c.len_utf8();
        }
    }
    out.extend_from_slice(&json.as_bytes()[copied..]);
}

/// A JSON string literal, escaped as serde_json escapes (`"`, `\\` and
/// C0 controls, the short forms where JSON has them), and also every other
/// character [`is_hidden`] names, as `\uXXXX`: DEL, C1 controls, bidi and
/// invisible format characters, U+2028/U+2029. So the output is pure JSON
/// that serde_json reads back to the same string, and safe to print to a
/// terminal (`tail -F findings.ndjson`).
fn push_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    push_escaped(out, s);
    out.push(b'"');
}

/// The inside of [`push_string`]'s literal.
fn push_escaped(out: &mut Vec<u8>, s: &str) {
    if below_del(s.as_bytes()) {
        push_escaped_ascii(out, s.as_bytes());
    } else {
        push_escaped_wide(out, s);
    }
}

/// Whether every byte of `s` is below DEL (0x7f): ASCII without DEL, where
/// only serde_json's escapes apply. Every character [`is_hidden`] names
/// beyond those has a byte of 0x7f or more. Eight bytes a step, the last
/// step overlapping the one before (most values are short).
#[inline(always)]
fn below_del(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte's high bit is set from 0x80 on, and that of the byte plus one
    // for 0x7f. A carry comes only out of 0xff, whose own bit is set.
    let flags = |w: u64| (w | w.wrapping_add(ONES)) & HIGH;
    let n = s.len();
    if n >= 8 {
        let word = |at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
        let mut any = 0;
        let mut i = 0;
        while i + 8 < n {
            any |= flags(word(i));
            i += 8;
        }
        any | flags(word(n - 8)) == 0
    } else {
        let mut word = [0; 8];
        word[..n].copy_from_slice(s);
        flags(u64::from_le_bytes(word)) == 0
    }
}

/// [`push_escaped`] for a value that is ASCII without DEL: the stop bytes
/// the parser's string scan finds are all there is to escape.
fn push_escaped_ascii(out: &mut Vec<u8>, s: &[u8]) {
    let mut rest = s;
    while let Some(at) = json_stop(rest) {
        out.extend_from_slice(&rest[..at]);
        push_escape(out, rest[at]);
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

/// The escape of one ASCII byte that [`json_stop`] stops on, or DEL.
fn push_escape(out: &mut Vec<u8>, c: u8) {
    match c {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        c => push_unit(out, u16::from(c)),
    }
}

/// `\uXXXX` with lowercase hex digits, as serde_json writes them.
fn push_unit(out: &mut Vec<u8>, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[usize::from((unit >> shift) & 0xf)]);
    }
}

/// The bytes at which [`push_escaped_wide`] stops: the ASCII stop bytes,
/// DEL, and the UTF-8 lead bytes of the other characters [`is_hidden`]
/// names: 0xc2 (U+0080..U+00BF: the C1 controls), 0xd8 (U+0600..U+063F:
/// U+061C), 0xe2 (U+2000..U+2FFF: the U+20xx ones), 0xef (U+F000..U+FFFF:
/// U+FEFF). No continuation byte is among them.
static WIDE_STOP: [bool; 256] = {
    let mut t = crate::audit::JSON_STOP_BYTES;
    t[0x7f] = true;
    t[0xc2] = true;
    t[0xd8] = true;
    t[0xe2] = true;
    t[0xef] = true;
    t
};

/// [`push_escaped`] for a value with bytes of 0x7f or more: at each stop
/// byte of [`WIDE_STOP`], the character there is escaped when it must be
/// and copied when it need not (most characters after 0xe2 are
/// punctuation, after 0xef CJK and others).
fn push_escaped_wide(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let (mut copied, mut i) = (0, 0);
    while i < b.len() {
        let c = b[i];
        if !WIDE_STOP[usize::from(c)] {
            i += 1;
            continue;
        }
        if c.is_ascii() {
            out.extend_from_slice(&b[copied..i]);
            push_escape(out, c);
            i += 1;
            copied = i;
            continue;
        }
        // A lead byte, so a character starts here.
        match s.get(i..).and_then(|t| t.chars().next()) {
            Some(ch) if is_hidden(ch) => {
                out.extend_from_slice(&b[copied..i]);
                for &unit in ch.encode_utf16(&mut [0; 2]).iter() {
                    push_unit(out, unit);
                }
                i += ch.len_utf8();
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.extend_from_slice(&b[copied..]);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::detect::{COLUMNS, Detector, FILL, Origin};
    use crate::output::{Format, Parts, Rows, Style};

    /// Rows with values that need escaping (or not), a count, the triage
    /// columns and a command's columns read back through serde_json
    /// exactly: names in order, values as the events held them, `count` a
    /// number.
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
        // A key longer than the padded copies holds goes the other way.
        const LONG: &str = "an extra column whose name is longer than most";
        let cluster = "c\"l\u{202e}\u{85}";
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
            // An allowed get of no public-info path, without annotations.
            for (name, value) in [
                ("severity", "high"),
                ("decision", FILL),
                ("reason", FILL),
                ("binding", FILL),
                ("rule", "escu"),
                ("credential", FILL),
                ("note", FILL),
                ("cluster", cluster),
                (LONG, "x"),
            ] {
                object.insert(name.into(), value.into());
            }
            want.insert((or_fill(uri), or_fill(agent)), object);
        }
        let findings = det.finish().0.into_findings();
        assert_eq!(findings.len(), nasty.len());
        let rows = Rows {
            findings: &findings,
            fixed: &[("cluster", cluster), (LONG, "x")],
            id_label: Some("label"),
            anonymous_health_only: false,
        };
        let names = rows.columns(false);
        let mut parts = Parts::new(Style::plain(Format::Ndjson), None);
        let mut out = Vec::new();
        parts.write(&rows, &mut out).unwrap();
        let text = String::from_utf8(out).expect("UTF-8");
        assert_eq!(text.lines().count(), nasty.len());
        for (line, f) in text.lines().zip(findings.iter()) {
            let mut got: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(line).expect("valid JSON");
            assert_eq!(got.remove("id"), Some(f.id("label").into()));
            let uri = got["requestURI"].as_str().unwrap().to_owned();
            let agent = got["userAgent"].as_str().unwrap().to_owned();
            assert_eq!(got, want[&(uri, agent)]);
            // No value holds a quoted name followed by a colon.
            let at: Vec<usize> = names
                .iter()
                .map(|n| line.find(&format!("\"{n}\":")).expect("every name"))
                .collect();
            assert!(at.is_sorted(), "names in header order: {line}");
        }
    }

    /// serde_json's escaping, with each hidden character it leaves raw
    /// (all but the C0 controls, which it escapes) written as `\uXXXX`:
    /// they cannot be part of an escape it writes, so replacing them in its
    /// output is the answer.
    fn serde_then_hidden_escaped(s: &str) -> String {
        let mut want = String::new();
        for c in serde_json::to_string(s).unwrap().chars() {
            if is_hidden(c) {
                want.push_str(&format!("\\u{:04x}", c as u32));
            } else {
                want.push(c);
            }
        }
        want
    }

    #[test]
    fn strings_are_escaped_as_serde_json_does_and_hidden_characters_too() {
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
            "\u{85}\u{9b}31m\u{9f}\u{a0}\u{bf}",
            "a\u{200b}b\u{200f}\u{202a}\u{202e}\u{2060}\u{2066}\u{2069}\u{feff}\u{2028}\u{2029}\u{61c}",
            // Near the hidden ones, and after the same lead bytes: kept.
            "\u{2000}\u{200a}\u{2010}\u{2027}\u{202f}\u{205f}\u{206a}\u{20ac}\u{fefe}\u{ff01}\u{fffd}\u{61b}\u{61d}",
            "日本語\u{10ffff}\u{e000}\u{d7ff}",
        ] {
            let mut ours = Vec::new();
            push_string(&mut ours, s);
            let ours = String::from_utf8(ours).unwrap();
            assert_eq!(ours, serde_then_hidden_escaped(s), "{s:?}");
            assert_eq!(serde_json::from_str::<String>(&ours).unwrap(), s);
        }
        // Spelled out once, so the helper above cannot hide a mistake.
        let mut ours = Vec::new();
        push_string(&mut ours, "\u{7f}\u{85}é\u{200b}\u{2028}\u{feff}\u{61c}\n");
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            r#""\u007f\u0085é\u200b\u2028\ufeff\u061c\n""#
        );
    }

    /// Every hidden character starts with a byte the wide path stops on,
    /// and sends a value down it unless the ASCII path stops on it: none
    /// can slip through either raw.
    #[test]
    fn every_hidden_character_starts_with_a_wide_stop_byte() {
        let mut hidden = 0;
        for c in (0..=0x10ffff)
            .filter_map(char::from_u32)
            .filter(|&c| is_hidden(c))
        {
            hidden += 1;
            let mut buf = [0; 4];
            let lead = c.encode_utf8(&mut buf).as_bytes()[0];
            assert!(WIDE_STOP[usize::from(lead)], "{c:?}");
            if c < '\u{7f}' {
                // The C0 controls: the ASCII path stops on them.
                assert_eq!(json_stop(&buf[..1]), Some(0), "{c:?}");
            } else {
                assert!(!below_del(&buf[..c.len_utf8()]), "{c:?}");
            }
        }
        // 65 Cc, U+061C, 5 + 7 + 10 format and separator characters, U+FEFF.
        assert_eq!(hidden, 65 + 1 + 5 + 7 + 10 + 1);
    }

    #[test]
    fn below_del_is_ascii_without_del() {
        // Every length around the word size, every byte at every place,
        // next to bytes that carry (0xff) or nearly do (0x7e).
        for len in 1..40 {
            for at in 0..len {
                for b in 0..=0xffu8 {
                    for fill in [b'a', 0x7e, 0x00] {
                        let mut s = vec![fill; len];
                        s[at] = b;
                        assert_eq!(below_del(&s), b < 0x7f, "{s:?}");
                    }
                }
            }
        }
        assert!(below_del(b""));
        let mut carry = [0x7e; 16];
        carry[3] = 0xff;
        assert!(!below_del(&carry));
    }

    proptest::proptest! {
        /// Any string: serde_json reads the literal back to it, and the
        /// literal holds no hidden character raw.
        #[test]
        fn any_string_reads_back_and_hides_nothing(s in "(\\PC|\\p{Cc}|\\p{Cf}|[\u{7f}-\u{9f}\u{2028}\u{2029}\u{d7ff}\u{e000}\u{fffd}\u{10000}-\u{10ffff}\"\\\\])*") {
            let mut ours = Vec::new();
            push_string(&mut ours, &s);
            let text = String::from_utf8(ours).unwrap();
            proptest::prop_assert_eq!(serde_json::from_str::<String>(&text).unwrap(), s.clone());
            proptest::prop_assert!(!text.chars().any(is_hidden), "{:?}", text);
            proptest::prop_assert_eq!(&text, &serde_then_hidden_escaped(&s));
        }
    }
}
