//! Any bytes as an UNLOAD manifest: parsed without panicking, and every part it lets the
//! worker read lies under the attempt's own prefix of the upload bucket.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redshift_export_worker::archive::manifest_part_keys;

const PREFIX: &str = "unload/r1/2/";

fuzz_target!(|data: &[u8]| {
    if let Ok(keys) = manifest_part_keys(data, "exports-upload", PREFIX) {
        for key in keys {
            assert!(key.starts_with(PREFIX) && key.len() > PREFIX.len(), "{key}");
            assert!(!key.split('/').any(|s| s == ".."), "{key}");
        }
    }
});
