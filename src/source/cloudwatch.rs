//! CloudWatch Logs source.
