//! Unit tests for the detection rule, fill, grouping and counting.

use super::*;
