//! Deciding whether SQL is exactly one read-only query that UNLOAD can run: parsed with
//! `sqlparser`'s Redshift dialect, never pattern-matched. Used for raw SQL in messages and for
//! configured templates. [`lex`] splits text into code and non-code (literals, quoted
//! identifiers, comments) with Redshift's lexical rules; the template placeholder scanner
//! and the raw-SQL check both use it.

use std::ops::{ControlFlow, Range};

use sqlparser::ast::{
    Expr, ObjectName, Query, SetExpr, Statement, Visit, Visitor, visit_expressions, visit_relations,
};
use sqlparser::dialect::RedshiftSqlDialect;
use sqlparser::parser::Parser;

use crate::config::SqlSettings;

/// Schemas that hold the system catalog; raw SQL may never read them.
pub const SYSTEM_SCHEMAS: &[&str] = &[
    "pg_catalog",
    "information_schema",
    "pg_internal",
    "pg_automv",
    "pg_toast",
    "sys",
];

/// Functions that reveal other sessions, the catalog or settings, refused in raw SQL
/// (a name starting with `pg_` or `has_` is refused too).
const SYSTEM_FUNCTIONS: &[&str] = &[
    "current_setting",
    "set_config",
    "current_user",
    "current_user_id",
    "session_user",
    "user",
    "version",
    "current_database",
    "current_schema",
    "current_schemas",
];

/// What [`lex`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lexed {
    /// Byte ranges of code: everything outside literals, quoted identifiers and comments.
    pub code: Vec<Range<usize>>,
    /// A `/*` inside a block comment. Redshift nests block comments, some parsers do not, so
    /// text with one can mean different things to different readers.
    pub nested_comment: bool,
    /// A `$$ … $$` dollar-quoted string.
    pub dollar_quoted: bool,
}

/// Splits SQL text the way Redshift's lexer does: `'…'` literals with `''` and backslash
/// escapes, `"…"` identifiers with `""`, `--` line comments, nested `/* */` comments and
/// `$$ … $$` strings.
pub fn lex(sql: &str) -> Result<Lexed, String> {
    let b = sql.as_bytes();
    let mut out = Lexed::default();
    let mut start = 0;
    let mut i = 0;
    let close_code = |out: &mut Lexed, start: usize, end: usize| {
        if end > start {
            out.code.push(start..end);
        }
    };
    while i < b.len() {
        let skip_to = match b[i] {
            b'\'' => {
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None => return Err("unterminated string literal".into()),
                        Some(b'\\') => j += 2,
                        Some(b'\'') if b.get(j + 1) == Some(&b'\'') => j += 2,
                        Some(b'\'') => break j + 1,
                        Some(_) => j += 1,
                    }
                }
            }
            b'"' => {
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None => return Err("unterminated quoted identifier".into()),
                        Some(b'"') if b.get(j + 1) == Some(&b'"') => j += 2,
                        Some(b'"') => break j + 1,
                        Some(_) => j += 1,
                    }
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => sql[i..].find('\n').map_or(b.len(), |n| i + n),
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 1;
                let mut j = i + 2;
                while depth > 0 {
                    match (b.get(j), b.get(j + 1)) {
                        (None, _) => return Err("unterminated comment".into()),
                        (Some(b'/'), Some(b'*')) => {
                            depth += 1;
                            out.nested_comment = true;
                            j += 2;
                        }
                        (Some(b'*'), Some(b'/')) => {
                            depth -= 1;
                            j += 2;
                        }
                        _ => j += 1,
                    }
                }
                j
            }
            b'$' if b.get(i + 1) == Some(&b'$') => {
                out.dollar_quoted = true;
                let end = sql[i + 2..].find("$$").ok_or("unterminated $$ string")?;
                i + 2 + end + 2
            }
            _ => {
                i += 1;
                continue;
            }
        };
        close_code(&mut out, start, i);
        i = skip_to;
        start = i;
    }
    close_code(&mut out, start, b.len());
    Ok(out)
}

/// Ok when `sql` is one SELECT (or WITH … SELECT, or a set operation of them) with no INTO,
/// no data-modifying part, no locking clause and no outer LIMIT (UNLOAD rejects one).
pub fn check_select(sql: &str) -> Result<(), String> {
    parse_select(sql).map(|_| ())
}

/// [`check_select`], returning the parsed statement.
fn parse_select(sql: &str) -> Result<Statement, String> {
    // sqlparser does not nest block comments and has no `$$` strings; Redshift has both, so
    // text using them could hide a statement from this check. Refused outright.
    let lexed = lex(sql)?;
    if lexed.nested_comment {
        return Err("nested /* */ comments are not allowed".into());
    }
    if lexed.dollar_quoted {
        return Err("$$ strings are not allowed".into());
    }
    let mut statements = Parser::parse_sql(&RedshiftSqlDialect {}, sql)
        .map_err(|e| format!("SQL does not parse: {e}"))?;
    let [statement] = statements.as_slice() else {
        return Err(format!(
            "expected exactly one statement, found {}",
            statements.len()
        ));
    };
    let Statement::Query(query) = statement else {
        return Err("only a SELECT query is allowed".into());
    };
    if query.limit_clause.is_some() || query.fetch.is_some() {
        return Err("UNLOAD does not allow an outer LIMIT; put it in a subquery".into());
    }
    check_query(query)?;
    statements.pop().ok_or_else(|| "no statement".into())
}

/// Raw SQL from a message: [`check_select`], and it reads only the allowed schemas — every
/// table schema-qualified with one of `settings.allowed_schemas` (or a CTE of the query) —
/// and calls no function that reveals the catalog, other sessions or settings. Redshift's
/// system views (`svl_statementtext` shows every other export's SQL with its values) are
/// in `pg_catalog`, which is first on the search path, so unqualified names are refused.
pub fn check_raw(sql: &str, settings: &SqlSettings) -> Result<(), String> {
    let statement = parse_select(sql)?;
    let mut ctes = Ctes::default();
    let _ = statement.visit(&mut ctes);
    let ctes = ctes.0;
    let allowed = |schema: &str| {
        settings
            .allowed_schemas
            .iter()
            .any(|a| a.eq_ignore_ascii_case(schema))
    };
    let relations = visit_relations(&statement, |name: &ObjectName| {
        let parts: Vec<String> = name.0.iter().map(|p| p.to_string()).collect();
        let verdict = match parts.as_slice() {
            [one] if ctes.iter().any(|c| c.eq_ignore_ascii_case(unquote(one))) => Ok(()),
            [.., schema, _] if allowed(unquote(schema)) => Ok(()),
            _ => Err(format!(
                "{name} is not in an allowed schema ({}); name tables as schema.table",
                settings.allowed_schemas.join(", ")
            )),
        };
        match verdict {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    });
    if let ControlFlow::Break(e) = relations {
        return Err(e);
    }
    let functions = visit_expressions(&statement, |expr: &Expr| match expr {
        Expr::Function(f) => {
            let name = f.name.to_string().to_ascii_lowercase();
            let last = name.rsplit('.').next().unwrap_or(&name).trim_matches('"');
            if last.starts_with("pg_")
                || last.starts_with("has_")
                || SYSTEM_FUNCTIONS.contains(&last)
                || name.contains('.')
            {
                ControlFlow::Break(format!("function {name} is not allowed in raw SQL"))
            } else {
                ControlFlow::Continue(())
            }
        }
        _ => ControlFlow::Continue(()),
    });
    match functions {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Collects the names of every CTE in a statement, at any depth.
#[derive(Default)]
struct Ctes(Vec<String>);

impl Visitor for Ctes {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            self.0
                .extend(with.cte_tables.iter().map(|c| c.alias.name.value.clone()));
        }
        ControlFlow::Continue(())
    }
}

fn unquote(part: &str) -> &str {
    part.trim_matches('"')
}

fn check_query(query: &Query) -> Result<(), String> {
    if !query.locks.is_empty() {
        return Err("locking clauses (FOR UPDATE …) are not allowed".into());
    }
    if let Some(with) = &query.with {
        for cte in &with.cte_tables {
            check_query(&cte.query)?;
        }
    }
    check_set_expr(&query.body)
}

fn check_set_expr(body: &SetExpr) -> Result<(), String> {
    match body {
        SetExpr::Select(select) if select.into.is_some() => {
            Err("SELECT INTO is not allowed".into())
        }
        SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) => Ok(()),
        SetExpr::Query(q) => check_query(q),
        SetExpr::SetOperation { left, right, .. } => {
            check_set_expr(left)?;
            check_set_expr(right)
        }
        _ => Err("only read-only queries are allowed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_queries_pass() {
        for sql in [
            "select 1",
            "SELECT * FROM rsdataapi.product_detail WHERE sku = 'FLOWER12'",
            "with x as (select a from t) select * from x",
            "select a from t union all select b from u",
            "select * from t where id in (select id from t order by id limit 5)",
            "select 1;",
            "select 'a;b' -- trailing comment",
        ] {
            assert!(check_select(sql).is_ok(), "{sql}: {:?}", check_select(sql));
        }
    }

    #[test]
    fn everything_else_is_rejected() {
        for sql in [
            "",
            "delete from t",
            "insert into t values (1)",
            "update t set a = 1",
            "drop table t",
            "create table x as select 1",
            "select 1; drop table t",
            "select 1; /* hidden */ delete from t",
            "select * into newtable from t",
            "select * from t limit 10",
            "select * from t for update",
            "unload ('select 1') to 's3://b/p' iam_role default",
            "copy t from 's3://b/p' iam_role default",
            "with d as (delete from t returning *) select * from d",
            "grant all on t to public",
            "select 'unterminated",
            // Redshift nests comments, so this is a SELECT INTO to Redshift, while a parser
            // that does not nest them sees a plain SELECT.
            "select * /* /* */ -- */ into t from x",
            "select $$ ; drop table t; $$",
        ] {
            assert!(check_select(sql).is_err(), "{sql} was accepted");
        }
    }

    fn raw_settings() -> SqlSettings {
        SqlSettings {
            allow_raw: true,
            allowed_schemas: vec!["demo".into(), "rsdataapi".into()],
        }
    }

    #[test]
    fn raw_sql_reads_only_allowed_schemas() {
        let s = raw_settings();
        for sql in [
            "select * from demo.orders",
            "select o.order_id from demo.orders o join rsdataapi.product_detail p on p.sku = o.notes",
            "with recent as (select * from demo.orders where order_id > 10) select count(*) from recent",
            "select * from (with x as (select 1 as a from demo.orders) select a from x) y",
            "select upper(customer), coalesce(notes, '') from \"demo\".orders",
        ] {
            assert!(
                check_raw(sql, &s).is_ok(),
                "{sql}: {:?}",
                check_raw(sql, &s)
            );
        }
        for sql in [
            "select * from orders",
            "select * from svl_statementtext",
            "select * from pg_catalog.svl_statementtext",
            "select * from stl_query",
            "select * from information_schema.tables",
            "select * from other.secrets",
            "select * from demo.orders where order_id in (select userid from pg_user)",
            "select pg_get_viewdef('demo.v')",
            "select current_setting('search_path')",
            "select has_table_privilege('demo.orders', 'select')",
            "select version()",
            "select pg_catalog.upper('x')",
        ] {
            assert!(check_raw(sql, &s).is_err(), "{sql} was accepted");
        }
    }
}
