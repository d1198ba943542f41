//! Tests of loading and validating configurations, including the shipped files.

use std::path::Path;

use super::*;

fn path(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

fn from_toml(text: &str) -> Settings {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap()
}

/// The required keys, with the example values default.toml shows.
const REQUIRED: &str = r#"
    [queue]
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/exports"
    [state]
    table = "export-requests"
    [redshift]
    cluster_identifier = "analytics"
    database = "dev"
    [upload]
    bucket = "exports-upload"
    [archive]
    bucket = "exports-archive"
    [email]
    transport = "ses"
    from = "exports@example.com"
"#;

#[test]
fn shipped_configurations_load_and_validate() {
    for name in ["default.toml", "local.toml", "example.toml"] {
        if let Err(e) = Settings::load(&path(name)) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn default_toml_documents_the_real_defaults() {
    let documented = Settings::load(&path("default.toml")).unwrap();
    let minimal = from_toml(REQUIRED);
    assert_eq!(format!("{documented:?}"), format!("{minimal:?}"));
}

#[test]
fn unknown_keys_are_errors() {
    let text = format!("{REQUIRED}\n[worker]\nmax_attempt = 3\n");
    let result = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize::<Settings>();
    assert!(result.unwrap_err().to_string().contains("max_attempt"));
}

#[test]
fn every_problem_is_reported_together() {
    let mut s = from_toml(REQUIRED);
    s.queue.wait_secs = 0;
    s.redshift.workgroup_name = Some("wg".into());
    s.archive.bucket = "Bad_Bucket".into();
    s.presign.expiry_secs = 700_000;
    let e = s.validate().unwrap_err();
    assert_eq!(e.0.len(), 4, "{e}");
}
