//! A parser for the subset of PromQL that Tributary evaluates, and parsers
//! for the parameters of the Prometheus HTTP API (`/api/v1/query`,
//! `/api/v1/query_range`), so that Grafana and other Prometheus clients can
//! read Tributary's series.
//!
//! The crate is pure: no I/O, no async, no evaluation. [`parse`] turns a
//! query into a type-checked [`Expr`]; evaluating it against the store is the
//! HTTP layer's job.
//!
//! ```
//! use tributary_promql::{AggOp, Expr, parse};
//!
//! let e = parse(r#"sum by (fleet) (avg_over_time(temp{site=~"a|b"}[5m])) * 2"#)?;
//! let Expr::Binary { lhs, .. } = &e else { unreachable!() };
//! assert!(matches!(**lhs, Expr::Aggregate { op: AggOp::Sum, .. }));
//! assert_eq!(parse("1+1")?.to_string(), "1 + 1"); // Grafana's health check
//! # Ok::<(), tributary_promql::Error>(())
//! ```
//!
//! # The supported subset
//!
//! * **Numbers**: `1`, `1.5`, `.5`, `1e3`, `0x1f`, `Inf`, `NaN` (any case),
//!   and negative ones through unary minus (`-2`).
//! * **Instant vector selectors**: `metric`, `metric{label="v"}`,
//!   `{__name__="metric", …}`, with the matchers `=`, `!=`, `=~` and `!~`.
//!   Label values are quoted in `"…"` or `'…'` (Go escapes: `\"`, `\\`,
//!   `\n`, `\t`, `\xHH`, `\uXXXX`, …; `\'` and `\"` are accepted in both) or
//!   in backticks (raw). A trailing comma is allowed. Regexes are RE2-like
//!   (the `regex` crate), fully anchored, and `.` matches a newline, as in
//!   Prometheus 3. A selector needs a metric name or a matcher that does not
//!   match the empty string. An absent label matches as the empty string.
//! * **Range functions**, each over exactly one range vector selector
//!   `selector[range]`: `avg_over_time`, `min_over_time`, `max_over_time`,
//!   `sum_over_time`, `count_over_time`, `last_over_time`, `rate`,
//!   `increase`. Ranges are Prometheus durations (`ms s m h d w y`,
//!   compound `1h30m`), greater than zero.
//! * **Aggregations** `sum`, `avg`, `min`, `max`, `count`, with an optional
//!   `by (labels)` before or after the argument: `sum by (fleet) (x)`,
//!   `sum(x) by (fleet)`.
//! * **Arithmetic** `+ - * / % ^` with Prometheus' precedence (`^`
//!   right-associative and tightest, then unary minus, then `* / %`, then
//!   `+ -`) and parentheses, between two scalars or a vector and a scalar
//!   (either side).
//! * `# comments` to the end of a line.
//!
//! # What is refused
//!
//! Valid PromQL outside the subset is refused with
//! [`Error::Unsupported`], whose message names the part:
//!
//! * any other function (`unsupported function "histogram_quantile"`);
//!   an unknown name is a parse error (`unknown function "foo"`);
//! * the aggregations `topk`, `bottomk`, `quantile`, `stddev`, `stdvar`,
//!   `count_values`, `group`, `limitk`, `limit_ratio`
//!   (`unsupported aggregation "topk"`) and `without (…)`
//!   (`unsupported: "without"`);
//! * comparison operators, `and`/`or`/`unless`, `atan2`
//!   (`unsupported operator ">"`), the `bool` modifier and vector matching
//!   `on`/`ignoring`/`group_left`/`group_right`;
//! * arithmetic between two vectors
//!   (`unsupported: arithmetic between two vectors`);
//! * `offset`, `@` and subqueries `x[5m:1m]`;
//! * a range vector as the whole query (`x[5m]`).
//!
//! Also not accepted: quoted metric or label names (`{"my.metric"}`,
//! Prometheus 3), durations as numbers in expressions, and metric names
//! that are PromQL keywords (`sum`, `by`, `offset`, `inf`, …).
//!
//! # Limits
//!
//! Queries longer than [`MAX_QUERY_LEN`] bytes, nested deeper than
//! [`MAX_DEPTH`] (parentheses, calls, operators: this includes a chain of
//! more than 64 `+`), with more than [`MAX_REGEX_MATCHERS`] regex matchers
//! or with a regex beyond [`REGEX_SIZE_LIMIT`] are refused. [`parse`] never panics and its recursion is bounded, whatever
//! the input.
//!
//! # HTTP API parameters
//!
//! [`parse_time`] (`time`, `start`, `end`: Unix seconds or RFC 3339, to
//! nanoseconds), [`parse_duration_param`] (`step`, `timeout`: seconds or a
//! duration), [`format_value`] (sample values as strings in JSON), and
//! [`sanitize_metric_name`] / [`sanitize_label_name`] (Tributary names to
//! Prometheus ones).

mod ast;
mod error;
mod lexer;
mod params;
mod parser;

pub use ast::{
    AggOp, BinOp, Expr, MatchOp, Matcher, REGEX_SIZE_LIMIT, RangeFunc, Selector, ValueType,
};
pub use error::Error;
pub use params::{
    format_duration, format_value, parse_duration, parse_duration_param, parse_time,
    sanitize_label_name, sanitize_metric_name,
};
pub use parser::{MAX_DEPTH, MAX_QUERY_LEN, MAX_REGEX_MATCHERS, parse};
