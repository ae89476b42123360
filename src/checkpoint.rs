//! Checkpoint file.
