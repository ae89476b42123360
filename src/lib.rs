//! kubeanon: find anonymous (unauthenticated) requests to a Kubernetes API
//! server in its audit log.
//!
//! The layout follows the data: [`source`]s (files, CloudWatch Logs) hand
//! raw records to the shared [`detect`] core, which matches, fills, groups
//! and counts; [`output`] formats write the findings; [`deliver`] takes a
//! poll's rows to their target step by step and only then advances the
//! [`checkpoint`], which keeps a scheduled poller's place. [`cli`] turns
//! flags into configuration and [`commands`] wires the pieces together for
//! each subcommand. [`testhooks`] is empty unless the tests' cargo feature
//! is on.

// Untrusted input everywhere: no `unsafe` here; SIMD comes from crates
// that wrap it (safe_arch, simdutf8, memchr).
#![forbid(unsafe_code)]

pub mod audit;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod deliver;
pub mod detect;
pub mod exit;
pub mod fleet;
pub mod output;
pub mod source;
pub mod state;
pub mod testhooks;
