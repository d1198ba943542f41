//! Deciding whether SQL is exactly one read-only query that UNLOAD can run: parsed with
//! `sqlparser`'s Redshift dialect, never pattern-matched. Used for raw SQL in messages and for
//! configured templates.

use sqlparser::ast::{Query, SetExpr, Statement};
use sqlparser::dialect::RedshiftSqlDialect;
use sqlparser::parser::Parser;

/// Ok when `sql` is one SELECT (or WITH … SELECT, or a set operation of them) with no INTO,
/// no data-modifying part, no locking clause and no outer LIMIT (UNLOAD rejects one).
pub fn check_select(sql: &str) -> Result<(), String> {
    let statements = Parser::parse_sql(&RedshiftSqlDialect {}, sql)
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
    check_query(query)
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
        ] {
            assert!(check_select(sql).is_err(), "{sql} was accepted");
        }
    }
}
