//! The one error of the store seam. It says what the caller can do about it ([`Fault`]) and
//! carries what the backend reported as its [`source`](std::error::Error::source); its own
//! message says what was being done. Backends make it from their errors in their own modules,
//! so this type names none of them.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// What a failed store call lets the caller do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Try the same call again, after a pause: a timeout, throttling, a busy or full
    /// database, a lost connection.
    Retry,
    /// Another writer owns what this call was to write (another process holds the source):
    /// stop writing it.
    Fenced,
    /// The input can never be stored as it is (too large, invalid for the store): retrying
    /// the same rows cannot succeed; the rows must go elsewhere (a dead letter).
    BadInput,
    /// The store is not there or not usable as it is (missing, of another layout, corrupt, no
    /// access): a person must act.
    Down,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Retry => "retry",
            Fault::Fenced => "fenced",
            Fault::BadInput => "bad_input",
            Fault::Down => "down",
        }
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failed store call: what was being done, what the caller can do, and the backend's error.
#[derive(Debug)]
pub struct StoreError {
    fault: Fault,
    doing: Cow<'static, str>,
    source: Option<Source>,
}

impl StoreError {
    /// An error of our own making, with no backend error behind it.
    pub fn new(fault: Fault, doing: impl Into<Cow<'static, str>>) -> Self {
        StoreError {
            fault,
            doing: doing.into(),
            source: None,
        }
    }

    /// An error the backend reported while doing `doing`.
    pub fn caused(
        fault: Fault,
        doing: impl Into<Cow<'static, str>>,
        source: impl Into<Source>,
    ) -> Self {
        StoreError {
            fault,
            doing: doing.into(),
            source: Some(source.into()),
        }
    }

    /// A stored value that cannot be read back.
    pub fn corrupt(what: impl fmt::Display) -> Self {
        StoreError::new(Fault::Down, format!("stored value is corrupt: {what}"))
    }

    /// A call that did not finish within `after`.
    pub fn timeout(op: &'static str, after: Duration) -> Self {
        StoreError::new(
            Fault::Retry,
            format!("{op} did not finish within {after:?}"),
        )
    }

    pub fn fault(&self) -> Fault {
        self.fault
    }

    /// The message with every cause after it, for logs: `writing a batch: database is locked`.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(cause) = next {
            out.push_str(": ");
            out.push_str(&cause.to_string());
            next = cause.source();
        }
        out
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.doing)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_carries_the_backends_error_as_the_source() {
        let io = std::io::Error::other("disk on fire");
        let e = StoreError::caused(Fault::Retry, "writing a batch", io);
        assert_eq!(e.to_string(), "writing a batch");
        assert_eq!(e.report(), "writing a batch: disk on fire");
        assert_eq!(e.fault(), Fault::Retry);
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(StoreError::corrupt("x").fault(), Fault::Down);
    }
}
