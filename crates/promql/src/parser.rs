//! Recursive-descent parser with precedence climbing for binary operators.

use std::time::Duration;

use crate::Error;
use crate::ast::{AggOp, BinOp, Expr, MatchOp, Matcher, RangeFunc, Selector, is_label_name};
use crate::lexer::{Tok, Token, char_pos, lex};

/// The deepest accepted nesting: of the parser's recursion (parentheses,
/// calls, aggregations, unary operators, right operands of `^`) and of the
/// resulting tree (so also a chain of 64 `+`). Deeper queries are refused,
/// so that neither parsing nor evaluating recurses without bound.
pub const MAX_DEPTH: usize = 64;

/// The longest accepted query, in bytes.
pub const MAX_QUERY_LEN: usize = 64 * 1024;

/// The most regex matchers (`=~`, `!~`) a query may hold. Compiling one can
/// take ~10 ms near [`REGEX_SIZE_LIMIT`](crate::REGEX_SIZE_LIMIT); a valid
/// query of the subset has at most one selector, so this costs no real query
/// anything and bounds the work an adversarial one causes.
pub const MAX_REGEX_MATCHERS: usize = 16;

/// The functions of PromQL that Tributary does not evaluate; calling one is
/// `unsupported function "…"`, calling any other unknown name is
/// `unknown function "…"`.
const UNSUPPORTED_FUNCTIONS: &str = "abs absent absent_over_time acos acosh asin asinh atan atanh ceil changes clamp \
    clamp_max clamp_min cos cosh day_of_month day_of_week day_of_year days_in_month \
    deg delta deriv double_exponential_smoothing exp first_over_time floor \
    histogram_avg histogram_count histogram_fraction histogram_quantile \
    histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta info \
    irate label_join label_replace ln log10 log2 mad_over_time minute month pi \
    predict_linear present_over_time quantile_over_time rad resets round scalar sgn \
    sin sinh sort sort_by_label sort_by_label_desc sort_desc sqrt stddev_over_time \
    stdvar_over_time tan tanh time timestamp ts_of_first_over_time \
    ts_of_last_over_time ts_of_max_over_time ts_of_min_over_time vector year";

/// Aggregation keywords of PromQL that Tributary does not evaluate.
const UNSUPPORTED_AGGREGATIONS: &str =
    "topk bottomk quantile stddev stdvar count_values group limitk limit_ratio";

/// Other keywords, which cannot be metric names (case-insensitive).
const KEYWORDS: &str =
    "by without on ignoring group_left group_right bool offset and or unless atan2";

/// Parses and type-checks a query; see the [crate documentation](crate) for
/// the supported subset. The result passes [`Expr::check`].
pub fn parse(input: &str) -> Result<Expr, Error> {
    if input.len() > MAX_QUERY_LEN {
        return Err(Error::parse(format!(
            "query is too long: {} bytes, the limit is {MAX_QUERY_LEN}",
            input.len()
        )));
    }
    let tokens = lex(input)?;
    let mut p = Parser {
        input,
        tokens,
        pos: 0,
        depth: 0,
        regexes: 0,
    };
    if p.peek() == &Tok::Eof {
        return Err(Error::parse("no expression found in input"));
    }
    let node = p.expr()?;
    if p.peek() != &Tok::Eof {
        return Err(p.unexpected(None));
    }
    match node {
        Node::Expr(e) => Ok(e),
        Node::Range { .. } => Err(Error::unsupported(
            "unsupported: a range vector at the top level; wrap it in a function such as rate()",
        )),
    }
}

/// A parsed subexpression: an expression, or a range vector selector,
/// which is only valid as a function argument.
enum Node {
    Expr(Expr),
    Range { selector: Selector, range: Duration },
}

/// Whether `word` is in the whitespace-separated `list`.
fn is_listed(list: &str, word: &str) -> bool {
    list.split_whitespace().any(|w| w == word)
}

const EOF: Tok<'static> = Tok::Eof;

struct Parser<'a> {
    input: &'a str,
    /// Ends with `Tok::Eof`.
    tokens: Vec<Token<'a>>,
    pos: usize,
    depth: usize,
    /// Regex matchers compiled so far.
    regexes: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &Tok<'a> {
        self.peek_at(0)
    }

    fn peek_at(&self, ahead: usize) -> &Tok<'a> {
        self.tokens.get(self.pos + ahead).map_or(&EOF, |t| &t.tok)
    }

    /// The byte offset of the next token.
    fn offset(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map_or(self.input.len(), |t| t.start)
    }

    fn next(&mut self) -> Tok<'a> {
        let tok = self.peek().clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        tok
    }

    /// Whether the next token is the keyword `kw` (case-insensitive).
    fn at_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn err_at(&self, offset: usize, msg: impl Into<String>) -> Error {
        Error::Parse {
            pos: Some(char_pos(self.input, offset)),
            msg: msg.into(),
        }
    }

    /// The next token as written.
    fn raw(&self) -> &'a str {
        self.tokens
            .get(self.pos)
            .and_then(|t| self.input.get(t.start..t.end))
            .unwrap_or_default()
    }

    /// `unexpected <next token>[, expected <what>]`.
    fn unexpected(&self, expected: Option<&str>) -> Error {
        let raw = self.raw();
        let what = match self.peek() {
            Tok::Eof => "end of input".to_owned(),
            Tok::Ident(s) => format!("identifier {s:?}"),
            Tok::Number(_) => format!("number {raw:?}"),
            Tok::Duration(_) => format!("duration {raw:?}"),
            Tok::Str(_) => format!("string {raw}"),
            _ => format!("{raw:?}"),
        };
        let msg = match expected {
            Some(exp) => format!("unexpected {what}, expected {exp}"),
            None => format!("unexpected {what}"),
        };
        self.err_at(self.offset(), msg)
    }

    fn expect(&mut self, tok: &Tok<'_>, expected: &str) -> Result<(), Error> {
        if self.peek() == tok {
            self.next();
            Ok(())
        } else {
            Err(self.unexpected(Some(expected)))
        }
    }

    /// Runs `f` one nesting level deeper, refusing to go past [`MAX_DEPTH`].
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, Error>) -> Result<T, Error> {
        if self.depth >= MAX_DEPTH {
            return Err(self.err_at(
                self.offset(),
                format!("expression nested too deeply (limit {MAX_DEPTH})"),
            ));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    /// Checks a new node (depth, types), attributing errors to `offset`.
    fn finish(&self, e: Expr, offset: usize) -> Result<Expr, Error> {
        if e.depth() > MAX_DEPTH {
            return Err(self.err_at(
                offset,
                format!("expression nested too deeply (limit {MAX_DEPTH})"),
            ));
        }
        e.check_node()
            .map_err(|err| err.or_at(char_pos(self.input, offset)))?;
        Ok(e)
    }

    /// `node` as an instant vector or scalar; a range vector is the error `msg`.
    fn instant(&self, node: Node, offset: usize, msg: &str) -> Result<Expr, Error> {
        match node {
            Node::Expr(e) => Ok(e),
            Node::Range { .. } => Err(self.err_at(offset, msg)),
        }
    }

    fn expr(&mut self) -> Result<Node, Error> {
        self.binary(0)
    }

    /// Precedence climbing: operands joined by operators of precedence
    /// `min_prec` or more.
    fn binary(&mut self, min_prec: u8) -> Result<Node, Error> {
        self.nested(|p| {
            let mut lhs = p.unary()?;
            loop {
                let op = match p.peek() {
                    Tok::Add => BinOp::Add,
                    Tok::Sub => BinOp::Sub,
                    Tok::Mul => BinOp::Mul,
                    Tok::Div => BinOp::Div,
                    Tok::Mod => BinOp::Mod,
                    Tok::Pow => BinOp::Pow,
                    Tok::Eql | Tok::Neq | Tok::Lt | Tok::Lte | Tok::Gt | Tok::Gte => {
                        return Err(Error::unsupported(format!(
                            "unsupported operator {:?}",
                            p.raw()
                        )));
                    }
                    Tok::Ident(s)
                        if ["and", "or", "unless", "atan2"]
                            .iter()
                            .any(|k| s.eq_ignore_ascii_case(k)) =>
                    {
                        return Err(Error::unsupported(format!("unsupported operator {s:?}")));
                    }
                    _ => break,
                };
                if op.precedence() < min_prec {
                    break;
                }
                let op_offset = p.offset();
                p.next();
                if let Tok::Ident(s) = p.peek() {
                    let s = s.to_ascii_lowercase();
                    match s.as_str() {
                        "bool" => return Err(Error::unsupported("unsupported: \"bool\" modifier")),
                        "on" | "ignoring" | "group_left" | "group_right" => {
                            return Err(Error::unsupported(format!(
                                "unsupported: {s:?} vector matching"
                            )));
                        }
                        _ => {}
                    }
                }
                // `^` is right-associative: its right operand may hold
                // another `^`.
                let next_min = if op == BinOp::Pow {
                    op.precedence()
                } else {
                    op.precedence() + 1
                };
                let rhs = p.binary(next_min)?;
                const MSG: &str =
                    "binary expression must contain only scalar and instant vector types";
                let lhs_e = p.instant(lhs, op_offset, MSG)?;
                let rhs_e = p.instant(rhs, op_offset, MSG)?;
                let e = Expr::Binary {
                    op,
                    lhs: Box::new(lhs_e),
                    rhs: Box::new(rhs_e),
                };
                lhs = Node::Expr(p.finish(e, op_offset)?);
            }
            Ok(lhs)
        })
    }

    /// `-x` / `+x`, binding tighter than `* / %` and looser than `^`
    /// (`-2 ^ 2` is `-(2 ^ 2)`), or a primary expression.
    fn unary(&mut self) -> Result<Node, Error> {
        let neg = match self.peek() {
            Tok::Sub => true,
            Tok::Add => false,
            _ => return self.primary(),
        };
        let offset = self.offset();
        self.next();
        let operand = self.binary(BinOp::Pow.precedence())?;
        let e = self.instant(
            operand,
            offset,
            "unary expression only allowed on expressions of type scalar or instant vector",
        )?;
        Ok(Node::Expr(match e {
            e if !neg => e,
            Expr::Number(n) => Expr::Number(-n),
            e => self.finish(Expr::Neg(Box::new(e)), offset)?,
        }))
    }

    /// A number, a parenthesized expression, a selector (with its optional
    /// range), a function call or an aggregation; then refuses the
    /// unsupported modifiers that may follow.
    fn primary(&mut self) -> Result<Node, Error> {
        let offset = self.offset();
        let node = match self.peek().clone() {
            Tok::Number(n) => {
                self.next();
                Node::Expr(Expr::Number(n))
            }
            Tok::LParen => {
                self.next();
                let node = self.expr()?;
                self.expect(&Tok::RParen, "\")\"")?;
                node
            }
            Tok::LBrace => self.selector(None, offset)?,
            Tok::Ident(s) => self.identifier(s, offset)?,
            _ => return Err(self.unexpected(Some("an expression"))),
        };
        match self.peek() {
            Tok::LBracket if self.at_subquery() => Err(Error::unsupported("unsupported: subquery")),
            Tok::LBracket => Err(self.err_at(
                self.offset(),
                "ranges are only allowed for vector selectors",
            )),
            Tok::At => Err(Error::unsupported("unsupported: @ modifier")),
            _ if self.at_keyword("offset") => {
                Err(Error::unsupported("unsupported: offset modifier"))
            }
            _ => Ok(node),
        }
    }

    /// Whether the `[` at hand opens a subquery: `[:step]` or `[range:…]`.
    fn at_subquery(&self) -> bool {
        self.peek_at(1) == &Tok::Colon
            || (matches!(self.peek_at(1), Tok::Duration(_)) && self.peek_at(2) == &Tok::Colon)
    }

    fn identifier(&mut self, name: &'a str, offset: usize) -> Result<Node, Error> {
        let lower = name.to_ascii_lowercase();
        if let Some(op) = AggOp::from_keyword(&lower) {
            return self.aggregation(op, offset);
        }
        if is_listed(UNSUPPORTED_AGGREGATIONS, &lower) {
            return Err(Error::unsupported(format!(
                "unsupported aggregation {name:?}"
            )));
        }
        if is_listed(KEYWORDS, &lower) {
            return Err(self.unexpected(Some("an expression")));
        }
        if lower == "inf" || lower == "nan" {
            self.next();
            return Ok(Node::Expr(Expr::Number(if lower == "inf" {
                f64::INFINITY
            } else {
                f64::NAN
            })));
        }
        if self.peek_at(1) == &Tok::LParen {
            return self.call(name, offset);
        }
        self.next();
        self.selector(Some(name), offset)
    }

    /// `sum [by (labels)] (expr) [by (labels)]`.
    fn aggregation(&mut self, op: AggOp, offset: usize) -> Result<Node, Error> {
        self.next();
        let mut by = self.grouping()?;
        self.expect(&Tok::LParen, "\"(\" in aggregation")?;
        let arg = self.expr()?;
        self.expect(&Tok::RParen, "\")\" in aggregation (it takes one argument)")?;
        if by.is_none() {
            by = self.grouping()?;
        }
        let msg = format!(
            "expected type instant vector in aggregation expression {:?}, got range vector",
            op.name()
        );
        let expr = self.instant(arg, offset, &msg)?;
        let e = Expr::Aggregate {
            op,
            by: by.unwrap_or_default(),
            expr: Box::new(expr),
        };
        Ok(Node::Expr(self.finish(e, offset)?))
    }

    /// An optional `by (l1, l2, …)`; `without` is refused.
    fn grouping(&mut self) -> Result<Option<Vec<String>>, Error> {
        if self.at_keyword("without") {
            return Err(Error::unsupported("unsupported: \"without\""));
        }
        if !self.at_keyword("by") {
            return Ok(None);
        }
        self.next();
        self.expect(&Tok::LParen, "\"(\" after \"by\"")?;
        let mut labels = Vec::new();
        loop {
            match self.peek() {
                Tok::RParen => break,
                Tok::Ident(l) if is_label_name(l) => labels.push((*l).to_owned()),
                _ => return Err(self.unexpected(Some("a label name"))),
            }
            self.next();
            if self.peek() != &Tok::Comma {
                break;
            }
            self.next();
        }
        self.expect(&Tok::RParen, "\",\" or \")\" in grouping")?;
        Ok(Some(labels))
    }

    /// `func(selector[range])`.
    fn call(&mut self, name: &str, offset: usize) -> Result<Node, Error> {
        let Some(func) = RangeFunc::from_name(name) else {
            return Err(if is_listed(UNSUPPORTED_FUNCTIONS, name) {
                Error::unsupported(format!("unsupported function {name:?}"))
            } else {
                self.err_at(offset, format!("unknown function {name:?}"))
            });
        };
        self.next();
        self.next();
        if self.peek() == &Tok::RParen {
            return Err(self.err_at(
                offset,
                format!("expected 1 argument in call to {name:?}, got none"),
            ));
        }
        let arg = self.expr()?;
        if self.peek() == &Tok::Comma && self.peek_at(1) == &Tok::RParen {
            self.next();
        }
        if self.peek() == &Tok::Comma {
            return Err(self.err_at(
                offset,
                format!("expected 1 argument in call to {name:?}, got more"),
            ));
        }
        self.expect(&Tok::RParen, "\")\"")?;
        match arg {
            Node::Range { selector, range } => {
                let e = Expr::RangeFunction {
                    func,
                    selector,
                    range,
                };
                Ok(Node::Expr(self.finish(e, offset)?))
            }
            Node::Expr(e) => {
                let got = if e.is_scalar() {
                    "scalar"
                } else {
                    "instant vector"
                };
                Err(self.err_at(
                    offset,
                    format!("expected type range vector in call to function {name:?}, got {got}"),
                ))
            }
        }
    }

    /// `[name]{matchers}[range]`, the name already consumed.
    fn selector(&mut self, name: Option<&str>, offset: usize) -> Result<Node, Error> {
        let mut matchers = Vec::new();
        if self.peek() == &Tok::LBrace {
            self.next();
            while self.peek() != &Tok::RBrace {
                matchers.push(self.matcher()?);
                if self.peek() != &Tok::Comma {
                    break;
                }
                self.next();
            }
            self.expect(&Tok::RBrace, "\",\" or \"}\" in label matching")?;
        }
        let selector = Selector {
            name: name.map(str::to_owned),
            matchers,
        };
        selector
            .check()
            .map_err(|e| e.or_at(char_pos(self.input, offset)))?;
        if self.peek() != &Tok::LBracket || self.at_subquery() {
            return Ok(Node::Expr(Expr::Selector(selector)));
        }
        self.next();
        let range_offset = self.offset();
        let Tok::Duration(ms) = self.peek().clone() else {
            return Err(self.unexpected(Some("a duration such as 5m")));
        };
        self.next();
        if ms == 0 {
            return Err(self.err_at(range_offset, "range duration must be greater than 0"));
        }
        self.expect(&Tok::RBracket, "\"]\"")?;
        Ok(Node::Range {
            selector,
            range: Duration::from_millis(ms),
        })
    }

    /// `label op "value"`.
    fn matcher(&mut self) -> Result<Matcher, Error> {
        let Tok::Ident(label) = self.peek().clone() else {
            return Err(self.unexpected(Some("a label name")));
        };
        if !is_label_name(label) {
            return Err(self.err_at(self.offset(), format!("invalid label name {label:?}")));
        }
        self.next();
        let op = match self.peek() {
            Tok::Assign => MatchOp::Equal,
            Tok::Neq => MatchOp::NotEqual,
            Tok::EqlRegex => MatchOp::RegexMatch,
            Tok::NeqRegex => MatchOp::RegexNoMatch,
            _ => return Err(self.unexpected(Some("one of \"=\", \"!=\", \"=~\", \"!~\""))),
        };
        self.next();
        let value_offset = self.offset();
        let Tok::Str(value) = self.peek().clone() else {
            return Err(self.unexpected(Some("a quoted label value")));
        };
        if matches!(op, MatchOp::RegexMatch | MatchOp::RegexNoMatch) {
            self.regexes += 1;
            if self.regexes > MAX_REGEX_MATCHERS {
                let msg =
                    format!("too many regular expression matchers (limit {MAX_REGEX_MATCHERS})");
                return Err(self.err_at(value_offset, msg));
            }
        }
        self.next();
        Matcher::new(label, op, value).map_err(|e| e.or_at(char_pos(self.input, value_offset)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ValueType;

    fn num(n: f64) -> Box<Expr> {
        Box::new(Expr::Number(n))
    }

    fn bin(op: BinOp, lhs: Box<Expr>, rhs: Box<Expr>) -> Box<Expr> {
        Box::new(Expr::Binary { op, lhs, rhs })
    }

    fn sel(name: &str) -> Selector {
        Selector {
            name: Some(name.to_owned()),
            matchers: vec![],
        }
    }

    fn err(q: &str) -> String {
        parse(q).unwrap_err().to_string()
    }

    fn unsupported(q: &str) -> String {
        let e = parse(q).unwrap_err();
        assert!(e.is_unsupported(), "{q}: {e}");
        e.to_string()
    }

    #[test]
    fn numbers() {
        for (q, v) in [
            ("1", 1.0),
            ("1.5", 1.5),
            ("-2", -2.0),
            ("+3", 3.0),
            ("1e3", 1000.0),
            ("0x1f", 31.0),
            (".5", 0.5),
            ("Inf", f64::INFINITY),
            ("-inf", f64::NEG_INFINITY),
            ("--2", 2.0),
        ] {
            assert_eq!(parse(q).unwrap(), Expr::Number(v), "{q}");
        }
        assert!(matches!(parse("NaN").unwrap(), Expr::Number(n) if n.is_nan()));
        assert!(parse("nan").unwrap().is_scalar());
    }

    #[test]
    fn arithmetic_and_precedence() {
        assert_eq!(parse("1+1").unwrap(), *bin(BinOp::Add, num(1.0), num(1.0)));
        assert_eq!(
            parse("1 + 2 * 3").unwrap(),
            *bin(BinOp::Add, num(1.0), bin(BinOp::Mul, num(2.0), num(3.0)))
        );
        assert_eq!(
            parse("(1 + 2) * 3").unwrap(),
            *bin(BinOp::Mul, bin(BinOp::Add, num(1.0), num(2.0)), num(3.0))
        );
        assert_eq!(
            parse("1 - 2 - 3").unwrap(),
            *bin(BinOp::Sub, bin(BinOp::Sub, num(1.0), num(2.0)), num(3.0))
        );
        assert_eq!(
            parse("2 ^ 3 ^ 2").unwrap(),
            *bin(BinOp::Pow, num(2.0), bin(BinOp::Pow, num(3.0), num(2.0)))
        );
        assert_eq!(
            parse("-2 ^ 2").unwrap(),
            Expr::Neg(bin(BinOp::Pow, num(2.0), num(2.0)))
        );
        assert_eq!(
            parse("-2 * 3").unwrap(),
            *bin(BinOp::Mul, num(-2.0), num(3.0))
        );
        assert_eq!(
            parse("2 ^ -1").unwrap(),
            *bin(BinOp::Pow, num(2.0), num(-1.0))
        );
        assert_eq!(
            parse("8 / 4 % 3").unwrap(),
            *bin(BinOp::Mod, bin(BinOp::Div, num(8.0), num(4.0)), num(3.0))
        );
        assert_eq!(parse("((1))").unwrap(), Expr::Number(1.0));
        let x = || Box::new(Expr::Selector(sel("x")));
        assert_eq!(parse("-x").unwrap(), Expr::Neg(x()));
        let e = parse("x * 2 + 1").unwrap();
        assert_eq!(
            e,
            *bin(BinOp::Add, bin(BinOp::Mul, x(), num(2.0)), num(1.0))
        );
        assert_eq!(e.value_type(), ValueType::Vector);
        assert_eq!(parse("2 - x").unwrap().value_type(), ValueType::Vector);
        assert_eq!(parse("2 - 1").unwrap().value_type(), ValueType::Scalar);
    }

    #[test]
    fn selectors() {
        assert_eq!(parse("temp").unwrap(), Expr::Selector(sel("temp")));
        assert_eq!(
            parse("job:rate:5m").unwrap(),
            Expr::Selector(sel("job:rate:5m"))
        );
        assert_eq!(parse("rate").unwrap(), Expr::Selector(sel("rate")));
        let Expr::Selector(s) = parse(r#"temp{a="v", b!='w', c=~"re.*", d!~`r\d`,}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(s.name.as_deref(), Some("temp"));
        let ms: Vec<_> = s
            .matchers
            .iter()
            .map(|m| (m.name(), m.op(), m.value()))
            .collect();
        assert_eq!(
            ms,
            [
                ("a", MatchOp::Equal, "v"),
                ("b", MatchOp::NotEqual, "w"),
                ("c", MatchOp::RegexMatch, "re.*"),
                ("d", MatchOp::RegexNoMatch, r"r\d"),
            ]
        );
        assert!(s.matchers[2].matches("re-x") && !s.matchers[2].matches("are"));
        let Expr::Selector(s) = parse(r#"{__name__="temp", site="a\"b\\c\u00e9"}"#).unwrap() else {
            panic!()
        };
        assert_eq!(s.name, None);
        assert_eq!(s.metric_name(), Some("temp"));
        assert_eq!(s.matchers[1].value(), "a\"b\\cé");
        assert!(parse("temp{}").is_ok());
        assert!(parse(r#"{a!=""}"#).is_ok());
        assert!(parse(r#"{by="x", sum="y"}"#).is_ok());
        assert!(parse("{a=~\".+\"}").is_ok());
    }

    #[test]
    fn selector_errors() {
        for q in ["{}", r#"{a=""}"#, r#"{a=~".*"}"#, r#"{a!~"x"}"#] {
            assert_eq!(
                err(q),
                "parse error at char 1: vector selector must contain at least one non-empty matcher",
                "{q}"
            );
        }
        assert_eq!(
            err(r#"x{__name__="y"}"#),
            r#"parse error at char 1: metric name must not be set twice: "x" or "y""#
        );
        assert_eq!(
            err(r#"x{a:b="y"}"#),
            r#"parse error at char 3: invalid label name "a:b""#
        );
        assert!(err(r#"x{a="y"#).contains("unterminated quoted string"));
        assert!(err(r#"x{a}"#).contains(r#"unexpected "}", expected one of"#));
        assert!(err(r#"x{a=b}"#).contains("expected a quoted label value"));
        assert!(err(r#"x{a="b" c="d"}"#).contains(r#"expected "," or "}""#));
        assert!(err(r#"x{,}"#).contains("expected a label name"));
        let e = err(r#"x{a=~"("}"#);
        assert!(
            e.starts_with(r#"parse error at char 6: invalid regular expression "(""#),
            "{e}"
        );
        assert!(err(r#"x{a=~"(a{1000}){1000}"}"#).contains("size limit"));
        assert!(err(r#"{"quoted.name"}"#).contains("unexpected string"));
    }

    #[test]
    fn range_functions() {
        for f in RangeFunc::ALL {
            let e = parse(&format!("{f}(x[5m])")).unwrap();
            assert_eq!(
                e,
                Expr::RangeFunction {
                    func: f,
                    selector: sel("x"),
                    range: Duration::from_secs(300)
                }
            );
            assert_eq!(e.value_type(), ValueType::Vector);
        }
        let Expr::RangeFunction {
            range, selector, ..
        } = parse(r#"rate(x{a="b"}[1h30m],)"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(range, Duration::from_secs(5400));
        assert_eq!(selector.matchers.len(), 1);
        assert!(parse("rate((x[5m]))").is_ok());
        assert!(parse("rate({__name__=\"x\"}[100ms])").is_ok());
        assert_eq!(
            err("rate(x)"),
            r#"parse error at char 1: expected type range vector in call to function "rate", got instant vector"#
        );
        assert!(err("rate(1)").contains("got scalar"));
        assert!(err("rate()").contains(r#"expected 1 argument in call to "rate", got none"#));
        assert!(err("rate(x[5m], y[5m])").contains("got more"));
        assert!(err("rate(x[0s])").contains("at char 8: range duration must be greater than 0"));
        assert!(err("rate(x[5])").contains(r#"unexpected number "5", expected a duration"#));
        assert!(err("rate(x[5m)").contains(r#"expected "]""#));
        assert!(err("rate(sum(x)[5m])").contains("ranges are only allowed for vector selectors"));
        assert!(err("rate(x[5m][5m])").contains("ranges are only allowed for vector selectors"));
        assert_eq!(
            err("RATE(x[5m])"),
            r#"parse error at char 1: unknown function "RATE""#
        );
    }

    #[test]
    fn aggregations() {
        let inner = Expr::RangeFunction {
            func: RangeFunc::AvgOverTime,
            selector: parse_sel(r#"temp{site=~"a|b"}"#),
            range: Duration::from_secs(300),
        };
        let agg = Box::new(Expr::Aggregate {
            op: AggOp::Sum,
            by: vec!["fleet".into()],
            expr: Box::new(inner),
        });
        assert_eq!(
            parse(r#"sum by (fleet) (avg_over_time(temp{site=~"a|b"}[5m])) * 2"#).unwrap(),
            *bin(BinOp::Mul, agg.clone(), num(2.0))
        );
        assert_eq!(
            parse(r#"sum(avg_over_time(temp{site=~"a|b"}[5m])) by (fleet) * 2"#).unwrap(),
            *bin(BinOp::Mul, agg, num(2.0))
        );
        for (q, op) in [
            ("sum(x)", AggOp::Sum),
            ("AVG(x)", AggOp::Avg),
            ("min(x)", AggOp::Min),
            ("max(x)", AggOp::Max),
            ("count(x)", AggOp::Count),
        ] {
            assert_eq!(
                parse(q).unwrap(),
                Expr::Aggregate {
                    op,
                    by: vec![],
                    expr: Box::new(Expr::Selector(sel("x")))
                }
            );
        }
        let Expr::Aggregate { by, .. } = parse("max BY (a, b,) (x)").unwrap() else {
            panic!()
        };
        assert_eq!(by, ["a", "b"]);
        let Expr::Aggregate { by, .. } = parse("count by () (x)").unwrap() else {
            panic!()
        };
        assert!(by.is_empty());
        assert!(parse("sum(sum(x) by (a))").is_ok());
        assert!(parse("sum(x) + 1").is_ok());
        assert_eq!(
            err("sum(1)"),
            r#"parse error at char 1: expected type instant vector in aggregation expression "sum", got scalar"#
        );
        assert!(err("sum(x[5m])").contains("got range vector"));
        assert!(err("sum by (fleet) (x) by (site)").contains(r#"unexpected identifier "by""#));
        assert!(err("sum(x, y)").contains(r#"unexpected ",""#));
        assert!(err("sum x").contains(r#"expected "(" in aggregation"#));
        assert!(err("sum by (a:b) (x)").contains("expected a label name"));
        assert!(err("sum by (1) (x)").contains("expected a label name"));
    }

    fn parse_sel(q: &str) -> Selector {
        match parse(q).unwrap() {
            Expr::Selector(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unsupported_parts_are_named() {
        assert_eq!(
            unsupported("histogram_quantile(0.9, x)"),
            r#"unsupported function "histogram_quantile""#
        );
        for f in [
            "irate",
            "delta",
            "abs",
            "label_replace",
            "quantile_over_time",
            "time",
        ] {
            assert_eq!(
                unsupported(&format!("{f}(x[5m])")),
                format!("unsupported function {f:?}")
            );
        }
        assert_eq!(
            err("foo(x)"),
            r#"parse error at char 1: unknown function "foo""#
        );
        assert_eq!(
            unsupported("topk(3, x)"),
            r#"unsupported aggregation "topk""#
        );
        for a in [
            "bottomk",
            "quantile",
            "stddev",
            "stdvar",
            "count_values",
            "group",
        ] {
            assert_eq!(
                unsupported(&format!("{a}(x)")),
                format!("unsupported aggregation {a:?}")
            );
        }
        assert_eq!(
            unsupported("sum without (a) (x)"),
            r#"unsupported: "without""#
        );
        assert_eq!(
            unsupported("sum(x) without (a)"),
            r#"unsupported: "without""#
        );
        for op in ["==", "!=", ">", "<", ">=", "<="] {
            assert_eq!(
                unsupported(&format!("x {op} 1")),
                format!("unsupported operator {op:?}")
            );
        }
        for op in ["and", "or", "unless", "atan2"] {
            assert_eq!(
                unsupported(&format!("x {op} y")),
                format!("unsupported operator {op:?}")
            );
        }
        assert_eq!(unsupported("x + bool 1"), r#"unsupported: "bool" modifier"#);
        assert_eq!(
            unsupported("x + on(a) y"),
            r#"unsupported: "on" vector matching"#
        );
        assert_eq!(
            unsupported("x * ignoring(a) group_left y"),
            r#"unsupported: "ignoring" vector matching"#
        );
        assert_eq!(
            unsupported("x / group_left y"),
            r#"unsupported: "group_left" vector matching"#
        );
        assert_eq!(
            unsupported("x + y"),
            "unsupported: arithmetic between two vectors"
        );
        assert_eq!(
            unsupported("sum(x) / count(x)"),
            "unsupported: arithmetic between two vectors"
        );
        assert_eq!(
            unsupported("(x * 2) - -y"),
            "unsupported: arithmetic between two vectors"
        );
        assert_eq!(unsupported("x offset 5m"), "unsupported: offset modifier");
        assert_eq!(
            unsupported("rate(x[5m] offset 1h)"),
            "unsupported: offset modifier"
        );
        assert_eq!(unsupported("x @ 1700000000"), "unsupported: @ modifier");
        assert_eq!(unsupported("x[5m:1m]"), "unsupported: subquery");
        assert_eq!(unsupported("x[5m:]"), "unsupported: subquery");
        assert_eq!(unsupported("rate(x[5m])[30m:1m]"), "unsupported: subquery");
        assert_eq!(
            unsupported("max_over_time(rate(x[5m])[1h:])"),
            "unsupported: subquery"
        );
        assert_eq!(
            unsupported("x[5m]"),
            "unsupported: a range vector at the top level; wrap it in a function such as rate()"
        );
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(err("foo}"), r#"parse error at char 4: unexpected "}""#);
        assert_eq!(err(""), "parse error: no expression found in input");
        assert_eq!(
            err("  # only a comment"),
            "parse error: no expression found in input"
        );
        assert_eq!(
            err("1 2"),
            r#"parse error at char 3: unexpected number "2""#
        );
        assert_eq!(
            err("1 +"),
            "parse error at char 4: unexpected end of input, expected an expression"
        );
        assert_eq!(
            err("(1"),
            r#"parse error at char 3: unexpected end of input, expected ")""#
        );
        assert_eq!(
            err("x y"),
            r#"parse error at char 3: unexpected identifier "y""#
        );
        assert_eq!(
            err("5m"),
            r#"parse error at char 1: unexpected duration "5m", expected an expression"#
        );
        assert_eq!(
            err("by"),
            r#"parse error at char 1: unexpected identifier "by", expected an expression"#
        );
        assert_eq!(
            err("x[5m] + 1"),
            "parse error at char 7: binary expression must contain only scalar and instant vector types"
        );
        assert!(err("-x[5m]").contains("unary expression only allowed"));
        assert!(err("(1))").contains(r#"unexpected ")""#));
        assert!(err(r#""s""#).contains(r#"unexpected string "s""#));
        // Positions count characters, not bytes.
        assert_eq!(
            err(r#"x{a="é"} }"#),
            r#"parse error at char 10: unexpected "}""#
        );
    }

    #[test]
    fn comments_are_ignored() {
        assert_eq!(
            parse("# health\n1 + # one\n 1 # end").unwrap(),
            *bin(BinOp::Add, num(1.0), num(1.0))
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep =
            |open: &str, close: &str, n: usize| format!("{}1{}", open.repeat(n), close.repeat(n));
        for q in [
            deep("(", ")", 10_000),
            deep("-", "", 10_000),
            deep("-(", ")", 5_000),
            deep("sum(", ")", 5_000),
            deep("2^", "", 10_000),
            format!("{}x", "1+".repeat(20_000)),
            format!("x{}", "*1".repeat(20_000)),
        ] {
            let e = parse(&q).unwrap_err().to_string();
            assert!(e.contains("nested too deeply"), "{e}");
        }
        assert!(parse(&deep("(", ")", 40)).is_ok());
        assert!(parse(&format!("x{}", "+1".repeat(40))).is_ok());
        assert!(
            parse(&format!("{}1", "1+".repeat(100)))
                .unwrap_err()
                .to_string()
                .contains("nested too deeply")
        );
    }

    #[test]
    fn regex_matchers_are_capped() {
        let q = |n: usize| {
            format!(
                "x{{{}}}",
                (0..n)
                    .map(|i| format!("a{i}=~\"b{i}\""))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        assert!(parse(&q(MAX_REGEX_MATCHERS)).is_ok());
        assert!(
            err(&q(MAX_REGEX_MATCHERS + 1))
                .contains("too many regular expression matchers (limit 16)")
        );
        // Equality matchers do not count.
        assert!(
            parse(&format!(
                "x{{{}}}",
                (0..100)
                    .map(|i| format!("a{i}=\"b\""))
                    .collect::<Vec<_>>()
                    .join(",")
            ))
            .is_ok()
        );
    }

    #[test]
    fn long_queries_are_refused() {
        let q = format!("x{{a=\"{}\"}}", "a".repeat(MAX_QUERY_LEN));
        assert!(err(&q).starts_with("parse error: query is too long"));
        let q = format!("x{{a=\"{}\"}}", "a".repeat(MAX_QUERY_LEN - 10));
        assert!(parse(&q).is_ok());
    }

    #[test]
    fn display_round_trips() {
        for q in [
            "1 + 1",
            "-2",
            "(-2) ^ 2",
            "-(2 ^ 2)",
            "2 ^ 3 ^ 2",
            "(2 ^ 3) ^ 2",
            "1 - (2 - 3)",
            "1 - 2 - 3",
            "(1 + 2) * (-x)",
            "-(-x)",
            "Inf - NaN",
            r#"sum by (fleet, site) (avg_over_time(temp{site=~"a|b", x!="\"\n\\"}[1h30m])) * 2"#,
            r#"{__name__="temp", a!~"b"}"#,
            "count(rate(x[250ms]))",
        ] {
            let e = parse(q).unwrap();
            assert_eq!(e.to_string(), q);
            assert_eq!(parse(&e.to_string()).unwrap().to_string(), q);
        }
        assert_eq!(
            parse("sum(x) by (a)").unwrap().to_string(),
            "sum by (a) (x)"
        );
        assert_eq!(parse("1+2*3").unwrap().to_string(), "1 + 2 * 3");
    }
}
