//! The raw-SQL checks take any text without panicking, and nothing they accept holds a
//! nested comment or a `$$` string (which a parser that does not nest comments could misread).
#![no_main]

use libfuzzer_sys::fuzz_target;
use redshift_export_worker::config::SqlSettings;
use redshift_export_worker::sqlcheck;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    let settings = SqlSettings {
        allow_raw: true,
        allowed_schemas: vec!["demo".into()],
    };
    if sqlcheck::check_raw(sql, &settings).is_ok() {
        assert!(sqlcheck::check_select(sql).is_ok());
        let lexed = sqlcheck::lex(sql).expect("accepted SQL lexes");
        assert!(!lexed.nested_comment && !lexed.dollar_quoted, "{sql}");
    }
});
