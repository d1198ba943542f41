//! Parsing an `UNLOAD ('select') TO 's3://…' options…` statement into an [`UnloadSpec`], with
//! Redshift's rules for option order (any), case (any), defaults and invalid combinations
//! (Redshift's UNLOAD documentation: parameters, defaults and usage notes).

use crate::sqltext::{LexError, Spanned, Token, has_outer_limit, tokenize};

mod options;
use options::option;

/// Output format of the data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Delimited text, `|` by default, no quoting.
    Text,
    Csv,
    Json,
    Parquet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Zstd,
}

/// Server-side encryption requested for the written objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    None,
    /// `ENCRYPTED` alone: SSE-S3.
    S3,
    /// `ENCRYPTED AUTO`: whatever the bucket's default is.
    Auto,
    /// `KMS_KEY_ID '…' ENCRYPTED`.
    Kms(String),
}

/// Everything an UNLOAD statement asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct UnloadSpec {
    /// The inner SELECT, with the UNLOAD literal's quoting already undone.
    pub select: String,
    pub bucket: String,
    /// The key prefix every written object starts with (may be empty).
    pub prefix: String,
    pub format: Format,
    pub delimiter: char,
    pub header: bool,
    pub add_quotes: bool,
    pub escape: bool,
    pub null_as: String,
    pub compression: Compression,
    pub parallel: bool,
    /// Largest data file, in bytes.
    pub max_file_size: u64,
    pub manifest: bool,
    pub manifest_verbose: bool,
    pub allow_overwrite: bool,
    pub clean_path: bool,
    pub encryption: Encryption,
    /// `EXTENSION 'ext'`: replaces the compression suffix, written after a dot.
    pub extension: Option<String>,
}

/// Why an UNLOAD cannot run. The text is what `DescribeStatement.Error` shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ERROR: {0}")]
pub struct UnloadError(pub String);

impl From<LexError> for UnloadError {
    fn from(e: LexError) -> Self {
        UnloadError(e.to_string())
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, UnloadError> {
    Err(UnloadError(msg.into()))
}

/// Redshift's documented MAXFILESIZE bounds: 5 MB to 6.2 GB, default 6.2 GB.
const MB: f64 = 1024.0 * 1024.0;
const MIN_FILE_SIZE: f64 = 5.0 * MB;
const MAX_FILE_SIZE: f64 = 6.2 * 1024.0 * MB;

/// Tracks which options were given, to report duplicates and invalid combinations.
#[derive(Default)]
struct Seen {
    format: Option<Format>,
    delimiter: Option<char>,
    fixedwidth: bool,
    header: bool,
    add_quotes: bool,
    escape: bool,
    null_as: Option<String>,
    compression: Option<Compression>,
    parallel: Option<bool>,
    max_file_size: Option<u64>,
    row_group_size: bool,
    manifest: bool,
    verbose: bool,
    allow_overwrite: bool,
    clean_path: bool,
    encrypted: bool,
    encrypted_auto: bool,
    kms_key_id: Option<String>,
    master_symmetric_key: bool,
    credentials: bool,
    iam_role: bool,
    access_keys: bool,
    region: bool,
    extension: Option<String>,
    partition_by: bool,
}

struct Cursor<'a> {
    tokens: &'a [Spanned],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<&'a Token> {
        self.tokens.get(self.pos).map(|s| &s.token)
    }

    fn next(&mut self) -> Option<&'a Token> {
        let t = self.peek();
        self.pos += 1;
        t
    }

    fn peek_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let hit = self.peek_word(word);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect_literal(&mut self, after: &str) -> Result<String, UnloadError> {
        match self.next() {
            Some(Token::Literal(v)) => Ok(v.clone()),
            other => err(format!(
                "syntax error at or near {} (a quoted string must follow {after})",
                describe(other)
            )),
        }
    }
}

fn describe(token: Option<&Token>) -> String {
    match token {
        None => "end of input".into(),
        Some(Token::Word(w)) | Some(Token::Number(w)) => format!("\"{w}\""),
        Some(Token::QuotedIdent(w)) => format!("\"\\\"{w}\\\"\""),
        Some(Token::Literal(w)) => format!("\"'{w}'\""),
        Some(Token::Placeholder(w)) => format!("\":{w}\""),
        Some(Token::Symbol(c)) => format!("\"{c}\""),
        Some(Token::LParen) => "\"(\"".into(),
        Some(Token::RParen) => "\")\"".into(),
    }
}

fn dup(name: &str) -> UnloadError {
    UnloadError(format!(
        "conflicting or redundant options: {name} specified more than once"
    ))
}

/// Parses an UNLOAD statement.
pub fn parse_unload(sql: &str) -> Result<UnloadSpec, UnloadError> {
    let tokens = tokenize(sql)?;
    let mut c = Cursor {
        tokens: &tokens,
        pos: 0,
    };
    if !c.eat_word("unload") {
        return err("not an UNLOAD statement");
    }
    if c.next() != Some(&Token::LParen) {
        return err(format!(
            "syntax error at or near {}",
            describe(c.tokens.get(c.pos - 1).map(|s| &s.token))
        ));
    }
    let select = c.expect_literal("UNLOAD (")?;
    if c.next() != Some(&Token::RParen) {
        return err("syntax error: UNLOAD takes exactly one quoted SELECT in parentheses");
    }
    if !c.eat_word("to") {
        return err(format!(
            "syntax error at or near {} (expected TO)",
            describe(c.peek())
        ));
    }
    let target = c.expect_literal("TO")?;
    let (bucket, prefix) = parse_s3_target(&target)?;

    let mut s = Seen::default();
    while let Some(token) = c.next() {
        let Token::Word(word) = token else {
            if matches!(token, Token::Symbol(';')) && c.peek().is_none() {
                break;
            }
            return err(format!("syntax error at or near {}", describe(Some(token))));
        };
        option(word, &mut c, &mut s)?;
    }

    spec(select, bucket, prefix, s)
}

/// The UnloadSpec of a statement whose options were all read.
fn spec(
    select: String,
    bucket: String,
    prefix: String,
    s: Seen,
) -> Result<UnloadSpec, UnloadError> {
    let format = s.format.unwrap_or(Format::Text);
    check_combinations(&s, format)?;
    check_supported(&s)?;

    let select_tokens = tokenize(&select)?;
    if has_outer_limit(&select_tokens) {
        return err(
            "Limit clause is not supported in the outer SELECT of an UNLOAD; wrap the query in a subquery",
        );
    }

    let encryption = match (&s.kms_key_id, s.encrypted, s.encrypted_auto) {
        (_, _, true) => Encryption::Auto,
        (Some(key), _, _) => Encryption::Kms(key.clone()),
        (None, true, _) => Encryption::S3,
        (None, false, _) => Encryption::None,
    };

    Ok(UnloadSpec {
        select,
        bucket,
        prefix,
        format,
        delimiter: s
            .delimiter
            .unwrap_or(if format == Format::Text { '|' } else { ',' }),
        header: s.header,
        add_quotes: s.add_quotes,
        escape: s.escape,
        null_as: s.null_as.unwrap_or_default(),
        compression: s.compression.unwrap_or(Compression::None),
        parallel: s.parallel.unwrap_or(true),
        max_file_size: s.max_file_size.unwrap_or(MAX_FILE_SIZE as u64),
        manifest: s.manifest,
        manifest_verbose: s.verbose,
        allow_overwrite: s.allow_overwrite,
        clean_path: s.clean_path,
        encryption,
        extension: s.extension,
    })
}

fn parse_format_word(word: &str) -> Option<Format> {
    match word.to_ascii_uppercase().as_str() {
        "CSV" => Some(Format::Csv),
        "PARQUET" => Some(Format::Parquet),
        "JSON" => Some(Format::Json),
        _ => None,
    }
}

fn set_format(s: &mut Seen, f: Format) -> Result<(), UnloadError> {
    if s.format.is_some() {
        return Err(dup("FORMAT"));
    }
    s.format = Some(f);
    Ok(())
}

/// Reads `n [MB|GB]` and checks it against Redshift's bounds.
fn parse_size(c: &mut Cursor<'_>, option: &str, min: f64, max: f64) -> Result<u64, UnloadError> {
    let number = match c.next() {
        Some(Token::Number(n)) => n.parse::<f64>().ok(),
        _ => None,
    };
    let Some(number) = number else {
        return err(format!(
            "syntax error: {option} must be followed by a number"
        ));
    };
    let unit = if c.eat_word("gb") {
        1024.0 * MB
    } else {
        c.eat_word("mb");
        MB
    };
    let bytes = number * unit;
    if !(min..=max + 0.5 * MB).contains(&bytes) {
        return err(format!(
            "{option} is out of range: {number} {} (allowed {} MB to {} MB)",
            if unit > MB { "GB" } else { "MB" },
            min / MB,
            (max / MB).round()
        ));
    }
    Ok(bytes.min(max) as u64)
}

/// Splits `s3://bucket/prefix` into its parts.
fn parse_s3_target(target: &str) -> Result<(String, String), UnloadError> {
    let Some(rest) = target.strip_prefix("s3://") else {
        return err(format!(
            "Invalid S3 path '{target}': it must start with s3://"
        ));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid_bucket {
        return err(format!("Invalid S3 bucket name '{bucket}' in '{target}'"));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// Redshift's invalid option combinations (its UNLOAD documentation's usage notes), one check
/// per note, in the documentation's order so the two can be compared line by line.
fn check_combinations(s: &Seen, format: Format) -> Result<(), UnloadError> {
    let auth = [s.iam_role, s.credentials, s.access_keys]
        .iter()
        .filter(|b| **b)
        .count();
    if auth == 0 {
        return err(
            "UNLOAD needs authorization: IAM_ROLE, ACCESS_KEY_ID/SECRET_ACCESS_KEY or CREDENTIALS",
        );
    }
    if auth > 1 {
        return err(
            "conflicting or redundant options: IAM_ROLE cannot be combined with access keys or CREDENTIALS",
        );
    }
    let mut conflicts: Vec<(&str, &str)> = Vec::new();
    if format == Format::Csv && s.fixedwidth {
        conflicts.push(("CSV", "FIXEDWIDTH"));
    }
    if format == Format::Parquet {
        let bad = [
            (s.delimiter.is_some(), "DELIMITER"),
            (s.fixedwidth, "FIXEDWIDTH"),
            (s.add_quotes, "ADDQUOTES"),
            (s.escape, "ESCAPE"),
            (s.null_as.is_some(), "NULL AS"),
            (s.header, "HEADER"),
            (s.compression == Some(Compression::Gzip), "GZIP"),
            (s.compression == Some(Compression::Bzip2), "BZIP2"),
            (s.compression == Some(Compression::Zstd), "ZSTD"),
        ];
        conflicts.extend(
            bad.iter()
                .filter(|(hit, _)| *hit)
                .map(|(_, name)| ("PARQUET", *name)),
        );
        if s.encrypted && s.kms_key_id.is_none() && !s.encrypted_auto {
            return err(
                "PARQUET with ENCRYPTED is only supported with server-side encryption using an AWS KMS key (SSE-KMS)",
            );
        }
    }
    if format == Format::Json {
        let bad = [
            (s.delimiter.is_some(), "DELIMITER"),
            (s.header, "HEADER"),
            (s.fixedwidth, "FIXEDWIDTH"),
            (s.add_quotes, "ADDQUOTES"),
            (s.escape, "ESCAPE"),
            (s.null_as.is_some(), "NULL AS"),
        ];
        conflicts.extend(
            bad.iter()
                .filter(|(hit, _)| *hit)
                .map(|(_, name)| ("JSON", *name)),
        );
    }
    if s.header && s.fixedwidth {
        conflicts.push(("HEADER", "FIXEDWIDTH"));
    }
    if s.delimiter.is_some() && s.fixedwidth {
        conflicts.push(("DELIMITER", "FIXEDWIDTH"));
    }
    if s.clean_path && s.allow_overwrite {
        conflicts.push(("CLEANPATH", "ALLOWOVERWRITE"));
    }
    if s.kms_key_id.is_some() && s.credentials {
        conflicts.push(("KMS_KEY_ID", "CREDENTIALS"));
    }
    if s.encrypted_auto && s.kms_key_id.is_some() {
        conflicts.push(("ENCRYPTED AUTO", "KMS_KEY_ID"));
    }
    if s.encrypted_auto && s.master_symmetric_key {
        conflicts.push(("ENCRYPTED AUTO", "MASTER_SYMMETRIC_KEY"));
    }
    if s.row_group_size && format != Format::Parquet {
        return err("ROWGROUPSIZE is only supported with FORMAT PARQUET");
    }
    if s.kms_key_id.is_some() && !s.encrypted {
        return err("KMS_KEY_ID requires the ENCRYPTED option");
    }
    if let Some((a, b)) = conflicts.first() {
        return err(format!(
            "conflicting or redundant options: {a} and {b} cannot be used together"
        ));
    }
    Ok(())
}

/// Options that are valid Redshift but that this emulator does not implement.
fn check_supported(s: &Seen) -> Result<(), UnloadError> {
    let unsupported = [
        (s.fixedwidth, "FIXEDWIDTH"),
        (s.partition_by, "PARTITION BY"),
        (
            s.master_symmetric_key,
            "MASTER_SYMMETRIC_KEY (client-side encryption)",
        ),
        (s.compression == Some(Compression::Bzip2), "BZIP2"),
        (s.compression == Some(Compression::Zstd), "ZSTD"),
    ];
    match unsupported.iter().find(|(hit, _)| *hit) {
        Some((_, name)) => err(format!(
            "{name} is valid Redshift but not implemented by redshift-data-local"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
