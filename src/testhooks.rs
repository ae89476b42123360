//! Hooks the crash and clock tests drive, compiled in only with the
//! `test-hooks` cargo feature (which `tests/run` enables). The shipped
//! binary has none of them: every function here is a no-op without it.
//!
//! - `KUBEANON_FAULT=<point>` aborts the process at that point of a
//!   delivery, as a crash or `kill -9` would: `after-pending` (journal
//!   written, nothing appended), `mid-append` (half the bytes appended),
//!   `after-output` (rows out, checkpoint not yet advanced).
//!   `KUBEANON_FAULT=slow-delivery` pauses 40 ms between those steps so
//!   that a test killing the process at random moments lands inside them.
//! - `KUBEANON_TEST_NOW=<RFC 3339>` is the time the run takes as now (a
//!   host clock ahead or behind, without waiting).
//! - `KUBEANON_TEST_MAX_SEEN=<N>` caps the dedup set at N ids instead of
//!   `checkpoint::MAX_SEEN`, so that a test reaches the cap with a few
//!   events.
//! - `KUBEANON_TEST_ROLE_SECONDS=<N>` asks STS for assumed-role sessions of
//!   N seconds (AWS's minimum is 900; emulators take less), so that a test
//!   sees credentials expire and renew within one run.

/// Does `KUBEANON_FAULT` name this point? (Callers abort on `true`.)
pub fn fault_point(point: &str) -> bool {
    cfg!(feature = "test-hooks") && std::env::var_os("KUBEANON_FAULT").is_some_and(|v| v == point)
}

/// Aborts the process when `KUBEANON_FAULT` names this point.
pub fn crash_at(point: &str) {
    if fault_point(point) {
        std::process::abort();
    }
}

/// Pauses between the steps of a delivery under `slow-delivery`.
pub fn pause() {
    if fault_point("slow-delivery") {
        std::thread::sleep(std::time::Duration::from_millis(40));
    }
}

/// Now, in ms since the epoch: the system clock, or `KUBEANON_TEST_NOW`.
pub fn now_ms() -> i64 {
    if cfg!(feature = "test-hooks")
        && let Some(t) = std::env::var_os("KUBEANON_TEST_NOW")
        && let Some(t) = t.to_str()
        && let Ok(t) = chrono::DateTime::parse_from_rfc3339(t)
    {
        return t.timestamp_millis();
    }
    chrono::Utc::now().timestamp_millis()
}

/// The assumed-role session length `KUBEANON_TEST_ROLE_SECONDS` asks for.
pub fn role_session() -> Option<std::time::Duration> {
    if !cfg!(feature = "test-hooks") {
        return None;
    }
    let secs = std::env::var("KUBEANON_TEST_ROLE_SECONDS").ok()?;
    secs.parse().ok().map(std::time::Duration::from_secs)
}

/// The dedup cap `KUBEANON_TEST_MAX_SEEN` asks for.
pub fn max_seen() -> Option<usize> {
    if !cfg!(feature = "test-hooks") {
        return None;
    }
    std::env::var("KUBEANON_TEST_MAX_SEEN").ok()?.parse().ok()
}
