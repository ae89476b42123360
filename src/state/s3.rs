//! One S3 bucket and prefix, and the three moves everything else is built
//! from: read an object with its ETag, write it only if it is absent
//! (`If-None-Match: *`), write or delete it only if it is unchanged
//! (`If-Match: <ETag>`).
//!
//! A conditional write that fails because another writer got there first
//! (412 Precondition Failed; 404 for `If-Match` on an object deleted since;
//! 409 ConditionalRequestConflict when the other write was in flight and the
//! object no longer matches) is a [`LostRace`], never an overwrite. The
//! SDK retries transient failures, so an attempt that succeeded but whose
//! answer was lost is retried and then fails its own condition: before
//! calling a race lost, the object is read back, and if it holds exactly the
//! bytes this write meant to put, the write succeeded.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;

use super::S3Url;
use crate::source::advice;
use crate::source::cloudwatch::{self, ClientSettings, ServerClock};

/// Attempts per S3 request, the first included (the SDK's standard retry:
/// 5xx, throttling, timeouts, dropped connections).
pub const ATTEMPTS: u32 = 3;

/// The SDK's first backoff; it doubles (with jitter) on each retry, so the
/// waits between [`ATTEMPTS`] attempts add up to less than a second.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);

/// Largest object [`Bucket::put`] reads back, and the state and lease
/// readers accept: far above any state kubeanon writes (its dedup sets are
/// capped), far below what would hurt a small pod.
pub const MAX_OBJECT: u64 = 64 << 20;

/// Times a write is tried again after a 409 ConditionalRequestConflict
/// while the object still matches its condition.
const CONFLICT_RETRIES: u32 = 4;

/// An object's entity tag, as S3 returned it (quotes included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ETag(pub String);

impl std::fmt::Display for ETag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An object's bytes and the ETag they were read with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub body: Vec<u8>,
    pub etag: ETag,
}

/// A conditional write lost its race: another writer created, changed or
/// deleted the object since it was read. Nothing was overwritten. `current`
/// is the object as it is now (None: it does not exist), so the caller can
/// re-read without another request.
#[derive(Debug)]
pub struct LostRace {
    pub url: String,
    pub current: Option<Versioned>,
}

impl std::fmt::Display for LostRace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} was {} by another writer since this run read it; nothing was overwritten",
            self.url,
            if self.current.is_some() {
                "changed"
            } else {
                "deleted"
            }
        )
    }
}

impl std::error::Error for LostRace {}

/// Why a conditional write did not happen.
#[derive(Debug)]
pub enum CasError {
    /// Another writer got there first.
    LostRace(LostRace),
    /// Anything else (network, permissions, the bucket): the write may not
    /// have happened; the message says what to do.
    Failed(anyhow::Error),
}

impl std::fmt::Display for CasError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CasError::LostRace(l) => l.fmt(f),
            CasError::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for CasError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CasError::LostRace(l) => Some(l),
            CasError::Failed(e) => Some(e.as_ref()),
        }
    }
}

impl From<anyhow::Error> for CasError {
    fn from(e: anyhow::Error) -> Self {
        CasError::Failed(e)
    }
}

/// What a conditional write requires of the object.
#[derive(Debug, Clone, Copy)]
pub enum Condition<'a> {
    /// It does not exist (`If-None-Match: *`).
    Absent,
    /// It is exactly the version read (`If-Match`).
    Is(&'a ETag),
}

/// A bucket and prefix, the client that reaches them, and S3's clock as
/// its responses tell it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Bucket {
    client: Client,
    url: S3Url,
    /// The bucket's region (HeadBucket's answer, else the configured one).
    region: String,
    /// Where the client connects, for messages.
    endpoint: String,
    clock: ServerClock,
    attempt_timeout: Duration,
}

/// The longest one S3 request can take with `attempt_timeout` per
/// attempt: every attempt, and a second for the backoff between them.
pub fn longest_request(attempt_timeout: Duration) -> Duration {
    attempt_timeout * ATTEMPTS + Duration::from_secs(1)
}

impl Bucket {
    /// A client from the standard credential chain with the settings
    /// CloudWatch's client uses (region, profile, `--endpoint-url` or
    /// `AWS_ENDPOINT_URL`), credentials checked before the first request;
    /// then as [`with_config`](Self::with_config).
    pub async fn connect(settings: &ClientSettings, url: S3Url) -> Result<Bucket> {
        let (config, _) = cloudwatch::sdk_config(settings).await?;
        cloudwatch::check_credentials(&config, settings).await?;
        Self::with_config(&config, settings.attempt_timeout, url).await
    }

    /// A client built from `config`: path-style addressing when an
    /// endpoint is set (emulators and VPC endpoints have no per-bucket DNS
    /// names), the SDK's standard retries, and the bucket's own region,
    /// which HeadBucket tells whatever region was asked and whether or not
    /// the caller may list the bucket. A bucket that does not exist fails
    /// here.
    pub async fn with_config(
        config: &aws_config::SdkConfig,
        attempt_timeout: Duration,
        url: S3Url,
    ) -> Result<Bucket> {
        let region = config.region().map(|r| r.to_string()).ok_or_else(|| {
            anyhow!("no AWS region: pass --region, or set AWS_REGION or a profile's region")
        })?;
        let clock = ServerClock::default();
        let build = |region: &str| {
            let mut b = aws_sdk_s3::config::Builder::from(config)
                .region(aws_sdk_s3::config::Region::new(region.to_string()))
                .retry_config(
                    RetryConfig::standard()
                        .with_max_attempts(ATTEMPTS)
                        .with_initial_backoff(INITIAL_BACKOFF),
                )
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(5))
                        .operation_attempt_timeout(attempt_timeout)
                        .build(),
                )
                .interceptor(clock.clone());
            if endpoint_override(config).is_some() {
                b = b.force_path_style(true);
            }
            Client::from_conf(b.build())
        };
        let endpoint = endpoint_override(config)
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let mut bucket = Bucket {
            client: build(&region),
            url,
            region: region.clone(),
            endpoint,
            clock: clock.clone(),
            attempt_timeout,
        };
        if let Some(home) = bucket.home_region().await?
            && home != region
        {
            tracing::debug!(bucket = %bucket.url.bucket, %home, asked = %region, "bucket is in another region");
            if endpoint_override(config).is_none() {
                bucket.endpoint = format!("https://s3.{home}.amazonaws.com");
            }
            bucket.client = build(&home);
            bucket.region = home;
        }
        Ok(bucket)
    }

    /// HeadBucket: the bucket's region (when S3 says), or why it cannot be
    /// used. A 403 is not fatal: a role that may list only its prefix is
    /// refused HeadBucket, and S3 still says the region.
    async fn home_region(&self) -> Result<Option<String>> {
        let err = match self
            .client
            .head_bucket()
            .bucket(&self.url.bucket)
            .send()
            .await
        {
            Ok(out) => return Ok(out.bucket_region().map(str::to_string)),
            Err(e) => e,
        };
        if let SdkError::ServiceError(ctx) = &err {
            let raw = ctx.raw();
            let region = raw.headers().get("x-amz-bucket-region").map(str::to_string);
            match raw.status().as_u16() {
                404 => bail!(
                    "S3 bucket {} does not exist (asked at {}); create it, or fix the s3:// URL",
                    self.url.bucket,
                    self.endpoint
                ),
                301 | 400 | 403 if region.is_some() => return Ok(region),
                403 => return Ok(None),
                _ => {}
            }
        }
        Err(self.describe("HeadBucket", "s3:ListBucket", None, &err))
    }

    pub fn url(&self) -> &S3Url {
        &self.url
    }

    /// The longest one request can take, retries and their waits included
    /// (a lease must leave a writer this long; see `lease`).
    pub fn longest_request(&self) -> Duration {
        longest_request(self.attempt_timeout)
    }

    /// The region the client signs for: the bucket's.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// S3's clock, as the `Date` header of its latest response told it.
    pub fn clock(&self) -> &ServerClock {
        &self.clock
    }

    /// S3's time now (ms since the epoch), estimated from this machine's
    /// clock and the offset the latest response showed. The `Date` header
    /// has whole seconds, so the estimate is up to about a second early,
    /// never late; this machine's clock alone when no response had one.
    pub fn server_now_ms(&self) -> i64 {
        crate::testhooks::now_ms() - self.clock.local_ahead_ms().unwrap_or(0)
    }

    /// `s3://bucket/key`, for messages.
    pub fn display(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.url.bucket)
    }

    /// Reads an object and its ETag; None when it does not exist. An
    /// object larger than `max_bytes` is an error (it is not one of ours).
    pub async fn read(&self, key: &str, max_bytes: u64) -> Result<Option<Versioned>> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.url.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Ok(None);
            }
            // Without s3:ListBucket on the key, S3 answers 403 for an
            // object that does not exist: ask the listing, which the
            // policy grants for the prefix, before calling it denied.
            Err(e) if status(&e) == Some(403) => {
                if self.listed(key).await? {
                    return Err(self.describe("GetObject", "s3:GetObject", Some(key), &e));
                }
                return Ok(None);
            }
            Err(e) => return Err(self.describe("GetObject", "s3:GetObject", Some(key), &e)),
        };
        let etag = ETag(
            out.e_tag()
                .ok_or_else(|| anyhow!("S3 returned {} without an ETag", self.display(key)))?
                .to_string(),
        );
        if out.content_length().is_some_and(|n| n as u64 > max_bytes) {
            bail!(
                "{} is larger than {max_bytes} bytes: not an object kubeanon wrote",
                self.display(key)
            );
        }
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| anyhow!("cannot read {}: {e}", self.display(key)))?
            .into_bytes()
            .to_vec();
        Ok(Some(Versioned { body, etag }))
    }

    /// Is `key` in the bucket's listing? (ListObjectsV2 with the key as
    /// the prefix.)
    async fn listed(&self, key: &str) -> Result<bool> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.url.bucket)
            .prefix(key)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| self.describe("ListObjectsV2", "s3:ListBucket", Some(key), &e))?;
        Ok(out.contents().iter().any(|o| o.key() == Some(key)))
    }

    /// Writes `body` to `key` if `cond` holds; returns the new ETag. On a
    /// failed condition the object is read back (up to [`MAX_OBJECT`]
    /// bytes): holding exactly `body`, the write is ours and succeeded.
    pub async fn put(
        &self,
        key: &str,
        body: &[u8],
        cond: Condition<'_>,
        extra: &PutExtra<'_>,
    ) -> Result<ETag, CasError> {
        let mut conflicts = 0;
        loop {
            let conflict = match self.send_put(key, body, cond, extra).await? {
                Ok(etag) => return Ok(etag),
                Err(Failed { conflict }) => conflict,
            };
            let current = self.read(key, MAX_OBJECT).await?;
            match &current {
                // Our own earlier attempt got there (its answer was lost).
                Some(v) if v.body == body => return Ok(v.etag.clone()),
                _ => {}
            }
            let still_matches = match (cond, &current) {
                (Condition::Absent, None) => true,
                (Condition::Is(want), Some(v)) => v.etag == *want,
                _ => false,
            };
            if conflict && still_matches && conflicts < CONFLICT_RETRIES {
                conflicts += 1;
                conflict_pause().await;
                continue;
            }
            return Err(CasError::LostRace(LostRace {
                url: self.display(key),
                current,
            }));
        }
    }

    /// Creates `key` with `body` if it does not exist: Some(ETag) when this
    /// call created it, None when it was already there (whoever wrote it;
    /// compare with [`metadata`](Self::metadata)). For objects too large to
    /// read back.
    pub async fn put_new(
        &self,
        key: &str,
        body: &[u8],
        extra: &PutExtra<'_>,
    ) -> Result<Option<ETag>> {
        let mut conflicts = 0;
        loop {
            match self.send_put(key, body, Condition::Absent, extra).await? {
                Ok(etag) => return Ok(Some(etag)),
                Err(Failed { conflict: true })
                    if conflicts < CONFLICT_RETRIES && self.metadata(key).await?.is_none() =>
                {
                    conflicts += 1;
                    conflict_pause().await;
                }
                Err(Failed { .. }) => return Ok(None),
            }
        }
    }

    /// One PutObject with its condition. The inner error is a failed
    /// condition (`conflict`: a 409, the other write was in flight).
    async fn send_put(
        &self,
        key: &str,
        body: &[u8],
        cond: Condition<'_>,
        extra: &PutExtra<'_>,
    ) -> Result<Result<ETag, Failed>> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.url.bucket)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .set_content_type(extra.content_type.map(str::to_string))
            .set_content_encoding(extra.content_encoding.map(str::to_string));
        for (k, v) in extra.metadata {
            req = req.metadata(*k, *v);
        }
        req = match cond {
            Condition::Absent => req.if_none_match("*"),
            Condition::Is(etag) => req.if_match(&etag.0),
        };
        let err = match req.send().await {
            Ok(out) => {
                let etag = out.e_tag().ok_or_else(|| {
                    anyhow!("S3 accepted {} but returned no ETag", self.display(key))
                })?;
                return Ok(Ok(ETag(etag.to_string())));
            }
            Err(e) => e,
        };
        let (code, http) = (err.code(), status(&err));
        let conflict = http == Some(409) || code == Some("ConditionalRequestConflict");
        let failed_condition = http == Some(412)
            || code == Some("PreconditionFailed")
            // If-Match on an object deleted since.
            || (matches!(cond, Condition::Is(_)) && (http == Some(404) || code == Some("NoSuchKey")));
        if conflict || failed_condition {
            tracing::debug!(key, code, conflict, "conditional PutObject refused");
            return Ok(Err(Failed { conflict }));
        }
        Err(self.describe("PutObject", "s3:PutObject", Some(key), &err))
    }

    /// Deletes `key` if it is still the version `etag` names. Ok(false)
    /// when it was changed or deleted since (nothing was deleted).
    pub async fn delete_if(&self, key: &str, etag: &ETag) -> Result<bool> {
        match self
            .client
            .delete_object()
            .bucket(&self.url.bucket)
            .key(key)
            .if_match(&etag.0)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(status(&e), Some(404 | 412))
                    || matches!(e.code(), Some("PreconditionFailed" | "NoSuchKey")) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.describe("DeleteObject", "s3:DeleteObject", Some(key), &e)),
        }
    }

    /// The object's user metadata (`x-amz-meta-*`, names lower case); None
    /// when it does not exist.
    pub async fn metadata(
        &self,
        key: &str,
    ) -> Result<Option<std::collections::HashMap<String, String>>> {
        match self
            .client
            .head_object()
            .bucket(&self.url.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.metadata().cloned().unwrap_or_default())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) if status(&e) == Some(403) => {
                if self.listed(key).await? {
                    return Err(self.describe("HeadObject", "s3:GetObject", Some(key), &e));
                }
                Ok(None)
            }
            Err(e) => Err(self.describe("HeadObject", "s3:GetObject", Some(key), &e)),
        }
    }

    /// An error message that says what to do about the common cases; the
    /// SDK's whole error goes to `-v`.
    fn describe<E>(
        &self,
        op: &str,
        action: &str,
        key: Option<&str>,
        err: &SdkError<E>,
    ) -> anyhow::Error
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
    {
        tracing::debug!(error = %DisplayErrorContext(err), op, "S3");
        let what = match key {
            Some(k) => self.display(k),
            None => format!("s3://{}", self.url.bucket),
        };
        if advice::is_connect_failure(err) {
            return anyhow!(
                "cannot connect to S3 at {} ({}): check --endpoint-url or AWS_ENDPOINT_URL, the network, DNS and any proxy",
                self.endpoint,
                advice::short(err)
            );
        }
        match (err.code(), status(err)) {
            (Some("NoSuchBucket"), _) => anyhow!(
                "S3 bucket {} does not exist (asked at {})",
                self.url.bucket,
                self.endpoint
            ),
            (Some("AccessDenied" | "AllAccessDisabled"), _) | (_, Some(403)) => anyhow!(
                "access denied: these credentials may not {action} on {what} (AWS said: {}); \
                 grant it as examples/deploy/iam-policy-s3.json does",
                advice::short(err)
            ),
            _ => anyhow!(
                "S3 {op} on {what} failed after up to {ATTEMPTS} attempts: {} (-v shows the whole error)",
                advice::short(err)
            ),
        }
    }
}

/// A conditional PutObject refused (412, 409, or 404 for If-Match).
struct Failed {
    conflict: bool,
}

/// A short random pause before trying again after a 409.
async fn conflict_pause() {
    tokio::time::sleep(Duration::from_millis(50 + fastrand::u64(0..200))).await;
}

/// What a write sends besides the bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct PutExtra<'a> {
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    /// `x-amz-meta-NAME: value` pairs.
    pub metadata: &'a [(&'a str, &'a str)],
}

/// The HTTP status of a service error.
fn status<E>(err: &SdkError<E>) -> Option<u16> {
    match err {
        SdkError::ServiceError(ctx) => Some(ctx.raw().status().as_u16()),
        _ => None,
    }
}

/// The endpoint every service of a run uses when one is set:
/// `--endpoint-url`, `AWS_ENDPOINT_URL` or a profile's `endpoint_url` (all
/// in the SDK config), or S3's own `AWS_ENDPOINT_URL_S3`.
fn endpoint_override(config: &aws_config::SdkConfig) -> Option<String> {
    config
        .endpoint_url()
        .map(str::to_string)
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
}
