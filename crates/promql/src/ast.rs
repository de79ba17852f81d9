//! The syntax tree of a parsed query.

use std::fmt;
use std::time::Duration;

use regex::{Regex, RegexBuilder};

use crate::Error;
use crate::params::format_duration;

/// Size limit, in bytes, of a regex matcher's compiled program and of its
/// lazy DFA cache. Larger patterns (`(a{1000}){1000}`) are refused.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The type of an expression's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// A single number: `1`, `2 * 3`.
    Scalar,
    /// A set of series with one sample each at the evaluation time.
    Vector,
}

/// A parsed expression. [`crate::parse`] only returns trees that pass
/// [`Expr::check`].
///
/// Parentheses are not kept: the shape of the tree carries the grouping.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A number literal. A unary minus written directly on a literal is
    /// folded into it: `-2` is `Number(-2.0)`.
    Number(f64),
    /// An instant vector selector: `metric{label="v"}`.
    Selector(Selector),
    /// `func(selector[range])`.
    RangeFunction {
        /// The function.
        func: RangeFunc,
        /// The series it reads.
        selector: Selector,
        /// How far back from the evaluation time it looks (> 0, whole
        /// milliseconds).
        range: Duration,
    },
    /// `op by (labels) (expr)`. An empty `by` aggregates all series into one.
    Aggregate {
        /// The aggregation.
        op: AggOp,
        /// The labels kept, in the order written; the output series carry
        /// only these (never `__name__` unless listed).
        by: Vec<String>,
        /// The aggregated expression, a vector.
        expr: Box<Expr>,
    },
    /// `lhs op rhs`: scalar op scalar, vector op scalar or scalar op vector.
    Binary {
        /// The operator.
        op: BinOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// Unary minus on anything but a number literal: `-metric`.
    Neg(Box<Expr>),
}

impl Expr {
    /// The type of the expression's value: a binary expression is a vector
    /// when either side is.
    pub fn value_type(&self) -> ValueType {
        match self {
            Expr::Number(_) => ValueType::Scalar,
            Expr::Selector(_) | Expr::RangeFunction { .. } | Expr::Aggregate { .. } => {
                ValueType::Vector
            }
            Expr::Binary { lhs, rhs, .. } => {
                if lhs.is_scalar() && rhs.is_scalar() {
                    ValueType::Scalar
                } else {
                    ValueType::Vector
                }
            }
            Expr::Neg(e) => e.value_type(),
        }
    }

    /// Whether the expression's value is a scalar.
    pub fn is_scalar(&self) -> bool {
        self.value_type() == ValueType::Scalar
    }

    /// Checks the whole tree: selectors are valid (see [`Selector::check`]),
    /// aggregations aggregate vectors, and no binary expression has a vector
    /// on both sides (`Error::Unsupported("unsupported: arithmetic between
    /// two vectors")`).
    pub fn check(&self) -> Result<(), Error> {
        match self {
            Expr::Aggregate { expr, .. } | Expr::Neg(expr) => expr.check()?,
            Expr::Binary { lhs, rhs, .. } => {
                lhs.check()?;
                rhs.check()?;
            }
            Expr::Number(_) | Expr::Selector(_) | Expr::RangeFunction { .. } => {}
        }
        self.check_node()
    }

    /// [`Expr::check`] of this node only, its children assumed checked.
    pub(crate) fn check_node(&self) -> Result<(), Error> {
        match self {
            Expr::Selector(s) | Expr::RangeFunction { selector: s, .. } => s.check(),
            Expr::Aggregate { op, expr, .. } if expr.is_scalar() => Err(Error::parse(format!(
                "expected type instant vector in aggregation expression {:?}, got scalar",
                op.name()
            ))),
            Expr::Binary { lhs, rhs, .. } if !lhs.is_scalar() && !rhs.is_scalar() => Err(
                Error::unsupported("unsupported: arithmetic between two vectors"),
            ),
            _ => Ok(()),
        }
    }

    /// The number of nodes on the longest path from this node to a leaf.
    pub(crate) fn depth(&self) -> usize {
        match self {
            Expr::Number(_) | Expr::Selector(_) | Expr::RangeFunction { .. } => 1,
            Expr::Aggregate { expr, .. } | Expr::Neg(expr) => 1 + expr.depth(),
            Expr::Binary { lhs, rhs, .. } => 1 + lhs.depth().max(rhs.depth()),
        }
    }
}

/// Prints the expression as PromQL that parses back to the same tree
/// (binary operands are parenthesized where precedence requires, negative
/// literals and negations always).
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Number(n) if n.is_nan() => f.write_str("NaN"),
            Expr::Number(n) if n.is_infinite() => {
                f.write_str(if *n > 0.0 { "Inf" } else { "-Inf" })
            }
            Expr::Number(n) => write!(f, "{n}"),
            Expr::Selector(s) => s.fmt(f),
            Expr::RangeFunction {
                func,
                selector,
                range,
            } => {
                write!(f, "{func}({selector}[{}])", format_duration(*range))
            }
            Expr::Aggregate { op, by, expr } if by.is_empty() => write!(f, "{op}({expr})"),
            Expr::Aggregate { op, by, expr } => write!(f, "{op} by ({}) ({expr})", by.join(", ")),
            Expr::Binary { op, lhs, rhs } => {
                // `^` is right-associative, the others left-associative.
                let (lmin, rmin) = if *op == BinOp::Pow {
                    (op.precedence() + 1, op.precedence())
                } else {
                    (op.precedence(), op.precedence() + 1)
                };
                write!(f, "{} {op} {}", Operand(lhs, lmin), Operand(rhs, rmin))
            }
            Expr::Neg(e) => write!(f, "-{}", Operand(e, u8::MAX)),
        }
    }
}

/// An operand printed in parentheses unless it binds at least as tightly as
/// `min_prec`.
struct Operand<'a>(&'a Expr, u8);

impl fmt::Display for Operand<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parens = match self.0 {
            Expr::Binary { op, .. } => op.precedence() < self.1,
            Expr::Neg(_) => true,
            Expr::Number(n) => n.is_sign_negative() && !n.is_nan(),
            _ => false,
        };
        if parens {
            write!(f, "({})", self.0)
        } else {
            self.0.fmt(f)
        }
    }
}

/// An instant vector selector: `name{matchers}`.
///
/// `name` is the metric name when written before the braces; a
/// `{__name__="m"}` matcher stays a matcher (use [`Selector::metric_name`] to
/// get the exact name either way). Writing both is an error.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selector {
    /// The metric name written before the braces.
    pub name: Option<String>,
    /// The label matchers, in the order written; all must match.
    pub matchers: Vec<Matcher>,
}

impl Selector {
    /// The exact metric name: `name`, or else the value of the first
    /// `__name__="…"` equality matcher. `None` when series of several
    /// names may match (`{__name__=~"a|b"}`, `{fleet="x"}`).
    pub fn metric_name(&self) -> Option<&str> {
        self.name.as_deref().or_else(|| {
            self.matchers
                .iter()
                .find(|m| m.name == "__name__" && m.op == MatchOp::Equal)
                .map(|m| m.value.as_str())
        })
    }

    /// Whether a series matches, given a lookup of its labels (the metric
    /// name under `__name__`). An absent label matches as the empty string,
    /// as in Prometheus: `x{fleet=""}` and `x{fleet!="a"}` match series
    /// without a `fleet` label.
    pub fn matches_labels<'a>(&self, lookup: impl Fn(&str) -> Option<&'a str>) -> bool {
        if let Some(name) = &self.name
            && lookup("__name__").unwrap_or_default() != name
        {
            return false;
        }
        self.matchers
            .iter()
            .all(|m| m.matches(lookup(&m.name).unwrap_or_default()))
    }

    /// Checks Prometheus' rules: the metric name is valid and not also given
    /// by a `__name__` matcher, and a selector without a name has at least
    /// one matcher that does not match the empty string (so `{}`,
    /// `{a=""}` and `{a=~".*"}` are refused: they would select everything).
    pub fn check(&self) -> Result<(), Error> {
        match &self.name {
            Some(name) if !is_metric_name(name) => {
                Err(Error::parse(format!("invalid metric name {name:?}")))
            }
            Some(name) => match self.matchers.iter().find(|m| m.name == "__name__") {
                Some(m) => Err(Error::parse(format!(
                    "metric name must not be set twice: {name:?} or {:?}",
                    m.value
                ))),
                None => Ok(()),
            },
            None if self.matchers.iter().all(|m| m.matches("")) => Err(Error::parse(
                "vector selector must contain at least one non-empty matcher",
            )),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.name {
            f.write_str(name)?;
        }
        if self.name.is_none() || !self.matchers.is_empty() {
            f.write_str("{")?;
            for (i, m) in self.matchers.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                m.fmt(f)?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

/// The operator of a label matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`, a fully anchored regex.
    RegexMatch,
    /// `!~`, a fully anchored regex.
    RegexNoMatch,
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::RegexMatch => "=~",
            MatchOp::RegexNoMatch => "!~",
        })
    }
}

/// A label matcher: `name op "value"`. Equality compares `name`, `op` and
/// `value` (the regex source), not the compiled regex.
#[derive(Debug, Clone)]
pub struct Matcher {
    name: String,
    op: MatchOp,
    value: String,
    regex: Option<Regex>,
}

impl Matcher {
    /// A matcher. For the regex operators, `value` is compiled fully
    /// anchored and with `.` matching newlines, `^(?s:value)$`, as
    /// Prometheus 3 does, within [`REGEX_SIZE_LIMIT`]. Fails on an invalid
    /// label name or an invalid or too large regex.
    pub fn new(
        name: impl Into<String>,
        op: MatchOp,
        value: impl Into<String>,
    ) -> Result<Self, Error> {
        let (name, value) = (name.into(), value.into());
        if !is_label_name(&name) {
            return Err(Error::parse(format!("invalid label name {name:?}")));
        }
        let regex = match op {
            MatchOp::Equal | MatchOp::NotEqual => None,
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => Some(
                RegexBuilder::new(&format!("^(?s:{value})$"))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        Error::parse(format!("invalid regular expression {value:?}: {e}"))
                    })?,
            ),
        };
        Ok(Matcher {
            name,
            op,
            value,
            regex,
        })
    }

    /// The label name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operator.
    pub fn op(&self) -> MatchOp {
        self.op
    }

    /// The value: the string to compare, or the regex source as written.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The compiled, anchored regex of `=~` and `!~`.
    pub fn regex(&self) -> Option<&Regex> {
        self.regex.as_ref()
    }

    /// Whether a label value matches. Pass `""` for an absent label: in
    /// Prometheus an absent label and an empty one are the same.
    pub fn matches(&self, value: &str) -> bool {
        let re = || self.regex.as_ref().is_some_and(|r| r.is_match(value));
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::RegexMatch => re(),
            MatchOp::RegexNoMatch => !re(),
        }
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}\"", self.name, self.op)?;
        for c in self.value.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() => write!(f, "\\U{:08x}", u32::from(c))?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

/// The supported functions, each over one range vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RangeFunc {
    /// `avg_over_time`
    AvgOverTime,
    /// `min_over_time`
    MinOverTime,
    /// `max_over_time`
    MaxOverTime,
    /// `sum_over_time`
    SumOverTime,
    /// `count_over_time`
    CountOverTime,
    /// `last_over_time`
    LastOverTime,
    /// `rate`: per-second increase of a counter, with Prometheus'
    /// extrapolation and counter-reset handling.
    Rate,
    /// `increase`: `rate` times the range in seconds.
    Increase,
}

impl RangeFunc {
    /// All of them.
    pub const ALL: [RangeFunc; 8] = [
        RangeFunc::AvgOverTime,
        RangeFunc::MinOverTime,
        RangeFunc::MaxOverTime,
        RangeFunc::SumOverTime,
        RangeFunc::CountOverTime,
        RangeFunc::LastOverTime,
        RangeFunc::Rate,
        RangeFunc::Increase,
    ];

    /// The PromQL name.
    pub fn name(self) -> &'static str {
        match self {
            RangeFunc::AvgOverTime => "avg_over_time",
            RangeFunc::MinOverTime => "min_over_time",
            RangeFunc::MaxOverTime => "max_over_time",
            RangeFunc::SumOverTime => "sum_over_time",
            RangeFunc::CountOverTime => "count_over_time",
            RangeFunc::LastOverTime => "last_over_time",
            RangeFunc::Rate => "rate",
            RangeFunc::Increase => "increase",
        }
    }

    /// The function of a PromQL name (case-sensitive, as in PromQL).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl fmt::Display for RangeFunc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The supported aggregations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggOp {
    /// `sum`
    Sum,
    /// `avg`
    Avg,
    /// `min`
    Min,
    /// `max`
    Max,
    /// `count`
    Count,
}

impl AggOp {
    /// The PromQL keyword.
    pub fn name(self) -> &'static str {
        match self {
            AggOp::Sum => "sum",
            AggOp::Avg => "avg",
            AggOp::Min => "min",
            AggOp::Max => "max",
            AggOp::Count => "count",
        }
    }

    /// The aggregation of a keyword, case-insensitively (PromQL keywords
    /// are).
    pub fn from_keyword(word: &str) -> Option<Self> {
        [AggOp::Sum, AggOp::Avg, AggOp::Min, AggOp::Max, AggOp::Count]
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(word))
    }
}

impl fmt::Display for AggOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The supported binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Pow => "^",
        }
    }

    /// Applies the operator with Prometheus' float semantics: IEEE 754
    /// division (`1/0` is `+Inf`, `0/0` is `NaN`), `%` is the truncated
    /// remainder with the sign of the dividend (Go's `math.Mod`), `^` is
    /// `powf`.
    pub fn apply(self, lhs: f64, rhs: f64) -> f64 {
        match self {
            BinOp::Add => lhs + rhs,
            BinOp::Sub => lhs - rhs,
            BinOp::Mul => lhs * rhs,
            BinOp::Div => lhs / rhs,
            BinOp::Mod => lhs % rhs,
            BinOp::Pow => lhs.powf(rhs),
        }
    }

    /// Binding strength: `+ -` 1, `* / %` 2, `^` 3 (unary minus binds
    /// between `* / %` and `^`).
    pub(crate) fn precedence(self) -> u8 {
        match self {
            BinOp::Add | BinOp::Sub => 1,
            BinOp::Mul | BinOp::Div | BinOp::Mod => 2,
            BinOp::Pow => 3,
        }
    }
}

impl fmt::Display for BinOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub(crate) fn is_metric_name(s: &str) -> bool {
    is_name(s, true)
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub(crate) fn is_label_name(s: &str) -> bool {
    is_name(s, false)
}

fn is_name(s: &str, colon: bool) -> bool {
    let ok = |c: u8| c.is_ascii_alphabetic() || c == b'_' || (colon && c == b':');
    s.bytes().next().is_some_and(ok) && s.bytes().all(|c| ok(c) || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn m(name: &str, op: MatchOp, value: &str) -> Matcher {
        Matcher::new(name, op, value).unwrap()
    }

    #[test]
    fn matchers_match_like_prometheus() {
        let re = m("a", MatchOp::RegexMatch, "b|c.*");
        assert!(re.matches("b") && re.matches("cat") && re.matches("c\nd"));
        assert!(!re.matches("ab") && !re.matches("bb") && !re.matches(""));
        let nre = m("a", MatchOp::RegexNoMatch, "b");
        assert!(nre.matches("") && nre.matches("bb") && !nre.matches("b"));
        assert!(m("a", MatchOp::Equal, "").matches(""));
        assert!(m("a", MatchOp::NotEqual, "x").matches(""));
        assert!(!m("a", MatchOp::NotEqual, "x").matches("x"));
        assert_eq!(re.regex().unwrap().as_str(), "^(?s:b|c.*)$");
        assert_eq!(re, m("a", MatchOp::RegexMatch, "b|c.*"));
        assert_ne!(re, m("a", MatchOp::RegexMatch, "b"));
    }

    #[test]
    fn matcher_errors() {
        let e = Matcher::new("a", MatchOp::RegexMatch, "x(")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("parse error: invalid regular expression \"x(\""),
            "{e}"
        );
        let e = Matcher::new("a", MatchOp::RegexMatch, "(a{1000}){1000}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("invalid regular expression") && e.contains("size limit"),
            "{e}"
        );
        assert!(Matcher::new("a:b", MatchOp::Equal, "x").is_err());
        assert!(Matcher::new("1a", MatchOp::Equal, "x").is_err());
        assert!(Matcher::new("", MatchOp::Equal, "x").is_err());
    }

    #[test]
    fn selector_label_lookup() {
        let labels = HashMap::from([("__name__", "temp"), ("site", "a")]);
        let lookup = |k: &str| labels.get(k).copied();
        let sel = |name: Option<&str>, ms: Vec<Matcher>| Selector {
            name: name.map(str::to_owned),
            matchers: ms,
        };
        assert!(sel(Some("temp"), vec![]).matches_labels(lookup));
        assert!(!sel(Some("hum"), vec![]).matches_labels(lookup));
        assert!(
            sel(Some("temp"), vec![m("site", MatchOp::RegexMatch, "a|b")]).matches_labels(lookup)
        );
        assert!(!sel(Some("temp"), vec![m("site", MatchOp::Equal, "b")]).matches_labels(lookup));
        // An absent label is the empty string.
        assert!(sel(Some("temp"), vec![m("fleet", MatchOp::Equal, "")]).matches_labels(lookup));
        assert!(sel(Some("temp"), vec![m("fleet", MatchOp::NotEqual, "x")]).matches_labels(lookup));
        assert!(
            !sel(Some("temp"), vec![m("fleet", MatchOp::RegexMatch, ".+")]).matches_labels(lookup)
        );
        let by_name = sel(None, vec![m("__name__", MatchOp::Equal, "temp")]);
        assert!(by_name.matches_labels(lookup));
        assert_eq!(by_name.metric_name(), Some("temp"));
        assert_eq!(
            sel(None, vec![m("__name__", MatchOp::RegexMatch, "temp")]).metric_name(),
            None
        );
    }

    #[test]
    fn value_types_and_check() {
        let x = || {
            Box::new(Expr::Selector(Selector {
                name: Some("x".into()),
                matchers: vec![],
            }))
        };
        let one = || Box::new(Expr::Number(1.0));
        let bin = |lhs, rhs| Expr::Binary {
            op: BinOp::Add,
            lhs,
            rhs,
        };
        assert_eq!(bin(one(), one()).value_type(), ValueType::Scalar);
        assert_eq!(bin(x(), one()).value_type(), ValueType::Vector);
        assert_eq!(bin(one(), x()).value_type(), ValueType::Vector);
        assert!(Expr::Neg(one()).is_scalar());
        assert!(bin(x(), one()).check().is_ok());
        let e = bin(x(), x()).check().unwrap_err();
        assert!(e.is_unsupported());
        assert_eq!(e.to_string(), "unsupported: arithmetic between two vectors");
        let agg = Expr::Aggregate {
            op: AggOp::Sum,
            by: vec![],
            expr: one(),
        };
        assert!(
            agg.check()
                .unwrap_err()
                .to_string()
                .contains("expected type instant vector")
        );
        let empty = Expr::Selector(Selector::default());
        assert!(
            empty
                .check()
                .unwrap_err()
                .to_string()
                .contains("at least one non-empty matcher")
        );
    }

    #[test]
    fn binop_apply() {
        assert_eq!(BinOp::Mod.apply(-7.0, 3.0), -1.0);
        assert_eq!(BinOp::Pow.apply(2.0, 10.0), 1024.0);
        assert_eq!(BinOp::Div.apply(1.0, 0.0), f64::INFINITY);
        assert!(BinOp::Div.apply(0.0, 0.0).is_nan());
    }
}
