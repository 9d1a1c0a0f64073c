//! Errors: what a handler's failure means for the record, and the crate's own errors.
//!
//! A handler does not say *what* went wrong so much as *what to do about it*
//! ([`ErrorKind`]); the service's [`Recoverability`](crate::Recoverability) policy,
//! applied by [`decide`](crate::decide), turns that into a retry, a park or a dead letter. The crate's [`Error`] is for the environment: the
//! transport, the store, the configuration.

use std::fmt;

use crate::contract::DecodeError;

/// What the runtime should do about a failed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Might work if tried again soon (a timeout, an unavailable dependency): retry with
    /// exponential backoff, a bounded number of times.
    Transient,
    /// Will never work (an undecodable record, a broken invariant): dead-letter at once,
    /// so one bad record does not block its key.
    Permanent,
    /// Cannot work *yet* (the table has not seen the customer this order refers to): park
    /// the record and its key, try again later, and let other keys go on meanwhile.
    NotYet,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::NotYet => "not yet",
        })
    }
}

/// A handler's failure: what to do about it, and a message for logs and dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// Decides between retry, dead letter and park.
    kind: ErrorKind,
    /// Shown in logs and carried in the dead letter's headers.
    message: String,
}

impl HandlerError {
    /// A failure worth retrying soon.
    pub fn transient(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Transient, message)
    }

    /// A failure no retry will fix.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }

    /// A failure that waits on something still to come.
    pub fn not_yet(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotYet, message)
    }

    /// A failure of the given kind.
    pub fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string(),
        }
    }

    /// What to do about it.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.kind, self.message)
    }
}

impl std::error::Error for HandlerError {}

/// A record that does not decode never will: permanent, so it goes to the dead letters
/// instead of looping.
impl From<DecodeError> for HandlerError {
    fn from(error: DecodeError) -> Self {
        Self::permanent(error)
    }
}

/// What can go wrong in the toolkit itself, as opposed to in a handler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport (embedded log or Kafka client) failed.
    #[error("transport: {0}")]
    Transport(String),
    /// A table's store failed.
    #[error("store: {0}")]
    Store(String),
    /// The configuration is invalid; the message names the setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A value could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The service is shutting down and refuses new work.
    #[error("shutting down")]
    Shutdown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_set_the_kind_and_keep_the_message() {
        let cases = [
            (HandlerError::transient("timeout"), ErrorKind::Transient),
            (HandlerError::permanent("bad"), ErrorKind::Permanent),
            (HandlerError::not_yet("no customer"), ErrorKind::NotYet),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind);
        }
        assert_eq!(
            HandlerError::not_yet(format_args!("customer {}", 7)).message(),
            "customer 7"
        );
    }

    #[test]
    fn display_leads_with_the_kind() {
        assert_eq!(
            HandlerError::transient("timeout").to_string(),
            "transient error: timeout"
        );
        assert_eq!(
            HandlerError::permanent("bad").to_string(),
            "permanent error: bad"
        );
        assert_eq!(
            HandlerError::not_yet("wait").to_string(),
            "not yet error: wait"
        );
    }

    #[test]
    fn accepts_any_displayable_error() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "db timed out");
        let error = HandlerError::transient(&io);
        assert_eq!(error.message(), "db timed out");
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(error);
        assert!(boxed.to_string().contains("db timed out"));
    }

    #[test]
    fn a_decode_error_is_permanent() {
        let error =
            HandlerError::from(DecodeError::new("orderCreated", "expected value at line 1"));
        assert_eq!(error.kind(), ErrorKind::Permanent);
        assert_eq!(
            error.message(),
            "cannot decode orderCreated: expected value at line 1"
        );
    }

    #[test]
    fn crate_errors_display_and_convert() {
        assert_eq!(
            Error::Transport("down".into()).to_string(),
            "transport: down"
        );
        assert_eq!(Error::Store("full".into()).to_string(), "store: full");
        assert_eq!(
            Error::Config("retries".into()).to_string(),
            "invalid configuration: retries"
        );
        assert_eq!(Error::Shutdown.to_string(), "shutting down");
        let decode: Error = DecodeError::new("t", "m").into();
        assert_eq!(decode.to_string(), "cannot decode t: m");
    }

    #[test]
    fn errors_cross_threads() {
        fn assert_send_sync_static<T: Send + Sync + 'static>() {}
        assert_send_sync_static::<Error>();
        assert_send_sync_static::<HandlerError>();
    }
}
