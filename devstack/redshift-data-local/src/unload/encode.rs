//! Rendering rows (PostgreSQL's text output of each value) into UNLOAD's data formats:
//! delimited text, CSV and JSON lines.
//!
//! CSV follows the same rules as PostgreSQL's `COPY … CSV` (quote a field that contains the
//! delimiter, a quote, CR or LF; double embedded quotes; quote a non-NULL value that equals the
//! NULL string, so an empty string is `""` and NULL is empty), which is also what Redshift
//! documents for the cases it documents.

use super::parse::{Format, UnloadSpec};

/// How a column's values are typed in JSON output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Number,
    Bool,
    Text,
}

impl ValueKind {
    /// The kind for a PostgreSQL type name (`pg_type.typname`).
    pub fn for_type(typname: &str) -> Self {
        match typname {
            "int2" | "int4" | "int8" | "float4" | "float8" | "numeric" | "oid" => ValueKind::Number,
            "bool" => ValueKind::Bool,
            _ => ValueKind::Text,
        }
    }
}

/// Encodes rows of one UNLOAD into bytes, one record (line) at a time.
#[derive(Debug, Clone)]
pub struct RowEncoder {
    format: Format,
    delimiter: char,
    add_quotes: bool,
    escape: bool,
    null_as: String,
    names: Vec<String>,
    kinds: Vec<ValueKind>,
}

impl RowEncoder {
    pub fn new(spec: &UnloadSpec, names: Vec<String>, kinds: Vec<ValueKind>) -> Self {
        RowEncoder {
            format: spec.format,
            delimiter: spec.delimiter,
            add_quotes: spec.add_quotes,
            escape: spec.escape,
            null_as: spec.null_as.clone(),
            names,
            kinds,
        }
    }

    /// The column names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Appends the header line (column names) to `out`.
    pub fn header(&self, out: &mut Vec<u8>) {
        let names: Vec<Option<&str>> = self.names.iter().map(|n| Some(n.as_str())).collect();
        self.delimited(&names, out);
    }

    /// Appends one row, terminated by LF, to `out`.
    pub fn row(&self, fields: &[Option<&str>], out: &mut Vec<u8>) {
        match self.format {
            Format::Json => self.json(fields, out),
            _ => self.delimited(fields, out),
        }
    }

    fn delimited(&self, fields: &[Option<&str>], out: &mut Vec<u8>) {
        let single = fields.len() == 1;
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                push_char(out, self.delimiter);
            }
            match field {
                None => out.extend_from_slice(self.null_as.as_bytes()),
                Some(value) if self.format == Format::Csv => self.csv_field(value, single, out),
                Some(value) => self.text_field(value, out),
            }
        }
        out.push(b'\n');
    }

    fn csv_field(&self, value: &str, single: bool, out: &mut Vec<u8>) {
        let needs_quotes = self.add_quotes
            || *value == self.null_as
            || (single && value == "\\.")
            || value
                .chars()
                .any(|c| c == self.delimiter || c == '"' || c == '\n' || c == '\r');
        if !needs_quotes {
            out.extend_from_slice(value.as_bytes());
            return;
        }
        out.push(b'"');
        for ch in value.chars() {
            if ch == '"' {
                out.push(b'"');
            }
            push_char(out, ch);
        }
        out.push(b'"');
    }

    fn text_field(&self, value: &str, out: &mut Vec<u8>) {
        if self.add_quotes {
            out.push(b'"');
        }
        if self.escape {
            for ch in value.chars() {
                let special = ch == '\n'
                    || ch == '\r'
                    || ch == '\\'
                    || ch == self.delimiter
                    || (self.add_quotes && (ch == '"' || ch == '\''));
                if special {
                    out.push(b'\\');
                }
                push_char(out, ch);
            }
        } else {
            out.extend_from_slice(value.as_bytes());
        }
        if self.add_quotes {
            out.push(b'"');
        }
    }

    fn json(&self, fields: &[Option<&str>], out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (field, name)) in fields.iter().zip(&self.names).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_json_string(out, name);
            out.push(b':');
            let kind = self.kinds.get(i).copied().unwrap_or(ValueKind::Text);
            match (field, kind) {
                (None, _) => out.extend_from_slice(b"null"),
                (Some(v), ValueKind::Number) if is_json_number(v) => {
                    out.extend_from_slice(v.as_bytes())
                }
                // Redshift documents booleans in JSON output as t / f.
                (Some(v), _) => push_json_string(out, v),
            }
        }
        out.extend_from_slice(b"}\n");
    }
}

fn push_char(out: &mut Vec<u8>, ch: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
}

fn push_json_string(out: &mut Vec<u8>, value: &str) {
    // serde_json's string escaping is exact and cannot fail for a &str into a Vec.
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// PostgreSQL prints NaN and infinities for floats and numerics; JSON has no such numbers.
fn is_json_number(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unload::parse::parse_unload;

    fn encoder(options: &str, names: &[&str], kinds: &[ValueKind]) -> RowEncoder {
        let spec = parse_unload(&format!(
            "unload ('select 1') to 's3://bkt/p' iam_role default {options}"
        ))
        .unwrap();
        RowEncoder::new(
            &spec,
            names.iter().map(|s| s.to_string()).collect(),
            kinds.to_vec(),
        )
    }

    fn render(enc: &RowEncoder, fields: &[Option<&str>]) -> String {
        let mut out = Vec::new();
        enc.row(fields, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_quotes_like_postgres_copy() {
        let enc = encoder("CSV", &["a", "b", "c", "d", "e"], &[]);
        let line = render(
            &enc,
            &[
                Some("plain"),
                Some("with,comma"),
                Some("say \"hi\""),
                None,
                Some(""),
            ],
        );
        assert_eq!(line, "plain,\"with,comma\",\"say \"\"hi\"\"\",,\"\"\n");
        assert_eq!(
            render(
                &enc,
                &[
                    Some("two\nlines"),
                    Some("cr\r"),
                    Some("it's"),
                    Some("é"),
                    Some(" x ")
                ]
            ),
            "\"two\nlines\",\"cr\r\",it's,é, x \n"
        );
    }

    #[test]
    fn csv_header_and_addquotes() {
        let enc = encoder("CSV ADDQUOTES", &["id", "name,x"], &[]);
        let mut out = Vec::new();
        enc.header(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "\"id\",\"name,x\"\n");
        assert_eq!(render(&enc, &[Some("1"), None]), "\"1\",\n");
    }

    #[test]
    fn text_format_defaults_and_escape() {
        let plain = encoder("", &["a", "b"], &[]);
        assert_eq!(render(&plain, &[Some("x|y"), None]), "x|y|\n");
        let escaped = encoder("ESCAPE NULL AS 'NULL'", &["a", "b"], &[]);
        assert_eq!(
            render(&escaped, &[Some("x|y\\z\n"), None]),
            "x\\|y\\\\z\\\n|NULL\n"
        );
    }

    #[test]
    fn json_types_values() {
        let enc = encoder(
            "FORMAT JSON",
            &["n", "f", "b", "s", "z"],
            &[
                ValueKind::Number,
                ValueKind::Number,
                ValueKind::Bool,
                ValueKind::Text,
                ValueKind::Text,
            ],
        );
        assert_eq!(
            render(
                &enc,
                &[Some("12.50"), Some("NaN"), Some("t"), Some("a\"b\n"), None]
            ),
            "{\"n\":12.50,\"f\":\"NaN\",\"b\":\"t\",\"s\":\"a\\\"b\\n\",\"z\":null}\n"
        );
    }
}
