//! Bounds on durations and sizes taken from input.
//!
//! Every duration or size a caller may choose (a task's timeout, its output
//! cap, an invite's TTL, a heartbeat interval, …) passes through one of these
//! at the boundary, so the values that reach the rest of the code are known
//! to be in range and arithmetic on them cannot overflow. A refusal names the
//! field and the accepted range.

use std::time::Duration;

use crate::time::{format_duration, parse_duration};

/// A value outside its accepted range, or one that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    #[error("{field} {input:?} is not a duration such as 30s, 10m, 2h or 1d")]
    NotADuration { field: &'static str, input: String },
    #[error("{field} {value} is more than the maximum of {max}")]
    TooLarge {
        field: &'static str,
        value: String,
        max: String,
    },
    #[error("{field} {value} is less than the minimum of {min}")]
    TooSmall {
        field: &'static str,
        value: String,
        min: String,
    },
}

/// The accepted range of a duration field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationLimit {
    pub field: &'static str,
    pub min: Duration,
    pub max: Duration,
}

impl DurationLimit {
    pub const fn new(field: &'static str, min: Duration, max: Duration) -> Self {
        Self { field, min, max }
    }

    /// Parses `input` (e.g. `30s`) and checks it is in range.
    pub fn parse(&self, input: &str) -> Result<Duration, LimitError> {
        let d = parse_duration(input).map_err(|_| LimitError::NotADuration {
            field: self.field,
            input: input.to_owned(),
        })?;
        self.check(d)
    }

    /// Checks a duration is in range.
    pub fn check(&self, d: Duration) -> Result<Duration, LimitError> {
        if d > self.max {
            return Err(LimitError::TooLarge {
                field: self.field,
                value: format_duration(d),
                max: format_duration(self.max),
            });
        }
        if d < self.min {
            return Err(LimitError::TooSmall {
                field: self.field,
                value: format_duration(d),
                min: format_duration(self.min),
            });
        }
        Ok(d)
    }

    /// Checks a whole number of seconds is in range (no overflow on the way).
    pub fn check_secs(&self, secs: u64) -> Result<Duration, LimitError> {
        self.check(Duration::from_secs(secs))
    }

    /// Checks a whole number of milliseconds is in range.
    pub fn check_millis(&self, ms: u64) -> Result<Duration, LimitError> {
        self.check(Duration::from_millis(ms))
    }
}

/// Largest command a task may have, in bytes: its argv and environment as
/// [`command_bytes`] counts them. The CLI refuses more before sending, the
/// hub before journaling, the node's sandbox before spawning.
pub const MAX_COMMAND_BYTES: usize = 1 << 20;

/// The size of a command as [`MAX_COMMAND_BYTES`] bounds it: each argument
/// and each `NAME=VALUE` with its terminating NUL, as `execve` takes them.
pub fn command_bytes<'a>(
    argv: impl IntoIterator<Item = &'a str>,
    env: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> usize {
    argv.into_iter().map(|a| a.len() + 1).sum::<usize>()
        + env
            .into_iter()
            .map(|(k, v)| k.len() + v.len() + 2)
            .sum::<usize>()
}

/// The accepted range of a size or count field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeLimit {
    pub field: &'static str,
    pub min: u64,
    pub max: u64,
}

impl SizeLimit {
    pub const fn new(field: &'static str, min: u64, max: u64) -> Self {
        Self { field, min, max }
    }

    pub fn check(&self, v: u64) -> Result<u64, LimitError> {
        if v > self.max {
            return Err(LimitError::TooLarge {
                field: self.field,
                value: v.to_string(),
                max: self.max.to_string(),
            });
        }
        if v < self.min {
            return Err(LimitError::TooSmall {
                field: self.field,
                value: v.to_string(),
                min: self.min.to_string(),
            });
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: DurationLimit = DurationLimit::new(
        "timeout",
        Duration::from_secs(1),
        Duration::from_secs(7 * 86400),
    );

    #[test]
    fn durations_out_of_range_are_refused_with_the_field_and_the_bound() {
        assert_eq!(L.parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(L.parse("7d").unwrap(), Duration::from_secs(7 * 86400));
        let e = L.parse("18446744073709551615s").unwrap_err();
        assert!(
            matches!(
                e,
                LimitError::TooLarge {
                    field: "timeout",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("maximum of 7days"), "{e}");
        let e = L.parse("7d1s").unwrap_err();
        assert!(matches!(e, LimitError::TooLarge { .. }), "{e}");
        let e = L.parse("500ms").unwrap_err();
        assert!(matches!(e, LimitError::TooSmall { .. }), "{e}");
        let e = L.parse("soon").unwrap_err();
        assert!(e.to_string().starts_with("timeout \"soon\""), "{e}");
        assert!(L.check_secs(u64::MAX).is_err());
        assert!(L.check_millis(u64::MAX).is_err());
    }

    #[test]
    fn sizes_out_of_range_are_refused() {
        let s = SizeLimit::new("output_cap", 0, 1 << 30);
        assert_eq!(s.check(1 << 30).unwrap(), 1 << 30);
        let e = s.check(8 << 30).unwrap_err();
        assert_eq!(
            e.to_string(),
            "output_cap 8589934592 is more than the maximum of 1073741824"
        );
    }
}
