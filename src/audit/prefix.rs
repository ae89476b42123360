//! What can be read of a cut record: CloudWatch Logs cuts an event over
//! its size limit (256 KB for most of its history, 1 MB today) and ends it
//! with `[Truncated...]`, so it is no longer JSON. An attacker decides where
//! the cut falls (a long URI, `User-Agent`, or `X-Forwarded-For`, which the
//! API server copies into `sourceIPs`), so a cut record is evidence, not
//! noise.
//!
//! [`readable`] turns the cut text into the JSON object of its complete
//! values: the text up to the last value that ended, with the containers
//! still open then closed. A string, number or literal the cut went through
//! is left out whole (a cut `"system:anon` is not a username; a cut `40`
//! is not a code). The result is read by the same parsers as any record.

/// The suffix CloudWatch writes after a cut event.
pub const CUT_MARK: &str = "[Truncated...]";

/// Nesting past this depth is not followed (serde_json's own limit is
/// 128): the values read so far are kept.
const MAX_DEPTH: usize = 120;

/// What the reader expects next, in the innermost open container.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A value (after `:` in an object, or `,` in an array).
    Value,
    /// A value or `]` (just after `[`).
    ValueOrEnd,
    /// A key or `}` (just after `{`).
    KeyOrEnd,
    /// A key (after `,` in an object).
    Key,
    /// `:` after a key.
    Colon,
    /// `,` or the container's end, after a value.
    CommaOrEnd,
}

/// The complete values of `bytes`, a JSON object cut before its end (with
/// or without CloudWatch's [`CUT_MARK`]), as one closed JSON object; `None`
/// when `bytes` does not begin an object, is whole (nothing was cut), or
/// the part read is not UTF-8.
pub fn readable(bytes: &[u8]) -> Option<String> {
    let bytes = bytes.trim_ascii_end();
    let bytes = bytes.strip_suffix(CUT_MARK.as_bytes()).unwrap_or(bytes);
    let mut stack: Vec<u8> = Vec::new();
    // The end of the last complete value (or opened container), and how
    // many containers were open there. Every container closed later below
    // that depth moves it, so the open containers below it stay the same.
    let mut good: Option<(usize, usize)> = None;
    let mut expect = Expect::Value;
    let mut i = 0;
    let n = bytes.len();
    loop {
        while i < n && matches!(bytes[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        let Some(&b) = bytes.get(i) else { break };
        match expect {
            Expect::Value | Expect::ValueOrEnd => {
                if stack.is_empty() && b != b'{' {
                    return None;
                }
                match b {
                    b']' if expect == Expect::ValueOrEnd => {
                        i += 1;
                        good = Some(closed(&mut stack, i)?);
                        expect = Expect::CommaOrEnd;
                    }
                    b'{' | b'[' => {
                        if stack.len() >= MAX_DEPTH {
                            break;
                        }
                        stack.push(b);
                        i += 1;
                        good = Some((i, stack.len()));
                        expect = if b == b'{' {
                            Expect::KeyOrEnd
                        } else {
                            Expect::ValueOrEnd
                        };
                    }
                    b'"' => {
                        let Some(end) = string_end(bytes, i) else {
                            break;
                        };
                        i = end;
                        good = Some((i, stack.len()));
                        expect = Expect::CommaOrEnd;
                    }
                    b'-' | b'0'..=b'9' => {
                        let len = bytes[i..].iter().position(|c| {
                            !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                        });
                        // A number that runs to the cut may have lost digits.
                        let Some(len) = len else { break };
                        i += len;
                        good = Some((i, stack.len()));
                        expect = Expect::CommaOrEnd;
                    }
                    b't' | b'f' | b'n' => {
                        let word: &[u8] = match b {
                            b't' => b"true",
                            b'f' => b"false",
                            _ => b"null",
                        };
                        if !bytes[i..].starts_with(word) {
                            break;
                        }
                        i += word.len();
                        good = Some((i, stack.len()));
                        expect = Expect::CommaOrEnd;
                    }
                    _ => break,
                }
            }
            Expect::KeyOrEnd | Expect::Key => match b {
                b'}' if expect == Expect::KeyOrEnd => {
                    i += 1;
                    good = Some(closed(&mut stack, i)?);
                    expect = Expect::CommaOrEnd;
                }
                b'"' => {
                    let Some(end) = string_end(bytes, i) else {
                        break;
                    };
                    i = end;
                    expect = Expect::Colon;
                }
                _ => break,
            },
            Expect::Colon => {
                if b != b':' {
                    break;
                }
                i += 1;
                expect = Expect::Value;
            }
            Expect::CommaOrEnd => {
                let top = *stack.last()?;
                match b {
                    b',' => {
                        i += 1;
                        expect = if top == b'{' {
                            Expect::Key
                        } else {
                            Expect::Value
                        };
                    }
                    b'}' | b']' if b == closer(top) => {
                        i += 1;
                        good = Some(closed(&mut stack, i)?);
                    }
                    _ => break,
                }
            }
        }
    }
    let (end, depth) = good?;
    let mut text = std::str::from_utf8(&bytes[..end]).ok()?.to_string();
    text.extend(stack[..depth].iter().rev().map(|&c| char::from(closer(c))));
    Some(text)
}

/// Closes the innermost container, whose end is at `end`: the new last
/// complete value; `None` when that was the record itself (it was whole,
/// not cut).
fn closed(stack: &mut Vec<u8>, end: usize) -> Option<(usize, usize)> {
    stack.pop();
    (!stack.is_empty()).then_some((end, stack.len()))
}

fn closer(open: u8) -> u8 {
    if open == b'{' { b'}' } else { b']' }
}

/// The position after the closing quote of the string whose opening quote
/// is at `start`; `None` when the cut falls inside it.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let at = i + memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
        if bytes[at] == b'"' {
            return Some(at + 1);
        }
        // An escape: its next byte is part of it (`\"`, `\\`).
        i = at + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &str) -> Option<String> {
        readable(s.as_bytes())
    }

    #[test]
    fn complete_values_are_kept_and_open_containers_closed() {
        assert_eq!(
            read(r#"{"a":"x","user":{"username":"system:anonymous","groups":["system:unauth"#)
                .as_deref(),
            Some(r#"{"a":"x","user":{"username":"system:anonymous","groups":[]}}"#)
        );
        assert_eq!(
            read(r#"{"a":1,"b":[1,2,"3"#).as_deref(),
            Some(r#"{"a":1,"b":[1,2]}"#)
        );
        // A number that ran to the cut is dropped: `40` may have been `401`.
        assert_eq!(read(r#"{"s":{"code":40"#).as_deref(), Some(r#"{"s":{}}"#));
        assert_eq!(read(r#"{"k":tr"#).as_deref(), Some("{}"));
        assert_eq!(read(r#"{"k":true"#).as_deref(), Some(r#"{"k":true}"#));
        // A key without its value is dropped with the comma before it.
        assert_eq!(read(r#"{"a":"b","c":"#).as_deref(), Some(r#"{"a":"b"}"#));
        assert_eq!(read(r#"{"a":"b","c"#).as_deref(), Some(r#"{"a":"b"}"#));
        // An escaped quote does not end a string.
        assert_eq!(
            read(r#"{"a":"x\"y","b":"z\"#).as_deref(),
            Some(r#"{"a":"x\"y"}"#)
        );
    }

    #[test]
    fn cloudwatch_mark_is_not_read_as_json() {
        assert_eq!(
            read(r#"{"sourceIPs":["1.2.3.4","5.6.[Truncated...]"#).as_deref(),
            Some(r#"{"sourceIPs":["1.2.3.4"]}"#)
        );
        assert_eq!(
            read(r#"{"sourceIPs":["1.2.3.4",[Truncated...]"#).as_deref(),
            Some(r#"{"sourceIPs":["1.2.3.4"]}"#)
        );
    }

    #[test]
    fn whole_or_foreign_text_is_not_a_cut_record() {
        assert_eq!(read(r#"{"a":1}"#), None);
        assert_eq!(read(r#"{"a":[1]} "#), None);
        assert_eq!(read(r#"["a""#), None);
        assert_eq!(read("anonymous"), None);
        assert_eq!(read(""), None);
        assert_eq!(read("{").as_deref(), Some("{}"));
        assert_eq!(readable(b"{\"a\":\"\xff\",\"b\""), None);
    }

    #[test]
    fn deep_nesting_stops_without_failing() {
        let deep = format!(r#"{{"a":"b","c":{}"#, "[".repeat(10_000));
        let got = read(&deep).expect("readable");
        assert!(got.starts_with(r#"{"a":"b","c":[["#), "{got:.40}");
        assert!(serde_json::from_str::<serde_json::Value>(&got).is_ok());
    }
}
