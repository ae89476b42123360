//! Files and stdin: `kubeanon scan`.
//!
//! Accepted per line: an audit `Event`; a CloudWatch event (`message`
//! holding the event, as `aws logs filter-log-events` prints each one); that
//! command's whole `{"events":[...]}` document; a CloudWatch Logs S3-export
//! line (`<RFC 3339 timestamp> <event>`); an `EventList`. An input whose
//! first line is a lone `{` or `[` is a pretty-printed document (the AWS
//! CLI's default output) and is streamed value by value instead. Gzip is
//! recognised by its magic bytes.
//!
//! Memory is bounded: lines are handled in place in a fixed buffer, and a
//! line (or document element) longer than [`MAX_RECORD`] is counted as
//! malformed and skipped without being held.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;

use flate2::read::MultiGzDecoder;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::detect::{Detector, Origin, Prefilter, Verdict};

/// The largest record kept: CloudWatch events are at most 1 MiB, and an
/// apiserver audit line with a big RequestResponse body rarely exceeds a few.
pub const MAX_RECORD: usize = 16 << 20;
/// Input is read this much at a time (the buffer grows for longer lines).
/// Small enough that what `read` copied in is still in the core's cache
/// when it is parsed: 256 KiB read an all-anonymous file about 7% faster
/// than 1 MiB here, and 128 or 512 KiB no faster.
const CHUNK: usize = 256 << 10;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads one input to its end, feeding every record to `det`. Returns the
/// number of (decompressed) bytes read. Errors are I/O errors only: bad
/// content is counted, never fatal.
pub fn read_input(input: impl Read, det: &mut Detector) -> io::Result<u64> {
    let mut input = skip_bom(Fused {
        inner: input,
        done: false,
    })?;
    // A pipe may hand over a single byte first: read the magic whole.
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut input, &mut magic)?;
    let input = io::Cursor::new(magic).take(n as u64).chain(input);
    if magic[..n] == GZIP_MAGIC {
        let gz = MultiGzDecoder::new(io::BufReader::with_capacity(CHUNK, input));
        let mut input = StopAtBadData {
            inner: gz,
            broken: false,
        };
        let n = read_plain(skip_bom(&mut input)?, det, true)?;
        if input.broken {
            // A corrupt or cut gzip stream: what came before is read; the
            // unreadable rest counts once (a line cut with it, once more).
            det.stats.malformed += 1;
        }
        Ok(n)
    } else {
        read_plain(input, det, true)
    }
}

/// Ends for good at the first end of input. A terminal's Ctrl-D ends one
/// read only, and the reader asks more than once (the byte-order mark, the
/// gzip magic, the first line): one Ctrl-D must end the input.
struct Fused<R> {
    inner: R,
    done: bool,
}

impl<R: Read> Read for Fused<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.done = n == 0;
        Ok(n)
    }
}

/// A UTF-8 byte-order mark, which Windows tools put at the start of the
/// files they save: not part of the first record.
const BOM: [u8; 3] = [0xef, 0xbb, 0xbf];

/// The input without a leading [`BOM`].
fn skip_bom(mut input: impl Read) -> io::Result<impl Read> {
    let mut head = [0u8; 3];
    let n = read_up_to(&mut input, &mut head)?;
    let keep = if head[..n] == BOM { 0 } else { n };
    Ok(io::Cursor::new(head).take(keep as u64).chain(input))
}

/// Ends a decompressed stream at the first bad byte instead of failing it,
/// remembering that it did: a truncated `.gz` (a log copied while it was
/// written) still gives every event before the cut.
struct StopAtBadData<R> {
    inner: R,
    broken: bool,
}

impl<R: Read> Read for StopAtBadData<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.broken {
            return Ok(0);
        }
        match self.inner.read(buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidInput
                        | io::ErrorKind::InvalidData
                        | io::ErrorKind::UnexpectedEof
                ) =>
            {
                self.broken = true;
                Ok(0)
            }
            other => other,
        }
    }
}

/// Below this a file is read by one thread: splitting costs more than it
/// saves.
const PARALLEL_MIN: u64 = 32 << 20;

/// Opens a file that will be read front to back, and tells the kernel so:
/// it then reads further ahead from a cold disk, and does less readahead
/// bookkeeping over a cached file (in a profile of a cached 500 MiB scan,
/// time in the kernel's read path fell from 5.7% to 4.5%).
pub fn open_sequential(path: &Path) -> io::Result<File> {
    let file = File::open(path)?;
    // Advice only: where it is not taken, reading works as before.
    #[cfg(target_os = "linux")]
    let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential);
    Ok(file)
}

/// Reads a large plain file with `threads` workers, each over its own run
/// of whole lines with its own detector from `new_detector`, which it
/// sorts ([`Detector::sort`]) when done; the caller merges them (the aggregate is a sum, so the split does not change the
/// findings). `None` when the file is better read in one piece: small,
/// gzip, a pretty-printed document, or no line break near a split point.
pub fn read_file_parallel(
    path: &Path,
    threads: usize,
    new_detector: impl Fn() -> Detector + Sync,
) -> io::Result<Option<(Vec<Detector>, u64)>> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    let len = meta.len();
    if threads < 2 || !meta.is_file() || len < PARALLEL_MIN {
        return Ok(None);
    }
    let mut head = vec![0; 64 << 10];
    let n = read_at_most(&file, 0, &mut head)?;
    head.truncate(n);
    let bom = if head.starts_with(&BOM) { BOM.len() } else { 0 };
    if head.starts_with(&GZIP_MAGIC) || is_document_start(&head[bom..]) {
        return Ok(None);
    }
    let mut bounds = vec![bom as u64];
    for k in 1..threads as u64 {
        let Some(at) = next_line_start(&file, k * len / threads as u64)? else {
            return Ok(None);
        };
        if at > *bounds.last().expect("not empty") && at < len {
            bounds.push(at);
        }
    }
    bounds.push(len);
    let new_detector = &new_detector;
    let results: Vec<io::Result<(Detector, u64)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = bounds
            .windows(2)
            .map(|w| {
                let (start, end) = (w[0], w[1]);
                scope.spawn(move || {
                    let mut f = open_sequential(path)?;
                    f.seek(io::SeekFrom::Start(start))?;
                    let mut det = new_detector();
                    let n = read_plain(f.take(end - start), &mut det, false)?;
                    det.sort();
                    Ok((det, n))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a reader thread panicked")))
            })
            .collect()
    });
    let mut dets = Vec::new();
    let mut total = 0;
    for r in results {
        let (det, n) = r?;
        dets.push(det);
        total += n;
    }
    Ok(Some((dets, total)))
}

/// Reads into `buf` from `offset`; short only at the end of the file.
fn read_at_most(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The offset just after the first newline at or after `from`, looking no
/// further than one record's length.
fn next_line_start(file: &File, from: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0; 64 << 10];
    let mut at = from;
    while at - from <= MAX_RECORD as u64 {
        let n = read_at_most(file, at, &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(nl) = memchr::memchr(b'\n', &buf[..n]) {
            return Ok(Some(at + nl as u64 + 1));
        }
        at += n as u64;
    }
    Ok(None)
}

/// Fills `buf` unless the input ends first; returns how much was read.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads lines; with `detect_document`, an input whose first line is a lone
/// `{` or `[` is streamed as a document instead.
fn read_plain(mut input: impl Read, det: &mut Detector, detect_document: bool) -> io::Result<u64> {
    let mut lines = Lines::new();
    let mut n = lines.fill(&mut input)?;
    let mut total = n as u64;
    // The format is decided on the first line: make sure it is all here.
    while n > 0 && !has_first_line(lines.pending()) && lines.pending().len() < CHUNK {
        n = lines.fill(&mut input)?;
        total += n as u64;
    }
    if detect_document && total > 0 && is_document_start(lines.pending()) {
        let head = io::Cursor::new(lines.pending().to_vec());
        return read_document(head.chain(input), det);
    }
    let mut judge = Judge::for_rules(det.rules());
    loop {
        // The prefilter runs once over every complete line in the buffer
        // (unless a flood has the judge skip it); each line then only looks
        // up whether a candidate falls inside it.
        let hits = judge.candidates(lines.complete());
        let mut next = 0;
        let (mut seen, mut passed) = (0, 0);
        lines.drain(|offset, line| {
            let verdict = hits.map_or(Verdict::Unjudged, |hits| {
                while next < hits.len() && hits[next] < offset {
                    next += 1;
                }
                let could_match = next < hits.len() && hits[next] < offset + line.len();
                seen += 1;
                passed += usize::from(could_match);
                if could_match {
                    Verdict::Passed
                } else {
                    Verdict::Rejected
                }
            });
            feed_line(line, det, Some(verdict));
        });
        judge.judged(seen, passed);
        let n = lines.fill(&mut input)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    lines.finish(|line| feed_line(line, det, None));
    det.stats.malformed += lines.overlong;
    Ok(total)
}

/// One line of any accepted line format, with the prefilter's verdict on
/// it when the caller has one.
fn feed_line(line: &[u8], det: &mut Detector, verdict: Option<Verdict>) {
    let line = line.trim_ascii();
    if line.is_empty() {
        return;
    }
    let record = strip_s3_export_prefix(line).unwrap_or(line);
    match verdict {
        Some(verdict) => det.feed_prejudged(record, Origin::default(), verdict),
        None => det.feed(record, Origin::default()),
    };
}

/// Runs the prefilter over buffers of lines, except while nearly every line
/// passes it (a flood of anonymous events): then the lines are parsed
/// unjudged for a while, which gives the same results and counts (see
/// [`Verdict::Unjudged`]) without the prefilter's pass over the bytes.
#[derive(Default)]
struct Judge {
    prefilter: Prefilter,
    /// Buffers left to read unjudged.
    skip: u32,
}

impl Judge {
    /// A judge for what `rules` can match (a prefilter for more rules than
    /// the detector applies would pass lines only to have them rejected).
    fn for_rules(rules: crate::detect::Rules) -> Judge {
        Judge {
            prefilter: Prefilter::for_rules(rules),
            skip: 0,
        }
    }

    /// Buffers read unjudged after one where nearly every line passed,
    /// before the next is judged again.
    const SKIP: u32 = 15;

    /// The prefilter's candidates in `buf`, or `None` to read it unjudged.
    fn candidates(&mut self, buf: &[u8]) -> Option<&[usize]> {
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        Some(self.prefilter.candidates(buf))
    }

    /// After a judged buffer: `passed` of its `seen` lines passed.
    fn judged(&mut self, seen: usize, passed: usize) {
        // At 15 in 16, parsing the lines that would have been rejected
        // costs less than the prefilter's pass over all of them.
        if seen >= 16 && passed * 16 >= seen * 15 {
            self.skip = Self::SKIP;
        }
    }
}

/// `2024-05-01T12:00:00.000Z {...}` -> `{...}`, when the prefix is an
/// RFC 3339 timestamp.
fn strip_s3_export_prefix(line: &[u8]) -> Option<&[u8]> {
    if !line.first()?.is_ascii_digit() {
        return None;
    }
    let space = memchr::memchr(b' ', &line[..line.len().min(64)])?;
    let stamp = std::str::from_utf8(&line[..space]).ok()?;
    chrono::DateTime::parse_from_rfc3339(stamp).ok()?;
    Some(line[space + 1..].trim_ascii_start())
}

/// Whether the first non-blank line has its newline.
fn has_first_line(head: &[u8]) -> bool {
    head.iter()
        .position(|b| !b.is_ascii_whitespace())
        .is_some_and(|start| memchr::memchr(b'\n', &head[start..]).is_some())
}

/// A lone `{` or `[` on the first non-blank line: a pretty-printed document.
fn is_document_start(head: &[u8]) -> bool {
    let start = head
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(head.len());
    let rest = &head[start..];
    let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
    matches!(rest[..end].trim_ascii(), b"{" | b"[")
}

/// A line splitter over a fixed-size buffer that hands out complete lines
/// in place and drops lines longer than [`MAX_RECORD`] as it goes.
struct Lines {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Inside a line already judged too long: skip to its newline.
    skipping: bool,
    overlong: u64,
}

impl Lines {
    fn new() -> Self {
        Lines {
            buf: vec![0; CHUNK],
            start: 0,
            end: 0,
            skipping: false,
            overlong: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more input after the unconsumed tail. 0 means end of input.
    fn fill(&mut self, input: &mut impl Read) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= MAX_RECORD {
                // The tail is one line longer than any record we keep
                // (counted once, however many buffers it spans).
                if !self.skipping {
                    self.overlong += 1;
                }
                self.skipping = true;
                self.end = 0;
            } else {
                self.buf.resize((self.buf.len() * 2).min(MAX_RECORD), 0);
            }
        }
        loop {
            match input.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The complete lines in the buffer, as one slice.
    fn complete(&self) -> &[u8] {
        let pending = self.pending();
        let end = memchr::memrchr(b'\n', pending).map_or(0, |nl| nl + 1);
        &pending[..end]
    }

    /// Hands out every complete line in the buffer, with its offset from
    /// the start of [`Lines::complete`].
    fn drain(&mut self, mut each: impl FnMut(usize, &[u8])) {
        let base = self.start;
        while let Some(nl) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
            let line = self.start..self.start + nl;
            self.start += nl + 1;
            if std::mem::take(&mut self.skipping) {
                continue;
            }
            each(line.start - base, &self.buf[line]);
        }
    }

    /// End of input: the last line may lack its newline.
    fn finish(&mut self, mut each: impl FnMut(&[u8])) {
        if !self.skipping && self.start < self.end {
            each(&self.buf[self.start..self.end]);
        }
        self.start = self.end;
    }
}

/// Streams a pretty-printed document (or several in a row): the elements
/// of a top-level array, of an `events` or `items` array, or a whole
/// top-level object, each fed as one record.
fn read_document(input: impl Read, det: &mut Detector) -> io::Result<u64> {
    let count = Rc::new(ByteCount::default());
    let reader = CountingReader {
        inner: input,
        count: count.clone(),
    };
    // serde_json reads a byte at a time: buffer above the counter.
    let mut de = serde_json::Deserializer::from_reader(io::BufReader::new(reader));
    loop {
        count.since_mark.set(0);
        let mut seed = TopLevel {
            det: &mut *det,
            since_mark: &count.since_mark,
            started: false,
        };
        match (&mut seed).deserialize(&mut de) {
            Ok(()) => continue,
            Err(e) if e.is_eof() && !seed.started => break,
            Err(e) if e.is_io() && !e.to_string().contains(TOO_LARGE) => {
                return Err(io::Error::other(e));
            }
            Err(_) => {
                // Not JSON, cut short, or one element past the size limit:
                // the rest cannot be framed, so it counts once and reading
                // stops.
                det.stats.malformed += 1;
                break;
            }
        }
    }
    Ok(count.total.get())
}

const TOO_LARGE: &str = "record larger than the 16 MiB limit";

#[derive(Default)]
struct ByteCount {
    total: Cell<u64>,
    /// Bytes since the visitor last marked a record boundary.
    since_mark: Cell<u64>,
}

/// Counts bytes, and fails a read once one record has grown past
/// [`MAX_RECORD`], so a huge element is never held whole.
struct CountingReader<R> {
    inner: R,
    count: Rc<ByteCount>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.count.since_mark.get() > MAX_RECORD as u64 {
            return Err(io::Error::other(TOO_LARGE));
        }
        let n = self.inner.read(buf)?;
        self.count.total.set(self.count.total.get() + n as u64);
        self.count
            .since_mark
            .set(self.count.since_mark.get() + n as u64);
        Ok(n)
    }
}

struct TopLevel<'d, 'c> {
    det: &'d mut Detector,
    since_mark: &'c Cell<u64>,
    started: bool,
}

impl<'de> DeserializeSeed<'de> for &mut TopLevel<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut TopLevel<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object or array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.started = true;
        stream_elements(&mut seq, self.det, self.since_mark)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.started = true;
        // Fields other than the lists are kept so that an object that turns
        // out to be a single (pretty-printed) event can be fed whole.
        let mut fields: Vec<(String, Box<RawValue>)> = Vec::new();
        let mut streamed = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "events" || key == "items" {
                map.next_value_seed(List {
                    det: &mut *self.det,
                    since_mark: self.since_mark,
                })?;
                streamed = true;
            } else if streamed {
                map.next_value::<IgnoredAny>()?;
            } else {
                fields.push((key.into_owned(), map.next_value()?));
            }
        }
        if !streamed {
            let object = reassemble(&fields);
            self.det.feed(object.as_bytes(), Origin::default());
        }
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom("not an object"))
    }
}

struct List<'d, 'c> {
    det: &'d mut Detector,
    since_mark: &'c Cell<u64>,
}

impl<'de> DeserializeSeed<'de> for List<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for List<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        stream_elements(&mut seq, self.det, self.since_mark)
    }
}

fn stream_elements<'de, A: SeqAccess<'de>>(
    seq: &mut A,
    det: &mut Detector,
    since_mark: &Cell<u64>,
) -> Result<(), A::Error> {
    while let Some(item) = seq.next_element::<Box<RawValue>>()? {
        since_mark.set(0);
        det.feed(item.get().as_bytes(), Origin::default());
    }
    Ok(())
}

/// Rebuilds `{"k":v,...}` from an object's captured fields.
fn reassemble(fields: &[(String, Box<RawValue>)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(k).expect("a string serialises"));
        out.push(':');
        out.push_str(v.get());
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A reader that hands over one byte per call, as a slow pipe may.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            if buf.is_empty() {
                return Ok(0);
            }
            buf[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    const ANON: &str = r#"{"kind":"Event","user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"sourceIPs":["1.2.3.4"]}"#;

    fn matched(input: impl Read) -> u64 {
        let mut det = Detector::default();
        read_input(input, &mut det).unwrap();
        det.finish().1.matched
    }

    #[test]
    fn formats_are_recognised_when_bytes_arrive_one_at_a_time() {
        let pretty = format!(
            "{{\n  \"events\": [\n    {{\"message\": {}}}\n  ]\n}}\n",
            serde_json::to_string(ANON).unwrap()
        );
        assert_eq!(matched(Trickle(pretty.as_bytes())), 1);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(format!("{ANON}\n{ANON}\n").as_bytes())
            .unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(matched(Trickle(&gz)), 2);
        assert_eq!(matched(Trickle(format!("{ANON}\n").as_bytes())), 1);
    }

    #[test]
    fn a_cut_or_corrupt_gzip_stream_keeps_what_came_before() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for _ in 0..200 {
            gz.write_all(format!("{ANON}\n").as_bytes()).unwrap();
        }
        let gz = gz.finish().unwrap();
        let cut = &gz[..gz.len() - 30]; // loses the end and the trailer
        let mut det = Detector::default();
        read_input(cut, &mut det).unwrap();
        let stats = det.finish().1;
        assert!(stats.matched > 0, "events before the cut are read");
        assert_eq!(stats.malformed, 2, "the cut line, and the unreadable rest");
        let mut det = Detector::default();
        read_input(&[0x1f, 0x8b, 0xff, 0x00, 0x12][..], &mut det).unwrap();
        assert_eq!(det.finish().1.malformed, 1);
    }

    #[test]
    fn tiny_and_empty_inputs() {
        assert_eq!(matched(&b""[..]), 0);
        assert_eq!(matched(&b"\x1f"[..]), 0);
        assert_eq!(matched(ANON.as_bytes()), 1, "no trailing newline");
    }

    #[test]
    fn a_flood_is_read_unjudged_until_it_ends() {
        let mut judge = Judge::default();
        assert!(judge.candidates(b"x").is_some());
        judge.judged(1000, 936); // below 15 in 16: keep judging
        assert!(judge.candidates(b"x").is_some());
        judge.judged(1000, 940);
        for _ in 0..Judge::SKIP {
            assert!(judge.candidates(b"x").is_none());
        }
        assert!(judge.candidates(b"x").is_some(), "judged again");
    }

    /// A flood of anonymous events, then records the prefilter rejects and
    /// counts by their framing: read in buffers (some unjudged), the counts
    /// and rows equal feeding each line on its own.
    #[test]
    fn counts_are_the_same_through_a_flood() {
        let rejected = [
            "{not json}",
            r#"{"events":[{"kind":"Event"},{"kind":"Event"}]}"#,
            r#"{"kind":"Event","user":{"username":"bob"}}"#,
            "[1,2]",
        ];
        let mut input = String::new();
        let mut n = 0;
        while input.len() < 3 * CHUNK {
            input.push_str(ANON);
            input.push('\n');
            n += 1;
            if input.len() > CHUNK && n % 4 == 0 {
                input.push_str(rejected[n / 4 % rejected.len()]);
                input.push('\n');
            }
        }
        let mut read = Detector::default();
        read_input(input.as_bytes(), &mut read).unwrap();
        let mut fed = Detector::default();
        for line in input.lines() {
            fed.feed(line.as_bytes(), Origin::default());
        }
        let (read, read_stats) = read.finish();
        let (fed, fed_stats) = fed.finish();
        assert!(fed_stats.malformed > 0 && fed_stats.events > fed_stats.matched);
        assert_eq!(read_stats, fed_stats);
        assert_eq!(read.into_findings(), fed.into_findings());
    }
}
