//! Sources: where records come from. Each hands raw records to the shared
//! [`Detector`](crate::detect::Detector) and knows nothing of the rule.

pub mod advice;
pub mod cloudwatch;
pub mod file;
pub mod insights;
