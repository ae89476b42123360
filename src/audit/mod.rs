//! The Kubernetes audit event model: just the fields the detection reads.
//!
//! Fields are kept as borrowed raw JSON text so that values can be shown
//! exactly as written (`403`, `true`) and so that a field holding an
//! unexpected type (an object where a string belongs, say) is data for the
//! rule to judge, not a parse error. Input is attacker-influenced: nothing
//! here panics, and no value is trusted to have the type the schema says.

mod lazy;
pub mod prefix;

pub(crate) use lazy::STOP_BYTES as JSON_STOP_BYTES;
/// [`json_stop`], also stopping at DEL and at any byte of a non-ASCII
/// character: for output, which escapes some of those (never the parser).
pub use lazy::find_output_stop as json_output_stop;
/// The first byte a JSON string cannot hold as is: `"`, `\\`, or a control
/// character.
pub use lazy::find_stop as json_stop;

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The top level of one JSON object from an input line or a CloudWatch
/// message. It may be an audit `Event`, or a wrapper around events: a
/// CloudWatch event (`message`), an `aws logs filter-log-events` document
/// (`events`), or an `EventList` (`items`). One parse serves all of them.
/// Each field is the raw JSON text of its value.
#[derive(Debug, Default, Clone, Copy)]
pub struct Record<'a> {
    /// The raw JSON text of each field in [`RECORD_FIELDS`], in its order
    /// (read them by the slots below it); `None` if absent or `null`.
    fields: [Option<&'a str>; 16],
    /// What the fast parse already read of the nested objects.
    ahead: ReadAhead<'a>,
}

/// Records are equal when their fields are: what the fast parse read ahead
/// is only a shortcut to what the nested objects hold.
impl PartialEq for Record<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.fields == other.fields
    }
}

impl Eq for Record<'_> {}

/// The members of `user`, `objectRef` and `responseStatus` the rule reads.
pub(crate) const USER_FIELDS: [&str; 3] = ["username", "uid", "groups"];
pub(crate) const OBJECT_REF_FIELDS: [&str; 4] = ["name", "namespace", "resource", "subresource"];
pub(crate) const RESPONSE_STATUS_FIELDS: [&str; 2] = ["code", "message"];
/// The annotations the triage reads: what the API server's authorizer
/// decided, and why (RBAC names the binding that allowed a request).
pub(crate) const ANNOTATION_FIELDS: [&str; 2] = [
    "authorization.k8s.io/decision",
    "authorization.k8s.io/reason",
];

/// The members of the nested objects that the fast parse read on its way
/// through the record, exactly as [`sub`] would read them; `None` where it
/// did not (not an object, or serde_json must decide).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ReadAhead<'a> {
    pub user: Option<[Option<&'a str>; 3]>,
    pub object_ref: Option<[Option<&'a str>; 4]>,
    pub response_status: Option<[Option<&'a str>; 2]>,
    pub annotations: Option<[Option<&'a str>; 2]>,
}

/// The JSON names of [`Record`]'s fields, in its order.
pub const RECORD_FIELDS: [&str; 16] = [
    "kind",
    "user",
    "sourceIPs",
    "userAgent",
    "verb",
    "stage",
    "requestURI",
    "requestReceivedTimestamp",
    "objectRef",
    "responseStatus",
    "annotations",
    "message",
    "eventId",
    "timestamp",
    "events",
    "items",
];

// Where each field stands in [`RECORD_FIELDS`], looked up at compile time.
const KIND: usize = slot("kind");
pub(crate) const USER: usize = slot("user");
const SOURCE_IPS: usize = slot("sourceIPs");
const USER_AGENT: usize = slot("userAgent");
const VERB: usize = slot("verb");
const STAGE: usize = slot("stage");
const REQUEST_URI: usize = slot("requestURI");
const REQUEST_RECEIVED_TIMESTAMP: usize = slot("requestReceivedTimestamp");
pub(crate) const OBJECT_REF: usize = slot("objectRef");
pub(crate) const RESPONSE_STATUS: usize = slot("responseStatus");
pub(crate) const ANNOTATIONS: usize = slot("annotations");
const MESSAGE: usize = slot("message");
const EVENT_ID: usize = slot("eventId");
const TIMESTAMP: usize = slot("timestamp");
const EVENTS: usize = slot("events");
const ITEMS: usize = slot("items");

/// Where `name` stands in [`RECORD_FIELDS`] (a compile error if nowhere).
const fn slot(name: &str) -> usize {
    let name = name.as_bytes();
    let mut i = 0;
    'fields: while i < RECORD_FIELDS.len() {
        let field = RECORD_FIELDS[i].as_bytes();
        i += 1;
        if field.len() != name.len() {
            continue;
        }
        let mut j = 0;
        while j < name.len() {
            if field[j] != name[j] {
                continue 'fields;
            }
            j += 1;
        }
        return i - 1;
    }
    panic!("not a record field")
}

/// serde_json's view of a [`Record`]: the reference parse.
#[derive(Debug, Default, Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    user: Option<&'a RawValue>,
    #[serde(borrow, rename = "sourceIPs")]
    source_ips: Option<&'a RawValue>,
    #[serde(borrow, rename = "userAgent")]
    user_agent: Option<&'a RawValue>,
    #[serde(borrow)]
    verb: Option<&'a RawValue>,
    #[serde(borrow)]
    stage: Option<&'a RawValue>,
    #[serde(borrow, rename = "requestURI")]
    request_uri: Option<&'a RawValue>,
    #[serde(borrow, rename = "requestReceivedTimestamp")]
    request_received_timestamp: Option<&'a RawValue>,
    #[serde(borrow, rename = "objectRef")]
    object_ref: Option<&'a RawValue>,
    #[serde(borrow, rename = "responseStatus")]
    response_status: Option<&'a RawValue>,
    #[serde(borrow)]
    annotations: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<&'a RawValue>,
    #[serde(borrow, rename = "eventId")]
    event_id: Option<&'a RawValue>,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    events: Option<&'a RawValue>,
    #[serde(borrow)]
    items: Option<&'a RawValue>,
}

/// What a parsed top-level object turned out to be.
pub enum Shape<'r, 'a> {
    /// An audit event.
    Event(Event<'r, 'a>),
    /// A CloudWatch log event: the audit event is the unescaped `message`.
    CloudWatch {
        message: Cow<'a, str>,
        event_id: Option<Cow<'a, str>>,
        /// The event's `timestamp` (ms since the epoch), when it is an
        /// integer: the time of a cut record whose own was cut away.
        timestamp_ms: Option<i64>,
    },
    /// A document holding a list of records (`events` or `items`).
    List(Vec<&'a str>),
}

#[derive(Debug, Default, Deserialize)]
struct UserWire<'a> {
    #[serde(borrow)]
    username: Option<&'a RawValue>,
    #[serde(borrow)]
    uid: Option<&'a RawValue>,
    #[serde(borrow)]
    groups: Option<&'a RawValue>,
}

#[derive(Debug, Default, Deserialize)]
struct ObjectRefWire<'a> {
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    namespace: Option<&'a RawValue>,
    #[serde(borrow)]
    resource: Option<&'a RawValue>,
    #[serde(borrow)]
    subresource: Option<&'a RawValue>,
}

#[derive(Debug, Default, Deserialize)]
struct ResponseStatusWire<'a> {
    #[serde(borrow)]
    code: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<&'a RawValue>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AnnotationsWire<'a> {
    #[serde(borrow, rename = "authorization.k8s.io/decision")]
    pub(crate) decision: Option<&'a RawValue>,
    #[serde(borrow, rename = "authorization.k8s.io/reason")]
    pub(crate) reason: Option<&'a RawValue>,
}

impl<'a> Record<'a> {
    /// Parses one JSON object. Anything else (an array, a scalar, invalid
    /// JSON such as a CloudWatch-truncated event) is an error.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, serde_json::Error> {
        let w: Wire<'a> = serde_json::from_slice(bytes)?;
        let fields = [
            w.kind,
            w.user,
            w.source_ips,
            w.user_agent,
            w.verb,
            w.stage,
            w.request_uri,
            w.request_received_timestamp,
            w.object_ref,
            w.response_status,
            w.annotations,
            w.message,
            w.event_id,
            w.timestamp,
            w.events,
            w.items,
        ];
        Ok(Record {
            fields: fields.map(|v| v.map(RawValue::get)),
            ahead: ReadAhead::default(),
        })
    }

    /// The same as [`Record::parse`], several times faster: one validating
    /// pass that skips what the rule does not read. `None` means "ask
    /// [`Record::parse`]" (it may be malformed, or merely unusual); when it
    /// answers, it answers exactly as [`Record::parse`] would (property-
    /// tested in `tests/bad_input.rs`).
    pub fn parse_fast(bytes: &'a [u8]) -> Option<Self> {
        lazy::record(bytes)
    }

    /// Decides whether this is an audit event or a wrapper around events.
    pub fn shape(&self) -> Shape<'_, 'a> {
        if self.fields[USER].is_none() {
            if let Some(message) = self.fields[MESSAGE].and_then(string) {
                let event_id = self.fields[EVENT_ID].and_then(string);
                let timestamp_ms = self.fields[TIMESTAMP].and_then(|t| t.parse().ok());
                return Shape::CloudWatch {
                    message,
                    event_id,
                    timestamp_ms,
                };
            }
            let list = self.fields[EVENTS].or(
                if self.fields[KIND].and_then(string).as_deref() == Some("EventList") {
                    self.fields[ITEMS]
                } else {
                    None
                },
            );
            if let Some(items) = list.and_then(array) {
                return Shape::List(items);
            }
        }
        Shape::Event(Event {
            record: self,
            user: User::parse(self.fields[USER], self.ahead.user),
        })
    }
}

/// An audit event: the record with its `user` object parsed, which the rule
/// reads first. The other nested objects are parsed only for events that
/// match.
pub struct Event<'r, 'a> {
    record: &'r Record<'a>,
    user: User<'a>,
}

/// `user`, with each field's raw JSON text.
#[derive(Default)]
struct User<'a> {
    username: Option<&'a str>,
    uid: Option<&'a str>,
    groups: Option<&'a str>,
}

impl<'a> User<'a> {
    fn parse(text: Option<&'a str>, ahead: Option<[Option<&'a str>; 3]>) -> Self {
        let [username, uid, groups] = sub(text, ahead, &USER_FIELDS, |w: UserWire<'a>| {
            [w.username, w.uid, w.groups]
        });
        User {
            username,
            uid,
            groups,
        }
    }
}

impl<'a> Event<'_, 'a> {
    /// `user.username`, unescaped, when it is a string.
    pub fn username(&self) -> Option<Cow<'a, str>> {
        self.user.username.and_then(string)
    }

    /// `user.username` as the `user` column shows it (`None`: filled
    /// with "0"), without the other scalars.
    pub fn shown_username(&self) -> Option<Cow<'a, str>> {
        self.user.username.and_then(scalar)
    }

    /// `responseStatus.code` as its column shows it, without the other
    /// scalars.
    pub fn shown_code(&self) -> Option<Cow<'a, str>> {
        self.response_status()[0].and_then(scalar)
    }

    /// `user.groups{}`: the usable values of `user.groups`.
    pub fn groups(&self) -> Values<'a> {
        multi(self.user.groups)
    }

    /// `sourceIPs{}`: the usable values of `sourceIPs`.
    pub fn source_ips(&self) -> Values<'a> {
        multi(self.record.fields[SOURCE_IPS])
    }

    /// The eleven single-valued by-fields, in output column order with the
    /// two multi-valued ones left out: objectRef.name, objectRef.namespace,
    /// objectRef.resource, requestReceivedTimestamp, requestURI,
    /// responseStatus.code, stage, user.uid, user (username), userAgent, verb.
    pub fn scalars(&self) -> [Option<Cow<'a, str>>; 11] {
        let r = self.record;
        let [name, namespace, resource, _] = self.object_ref();
        let [code, _] = self.response_status();
        [
            name.and_then(scalar),
            namespace.and_then(scalar),
            resource.and_then(scalar),
            r.fields[REQUEST_RECEIVED_TIMESTAMP].and_then(scalar),
            r.fields[REQUEST_URI].and_then(scalar),
            code.and_then(scalar),
            r.fields[STAGE].and_then(scalar),
            self.user.uid.and_then(scalar),
            self.user.username.and_then(scalar),
            r.fields[USER_AGENT].and_then(scalar),
            r.fields[VERB].and_then(scalar),
        ]
    }
}

impl<'a> Event<'_, 'a> {
    /// The members of `objectRef` the rule and the triage read, as raw
    /// JSON texts.
    fn object_ref(&self) -> [Option<&'a str>; 4] {
        let r = self.record;
        sub(
            r.fields[OBJECT_REF],
            r.ahead.object_ref,
            &OBJECT_REF_FIELDS,
            |w: ObjectRefWire<'a>| [w.name, w.namespace, w.resource, w.subresource],
        )
    }

    /// The members of `responseStatus` read: `code` and `message`.
    fn response_status(&self) -> [Option<&'a str>; 2] {
        let r = self.record;
        sub(
            r.fields[RESPONSE_STATUS],
            r.ahead.response_status,
            &RESPONSE_STATUS_FIELDS,
            |w: ResponseStatusWire<'a>| [w.code, w.message],
        )
    }

    /// `responseStatus.message`, unescaped, when it is a string: what the
    /// API server said of a refusal (`Authentication failed, attempted:
    /// bearer`).
    pub fn status_message(&self) -> Option<Cow<'a, str>> {
        self.response_status()[1].and_then(string)
    }

    /// `objectRef.subresource` as Splunk would show it (`exec`, `token`).
    pub fn subresource(&self) -> Option<Cow<'a, str>> {
        self.object_ref()[3].and_then(scalar)
    }

    /// The raw JSON texts of the `authorization.k8s.io/decision` and
    /// `authorization.k8s.io/reason` annotations (read them with
    /// [`shown`]): raw, so that a caller that saw the same texts before can
    /// skip decoding them again.
    pub fn authorization(&self) -> [Option<&'a str>; 2] {
        let r = self.record;
        sub(
            r.fields[ANNOTATIONS],
            r.ahead.annotations,
            &ANNOTATION_FIELDS,
            |w: AnnotationsWire<'a>| [w.decision, w.reason],
        )
    }
}

/// A raw JSON value as the rule shows it (strings unescaped, numbers as
/// written); `None` where it would be filled with "0".
pub fn shown(text: &str) -> Option<Cow<'_, str>> {
    scalar(text)
}

/// The raw texts of the members `names` of a nested object; a missing
/// field or one of another type (or a malformed one) reads as an empty
/// object, whose fields are all absent. What the fast parse read `ahead`
/// is used as is; else the fast parse answers when it can; otherwise
/// serde_json reads the object into its wire struct `W`, whose fields
/// `fields` lists in the order of `names`.
fn sub<'a, W: Deserialize<'a> + Default, const N: usize>(
    text: Option<&'a str>,
    ahead: Option<[Option<&'a str>; N]>,
    names: &[&str; N],
    fields: impl FnOnce(W) -> [Option<&'a RawValue>; N],
) -> [Option<&'a str>; N] {
    if let Some(members) = ahead {
        return members;
    }
    match text {
        Some(text) if text.starts_with('{') => lazy::object(text, names).unwrap_or_else(|| {
            fields(serde_json::from_str(text).unwrap_or_default()).map(|v| v.map(RawValue::get))
        }),
        _ => [None; N],
    }
}

/// The unescaped text of a JSON string (given as its raw JSON text);
/// `None` for any other type. A lone surrogate escape (`\ud800` not
/// followed by a low surrogate's, or a low one alone) decodes to U+FFFD,
/// one for each, as a lossy UTF-16 decoder gives.
pub fn string(text: &str) -> Option<Cow<'_, str>> {
    if !text.starts_with('"') {
        return None;
    }
    // The text is valid JSON: a string without a backslash is its bytes
    // between the quotes. Only escaped strings need decoding.
    match text.len() {
        // Inside a valid JSON string the only stop byte can be a backslash.
        n if n >= 2 && !lazy::has_stop(&text.as_bytes()[1..n - 1]) => {
            Some(Cow::Borrowed(&text[1..n - 1]))
        }
        _ => serde_json::from_str::<Cow<'_, str>>(text)
            .ok()
            .or_else(|| string_lossy(text).map(Cow::Owned)),
    }
}

/// A JSON string that serde_json will not read as a `str`: one holding a
/// lone surrogate escape, which it reads only as bytes (WTF-8: each lone
/// surrogate as the three bytes `ED A0..BF xx`, which UTF-8 never holds;
/// a pair is decoded as one character). Each such sequence becomes U+FFFD.
/// `None` for anything else that is not a JSON string.
fn string_lossy(text: &str) -> Option<String> {
    struct Bytes;
    impl serde::de::Visitor<'_> for Bytes {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON string")
        }
        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let wtf8 = serde::Deserializer::deserialize_bytes(&mut de, Bytes).ok()?;
    de.end().ok()?;
    let mut out = Vec::with_capacity(wtf8.len());
    let mut rest = wtf8.as_slice();
    while let Some(at) = rest.windows(2).position(|w| w[0] == 0xed && w[1] >= 0xa0) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice("\u{fffd}".as_bytes());
        rest = rest.get(at + 3..)?;
    }
    out.extend_from_slice(rest);
    String::from_utf8(out).ok()
}

/// The elements of a JSON array, as raw JSON texts; `None` for any other
/// type.
fn array(text: &str) -> Option<Vec<&str>> {
    array_kept(text, Some)
}

/// What `keep` keeps of the elements of a JSON array; `None` for any other
/// type.
fn array_kept<'a, T, C: Default + Extend<T>>(
    text: &'a str,
    mut keep: impl FnMut(&'a str) -> Option<T>,
) -> Option<C> {
    if !text.starts_with('[') {
        return None;
    }
    lazy::array(text, &mut keep).or_else(|| {
        let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
        let mut kept = C::default();
        kept.extend(items.into_iter().filter_map(|i| keep(i.get())));
        Some(kept)
    })
}

/// A value as Splunk shows it: strings unescaped, numbers and booleans as
/// written. `None` (to be filled with "0") for null, "", arrays and objects.
fn scalar(text: &str) -> Option<Cow<'_, str>> {
    match text.as_bytes().first() {
        Some(b'"') => string(text).filter(|s| !s.is_empty()),
        Some(b'{' | b'[' | b'n') | None => None,
        Some(_) => Some(Cow::Borrowed(text)),
    }
}

/// The values of a multi-valued field. Events hold one or two (one source
/// IP; one or two groups), which stay inline: no allocation per event.
pub type Values<'a> = smallvec::SmallVec<[Cow<'a, str>; 2]>;

/// The usable values of a multi-valued field (`x{}` in SPL): the elements of
/// an array, skipping null, "", arrays and objects. Empty when the field is
/// not an array.
fn multi(text: Option<&str>) -> Values<'_> {
    text.and_then(|t| array_kept(t, scalar)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(json: &str) -> Record<'_> {
        Record::parse(json.as_bytes()).expect("valid test JSON")
    }

    /// Runs `check` on the event that `json` holds.
    fn with_event(json: &str, check: impl FnOnce(&Event<'_, '_>)) {
        match rec(json).shape() {
            Shape::Event(e) => check(&e),
            _ => panic!("not an event: {json}"),
        }
    }

    #[test]
    fn scalars_show_values_as_written() {
        with_event(
            r#"{"responseStatus":{"code":403},"verb":"get","stage":true,"userAgent":"a\u0026b"}"#,
            |e| {
                let s = e.scalars();
                assert_eq!(s[5].as_deref(), Some("403"));
                assert_eq!(s[6].as_deref(), Some("true"));
                assert_eq!(s[9].as_deref(), Some("a&b"));
                assert_eq!(s[10].as_deref(), Some("get"));
            },
        );
    }

    #[test]
    fn numbers_keep_their_spelling() {
        with_event(r#"{"responseStatus":{"code":4.03e2}}"#, |e| {
            assert_eq!(e.scalars()[5].as_deref(), Some("4.03e2"));
        });
    }

    #[test]
    fn empty_null_and_structured_scalars_are_absent() {
        let json = r#"{"verb":"","stage":null,"requestURI":{},"userAgent":[],"objectRef":{"name":["x"],"namespace":{"a":1}}}"#;
        with_event(json, |e| {
            let s = e.scalars();
            assert!(s.iter().all(Option::is_none), "{s:?}");
        });
    }

    #[test]
    fn nested_object_of_wrong_type_reads_as_empty() {
        with_event(
            r#"{"objectRef":"pods","user":["system:anonymous"],"responseStatus":7}"#,
            |e| {
                assert!(e.scalars().iter().all(Option::is_none));
                assert_eq!(e.username(), None);
                assert!(e.groups().is_empty());
            },
        );
    }

    #[test]
    fn multi_values_skip_unusable_elements_and_keep_duplicates() {
        with_event(
            r#"{"sourceIPs":["1.2.3.4",null,"",{},[],"1.2.3.4",5]}"#,
            |e| {
                assert_eq!(e.source_ips().as_slice(), ["1.2.3.4", "1.2.3.4", "5"]);
            },
        );
    }

    #[test]
    fn multi_value_that_is_not_an_array_is_empty() {
        with_event(
            r#"{"sourceIPs":"1.2.3.4","user":{"groups":"system:unauthenticated"}}"#,
            |e| {
                assert!(e.source_ips().is_empty());
                assert!(e.groups().is_empty());
            },
        );
    }

    #[test]
    fn lone_surrogates_decode_to_the_replacement_character() {
        for (text, want) in [
            (r#""\ud800""#, "\u{fffd}"),
            (r#""\uDC00""#, "\u{fffd}"),
            (r#""a\ud83dZ""#, "a\u{fffd}Z"),
            (r#""\ud800\u0041""#, "\u{fffd}A"),
            (r#""\ud800\n""#, "\u{fffd}\n"),
            (r#""\ud800\ud83d\ude00""#, "\u{fffd}😀"),
            (r#""\ude00\ud83d""#, "\u{fffd}\u{fffd}"),
            (r#""é\udbff\udbff\udfff日""#, "é\u{fffd}\u{10ffff}日"),
            (r#""x\udfff""#, "x\u{fffd}"),
        ] {
            assert_eq!(string(text).as_deref(), Some(want), "{text}");
            assert_eq!(scalar(text).as_deref(), Some(want), "{text}");
        }
        // A pair is one character, and not a string is still not one.
        assert_eq!(string(r#""\ud83d\ude00""#).as_deref(), Some("😀"));
        for bad in [r#""\ud800"x"#, r#""\ud800"#, r#""\ud800\x""#, "42"] {
            assert_eq!(string(bad), None, "{bad}");
        }
    }

    #[test]
    fn authorization_annotations_are_read_as_serde_json_reads_them() {
        let reads = |json: &str| -> Vec<[Option<String>; 2]> {
            // The fast parse's read-ahead, and serde_json's reading.
            let fast = Record::parse_fast(json.as_bytes()).expect("fast parse answers");
            let slow = rec(json);
            [fast, slow]
                .iter()
                .map(|r| match r.shape() {
                    Shape::Event(e) => e.authorization().map(|v| v.map(String::from)),
                    _ => panic!("not an event"),
                })
                .collect()
        };
        let both = |a: Option<&str>, b: Option<&str>| {
            let want = [a.map(String::from), b.map(String::from)];
            vec![want.clone(), want]
        };
        assert_eq!(
            reads(
                r#"{"annotations":{"x":"y","authorization.k8s.io/reason":"RBAC: \"b\"","authorization.k8s.io/decision":"allow"}}"#
            ),
            both(Some(r#""allow""#), Some(r#""RBAC: \"b\"""#))
        );
        // An escaped slash is the same key (serde_json decides it).
        assert_eq!(
            reads(r#"{"annotations":{"authorization.k8s.io\/decision":"forbid"}}"#)[1],
            [Some(r#""forbid""#.to_string()), None]
        );
        // A named member twice: the object reads as empty, as user does.
        assert_eq!(
            reads(
                r#"{"annotations":{"authorization.k8s.io/decision":"forbid","authorization.k8s.io/decision":"allow"}}"#
            ),
            both(None, None)
        );
        assert_eq!(reads(r#"{"annotations":"x"}"#), both(None, None));
        with_event(
            r#"{"objectRef":{"resource":"pods","subresource":"exec"}}"#,
            |e| assert_eq!(e.subresource().as_deref(), Some("exec")),
        );
    }

    #[test]
    fn username_is_unescaped() {
        with_event(r#"{"user":{"username":"system\u003aanonymous"}}"#, |e| {
            assert_eq!(e.username().as_deref(), Some("system:anonymous"));
        });
    }

    #[test]
    fn shapes_are_recognised() {
        let cw = rec(
            r#"{"logStreamName":"s","timestamp":1764460800123,"message":"{\"kind\":\"Event\"}","eventId":"42"}"#,
        );
        match cw.shape() {
            Shape::CloudWatch {
                message,
                event_id,
                timestamp_ms,
            } => {
                assert_eq!(message, r#"{"kind":"Event"}"#);
                assert_eq!(event_id.as_deref(), Some("42"));
                assert_eq!(timestamp_ms, Some(1_764_460_800_123));
            }
            _ => panic!("not a CloudWatch event"),
        }
        let doc = rec(r#"{"events":[{"message":"{}"},{"message":"{}"}],"searchedLogStreams":[]}"#);
        assert!(matches!(doc.shape(), Shape::List(v) if v.len() == 2));
        let list = rec(r#"{"kind":"EventList","items":[{}]}"#);
        assert!(matches!(list.shape(), Shape::List(v) if v.len() == 1));
        // `items` without kind EventList is not a list; an event with a
        // `message` field of its own stays an event.
        assert!(matches!(rec(r#"{"items":[{}]}"#).shape(), Shape::Event(_)));
        assert!(matches!(
            rec(r#"{"user":{},"message":"x"}"#).shape(),
            Shape::Event(_)
        ));
    }

    #[test]
    fn non_objects_and_truncated_events_fail_to_parse() {
        for bad in [
            "[1]",
            "42",
            r#"{"kind":"Event","user":{"username":"sys[Truncated...]"#,
            "{",
        ] {
            assert!(Record::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
