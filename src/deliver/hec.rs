//! `--deliver hec+https://HOST:PORT`: Splunk's HTTP Event Collector.
//!
//! Each step's rows are HEC events ([`crate::output::hec`]), posted in
//! batches of at most [`BATCH_BYTES`] to `/services/collector/event` with
//! `Authorization: Splunk <token>` and this run's channel
//! (`X-Splunk-Request-Channel`). The step commits once every batch was
//! accepted (HTTP 200, code 0); with `--hec-ack`, once
//! `/services/collector/ack` reports every batch's `ackId` indexed.
//!
//! HEC keeps no idempotency key, so the promise is at least once: a step
//! whose batches were all accepted (or acknowledged) is committed and never
//! sent again; only the step in flight when a run stops is sent again by
//! the next run, with the same `fields.id` per row for a search to
//! deduplicate on.
//!
//! Answers: 503 (busy, code 9), 429 and other 5xx are retried with
//! backoff for [`RETRY_FOR`]; 401 and 403 are the token's (it is named by
//! where it came from, never shown); any other 4xx is an error with HEC's
//! text and code. Before anything is read, an empty post checks the token
//! (HEC answers "No data", code 5, to a token it takes), retried for
//! [`CHECK_FOR`] only: a HEC down at the start fails the run quickly.
//!
//! TLS is always verified: against the system's roots and `--hec-ca`.
//! Plain `http` is refused (it would send the token in the clear).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::cli::PollArgs;
use crate::exit::UsageError;
use crate::fleet::WorkUnit;
use crate::output::{Format, Parts, Rows, Style, hec::Envelope, neutralise_terminal};
use crate::state::protocol::{Found, Pending, Prepared, Target};

/// Most bytes in one post (HEC's `max_content_length` is 1 MB on Splunk
/// Cloud and often as low on a forwarder): a batch stays well under it.
pub const BATCH_BYTES: usize = 512 * 1024;
/// How long a batch is retried while HEC is busy or unreachable.
pub const RETRY_FOR: Duration = Duration::from_secs(120);
/// How long the token check before any read is retried: a HEC that is
/// down at the start fails the run quickly, before anything is read.
pub const CHECK_FOR: Duration = Duration::from_secs(20);

/// `https://HOST[:PORT][/PATH]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://host:port`, without a path.
    base: String,
    /// The event path (`/services/collector/event` unless given).
    path: String,
}

impl Endpoint {
    /// `text`: what follows `hec+` in `--deliver`.
    pub fn parse(text: &str) -> Result<Endpoint, UsageError> {
        let shown = neutralise_terminal(text);
        if text.starts_with("http://") {
            return Err(UsageError(format!(
                "--deliver hec+{shown}: plain http would send the HEC token in the clear; use hec+https:// \
                 (with --hec-ca for a private CA)"
            )));
        }
        let uri: hyper::Uri = text.parse().map_err(|_| {
            UsageError(format!(
                "--deliver hec+{shown}: not a URL (hec+https://splunk.example.com:8088)"
            ))
        })?;
        let (Some("https"), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(UsageError(format!(
                "--deliver hec+{shown}: expected hec+https://HOST[:PORT]"
            )));
        };
        if uri.query().is_some() || authority.as_str().contains('@') {
            return Err(UsageError(format!(
                "--deliver hec+{shown}: no query or user in the URL: the token comes from KUBEANON_HEC_TOKEN or --hec-token-file"
            )));
        }
        let path = match uri.path() {
            "" | "/" => "/services/collector/event".to_string(),
            p => p.trim_end_matches('/').to_string(),
        };
        Ok(Endpoint {
            base: format!("https://{authority}"),
            path,
        })
    }

    /// How messages name it.
    pub fn shown(&self) -> String {
        neutralise_terminal(&format!("{}{}", self.base, self.path)).into_owned()
    }
}

/// The token and where it came from. Never shown, never logged.
#[derive(Clone)]
struct Token {
    value: String,
    source: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(from {})", self.source)
    }
}

/// `--deliver hec+...` and its flags, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    endpoint: Endpoint,
    token: Token,
    index: Option<String>,
    ack: Option<Duration>,
    /// `--hec-ca`: PEM certificates, read and checked.
    ca: Vec<rustls_pki_types::CertificateDer<'static>>,
}

/// Where the token comes from when no file is named.
pub const TOKEN_ENV: &str = "KUBEANON_HEC_TOKEN";

impl Settings {
    pub fn from_args(endpoint: &Endpoint, args: &PollArgs) -> Result<Settings, UsageError> {
        let token = match &args.hec_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    UsageError(format!(
                        "--hec-token-file {}: cannot read it: {e}",
                        neutralise_terminal(&path.display().to_string())
                    ))
                })?;
                Token {
                    value: text.lines().next().unwrap_or_default().trim().to_string(),
                    source: format!(
                        "--hec-token-file {}",
                        neutralise_terminal(&path.display().to_string())
                    ),
                }
            }
            None => Token {
                value: std::env::var(TOKEN_ENV)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                source: TOKEN_ENV.to_string(),
            },
        };
        if token.value.is_empty() {
            return Err(UsageError(format!(
                "--deliver hec+https:// needs a HEC token: {} is empty or unset (set {TOKEN_ENV}, or name a file \
                 with --hec-token-file; never a flag value, which ps shows)",
                token.source
            )));
        }
        // A header value: printable ASCII only.
        if !token.value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(UsageError(format!(
                "the HEC token from {} holds characters a token never has (spaces or controls)",
                token.source
            )));
        }
        let ack = args
            .hec_ack
            .then(|| crate::cli::parse_duration("--hec-ack-timeout", &args.hec_ack_timeout))
            .transpose()?;
        let ca = match &args.hec_ca {
            None => Vec::new(),
            Some(path) => read_ca(path)?,
        };
        Ok(Settings {
            endpoint: endpoint.clone(),
            token,
            index: args.hec_index.clone(),
            ack,
            ca,
        })
    }
}

fn read_ca(path: &PathBuf) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, UsageError> {
    use rustls_pki_types::pem::PemObject;
    let shown = neutralise_terminal(&path.display().to_string()).into_owned();
    let pem = std::fs::read(path)
        .map_err(|e| UsageError(format!("--hec-ca {shown}: cannot read it: {e}")))?;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| UsageError(format!("--hec-ca {shown}: not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(UsageError(format!(
            "--hec-ca {shown}: no certificate in it (expected PEM `BEGIN CERTIFICATE` blocks)"
        )));
    }
    Ok(certs)
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The HEC target.
pub struct Hec {
    settings: Settings,
    client: HttpsClient,
    channel: String,
    style: Style,
    attempt_timeout: Duration,
}

/// HEC's answer to one post.
struct Answer {
    status: u16,
    code: Option<i64>,
    text: String,
    body: Value,
}

impl Hec {
    /// The client, with the token checked by an empty post.
    pub async fn connect(
        settings: Settings,
        style: Style,
        attempt_timeout: Duration,
    ) -> Result<Hec> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        for cert in &settings.ca {
            roots
                .add(cert.clone())
                .context("--hec-ca: a certificate that cannot be a trust anchor")?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        let hec = Hec {
            channel: channel(),
            settings,
            client,
            style: Style {
                format: match style.format {
                    Format::Ocsf => Format::Ocsf,
                    _ => Format::Ndjson,
                },
                colour: false,
                ..style
            },
            attempt_timeout,
        };
        hec.check_token().await?;
        Ok(hec)
    }

    /// An empty post: "No data" (code 5) means the token was taken.
    async fn check_token(&self) -> Result<()> {
        let answer = self
            .post_retried(&self.settings.endpoint.path, Bytes::new(), CHECK_FOR)
            .await?;
        match (answer.status, answer.code) {
            (400, Some(5)) | (200, _) => {}
            _ => return Err(self.refused(&answer)),
        }
        if self.settings.ack.is_some() {
            let answer = self
                .post_retried(
                    &self.ack_path(),
                    Bytes::from_static(b"{\"acks\":[]}"),
                    CHECK_FOR,
                )
                .await?;
            if answer.status != 200 {
                if answer.code == Some(14) {
                    bail!(
                        "HEC at {} has indexer acknowledgement off for the token from {}: turn it on for the token, \
                         or drop --hec-ack (a step then commits once HEC accepted it, before it is indexed)",
                        self.settings.endpoint.shown(),
                        self.settings.token.source
                    );
                }
                return Err(self.refused(&answer));
            }
        }
        Ok(())
    }

    fn ack_path(&self) -> String {
        format!("/services/collector/ack?channel={}", self.channel)
    }

    /// The error for an answer that is not success.
    fn refused(&self, a: &Answer) -> anyhow::Error {
        let what = format!(
            "HEC at {} answered {}{}: {}",
            self.settings.endpoint.shown(),
            a.status,
            a.code.map(|c| format!(" (code {c})")).unwrap_or_default(),
            a.text
        );
        match a.status {
            401 | 403 => anyhow!(
                "{what}: the token from {} was refused (check it, and that it is enabled for this HEC)",
                self.settings.token.source
            ),
            _ => anyhow!("{what}"),
        }
    }

    /// One post, retried while HEC is busy (503, 429, other 5xx) or
    /// unreachable, for `retry_for`.
    async fn post_retried(&self, path: &str, body: Bytes, retry_for: Duration) -> Result<Answer> {
        let started = Instant::now();
        let mut wait = Duration::from_millis(200);
        loop {
            let last = match self.post(path, body.clone()).await {
                Ok(a) if !(a.status == 429 || a.status >= 500) => return Ok(a),
                Ok(a) => self.refused(&a),
                // A certificate refused stays refused.
                Err(e) if e.is::<TlsRefused>() => return Err(e),
                Err(e) => e,
            };
            if started.elapsed() + wait > retry_for {
                return Err(last.context(format!(
                    "HEC at {} stayed unreachable or busy for {}",
                    self.settings.endpoint.shown(),
                    humantime::format_duration(retry_for)
                )));
            }
            tracing::debug!("HEC busy or unreachable, retrying in {wait:?}: {last:#}");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(8));
        }
    }

    async fn post(&self, path: &str, body: Bytes) -> Result<Answer> {
        let url = format!("{}{path}", self.settings.endpoint.base);
        let request = Request::post(url.as_str())
            .header(
                "Authorization",
                format!("Splunk {}", self.settings.token.value),
            )
            .header("X-Splunk-Request-Channel", &self.channel)
            .header("Content-Type", "application/json")
            .body(Full::new(body))
            .context("cannot make a HEC request")?;
        let shown = self.settings.endpoint.shown();
        let call = async {
            let response = self.client.request(request).await.map_err(|e| {
                let error = anyhow!("cannot reach HEC at {shown}: {}", connect_error(&e));
                if is_tls_refusal(&e) {
                    error.context(TlsRefused)
                } else {
                    error
                }
            })?;
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| anyhow!("HEC at {shown}: the answer was cut: {e}"))?
                .to_bytes();
            Ok::<_, anyhow::Error>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.attempt_timeout, call)
            .await
            .map_err(|_| {
                anyhow!(
                    "HEC at {shown} did not answer within {} (--attempt-timeout)",
                    humantime::format_duration(self.attempt_timeout)
                )
            })??;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text = body["text"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
            });
        let text: String = text.chars().take(200).collect();
        Ok(Answer {
            status,
            code: body["code"].as_i64(),
            text: neutralise_terminal(&text).into_owned(),
            body,
        })
    }

    /// Waits until HEC reports every one of `ids` indexed.
    async fn wait_for_acks(&self, mut ids: Vec<u64>, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let total = ids.len();
        let mut wait = Duration::from_millis(100);
        while !ids.is_empty() {
            let body = Bytes::from(json!({ "acks": ids }).to_string());
            let answer = self.post_retried(&self.ack_path(), body, RETRY_FOR).await?;
            if answer.status != 200 {
                return Err(self.refused(&answer));
            }
            ids.retain(|id| answer.body["acks"][id.to_string()].as_bool() != Some(true));
            if ids.is_empty() {
                break;
            }
            if started.elapsed() + wait > timeout {
                bail!(
                    "HEC at {} reported {} of {total} batches indexed within {} (--hec-ack-timeout): the step is not \
                     committed, and the next run sends it again (a search deduplicates on fields.id)",
                    self.settings.endpoint.shown(),
                    total - ids.len(),
                    humantime::format_duration(timeout)
                );
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        Ok(())
    }
}

/// What a connection error says, with its causes (a TLS failure is
/// deep in the chain).
fn connect_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    neutralise_terminal(&text).into_owned()
}

/// The TLS handshake failed: the certificate or the protocol was refused,
/// which another attempt does not change.
#[derive(Debug)]
struct TlsRefused;

impl std::fmt::Display for TlsRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the TLS handshake failed (a private CA is trusted with --hec-ca)")
    }
}

impl std::error::Error for TlsRefused {}

/// Whether rustls refused the connection, somewhere in `e`'s causes. An
/// `io::Error`'s `source` skips the error it wraps: its `get_ref` is
/// followed instead.
fn is_tls_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(s) = next {
        if s.is::<rustls::Error>() {
            return true;
        }
        next = match s.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|i| i as &(dyn std::error::Error + 'static)),
            None => s.source(),
        };
    }
    false
}

/// A channel id (a GUID, as HEC wants), new for each run.
fn channel() -> String {
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// `lines` (HEC events, one per line) cut into posts of at most
/// [`BATCH_BYTES`] (an event over it alone in its own).
fn batches(lines: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for line in lines.split_inclusive(|&b| b == b'\n') {
        if end > start && end - start + line.len() > BATCH_BYTES {
            out.push(&lines[start..end]);
            start = end;
        }
        end += line.len();
    }
    if end > start {
        out.push(&lines[start..end]);
    }
    out
}

impl Target for Hec {
    type Hold = ();

    async fn prepare(
        &self,
        _: &WorkUnit,
        _: (i64, i64),
        _: u64,
        rows: &Rows<'_>,
    ) -> Result<Option<Prepared<()>>> {
        let envelope = Envelope {
            sourcetype: match self.style.format {
                Format::Ocsf => "kubeanon:ocsf",
                _ => "kubeanon:finding",
            },
            index: self.settings.index.clone(),
            run_ms: self.style.run_ms,
        };
        // Nothing to record before the post: HEC cannot be asked what it
        // holds, so a step is at least once.
        super::unplaced(Parts::hec(self.style, envelope), rows, (), "HEC events")
    }

    async fn write(&self, p: Prepared<()>) -> Result<bool> {
        let mut acks = Vec::new();
        for batch in batches(&p.bytes) {
            let answer = self
                .post_retried(
                    &self.settings.endpoint.path,
                    Bytes::copy_from_slice(batch),
                    RETRY_FOR,
                )
                .await?;
            if answer.status != 200 || answer.code.unwrap_or(0) != 0 {
                return Err(self.refused(&answer));
            }
            crate::testhooks::crash_at("hec-after-post");
            if self.settings.ack.is_some() {
                let id = answer.body["ackId"].as_u64().with_context(|| {
                    format!(
                        "HEC at {} accepted a batch without an ackId: indexer acknowledgement is off for the token \
                         from {} (turn it on, or drop --hec-ack)",
                        self.settings.endpoint.shown(),
                        self.settings.token.source
                    )
                })?;
                acks.push(id);
            }
        }
        if let Some(timeout) = self.settings.ack {
            self.wait_for_acks(acks, timeout).await?;
        }
        Ok(true)
    }

    async fn claim_or_find(&self, pending: &Pending) -> Result<Found> {
        Err(super::pending_elsewhere(pending, "to HEC"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_https_with_the_event_path() {
        let e = Endpoint::parse("https://splunk.example.com:8088").unwrap();
        assert_eq!(
            e.shown(),
            "https://splunk.example.com:8088/services/collector/event"
        );
        let e = Endpoint::parse("https://h:8088/services/collector/event/").unwrap();
        assert_eq!(e.path, "/services/collector/event");
        for bad in [
            "http://h:8088",
            "https://u:p@h:8088",
            "https://h?token=x",
            "ftp://h",
            "nonsense",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn batches_keep_lines_whole_and_under_the_limit() {
        let line = vec![b'x'; 1000];
        let mut lines = Vec::new();
        for _ in 0..1200 {
            lines.extend_from_slice(&line);
            lines.push(b'\n');
        }
        let big = vec![b'y'; BATCH_BYTES + 10];
        lines.extend_from_slice(&big);
        lines.push(b'\n');
        let b = batches(&lines);
        assert_eq!(b.concat(), lines);
        assert!(b.iter().all(|b| b.ends_with(b"\n")));
        assert!(b[..b.len() - 1].iter().all(|b| b.len() <= BATCH_BYTES));
        assert_eq!(b.last().unwrap().len(), BATCH_BYTES + 11);
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn channels_are_guids() {
        let c = channel();
        let re = regex::Regex::new(
            "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
        )
        .unwrap();
        assert!(re.is_match(&c), "{c}");
        assert_ne!(channel(), c);
    }
}
