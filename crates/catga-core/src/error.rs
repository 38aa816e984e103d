//! Printing errors with their causes, and asking what caused them.
//!
//! Error types keep their causes as `#[source]` fields instead of folding
//! them into their message; [`chain`] prints the whole chain on one line
//! (zero-to-production's `error_chain_fmt`), and [`is_caused_by`] looks
//! through it for a cause of a given type (linkerd's `is_caused_by`).

use std::{error::Error, fmt};

/// An error and its causes, displayed as `outer: cause: root cause`. A cause
/// whose message its error already ends with (some libraries print their
/// source and also return it) is not printed twice.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

/// `err` with every cause behind it, for logs and start-up messages:
/// `tracing::error!(error = %chain(&err), ...)`.
pub fn chain<'a>(err: &'a (dyn Error + 'static)) -> Chain<'a> {
    Chain(err)
}

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut cause = self.0.source();
        while let Some(err) = cause {
            let message = err.to_string();
            if !shown.ends_with(&message) {
                write!(f, ": {message}")?;
            }
            shown = message;
            cause = err.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A cause kept as it was, whatever its type.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Whether `err`, or any error in its chain of causes, is an `E`.
pub fn is_caused_by<E: Error + 'static>(err: &(dyn Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err.is::<E>() {
            return true;
        }
        cause = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect")]
    struct Middle(#[source] std::io::Error);

    fn outer() -> Outer {
        Outer(Middle(std::io::Error::other("refused")))
    }

    #[test]
    fn the_chain_is_one_line_outermost_first() {
        assert_eq!(
            chain(&outer()).to_string(),
            "cannot start: cannot connect: refused"
        );
        assert_eq!(
            format!("{:?}", chain(&outer())),
            chain(&outer()).to_string()
        );
    }

    /// Prints its source in its own message, as some libraries do.
    #[derive(Debug, thiserror::Error)]
    #[error("cannot parse: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let err = Repeats(std::io::Error::other("bad digit"));
        assert_eq!(chain(&err).to_string(), "cannot parse: bad digit");
    }

    #[test]
    fn causes_are_found_at_any_depth() {
        let err = outer();
        assert!(is_caused_by::<std::io::Error>(&err));
        assert!(is_caused_by::<Middle>(&err));
        assert!(is_caused_by::<Outer>(&err));
        assert!(!is_caused_by::<std::fmt::Error>(&err));
    }
}
