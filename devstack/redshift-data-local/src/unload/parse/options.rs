//! The UNLOAD options, one arm each, as Redshift's UNLOAD documentation lists them.

use super::{
    Compression, Cursor, MAX_FILE_SIZE, MB, MIN_FILE_SIZE, Seen, Token, UnloadError, dup, err,
    parse_format_word, parse_size, set_format,
};

/// Reads one UNLOAD option (its keyword `word` already taken) into `s`. One arm per option of
/// the Redshift documentation, kept as one match so that the grammar reads top to bottom.
pub(super) fn option(word: &str, c: &mut Cursor<'_>, s: &mut Seen) -> Result<(), UnloadError> {
    let kw = word.to_ascii_uppercase();
    match kw.as_str() {
        "IAM_ROLE" => {
            if s.iam_role {
                return Err(dup("IAM_ROLE"));
            }
            s.iam_role = true;
            if !c.eat_word("default") {
                let roles = c.expect_literal("IAM_ROLE")?;
                if !roles.split(',').all(|r| r.trim().starts_with("arn:")) {
                    return err(format!(
                        "IAM_ROLE must be 'default' or role ARNs, got '{roles}'"
                    ));
                }
            }
        }
        "CREDENTIALS" => {
            s.credentials = true;
            c.eat_word("as");
            c.expect_literal("CREDENTIALS")?;
        }
        "ACCESS_KEY_ID" | "SECRET_ACCESS_KEY" | "SESSION_TOKEN" => {
            s.access_keys = true;
            c.expect_literal(&kw)?;
        }
        "FORMAT" => {
            c.eat_word("as");
            let f = match c.next() {
                Some(Token::Word(w)) => parse_format_word(w),
                _ => None,
            };
            let Some(f) = f else {
                return err("syntax error: FORMAT must be followed by CSV, PARQUET or JSON");
            };
            set_format(s, f)?;
        }
        "CSV" | "PARQUET" | "JSON" => {
            if let Some(f) = parse_format_word(word) {
                set_format(s, f)?;
            }
        }
        "PARTITION" => {
            s.partition_by = true;
            // Consume `BY ( … ) [INCLUDE]` so that combinations are still reported.
            c.eat_word("by");
            if c.next() != Some(&Token::LParen) {
                return err("syntax error: PARTITION BY needs a parenthesised column list");
            }
            while let Some(t) = c.next() {
                if *t == Token::RParen {
                    break;
                }
            }
            c.eat_word("include");
        }
        "MANIFEST" => {
            if s.manifest {
                return Err(dup("MANIFEST"));
            }
            s.manifest = true;
            s.verbose = c.eat_word("verbose");
        }
        "VERBOSE" => return err("VERBOSE is only allowed after MANIFEST"),
        "HEADER" => s.header = true,
        "DELIMITER" => {
            if s.delimiter.is_some() {
                return Err(dup("DELIMITER"));
            }
            c.eat_word("as");
            let d = c.expect_literal("DELIMITER")?;
            let mut chars = d.chars();
            match (chars.next(), chars.next()) {
                (Some(ch), None) if ch.is_ascii() => s.delimiter = Some(ch),
                _ => {
                    return err(format!(
                        "DELIMITER must be a single ASCII character, got '{d}'"
                    ));
                }
            }
        }
        "FIXEDWIDTH" => {
            s.fixedwidth = true;
            c.eat_word("as");
            c.expect_literal("FIXEDWIDTH")?;
        }
        "ENCRYPTED" => {
            s.encrypted = true;
            s.encrypted_auto = c.eat_word("auto");
        }
        "KMS_KEY_ID" => s.kms_key_id = Some(c.expect_literal("KMS_KEY_ID")?),
        "MASTER_SYMMETRIC_KEY" => {
            s.master_symmetric_key = true;
            c.expect_literal("MASTER_SYMMETRIC_KEY")?;
        }
        "GZIP" | "BZIP2" | "ZSTD" => {
            if s.compression.is_some() {
                return err(
                    "conflicting or redundant options: only one of GZIP, BZIP2, ZSTD is allowed",
                );
            }
            s.compression = Some(match kw.as_str() {
                "GZIP" => Compression::Gzip,
                "BZIP2" => Compression::Bzip2,
                _ => Compression::Zstd,
            });
        }
        "ADDQUOTES" => s.add_quotes = true,
        "NULL" => {
            c.eat_word("as");
            s.null_as = Some(c.expect_literal("NULL AS")?);
        }
        "ESCAPE" => s.escape = true,
        "ALLOWOVERWRITE" => s.allow_overwrite = true,
        "CLEANPATH" => s.clean_path = true,
        "PARALLEL" => {
            if s.parallel.is_some() {
                return Err(dup("PARALLEL"));
            }
            let value = if c.eat_word("on") || c.eat_word("true") {
                true
            } else {
                !(c.eat_word("off") || c.eat_word("false"))
            };
            s.parallel = Some(value);
        }
        "MAXFILESIZE" => {
            if s.max_file_size.is_some() {
                return Err(dup("MAXFILESIZE"));
            }
            c.eat_word("as");
            s.max_file_size = Some(parse_size(c, "MAXFILESIZE", MIN_FILE_SIZE, MAX_FILE_SIZE)?);
        }
        "ROWGROUPSIZE" => {
            s.row_group_size = true;
            c.eat_word("as");
            parse_size(c, "ROWGROUPSIZE", 32.0 * MB, 128.0 * MB)?;
        }
        "REGION" => {
            s.region = true;
            c.eat_word("as");
            c.expect_literal("REGION")?;
        }
        "EXTENSION" => {
            let ext = c.expect_literal("EXTENSION")?;
            s.extension = Some(ext.trim_start_matches('.').to_string());
        }
        _ => {
            return err(format!(
                "syntax error at or near \"{word}\" (unknown UNLOAD option)"
            ));
        }
    }
    Ok(())
}
