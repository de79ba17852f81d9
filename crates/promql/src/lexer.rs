//! The tokenizer: turns a query into tokens with their byte spans.

use crate::Error;
use crate::params::duration_ms;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok<'a> {
    /// `[a-zA-Z_:][a-zA-Z0-9_:]*` (no `:` inside `[ ]`): names and keywords.
    Ident(&'a str),
    Number(f64),
    /// A duration such as `5m` or `1h30m`, in milliseconds.
    Duration(u64),
    /// A quoted string, escapes resolved.
    Str(String),
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    Colon,
    At,
    Assign,
    Eql,
    Neq,
    EqlRegex,
    NeqRegex,
    Lt,
    Lte,
    Gt,
    Gte,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token<'a> {
    pub(crate) tok: Tok<'a>,
    /// Byte offsets of the token in the query.
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// The 1-based character position of byte offset `byte` in `input`.
pub(crate) fn char_pos(input: &str, byte: usize) -> usize {
    input.get(..byte).map_or(0, |s| s.chars().count()) + 1
}

fn err(input: &str, byte: usize, msg: impl Into<String>) -> Error {
    Error::Parse {
        pos: Some(char_pos(input, byte)),
        msg: msg.into(),
    }
}

/// Splits `input` into tokens; the last one is always [`Tok::Eof`].
/// Whitespace and `#` comments (to the end of the line) are skipped.
pub(crate) fn lex(input: &str) -> Result<Vec<Token<'_>>, Error> {
    let b = input.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    // Inside `[ ]`, `:` separates a subquery's range and step instead of
    // being part of a name.
    let mut brackets = 0usize;
    while let Some(&c) = b.get(i) {
        let next = b.get(i + 1).copied();
        let (tok, len) = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                i = b[i..]
                    .iter()
                    .position(|&x| x == b'\n')
                    .map_or(b.len(), |p| i + p);
                continue;
            }
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'{' => (Tok::LBrace, 1),
            b'}' => (Tok::RBrace, 1),
            b'[' => {
                brackets += 1;
                (Tok::LBracket, 1)
            }
            b']' => {
                brackets = brackets.saturating_sub(1);
                (Tok::RBracket, 1)
            }
            b',' => (Tok::Comma, 1),
            b'@' => (Tok::At, 1),
            b'+' => (Tok::Add, 1),
            b'-' => (Tok::Sub, 1),
            b'*' => (Tok::Mul, 1),
            b'/' => (Tok::Div, 1),
            b'%' => (Tok::Mod, 1),
            b'^' => (Tok::Pow, 1),
            b'=' => match next {
                Some(b'=') => (Tok::Eql, 2),
                Some(b'~') => (Tok::EqlRegex, 2),
                _ => (Tok::Assign, 1),
            },
            b'!' => match next {
                Some(b'=') => (Tok::Neq, 2),
                Some(b'~') => (Tok::NeqRegex, 2),
                _ => return Err(err(input, i, "unexpected character '!'")),
            },
            b'<' if next == Some(b'=') => (Tok::Lte, 2),
            b'<' => (Tok::Lt, 1),
            b'>' if next == Some(b'=') => (Tok::Gte, 2),
            b'>' => (Tok::Gt, 1),
            b':' if brackets > 0 => (Tok::Colon, 1),
            b'"' | b'\'' | b'`' => {
                let (s, end) = lex_string(input, i)?;
                (Tok::Str(s), end - i)
            }
            b'0'..=b'9' => lex_number(input, i)?,
            b'.' if next.is_some_and(|n| n.is_ascii_digit()) => lex_number(input, i)?,
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let len = b[i..]
                    .iter()
                    .position(|&x| {
                        !(x.is_ascii_alphanumeric() || x == b'_' || (x == b':' && brackets == 0))
                    })
                    .unwrap_or(b.len() - i);
                (Tok::Ident(input.get(i..i + len).unwrap_or_default()), len)
            }
            _ => {
                let ch = input.get(i..).and_then(|s| s.chars().next()).unwrap_or('?');
                return Err(err(input, i, format!("unexpected character {ch:?}")));
            }
        };
        out.push(Token {
            tok,
            start: i,
            end: i + len,
        });
        i += len;
    }
    out.push(Token {
        tok: Tok::Eof,
        start: b.len(),
        end: b.len(),
    });
    Ok(out)
}

/// A number (`1`, `1.5`, `.5`, `1e3`, `0x1f`) or, when letters follow the
/// digits, a duration (`5m`, `1h30m`). Returns the token and its length.
fn lex_number(input: &str, start: usize) -> Result<(Tok<'_>, usize), Error> {
    let b = input.as_bytes();
    let digit = |j: usize| b.get(j).is_some_and(u8::is_ascii_digit);
    let mut i = start;
    let mut hex = None;
    if b.get(i) == Some(&b'0')
        && matches!(b.get(i + 1), Some(b'x' | b'X'))
        && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    {
        i += 2;
        let mut v = 0f64;
        while let Some(d) = b.get(i).and_then(|&c| char::from(c).to_digit(16)) {
            v = v * 16.0 + f64::from(d);
            i += 1;
        }
        hex = Some(v);
    } else {
        while digit(i) {
            i += 1;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            while digit(i) {
                i += 1;
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            let j = if matches!(b.get(i + 1), Some(b'+' | b'-')) {
                i + 2
            } else {
                i + 1
            };
            if digit(j) {
                i = j;
                while digit(i) {
                    i += 1;
                }
            }
        }
    }
    let mut end = i;
    while b
        .get(end)
        .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_')
    {
        end += 1;
    }
    let text = input.get(start..end).unwrap_or_default();
    let bad = || {
        err(
            input,
            start,
            format!("bad number or duration syntax: {text:?}"),
        )
    };
    if end > i {
        let ms = duration_ms(text).ok_or_else(bad)?;
        return Ok((Tok::Duration(ms), end - start));
    }
    let v = match hex {
        Some(v) => v,
        None => text.parse::<f64>().map_err(|_| bad())?,
    };
    Ok((Tok::Number(v), end - start))
}

/// A string in `"`, `'` (Go escapes) or `` ` `` (raw). Returns the value and
/// the byte offset just past the closing quote.
fn lex_string(input: &str, start: usize) -> Result<(String, usize), Error> {
    let b = input.as_bytes();
    let quote = b[start];
    let unterminated = || err(input, start, "unterminated quoted string");
    let mut out = Vec::new();
    let mut i = start + 1;
    loop {
        let &c = b.get(i).ok_or_else(unterminated)?;
        i += 1;
        if c == quote {
            break;
        }
        if quote == b'`' {
            out.push(c);
            continue;
        }
        match c {
            b'\n' => return Err(unterminated()),
            b'\\' => {
                let esc = i - 1;
                let bad = |what: &str| err(input, esc, what.to_owned());
                let &e = b.get(i).ok_or_else(unterminated)?;
                i += 1;
                match e {
                    b'a' => out.push(0x07),
                    b'b' => out.push(0x08),
                    b'f' => out.push(0x0c),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'v' => out.push(0x0b),
                    b'\\' | b'\'' | b'"' => out.push(e),
                    b'x' => {
                        let v =
                            radix_digits(b, i, 2, 16).ok_or_else(|| bad("invalid \\x escape"))?;
                        out.push(u8::try_from(v).unwrap_or_default());
                        i += 2;
                    }
                    b'0'..=b'7' => {
                        let v = radix_digits(b, i - 1, 3, 8)
                            .and_then(|v| u8::try_from(v).ok())
                            .ok_or_else(|| bad("invalid octal escape"))?;
                        out.push(v);
                        i += 2;
                    }
                    b'u' | b'U' => {
                        let n = if e == b'u' { 4 } else { 8 };
                        let ch = radix_digits(b, i, n, 16)
                            .and_then(char::from_u32)
                            .ok_or_else(|| bad("invalid unicode escape"))?;
                        out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                        i += n;
                    }
                    _ => return Err(bad("unknown escape sequence")),
                }
            }
            _ => out.push(c),
        }
    }
    String::from_utf8(out)
        .map(|s| (s, i))
        .map_err(|_| err(input, start, "invalid UTF-8 in quoted string"))
}

/// The value of exactly `n` digits in `radix` at `b[i..]`.
fn radix_digits(b: &[u8], i: usize, n: usize, radix: u32) -> Option<u32> {
    b.get(i..i + n)?.iter().try_fold(0u32, |acc, &c| {
        Some(acc * radix + char::from(c).to_digit(radix)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok<'_>> {
        lex(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    fn string(s: &str) -> String {
        match toks(s).remove(0) {
            Tok::Str(v) => v,
            other => panic!("not a string: {other:?}"),
        }
    }

    #[test]
    fn numbers_and_durations() {
        assert_eq!(toks("1 1.5 .5 1. 1e3 1E-2 0x1f 0X10"), {
            let mut v: Vec<Tok<'_>> = [1.0, 1.5, 0.5, 1.0, 1000.0, 0.01, 31.0, 16.0]
                .into_iter()
                .map(Tok::Number)
                .collect();
            v.push(Tok::Eof);
            v
        });
        assert_eq!(
            toks("5m 1h30m 100ms"),
            vec![
                Tok::Duration(300_000),
                Tok::Duration(5_400_000),
                Tok::Duration(100),
                Tok::Eof
            ]
        );
        for bad in ["1x", "1e", "0xz", "1.5m", "1m1h", "5mm"] {
            let e = lex(bad).unwrap_err().to_string();
            assert!(e.contains("bad number or duration syntax"), "{bad}: {e}");
        }
    }

    #[test]
    fn colon_is_part_of_names_except_in_brackets() {
        assert_eq!(
            toks("job:rate:5m"),
            vec![Tok::Ident("job:rate:5m"), Tok::Eof]
        );
        assert_eq!(
            toks("[5m:1m]"),
            vec![
                Tok::LBracket,
                Tok::Duration(300_000),
                Tok::Colon,
                Tok::Duration(60_000),
                Tok::RBracket,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn string_escapes() {
        assert_eq!(string(r#""a\"b\\c\n\t""#), "a\"b\\c\n\t");
        assert_eq!(string(r"'it\'s'"), "it's");
        assert_eq!(string(r#""\u00e9\U0001F600\x41\101""#), "é😀AA");
        assert_eq!(string(r#""\xc3\xa9""#), "é");
        assert_eq!(string("`raw\\n\n`"), "raw\\n\n");
        assert_eq!(string("\"é\""), "é");
        for bad in [
            r#""\q""#,
            r#""\x4""#,
            r#""\ud800""#,
            r#""\400""#,
            r#""\xff""#,
            "\"a\nb\"",
            "\"abc",
            "'a\\",
        ] {
            assert!(lex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn comments_and_operators() {
        assert_eq!(
            toks("# hi\n1 # there\n!= !~ =~ == = <= >= < >"),
            vec![
                Tok::Number(1.0),
                Tok::Neq,
                Tok::NeqRegex,
                Tok::EqlRegex,
                Tok::Eql,
                Tok::Assign,
                Tok::Lte,
                Tok::Gte,
                Tok::Lt,
                Tok::Gt,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn error_positions_count_characters() {
        let e = lex("\"é\" $").unwrap_err();
        assert_eq!(
            e.to_string(),
            "parse error at char 5: unexpected character '$'"
        );
    }
}
