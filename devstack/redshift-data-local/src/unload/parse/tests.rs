//! Tests of the UNLOAD grammar: defaults, option order and case, quoting, combinations.

use super::*;

const ROLE: &str = "IAM_ROLE 'arn:aws:iam::123456789012:role/unload'";

fn parse(options: &str) -> Result<UnloadSpec, UnloadError> {
    parse_unload(&format!(
        "UNLOAD ('select * from t') TO 's3://bucket/out/r1_' {options}"
    ))
}

#[test]
fn defaults_match_redshift() {
    let spec = parse(ROLE).unwrap();
    assert_eq!(spec.select, "select * from t");
    assert_eq!(
        (spec.bucket.as_str(), spec.prefix.as_str()),
        ("bucket", "out/r1_")
    );
    assert_eq!(spec.format, Format::Text);
    assert_eq!(spec.delimiter, '|');
    assert!(spec.parallel);
    assert!(!spec.header && !spec.manifest);
    assert_eq!(spec.compression, Compression::None);
    assert_eq!(spec.max_file_size, (6.2 * 1024.0 * MB) as u64);
}

#[test]
fn options_in_any_order_and_case() {
    let spec = parse(&format!(
        "manifest VERBOSE gzip Format As csv {ROLE} header Parallel OFF maxfilesize as 5 mb allowoverwrite"
    ))
    .unwrap();
    assert_eq!(spec.format, Format::Csv);
    assert_eq!(spec.delimiter, ',');
    assert!(spec.header && spec.manifest && spec.manifest_verbose && spec.allow_overwrite);
    assert!(!spec.parallel);
    assert_eq!(spec.compression, Compression::Gzip);
    assert_eq!(spec.max_file_size, 5 * 1024 * 1024);
    let spec =
        parse("iam_role default CSV DELIMITER AS '|' MAXFILESIZE 1 GB parallel true").unwrap();
    assert_eq!(spec.delimiter, '|');
    assert_eq!(spec.max_file_size, 1024 * 1024 * 1024);
}

#[test]
fn doubled_quotes_in_the_select_are_undone() {
    let spec = parse_unload(&format!(
        "unload ('select * from venue where venuestate=''NV'' and x=''it''''s''') to 's3://bkt/p' {ROLE}"
    ))
    .unwrap();
    assert_eq!(
        spec.select,
        "select * from venue where venuestate='NV' and x='it''s'"
    );
    let legacy = parse_unload(&format!(
        r"unload ('select * from venue where venuestate=\'NV\'') to 's3://bkt/p' {ROLE}"
    ))
    .unwrap();
    assert_eq!(legacy.select, "select * from venue where venuestate='NV'");
}

#[test]
fn outer_limit_is_rejected_nested_limit_is_not() {
    let outer = parse_unload(&format!(
        "unload ('select * from t limit 10') to 's3://bkt/p' {ROLE}"
    ));
    assert!(outer.unwrap_err().0.contains("Limit clause"));
    let nested = parse_unload(&format!(
        "unload ('select * from t where id in (select id from t order by id desc limit 10)') to 's3://bkt/p' {ROLE}"
    ));
    assert!(nested.is_ok());
}

#[test]
fn invalid_combinations_are_reported() {
    let cases = [
        format!("{ROLE} CSV FIXEDWIDTH 'a:1'"),
        format!("{ROLE} PARQUET HEADER"),
        format!("{ROLE} PARQUET GZIP"),
        format!("{ROLE} JSON DELIMITER ','"),
        format!("{ROLE} JSON HEADER"),
        format!("{ROLE} JSON NULL AS 'x'"),
        format!("{ROLE} HEADER FIXEDWIDTH 'a:1'"),
        format!("{ROLE} CLEANPATH ALLOWOVERWRITE"),
        format!("{ROLE} ENCRYPTED AUTO KMS_KEY_ID 'k'"),
    ];
    for options in &cases {
        let e = parse(options).unwrap_err();
        assert!(e.0.contains("cannot be used together"), "{options}: {e}");
    }
    assert!(
        parse(&format!("{ROLE} VERBOSE"))
            .unwrap_err()
            .0
            .contains("VERBOSE")
    );
    assert!(
        parse(&format!("{ROLE} ROWGROUPSIZE 64 MB"))
            .unwrap_err()
            .0
            .contains("ROWGROUPSIZE")
    );
    assert!(
        parse(&format!("{ROLE} DELIMITER '||'"))
            .unwrap_err()
            .0
            .contains("single")
    );
    assert!(
        parse(&format!("{ROLE} KMS_KEY_ID 'k'"))
            .unwrap_err()
            .0
            .contains("ENCRYPTED")
    );
    assert!(parse("CSV").unwrap_err().0.contains("authorization"));
    assert!(
        parse(&format!("{ROLE} CREDENTIALS 'x'"))
            .unwrap_err()
            .0
            .contains("IAM_ROLE")
    );
}

#[test]
fn maxfilesize_bounds() {
    assert!(
        parse(&format!("{ROLE} MAXFILESIZE 4 MB"))
            .unwrap_err()
            .0
            .contains("out of range")
    );
    assert!(
        parse(&format!("{ROLE} MAXFILESIZE 7 GB"))
            .unwrap_err()
            .0
            .contains("out of range")
    );
    assert_eq!(
        parse(&format!("{ROLE} MAXFILESIZE 6.2 GB"))
            .unwrap()
            .max_file_size,
        (6.2 * 1024.0 * MB) as u64
    );
}

#[test]
fn unimplemented_options_are_named() {
    for options in ["BZIP2", "ZSTD", "PARTITION BY (a) INCLUDE"] {
        let e = parse(&format!("{ROLE} {options}")).unwrap_err();
        assert!(
            e.0.contains("not implemented by redshift-data-local"),
            "{options}: {e}"
        );
    }
}

#[test]
fn parquet_is_a_format() {
    let spec = parse(&format!("{ROLE} FORMAT AS PARQUET MANIFEST VERBOSE")).unwrap();
    assert_eq!((spec.format, spec.header), (Format::Parquet, false));
}

#[test]
fn bad_targets_and_syntax() {
    assert!(parse_unload(&format!("unload ('select 1') to 'http://b/p' {ROLE}")).is_err());
    assert!(parse_unload(&format!("unload ('select 1') to 's3://B_/p' {ROLE}")).is_err());
    assert!(parse_unload(&format!("unload (select 1) to 's3://bkt/p' {ROLE}")).is_err());
    assert!(
        parse(&format!("{ROLE} NOSUCHOPTION"))
            .unwrap_err()
            .0
            .contains("unknown UNLOAD option")
    );
    assert!(parse(&format!("{ROLE} GZIP;")).is_ok());
}

#[test]
fn encryption_and_extension() {
    assert_eq!(
        parse(&format!("{ROLE} ENCRYPTED")).unwrap().encryption,
        Encryption::S3
    );
    assert_eq!(
        parse(&format!("{ROLE} ENCRYPTED AUTO")).unwrap().encryption,
        Encryption::Auto
    );
    assert_eq!(
        parse(&format!("{ROLE} KMS_KEY_ID 'k1' ENCRYPTED"))
            .unwrap()
            .encryption,
        Encryption::Kms("k1".into())
    );
    assert_eq!(
        parse(&format!("{ROLE} EXTENSION '.csv'"))
            .unwrap()
            .extension
            .as_deref(),
        Some("csv")
    );
}
