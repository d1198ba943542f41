//! Query templates: a SELECT with `:name` placeholders and typed, constrained parameters,
//! checked at configuration time and rendered per request.
//!
//! The Data API cannot bind parameters inside UNLOAD's quoted SELECT, so every value is
//! validated and rendered as a SQL literal of its declared type by [`literal`] — the
//! project's most security-critical code — and spliced in where its placeholder stands
//! (placeholders are found with Redshift's lexical rules, never inside literals or comments).

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

mod literal;

use literal::render_value;
pub use literal::{escape_literal, string_literal};

/// A template as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// One SELECT with `:name` placeholders.
    pub sql: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
}

/// Declared type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Decimal,
    Date,
    Timestamp,
    Boolean,
    Enum,
}

/// A parameter's type and constraints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// Regular expression the whole value must match (string).
    pub pattern: Option<String>,
    /// Most characters (string).
    pub max_length: Option<usize>,
    /// Smallest / largest value (integer, decimal; date and timestamp as ISO text).
    pub min: Option<Value>,
    pub max: Option<Value>,
    /// Allowed values (enum).
    #[serde(default)]
    pub values: Vec<String>,
    /// Used when the request does not give the parameter; without it the parameter is required.
    pub default: Option<Value>,
}

#[cfg(test)]
impl ParamSpec {
    /// A parameter of type `ty` without constraints, for tests.
    pub(crate) fn of(ty: ParamType) -> ParamSpec {
        ParamSpec {
            ty,
            pattern: None,
            max_length: None,
            min: None,
            max: None,
            values: vec![],
            default: None,
        }
    }
}

/// Why parameter values are rejected. `code` is stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParamError {
    pub code: &'static str,
    pub message: String,
}

fn invalid(name: &str, why: impl std::fmt::Display) -> ParamError {
    ParamError {
        code: "invalid_parameter",
        message: format!("parameter {name}: {why}"),
    }
}

/// Byte range and name of one `:name` placeholder in template text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placeholder {
    start: usize,
    end: usize,
    name: String,
}

/// Finds `:name` placeholders outside literals, quoted identifiers, comments (nested, as
/// Redshift nests them) and `$$` strings, with Redshift's lexical rules ([`sqlcheck::lex`]);
/// `::` is a cast, not a placeholder.
fn placeholders(sql: &str) -> Result<Vec<Placeholder>, String> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    for code in crate::sqlcheck::lex(sql)?.code {
        let mut i = code.start;
        while i < code.end {
            match b[i] {
                b':' if b.get(i + 1) == Some(&b':') => i += 2,
                b':' if b
                    .get(i + 1)
                    .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') =>
                {
                    let start = i;
                    i += 1;
                    while i < code.end && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                        i += 1;
                    }
                    out.push(Placeholder {
                        start,
                        end: i,
                        name: sql[start + 1..i].to_string(),
                    });
                }
                _ => i += 1,
            }
        }
    }
    Ok(out)
}

impl TemplateSpec {
    /// Configuration-time checks: placeholders and declarations agree, constraints are
    /// consistent, and the SELECT (with NULL for every placeholder) is one read-only query
    /// that UNLOAD accepts.
    pub fn check(&self, name: &str) -> Result<(), String> {
        let found = placeholders(&self.sql).map_err(|e| format!("template {name}: {e}"))?;
        for p in &found {
            if !self.params.contains_key(&p.name) {
                return Err(format!(
                    "template {name}: placeholder :{} is not declared in params",
                    p.name
                ));
            }
        }
        for (param, spec) in &self.params {
            if !found.iter().any(|p| &p.name == param) {
                return Err(format!(
                    "template {name}: parameter {param} is declared but not used in sql"
                ));
            }
            if let Some(pattern) = &spec.pattern {
                Regex::new(pattern)
                    .map_err(|e| format!("template {name}: parameter {param}: bad pattern: {e}"))?;
            }
            if spec.ty == ParamType::Enum && spec.values.is_empty() {
                return Err(format!(
                    "template {name}: enum parameter {param} needs values"
                ));
            }
            if let Some(default) = &spec.default {
                render_value(param, spec, default)
                    .map_err(|e| format!("template {name}: default: {e}"))?;
            }
        }
        let mut probe = self.sql.clone();
        for p in found.iter().rev() {
            probe.replace_range(p.start..p.end, "NULL");
        }
        crate::sqlcheck::check_select(&probe).map_err(|e| format!("template {name}: {e}"))
    }

    /// Renders the SELECT with every placeholder replaced by its validated literal.
    pub fn render(&self, values: &BTreeMap<String, Value>) -> Result<String, ParamError> {
        if let Some(unknown) = values.keys().find(|k| !self.params.contains_key(*k)) {
            return Err(ParamError {
                code: "unknown_parameter",
                message: format!("unknown parameter {unknown}"),
            });
        }
        let mut literals = BTreeMap::new();
        for (name, spec) in &self.params {
            let value = values
                .get(name)
                .or(spec.default.as_ref())
                .ok_or_else(|| ParamError {
                    code: "missing_parameter",
                    message: format!("missing parameter {name}"),
                })?;
            literals.insert(name.as_str(), render_value(name, spec, value)?);
        }
        let found = placeholders(&self.sql).map_err(|e| invalid("template", e))?;
        let mut out = String::with_capacity(self.sql.len() + 64);
        let mut last = 0;
        for p in &found {
            out.push_str(&self.sql[last..p.start]);
            out.push_str(
                literals
                    .get(p.name.as_str())
                    .ok_or_else(|| invalid(&p.name, "not declared"))?,
            );
            last = p.end;
        }
        out.push_str(&self.sql[last..]);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(ty: ParamType) -> ParamSpec {
        ParamSpec::of(ty)
    }

    fn template(sql: &str, params: &[(&str, ParamSpec)]) -> TemplateSpec {
        TemplateSpec {
            sql: sql.into(),
            description: None,
            params: params
                .iter()
                .map(|(n, s)| (n.to_string(), s.clone()))
                .collect(),
        }
    }

    #[test]
    fn render_substitutes_only_real_placeholders() {
        let t = template(
            "select * from t where sku = :sku and note = ':sku' and x::int = 1 -- :sku\n and y = :sku",
            &[("sku", spec(ParamType::String))],
        );
        let out = t
            .render(&[("sku".to_string(), json!("O'B"))].into())
            .unwrap();
        assert_eq!(
            out,
            "select * from t where sku = 'O''B' and note = ':sku' and x::int = 1 -- :sku\n and y = 'O''B'"
        );
    }

    #[test]
    fn negative_numbers_cannot_join_an_operator() {
        let t = template(
            "select * from t where x-:n > 0 and y = :n",
            &[("n", spec(ParamType::Integer))],
        );
        let out = t.render(&[("n".to_string(), json!(-5))].into()).unwrap();
        assert_eq!(out, "select * from t where x-(-5) > 0 and y = (-5)");
        // Nothing of the rendered text became a comment.
        let lexed = crate::sqlcheck::lex(&out).unwrap();
        assert_eq!(lexed.code, vec![0..out.len()]);
    }

    #[test]
    fn placeholders_inside_nested_comments_and_dollar_strings_are_not_placeholders() {
        let found = placeholders("select :a /* x /* :b */ :c */ , $$ :d $$, :e -- :f\n").unwrap();
        let names: Vec<&str> = found.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "e"]);
    }

    #[test]
    fn missing_unknown_and_defaults() {
        let mut limit = spec(ParamType::Integer);
        limit.default = Some(json!(5));
        let t = template(
            "select * from t where a = :a and b < :b",
            &[("a", spec(ParamType::String)), ("b", limit)],
        );
        assert_eq!(
            t.render(&BTreeMap::new()).unwrap_err().code,
            "missing_parameter"
        );
        let unknown = [("a".to_string(), json!("x")), ("zz".to_string(), json!(1))].into();
        assert_eq!(t.render(&unknown).unwrap_err().code, "unknown_parameter");
        assert_eq!(
            t.render(&[("a".to_string(), json!("x"))].into()).unwrap(),
            "select * from t where a = 'x' and b < 5"
        );
    }

    #[test]
    fn template_checks_catch_configuration_mistakes() {
        let ok = template(
            "select * from t where a = :a",
            &[("a", spec(ParamType::String))],
        );
        assert!(ok.check("t").is_ok());
        let undeclared = template("select * from t where a = :a", &[]);
        assert!(undeclared.check("t").unwrap_err().contains("not declared"));
        let unused = template("select * from t", &[("a", spec(ParamType::String))]);
        assert!(unused.check("t").unwrap_err().contains("not used"));
        let limited = template(
            "select * from t where a = :a limit 5",
            &[("a", spec(ParamType::String))],
        );
        assert!(limited.check("t").unwrap_err().contains("LIMIT"));
        let dml = template(
            "delete from t where a = :a",
            &[("a", spec(ParamType::String))],
        );
        assert!(dml.check("t").is_err());
    }
}
