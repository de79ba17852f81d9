//! The one error type of the crate.

/// Why a query or an HTTP API parameter was refused.
///
/// Every variant maps to Prometheus' `errorType: "bad_data"`; the Display
/// text is meant to be shown to the user as the `error` field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The query is not valid PromQL, or is ill-typed (`rate(x)`, `sum(1)`).
    ///
    /// Displays as `parse error at char 5: unexpected "}"`. `pos` is the
    /// 1-based position, counted in characters (not bytes), of the offending
    /// token; it is `None` when the error has no single place (a query that is
    /// too long, or an error from [`Expr::check`](crate::Expr::check) on a
    /// tree built by hand).
    #[error("parse error{}: {msg}", at(.pos))]
    Parse {
        /// 1-based character position in the query, when known.
        pos: Option<usize>,
        /// What is wrong.
        msg: String,
    },
    /// Valid PromQL that Tributary does not evaluate. The message names the
    /// unsupported part, e.g. `unsupported function "histogram_quantile"` or
    /// `unsupported: offset modifier`, and is displayed as is.
    #[error("{0}")]
    Unsupported(String),
    /// An HTTP API parameter (`time`, `start`, `end`, `step`, `timeout`) could
    /// not be parsed: `invalid parameter "start": cannot parse "abc" to a
    /// valid timestamp`.
    #[error("invalid parameter {name:?}: {msg}")]
    InvalidParameter {
        /// The parameter's name, as given by the caller.
        name: String,
        /// What is wrong with its value.
        msg: String,
    },
}

impl Error {
    /// Whether the query was valid PromQL outside the supported subset.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Error::Unsupported(_))
    }

    /// A parse error without a position.
    pub(crate) fn parse(msg: impl Into<String>) -> Self {
        Error::Parse {
            pos: None,
            msg: msg.into(),
        }
    }

    /// Gives a position-less parse error the position `pos`.
    pub(crate) fn or_at(self, pos: usize) -> Self {
        match self {
            Error::Parse { pos: None, msg } => Error::Parse {
                pos: Some(pos),
                msg,
            },
            other => other,
        }
    }

    pub(crate) fn unsupported(msg: impl Into<String>) -> Self {
        Error::Unsupported(msg.into())
    }
}

fn at(pos: &Option<usize>) -> String {
    pos.map(|p| format!(" at char {p}")).unwrap_or_default()
}
