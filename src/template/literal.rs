//! Rendering one validated parameter value as SQL — the security core. Only string and enum
//! values are ever quoted (`'` and `\\` doubled, since Redshift's lexer treats a backslash in a
//! literal as an escape); every other type is parsed and re-formatted from its numbers, so
//! its characters cannot leave the literal.

use regex::Regex;
use serde_json::Value;
use std::sync::OnceLock;

use super::{ParamError, ParamSpec, ParamType, invalid};

/// A string as a Redshift literal: `'` and `\` doubled. Rejects NUL, which no Redshift
/// string can hold.
pub fn string_literal(value: &str) -> Result<String, String> {
    if value.contains('\0') {
        return Err("contains a NUL character".into());
    }
    Ok(escape_literal(value))
}

/// `'value'` with `'` and `\` doubled: read back as exactly `value` by Redshift's lexer, which
/// treats a backslash in a literal as an escape character.
pub fn escape_literal(value: &str) -> String {
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

/// The text of a value given as a JSON string, or a JSON number / boolean where the type
/// allows it.
fn text_of<'a>(name: &str, value: &'a Value) -> Result<std::borrow::Cow<'a, str>, ParamError> {
    match value {
        Value::String(s) => Ok(s.as_str().into()),
        Value::Number(n) => Ok(n.to_string().into()),
        Value::Bool(b) => Ok(b.to_string().into()),
        Value::Null => Err(invalid(name, "must not be null")),
        _ => Err(invalid(name, "must be a string, number or boolean")),
    }
}

/// A DECIMAL literal: Redshift's DECIMAL holds at most 38 digits, 37 of them after the point.
fn decimal_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    #[expect(clippy::expect_used, reason = "a constant pattern that compiles")]
    RE.get_or_init(|| Regex::new(r"^-?[0-9]{1,38}(\.[0-9]{1,37})?$").expect("decimal pattern"))
}

/// Validates one value against its spec and renders it as SQL.
pub(super) fn render_value(
    name: &str,
    spec: &ParamSpec,
    value: &Value,
) -> Result<String, ParamError> {
    match spec.ty {
        ParamType::String => render_string(name, spec, value),
        ParamType::Enum => {
            let Value::String(s) = value else {
                return Err(invalid(name, "must be a string"));
            };
            if !spec.values.iter().any(|v| v == s) {
                return Err(invalid(
                    name,
                    format!("must be one of {}", spec.values.join(", ")),
                ));
            }
            string_literal(s).map_err(|e| invalid(name, e))
        }
        ParamType::Integer => {
            let text = text_of(name, value)?;
            let n: i64 = text
                .trim()
                .parse()
                .map_err(|_| invalid(name, format!("{text:?} is not an integer")))?;
            check_bounds(name, spec, n as f64, |v| v.as_f64())?;
            Ok(signed(n.to_string()))
        }
        ParamType::Decimal => {
            let text = text_of(name, value)?;
            let text = text.trim();
            if !decimal_regex().is_match(text) {
                return Err(invalid(name, format!("{text:?} is not a decimal number")));
            }
            let approx: f64 = text.parse().map_err(|_| invalid(name, "not a number"))?;
            check_bounds(name, spec, approx, |v| {
                v.as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })?;
            Ok(signed(text.to_string()))
        }
        ParamType::Boolean => match value {
            Value::Bool(true) => Ok("TRUE".into()),
            Value::Bool(false) => Ok("FALSE".into()),
            Value::String(s) if s == "true" => Ok("TRUE".into()),
            Value::String(s) if s == "false" => Ok("FALSE".into()),
            _ => Err(invalid(name, "must be true or false")),
        },
        ParamType::Date | ParamType::Timestamp => render_time(name, spec, value),
    }
}

/// A string parameter: its length and pattern checked, then quoted.
fn render_string(name: &str, spec: &ParamSpec, value: &Value) -> Result<String, ParamError> {
    let Value::String(s) = value else {
        return Err(invalid(name, "must be a string"));
    };
    if let Some(max) = spec.max_length
        && s.chars().count() > max
    {
        return Err(invalid(name, format!("longer than {max} characters")));
    }
    if let Some(pattern) = &spec.pattern {
        let re = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| invalid(name, e))?;
        if !re.is_match(s) {
            return Err(invalid(name, format!("does not match {pattern}")));
        }
    }
    string_literal(s).map_err(|e| invalid(name, e))
}

/// A DATE or TIMESTAMP parameter, in its canonical form.
fn render_time(name: &str, spec: &ParamSpec, value: &Value) -> Result<String, ParamError> {
    match spec.ty {
        ParamType::Date => {
            let Value::String(s) = value else {
                return Err(invalid(name, "must be a YYYY-MM-DD string"));
            };
            let date = parse_date(s)
                .ok_or_else(|| invalid(name, format!("{s:?} is not a YYYY-MM-DD date")))?;
            check_text_bounds(name, spec, &date)?;
            Ok(format!("DATE '{date}'"))
        }
        _ => {
            let Value::String(s) = value else {
                return Err(invalid(name, "must be a timestamp string"));
            };
            let ts = parse_timestamp(s).ok_or_else(|| {
                invalid(
                    name,
                    format!("{s:?} is not a YYYY-MM-DD HH:MM:SS[.ffffff] timestamp"),
                )
            })?;
            check_text_bounds(name, spec, &ts)?;
            Ok(format!("TIMESTAMP '{ts}'"))
        }
    }
}

/// A negative number in parentheses, so that its sign cannot join the text before it: a
/// template written `x-:n` must become `x-(-5)`, not `x--5` (a comment to the end of line).
fn signed(number: String) -> String {
    if number.starts_with('-') {
        format!("({number})")
    } else {
        number
    }
}

fn check_bounds(
    name: &str,
    spec: &ParamSpec,
    v: f64,
    num: impl Fn(&Value) -> Option<f64>,
) -> Result<(), ParamError> {
    if let Some(min) = spec.min.as_ref().and_then(&num)
        && v < min
    {
        return Err(invalid(name, format!("must be at least {min}")));
    }
    if let Some(max) = spec.max.as_ref().and_then(&num)
        && v > max
    {
        return Err(invalid(name, format!("must be at most {max}")));
    }
    Ok(())
}

/// ISO dates and timestamps compare correctly as text.
fn check_text_bounds(name: &str, spec: &ParamSpec, v: &str) -> Result<(), ParamError> {
    if let Some(min) = spec.min.as_ref().and_then(Value::as_str)
        && v < min
    {
        return Err(invalid(name, format!("must not be before {min}")));
    }
    if let Some(max) = spec.max.as_ref().and_then(Value::as_str)
        && v > max
    {
        return Err(invalid(name, format!("must not be after {max}")));
    }
    Ok(())
}

/// `YYYY-MM-DD`, a real calendar date, re-formatted from its numbers.
fn parse_date(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 || d > days[(m - 1) as usize] {
        return None;
    }
    Some(format!("{y:04}-{m:02}-{d:02}"))
}

/// `YYYY-MM-DD[ T]HH:MM:SS[.f{1,6}]`, re-formatted from its numbers.
fn parse_timestamp(s: &str) -> Option<String> {
    if s.len() < 19 || !s.is_char_boundary(10) || !matches!(s.as_bytes()[10], b' ' | b'T') {
        return None;
    }
    let date = parse_date(&s[..10])?;
    let time = &s[11..];
    let (hms, frac) = time
        .split_once('.')
        .map_or((time, None), |(a, b)| (a, Some(b)));
    let parts: Vec<&str> = hms.split(':').collect();
    if parts.len() != 3
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    let (h, m, sec): (u32, u32, u32) = (
        parts[0].parse().ok()?,
        parts[1].parse().ok()?,
        parts[2].parse().ok()?,
    );
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    let frac = match frac {
        None => String::new(),
        Some(f) if (1..=6).contains(&f.len()) && f.bytes().all(|c| c.is_ascii_digit()) => {
            format!(".{f}")
        }
        Some(_) => return None,
    };
    Some(format!("{date} {h:02}:{m:02}:{sec:02}{frac}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(ty: ParamType) -> ParamSpec {
        ParamSpec::of(ty)
    }

    #[test]
    fn string_literals_double_quotes_and_backslashes() {
        assert_eq!(string_literal("abc").unwrap(), "'abc'");
        assert_eq!(string_literal("it's").unwrap(), "'it''s'");
        assert_eq!(string_literal(r"a\b").unwrap(), r"'a\\b'");
        assert_eq!(string_literal(r"\'").unwrap(), r"'\\'''");
        assert_eq!(string_literal("").unwrap(), "''");
        assert!(string_literal("a\0b").is_err());
    }

    #[test]
    fn typed_values_render_canonically() {
        let cases = [
            (ParamType::Integer, json!(42), "42"),
            (ParamType::Integer, json!("-7"), "(-7)"),
            (ParamType::Decimal, json!("-0.5"), "(-0.5)"),
            (ParamType::Decimal, json!("12.50"), "12.50"),
            (ParamType::Decimal, json!(3), "3"),
            (ParamType::Boolean, json!(true), "TRUE"),
            (ParamType::Date, json!("2024-02-29"), "DATE '2024-02-29'"),
            (
                ParamType::Timestamp,
                json!("2024-01-02T03:04:05.123"),
                "TIMESTAMP '2024-01-02 03:04:05.123'",
            ),
        ];
        for (ty, value, expected) in cases {
            assert_eq!(
                render_value("p", &spec(ty), &value).unwrap(),
                expected,
                "{ty:?} {value}"
            );
        }
    }

    #[test]
    fn invalid_values_are_rejected_with_codes() {
        let bad = [
            (ParamType::Integer, json!("1; drop table x")),
            (ParamType::Integer, json!("9223372036854775808")),
            (ParamType::Integer, json!(1.5)),
            (ParamType::Decimal, json!("1e5")),
            (ParamType::Decimal, json!("1.2.3")),
            (ParamType::Boolean, json!("yes")),
            (ParamType::Date, json!("2023-02-29")),
            (ParamType::Date, json!("2024-1-01")),
            (ParamType::Date, json!("2024-01-01' or '1'='1")),
            (ParamType::Timestamp, json!("2024-01-01 24:00:00")),
            (ParamType::Timestamp, json!("2024-01-01 00:00:00.1234567")),
            (ParamType::String, json!(5)),
            (ParamType::String, json!(null)),
        ];
        for (ty, value) in bad {
            let e = render_value("p", &spec(ty), &value).unwrap_err();
            assert_eq!(e.code, "invalid_parameter", "{ty:?} {value}");
        }
    }

    #[test]
    fn constraints_apply() {
        let mut s = spec(ParamType::String);
        s.max_length = Some(3);
        s.pattern = Some("[A-Z]+".into());
        assert!(render_value("p", &s, &json!("ABC")).is_ok());
        assert!(render_value("p", &s, &json!("ABCD")).is_err());
        assert!(render_value("p", &s, &json!("AB1")).is_err());
        assert!(
            render_value("p", &s, &json!("ABC\nX")).is_err(),
            "pattern anchors the whole value"
        );
        let mut n = spec(ParamType::Integer);
        n.min = Some(json!(1));
        n.max = Some(json!(10));
        assert!(render_value("p", &n, &json!(10)).is_ok());
        assert!(render_value("p", &n, &json!(11)).is_err());
        let mut e = spec(ParamType::Enum);
        e.values = vec!["a".into(), "b".into()];
        assert_eq!(render_value("p", &e, &json!("b")).unwrap(), "'b'");
        assert!(render_value("p", &e, &json!("c")).is_err());
        let mut d = spec(ParamType::Date);
        d.min = Some(json!("2024-01-01"));
        assert!(render_value("p", &d, &json!("2023-12-31")).is_err());
    }
}
