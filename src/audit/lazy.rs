//! A fast path for [`Record::parse`]: one validating pass over a record
//! that keeps the spans of the fields the rule reads and skips the rest
//! (request and response bodies, other annotations), without building
//! anything. On its way it also reads the members of `user`, `objectRef`,
//! `responseStatus` and `annotations` the rule and the triage need; the
//! same reader serves nested objects and arrays read on their own.
//!
//! It answers only when it is sure to answer as serde_json would; anything
//! unusual (invalid UTF-8, an escaped key, a duplicate field, nesting past
//! serde_json's limit, any syntax error) gives `None`, and the caller asks
//! [`Record::parse`]. So a malformed record costs two parses, and every
//! record gets serde_json's verdict.

use super::{
    ANNOTATION_FIELDS, ANNOTATIONS, OBJECT_REF, OBJECT_REF_FIELDS, RECORD_FIELDS, RESPONSE_STATUS,
    RESPONSE_STATUS_FIELDS, Record, USER, USER_FIELDS,
};

/// Bytes that end a run of plain string content: the closing quote, an
/// escape, or a control character (not allowed inside JSON strings).
static STOP: [bool; 256] = STOP_BYTES;

/// [`STOP`]'s table, for tables that stop on more (the JSON writer's).
pub(crate) const STOP_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The first byte of `s` that ends plain string content, sixteen bytes a
/// step: most strings in an audit event end within the first step, so its
/// one branch is well predicted, and a library search would not pay for its
/// call and setup.
// Inlined into the parser's string loop: a call per string cost more than
// the search itself for the short strings audit events are made of.
#[inline(always)]
pub fn find_stop(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(chunk) = s.get(i..i + 16) {
        let flags = stops16(chunk.try_into().expect("16 bytes"));
        if flags != 0 {
            return Some(i + flags.trailing_zeros() as usize);
        }
        i += 16;
    }
    s[i..]
        .iter()
        .position(|&c| STOP[usize::from(c)])
        .map(|p| i + p)
}

/// [`find_stop`] for output, not for the parser: the first byte that is a
/// stop byte, DEL, or a byte of a non-ASCII character (0x80 and up). A
/// value without any is written to JSON as it is; a value with one may hold
/// a character that output escapes (see `output::is_hidden`). Sixteen bytes
/// a step, as [`find_stop`], with one more test per step.
#[inline(always)]
pub fn find_output_stop(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(chunk) = s.get(i..i + 16) {
        let chunk = chunk.try_into().expect("16 bytes");
        let flags = stops16(chunk) | wide16(chunk);
        if flags != 0 {
            return Some(i + flags.trailing_zeros() as usize);
        }
        i += 16;
    }
    s[i..]
        .iter()
        .position(|&c| STOP[usize::from(c)] || c >= 0x7f)
        .map(|p| i + p)
}

/// One bit per byte of `chunk`, set where it is DEL or 0x80 and up (only
/// the lowest bit set is sure to be right).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
use vector_wide as wide16;
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
use word_wide as wide16;

/// [`wide16`] with SSE2: the mask of the bytes' own high bits, and DEL.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn vector_wide(chunk: &[u8; 16]) -> u32 {
    use safe_arch::{
        cmp_eq_mask_i8_m128i as eq, load_unaligned_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i as splat,
    };
    let v = load_unaligned_m128i(chunk);
    move_mask_i8_m128i(v | eq(v, splat(0x7f))) as u32
}

/// [`wide16`] with two 64-bit words, for other CPUs.
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse2"),
    allow(dead_code, reason = "tested against the vector version")
)]
#[inline(always)]
fn word_wide(chunk: &[u8; 16]) -> u32 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of a byte from 0x80 on, or of the byte plus one for
    // 0x7f. A carry comes only out of 0xff, itself flagged lower down.
    let flags = |h: &[u8]| {
        let w = u64::from_le_bytes(h.try_into().expect("8 bytes"));
        (w | w.wrapping_add(ONES)) & HIGH
    };
    let (a, b) = (flags(&chunk[..8]), flags(&chunk[8..]));
    let bits = |w: u64| 1u32 << (w.trailing_zeros() / 8);
    match (a, b) {
        (0, 0) => 0,
        (0, b) => bits(b) << 8,
        (a, _) => bits(a),
    }
}

/// Whether `s` holds a stop byte anywhere, for a string whose answer is
/// all that matters (a value already checked, asked if it has escapes).
/// Its steps overlap rather than end in a byte-at-a-time tail: most values
/// are shorter than 16 bytes, or a little longer.
#[inline(always)]
pub fn has_stop(s: &[u8]) -> bool {
    let n = s.len();
    if n >= 16 {
        let chunk = |at: usize| stops16(s[at..at + 16].try_into().expect("16 bytes"));
        let mut i = 0;
        while i + 16 < n {
            if chunk(i) != 0 {
                return true;
            }
            i += 16;
        }
        chunk(n - 16) != 0
    } else if n >= 8 {
        let word = |at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
        word_flags(word(0)) | word_flags(word(n - 8)) != 0
    } else {
        s.iter().any(|&c| STOP[usize::from(c)])
    }
}

/// The high bit of each byte of `w` that is a stop byte. The lowest flag
/// is exact (borrows only carry upwards); those above it may not be.
#[inline(always)]
fn word_flags(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    control | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')))
}

/// One bit per byte of `chunk`, set where it is a stop byte (only the
/// lowest bit set is sure to be right).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
use vector_stops as stops16;
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
use word_stops as stops16;

/// [`stops16`] with SSE2, which every x86_64 CPU has, through safe_arch's
/// safe wrappers: about a tenth faster on all-anonymous input than words.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn vector_stops(chunk: &[u8; 16]) -> u32 {
    use safe_arch::{
        cmp_eq_mask_i8_m128i as eq, load_unaligned_m128i, max_u8_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i as splat,
    };
    let v = load_unaligned_m128i(chunk);
    let quote = eq(v, splat(b'"' as i8));
    let backslash = eq(v, splat(b'\\' as i8));
    // max(v, 0x1f) == 0x1f exactly where v <= 0x1f (unsigned).
    let control = eq(max_u8_m128i(v, splat(0x1f)), splat(0x1f));
    move_mask_i8_m128i(quote | backslash | control) as u32
}

/// [`stops16`] with two 64-bit words, for other CPUs.
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse2"),
    allow(dead_code, reason = "tested against the vector version")
)]
#[inline(always)]
fn word_stops(chunk: &[u8; 16]) -> u32 {
    let word = |h: &[u8]| u64::from_le_bytes(h.try_into().expect("8 bytes"));
    let (a, b) = (word_flags(word(&chunk[..8])), word_flags(word(&chunk[8..])));
    // One bit per byte; a word's bits above its lowest flag may be wrong,
    // so the second word counts only when the first has none.
    let bits = |w: u64| 1u32 << (w.trailing_zeros() / 8);
    match (a, b) {
        (0, 0) => 0,
        (0, b) => bits(b) << 8,
        (a, _) => bits(a),
    }
}

/// serde_json's recursion limit.
const MAX_DEPTH: u32 = 127;

pub(super) fn record(bytes: &[u8]) -> Option<Record<'_>> {
    // serde_json checks UTF-8 where it decodes; checking it all up front
    // only sends more records to the reference parse.
    // simdutf8 checks with AVX2 where the CPU has it: 1.3% of the
    // instructions on all-anonymous input where std's check took 3.3%.
    let text = simdutf8::basic::from_utf8(bytes).ok()?;
    let mut record = Record::default();
    let (fields, ahead) = (&mut record.fields, &mut record.ahead);
    // The nested objects the rule reads are read on the way through, so
    // their bytes are not scanned a second time.
    let decided = whole(text, |p| {
        p.members(text, &RECORD_FIELDS, fields, |p, slot| {
            match (slot, p.peek()) {
                (USER, Some(b'{')) => p.nested(text, &USER_FIELDS, &mut ahead.user),
                (OBJECT_REF, Some(b'{')) => {
                    p.nested(text, &OBJECT_REF_FIELDS, &mut ahead.object_ref)
                }
                (RESPONSE_STATUS, Some(b'{')) => {
                    p.nested(text, &RESPONSE_STATUS_FIELDS, &mut ahead.response_status)
                }
                (ANNOTATIONS, Some(b'{')) => {
                    p.nested(text, &ANNOTATION_FIELDS, &mut ahead.annotations)
                }
                _ => p.value(),
            }
        })
    })?;
    decided.then_some(record)
}

/// The raw JSON texts of the members of the object `text` named in
/// `names` (blanks around it allowed), as serde_json reads them into a
/// struct of `Option<&RawValue>`s: absent or `null` is `None`. `None` when
/// serde_json should decide: an escaped key, a named member given twice,
/// or anything that is not one valid JSON object.
pub(super) fn object<'a, const N: usize>(
    text: &'a str,
    names: &[&str; N],
) -> Option<[Option<&'a str>; N]> {
    let mut fields = [None; N];
    let decided = whole(text, |p| {
        p.members(text, names, &mut fields, |p, _| p.value())
    })?;
    decided.then_some(fields)
}

/// Runs `read` over all of `text` (blanks around it allowed); `None` if it
/// fails or leaves anything over.
fn whole<'a, T>(text: &'a str, read: impl FnOnce(&mut Parser<'a>) -> Option<T>) -> Option<T> {
    let mut p = Parser {
        b: text.as_bytes(),
        i: 0,
        depth: 0,
    };
    p.ws();
    let out = read(&mut p)?;
    p.ws();
    (p.i == p.b.len()).then_some(out)
}

/// The raw JSON texts of the elements of the array `text`, as serde_json
/// reads it into a `Vec<&RawValue>`; `None` when serde_json should decide
/// (anything that is not one valid JSON array).
/// Each element goes through `keep`, and what it keeps is collected (not
/// the elements first, then what is kept).
pub(super) fn array<'a, T, C: Default + Extend<T>>(
    text: &'a str,
    mut keep: impl FnMut(&'a str) -> Option<T>,
) -> Option<C> {
    whole(text, |p| {
        if p.peek()? != b'[' {
            return None;
        }
        let mut items = C::default();
        p.container(b']', |p| {
            let start = p.i;
            p.value()?;
            items.extend(keep(&text[start..p.i]));
            Some(())
        })?;
        Some(items)
    })
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    depth: u32,
}

impl<'a> Parser<'a> {
    /// Reads an object (at its `{`) whose bytes are `text`'s, keeping the
    /// raw text of the members named in `names` in `fields` (which start
    /// out `None`); `read` reads the value of a named member (given its
    /// slot), [`Parser::value`] the others. `None`: not valid JSON.
    /// `Some(false)`: valid, but serde_json must say which members it holds
    /// (an escaped key, a named member twice).
    // The caller's array is filled in place: a record's is moved nowhere.
    fn members<const N: usize>(
        &mut self,
        text: &'a str,
        names: &[&str; N],
        fields: &mut [Option<&'a str>; N],
        mut read: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<bool> {
        if self.peek()? != b'{' {
            return None;
        }
        let mut seen = [false; N];
        let mut decided = true;
        self.container(b'}', |p| {
            let key_start = p.i + 1;
            let escaped = p.string()?;
            let key = &p.b[key_start..p.i - 1];
            p.ws();
            p.eat(b':')?;
            p.ws();
            let start = p.i;
            // Lengths and first letters tell most names apart without a
            // call to compare the bytes.
            let slot = names.iter().position(|f| {
                f.len() == key.len() && f.as_bytes().first() == key.first() && f.as_bytes() == key
            });
            match slot {
                Some(slot) if !escaped => {
                    read(p, slot)?;
                    if std::mem::replace(&mut seen[slot], true) {
                        decided = false; // serde: duplicate field
                    }
                    let value = &text[start..p.i];
                    // serde reads `null` into an `Option` as `None`.
                    fields[slot] = (value != "null").then_some(value);
                }
                _ => {
                    p.value()?;
                    // An escaped key may unescape to a name.
                    decided &= !escaped;
                }
            }
            Some(())
        })?;
        Some(decided)
    }

    /// Reads a nested object's named members into `out` (left `None` when
    /// serde_json must decide).
    fn nested<const N: usize>(
        &mut self,
        text: &'a str,
        names: &[&str; N],
        out: &mut Option<[Option<&'a str>; N]>,
    ) -> Option<()> {
        let mut fields = [None; N];
        let decided = self.members(text, names, &mut fields, |p, _| p.value())?;
        *out = decided.then_some(fields);
        Some(())
    }

    // Inlined with a first test that compact JSON always passes: the
    // parser asks for blanks half a dozen times per member.
    #[inline(always)]
    fn ws(&mut self) {
        if self.b.get(self.i).is_none_or(|&c| c > b' ') {
            return;
        }
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// Skips a string (at its `"`); returns whether it had escapes.
    // Inlined: most strings are short, and a call cost as much as the scan.
    #[inline(always)]
    fn string(&mut self) -> Option<bool> {
        self.eat(b'"')?;
        let mut escaped = false;
        loop {
            let n = find_stop(&self.b[self.i..])?;
            self.i += n;
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    return Some(escaped);
                }
                b'\\' => {}
                _ => return None, // a control character
            }
            escaped = true;
            self.i += 1;
            match self.peek()? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                b'u' => {
                    let hex = self.b.get(self.i + 1..self.i + 5)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    self.i += 5;
                }
                _ => return None,
            }
        }
    }

    fn digits(&mut self) -> Option<()> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        (self.i > start).then_some(())
    }

    fn number(&mut self) -> Option<()> {
        if self.peek()? == b'-' {
            self.i += 1;
        }
        if self.peek()? == b'0' {
            self.i += 1;
        } else {
            self.digits()?;
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digits()?;
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..]
            .starts_with(word)
            .then(|| self.i += word.len())
    }

    /// Skips one value, checking its syntax.
    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' => self.container(b'}', |p| {
                p.string()?;
                p.ws();
                p.eat(b':')?;
                p.ws();
                p.value()
            }),
            b'[' => self.container(b']', Self::value),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    /// An object or array: `member` reads one member; separators and the
    /// closing byte are handled here.
    fn container(
        &mut self,
        close: u8,
        mut member: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.peek()? == close {
            self.i += 1;
        } else {
            loop {
                self.ws();
                member(self)?;
                self.ws();
                match self.peek()? {
                    b',' => self.i += 1,
                    c if c == close => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::UserWire;
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    /// JSON texts for members and elements: every type, nulls, escapes,
    /// and some that are not valid JSON.
    fn value() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "null",
            "true",
            "0",
            "-1.5e3",
            "01",
            "\"\"",
            "\"system:anonymous\"",
            "\"a\\u0026b\"",
            "\"bad\\x\"",
            "\"\\ud800\"",
            "\"\\udc00x\\ud800\\ud800\\udc00\"",
            "\"tab\there\"",
            "{}",
            "[]",
            "[1,2",
            "[\"system:unauthenticated\",null,\"\"]",
            "{\"a\":[{\"b\":[[]]}]}",
        ])
    }

    fn blank() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["", " ", "\n\t", "\r"])
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

        /// A nested object's members, read fast, are what serde_json puts
        /// in the wire struct; the fast parse never accepts what serde
        /// rejects.
        #[test]
        fn object_agrees_with_serde(
            members in prop::collection::vec((prop::sample::select(vec![
                "username", "uid", "groups", "other", "user\\u006eame", "",
            ]), value(), blank()), 0..6),
        ) {
            let body: Vec<String> = members.iter().map(|(k, v, b)| format!("{b}\"{k}\"{b}:{b}{v}{b}")).collect();
            let text = format!("{{{}}}", body.join(","));
            if let Some(fast) = object(&text, &["username", "uid", "groups"]) {
                let wire: Result<UserWire<'_>, _> = serde_json::from_str(&text);
                prop_assert!(wire.is_ok(), "fast accepted what serde rejects: {}", text);
                let w = wire.unwrap();
                let reference = [w.username, w.uid, w.groups].map(|v| v.map(RawValue::get));
                prop_assert_eq!(fast, reference, "{}", text);
            }
        }

        #[test]
        fn array_agrees_with_serde(items in prop::collection::vec((value(), blank()), 0..6), close in any::<bool>()) {
            let body: Vec<String> = items.iter().map(|(v, b)| format!("{b}{v}{b}")).collect();
            let text = format!("[{}{}", body.join(","), if close { "]" } else { "" });
            if let Some(fast) = array::<_, Vec<_>>(&text, Some) {
                let reference: Result<Vec<&RawValue>, _> = serde_json::from_str(&text);
                prop_assert!(reference.is_ok(), "fast accepted what serde rejects: {}", text);
                let reference: Vec<&str> = reference.unwrap().into_iter().map(RawValue::get).collect();
                prop_assert_eq!(fast, reference, "{}", text);
            }
        }
    }

    #[test]
    fn ordinary_nested_values_are_read_fast() {
        let user = r#"{"username":"system:anonymous","groups":["system:unauthenticated"]}"#;
        assert_eq!(
            object(user, &["username", "uid", "groups"]),
            Some([
                Some(r#""system:anonymous""#),
                None,
                Some(r#"["system:unauthenticated"]"#)
            ])
        );
        assert_eq!(
            array(r#"[ "1.2.3.4" , null ]"#, Some),
            Some(vec![r#""1.2.3.4""#, "null"])
        );
        // Left to serde_json: escaped keys and repeated members.
        assert_eq!(object(r#"{"user\u006eame":"x"}"#, &["username"]), None);
        assert_eq!(object(r#"{"uid":"a","uid":"b"}"#, &["uid"]), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn stop_flags_agree_on_the_first_stop(chunk in prop::array::uniform16(prop::sample::select(
            vec![b'a', b'"', b'\\', 0x00, 0x1f, 0x20, 0x21, 0x5c ^ 1, 0x7f, 0x80, 0x9f, 0xff],
        ))) {
            let first = chunk.iter().position(|&c| STOP[usize::from(c)]);
            let lowest = |flags: u32| (flags != 0).then(|| flags.trailing_zeros() as usize);
            prop_assert_eq!(lowest(word_stops(&chunk)), first);
            prop_assert_eq!(lowest(stops16(&chunk)), first);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn has_stop_agrees_with_the_byte_table(s in prop::collection::vec(prop::sample::select(
            vec![b'a', b'"', b'\\', 0x00, 0x1f, 0x20, 0x21, 0x7f, 0x80, 0xff],
        ), 0..40).prop_map(|mut s| {
            // Mostly one stop or none, so a missed one shows.
            let stops = s.iter().filter(|&&c| STOP[usize::from(c)]).count();
            if stops > 1 {
                s.retain(|&c| !STOP[usize::from(c)]);
            }
            s
        }), at in any::<prop::sample::Index>(), stop in prop::sample::select(vec![b'"', b'\\', 0x00, 0x1f])) {
            prop_assert_eq!(has_stop(&s), s.iter().any(|&c| STOP[usize::from(c)]));
            let mut one = s.clone();
            one.retain(|&c| !STOP[usize::from(c)]);
            prop_assert!(!has_stop(&one));
            if !one.is_empty() {
                let at = at.index(one.len());
                one[at] = stop;
                prop_assert!(has_stop(&one), "{:?}", one);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn output_stop_flags_agree_on_the_first_stop(chunk in prop::array::uniform16(prop::sample::select(
            vec![b'a', b'"', b'\\', 0x00, 0x1f, 0x20, 0x7e, 0x7f, 0x80, 0x9f, 0xc2, 0xe2, 0xff],
        ))) {
            let first = chunk.iter().position(|&c| STOP[usize::from(c)] || c >= 0x7f);
            let lowest = |flags: u32| (flags != 0).then(|| flags.trailing_zeros() as usize);
            prop_assert_eq!(lowest(word_stops(&chunk) | word_wide(&chunk)), first);
            prop_assert_eq!(lowest(stops16(&chunk) | wide16(&chunk)), first);
            prop_assert_eq!(find_output_stop(&chunk), first);
        }
    }

    #[test]
    fn find_output_stop_finds_the_first_stop_del_or_wide_byte_anywhere() {
        for len in 0..40 {
            for at in 0..len {
                for stop in [b'"', b'\\', 0x00, 0x1f, 0x7f, 0x80, 0xc2, 0xef, 0xff] {
                    let mut s = vec![b'a'; len];
                    // Bytes that look close to stops must not count.
                    for (j, b) in s.iter_mut().enumerate() {
                        *b = [b'a', 0x20, 0x21, 0x5b, 0x5d, 0x7e, 0x23, b'~'][j % 8];
                    }
                    s[at] = stop;
                    if at + 1 < len {
                        s[at + 1] = 0xff;
                    }
                    assert_eq!(
                        find_output_stop(&s),
                        Some(at),
                        "len {len} at {at} stop {stop}"
                    );
                    // The parser's search is not changed by it.
                    let parser_stop = STOP[usize::from(stop)].then_some(at);
                    if at + 1 == len {
                        assert_eq!(find_stop(&s), parser_stop);
                    }
                }
            }
            assert_eq!(find_output_stop(&vec![b'~'; len]), None);
        }
    }

    #[test]
    fn find_stop_finds_the_first_stop_byte_anywhere() {
        for len in 0..40 {
            for at in 0..len {
                for stop in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    let mut s = vec![b'a'; len];
                    // Bytes that look close to stops must not count.
                    for (j, b) in s.iter_mut().enumerate() {
                        *b = [b'a', 0x20, 0x21, 0x5b, 0x5d, 0xff, 0x80, 0x23][j % 8];
                    }
                    s[at] = stop;
                    if at + 1 < len {
                        s[at + 1] = b'"';
                    }
                    assert_eq!(find_stop(&s), Some(at), "len {len} at {at} stop {stop}");
                }
            }
            let plain = vec![b'x'; len];
            assert_eq!(find_stop(&plain), None);
        }
    }
}
