//! Lexing SQL text the way Redshift does, for the few things the emulator must know about a
//! statement before PostgreSQL sees it: which `:name` placeholders it uses, whether it is an
//! UNLOAD, whether a SELECT has an outer LIMIT, and how to inline parameter values.
//!
//! Redshift does not implement `standard_conforming_strings`: a backslash inside a
//! single-quoted literal is an escape character. The emulator runs PostgreSQL with
//! `standard_conforming_strings = off` to match, and this lexer follows the same rule.

/// One lexical token; only the distinctions the emulator needs are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A keyword or identifier (unquoted), as written.
    Word(String),
    /// A `"quoted"` identifier, unquoted.
    QuotedIdent(String),
    /// A single-quoted string literal, decoded (`''` and backslash escapes resolved).
    Literal(String),
    /// A numeric literal, as written.
    Number(String),
    /// A `:name` placeholder (never produced for `::type` casts).
    Placeholder(String),
    /// Any other character (operators, commas, semicolons).
    Symbol(char),
    LParen,
    RParen,
}

/// A token with its byte range in the source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned {
    pub token: Token,
    pub start: usize,
    pub end: usize,
}

/// A lexing failure, phrased the way PostgreSQL/Redshift report it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    #[error("unterminated quoted string at or near \"{0}\"")]
    UnterminatedLiteral(String),
    #[error("unterminated quoted identifier at or near \"{0}\"")]
    UnterminatedIdent(String),
    #[error("unterminated /* comment at or near \"{0}\"")]
    UnterminatedComment(String),
}

fn near(text: &str, at: usize) -> String {
    text[at..].chars().take(20).collect()
}

/// Splits SQL text into tokens, skipping whitespace and comments. One loop with one arm per
/// token class (quoted strings, quoted identifiers, numbers, comments, words, symbols), as
/// lexers are usually written: the arms share the position and are clearer side by side.
pub fn tokenize(text: &str) -> Result<Vec<Spanned>, LexError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => i += 1,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                // PostgreSQL block comments nest.
                let mut depth = 0usize;
                loop {
                    if i + 1 >= bytes.len() {
                        return Err(LexError::UnterminatedComment(near(text, start)));
                    }
                    if bytes[i] == b'/' && bytes[i + 1] == b'*' {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == b'*' && bytes[i + 1] == b'/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'\'' => {
                let (value, end) = read_literal(text, i)?;
                i = end;
                out.push(Spanned {
                    token: Token::Literal(value),
                    start,
                    end,
                });
            }
            b'"' => {
                let mut value = String::new();
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err(LexError::UnterminatedIdent(near(text, start))),
                        Some(b'"') if bytes.get(i + 1) == Some(&b'"') => {
                            value.push('"');
                            i += 2;
                        }
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => {
                            let ch = next_char(text, i);
                            value.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                out.push(Spanned {
                    token: Token::QuotedIdent(value),
                    start,
                    end: i,
                });
            }
            b':' if bytes.get(i + 1) == Some(&b':') => {
                // A `::type` cast: keep both colons as symbols so no placeholder is seen.
                out.push(Spanned {
                    token: Token::Symbol(':'),
                    start,
                    end: i + 1,
                });
                out.push(Spanned {
                    token: Token::Symbol(':'),
                    start: i + 1,
                    end: i + 2,
                });
                i += 2;
            }
            b':' if bytes.get(i + 1).is_some_and(|b| is_param_char(*b)) => {
                i += 1;
                while i < bytes.len() && is_param_char(bytes[i]) {
                    i += 1;
                }
                let name = text[start + 1..i].to_string();
                out.push(Spanned {
                    token: Token::Placeholder(name),
                    start,
                    end: i,
                });
            }
            b'(' => {
                i += 1;
                out.push(Spanned {
                    token: Token::LParen,
                    start,
                    end: i,
                });
            }
            b')' => {
                i += 1;
                out.push(Spanned {
                    token: Token::RParen,
                    start,
                    end: i,
                });
            }
            b'0'..=b'9' => {
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                    i += 1;
                }
                out.push(Spanned {
                    token: Token::Number(text[start..i].to_string()),
                    start,
                    end: i,
                });
            }
            _ if c == b'_' || c.is_ascii_alphabetic() || c >= 0x80 => {
                while i < bytes.len() {
                    let b = bytes[i];
                    if b == b'_' || b == b'$' || b.is_ascii_alphanumeric() {
                        i += 1;
                    } else if b >= 0x80 {
                        i += next_char(text, i).len_utf8();
                    } else {
                        break;
                    }
                }
                out.push(Spanned {
                    token: Token::Word(text[start..i].to_string()),
                    start,
                    end: i,
                });
            }
            _ => {
                let ch = next_char(text, i);
                i += ch.len_utf8();
                out.push(Spanned {
                    token: Token::Symbol(ch),
                    start,
                    end: i,
                });
            }
        }
    }
    Ok(out)
}

fn next_char(text: &str, at: usize) -> char {
    text[at..].chars().next().unwrap_or('\u{fffd}')
}

fn is_param_char(b: u8) -> bool {
    b == b'_' || b.is_ascii_alphanumeric()
}

/// Reads the single-quoted literal that starts at `at`; returns the decoded value and the byte
/// offset just past its closing quote.
fn read_literal(text: &str, at: usize) -> Result<(String, usize), LexError> {
    let bytes = text.as_bytes();
    let mut value = String::new();
    let mut i = at + 1;
    loop {
        match bytes.get(i) {
            None => return Err(LexError::UnterminatedLiteral(near(text, at))),
            Some(b'\'') if bytes.get(i + 1) == Some(&b'\'') => {
                value.push('\'');
                i += 2;
            }
            Some(b'\'') => return Ok((value, i + 1)),
            Some(b'\\') => {
                let Some(&escaped) = bytes.get(i + 1) else {
                    return Err(LexError::UnterminatedLiteral(near(text, at)));
                };
                match escaped {
                    b'n' => value.push('\n'),
                    b't' => value.push('\t'),
                    b'r' => value.push('\r'),
                    b'b' => value.push('\u{8}'),
                    b'f' => value.push('\u{c}'),
                    _ => {
                        let ch = next_char(text, i + 1);
                        value.push(ch);
                        i += ch.len_utf8() - 1;
                    }
                }
                i += 2;
            }
            Some(_) => {
                let ch = next_char(text, i);
                value.push(ch);
                i += ch.len_utf8();
            }
        }
    }
}

/// Renders `value` as a literal that the Redshift lexer (and PostgreSQL with
/// `standard_conforming_strings = off`) reads back as exactly `value`.
pub fn quote_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for ch in value.chars() {
        match ch {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            _ => out.push(ch),
        }
    }
    out.push('\'');
    out
}

/// The distinct `:name` placeholders used outside literals, identifiers and comments.
pub fn placeholders(tokens: &[Spanned]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for t in tokens {
        if let Token::Placeholder(name) = &t.token
            && !names.contains(name)
        {
            names.push(name.clone());
        }
    }
    names
}

/// Replaces every `:name` placeholder with its value rendered as a literal. The Data API sends
/// every value as a string that the database casts implicitly; an untyped literal does that.
pub fn inline_parameters(text: &str, tokens: &[Spanned], values: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for t in tokens {
        if let Token::Placeholder(name) = &t.token
            && let Some((_, value)) = values.iter().find(|(n, _)| n == name)
        {
            out.push_str(&text[last..t.start]);
            out.push_str(&quote_literal(value));
            last = t.end;
        }
    }
    out.push_str(&text[last..]);
    out
}

/// True when the first word of the statement is `keyword` (case-insensitive).
pub fn starts_with_keyword(tokens: &[Spanned], keyword: &str) -> bool {
    matches!(tokens.first(), Some(Spanned { token: Token::Word(w), .. }) if w.eq_ignore_ascii_case(keyword))
}

/// True when a `LIMIT` keyword appears outside every parenthesis, i.e. on the outer SELECT.
pub fn has_outer_limit(tokens: &[Spanned]) -> bool {
    let mut depth = 0i32;
    for t in tokens {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Word(w) if depth == 0 && w.eq_ignore_ascii_case("limit") => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<Token> {
        tokenize(text)
            .unwrap()
            .into_iter()
            .map(|s| s.token)
            .collect()
    }

    #[test]
    fn literals_decode_doubled_quotes_and_backslash_escapes() {
        assert_eq!(words("'it''s'"), vec![Token::Literal("it's".into())]);
        assert_eq!(words(r"'it\'s'"), vec![Token::Literal("it's".into())]);
        assert_eq!(words(r"'a\\b'"), vec![Token::Literal(r"a\b".into())]);
        assert_eq!(words(r"'x\ny'"), vec![Token::Literal("x\ny".into())]);
        assert_eq!(words("'日本'"), vec![Token::Literal("日本".into())]);
    }

    #[test]
    fn unterminated_literal_is_an_error() {
        assert!(matches!(
            tokenize("select 'abc"),
            Err(LexError::UnterminatedLiteral(_))
        ));
        assert!(matches!(
            tokenize(r"select 'abc\"),
            Err(LexError::UnterminatedLiteral(_))
        ));
        assert!(matches!(
            tokenize("select /* x"),
            Err(LexError::UnterminatedComment(_))
        ));
    }

    #[test]
    fn placeholders_ignore_casts_literals_and_comments() {
        let text = "select a::int, ':x', \":y\" from t -- :z\n where b = :id and c = :id /* :w */ and d = :n2";
        let tokens = tokenize(text).unwrap();
        assert_eq!(
            placeholders(&tokens),
            vec!["id".to_string(), "n2".to_string()]
        );
    }

    #[test]
    fn quote_literal_round_trips_through_the_lexer() {
        for value in [
            "",
            "a",
            "it's",
            r"back\slash",
            "'; drop table x; --",
            "\\'",
            "日本\n\t$$",
        ] {
            let lit = quote_literal(value);
            assert_eq!(
                words(&lit),
                vec![Token::Literal(value.to_string())],
                "{value:?}"
            );
        }
    }

    #[test]
    fn inline_parameters_replaces_only_placeholders() {
        let text = "select * from t where a = :a and b = ':a' and c = :b::int";
        let tokens = tokenize(text).unwrap();
        let values = vec![
            ("a".to_string(), "x'y".to_string()),
            ("b".to_string(), "5".to_string()),
        ];
        assert_eq!(
            inline_parameters(text, &tokens, &values),
            "select * from t where a = 'x''y' and b = ':a' and c = '5'::int"
        );
    }

    #[test]
    fn outer_limit_is_detected_only_at_depth_zero() {
        let outer = tokenize("select * from t order by 1 LIMIT 5").unwrap();
        let inner = tokenize("select * from t where id in (select id from t limit 5)").unwrap();
        let literal = tokenize("select 'limit 5' from t").unwrap();
        assert!(has_outer_limit(&outer));
        assert!(!has_outer_limit(&inner));
        assert!(!has_outer_limit(&literal));
    }
}
