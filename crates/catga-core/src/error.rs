//! Reporting errors with their causes.
//!
//! Error types keep their causes as `#[source]` fields and say only their own
//! part in `Display`; [`Chain`] prints the whole story on one line, for logs and
//! dead-letter reasons.

use std::{error::Error, fmt};

/// Displays an error followed by each of its causes: `outer: inner: root`.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(inner) = cause {
            write!(f, ": {inner}")?;
            cause = inner.source();
        }
        Ok(())
    }
}

/// A cause kept as it was, whatever its type.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_prints_every_cause() {
        let err = Outer(std::io::Error::other("root"));
        assert_eq!(Chain(&err).to_string(), "outer: root");
    }
}
