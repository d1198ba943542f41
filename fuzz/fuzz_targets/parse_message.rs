//! The message parser takes any bytes without panicking, and anything it accepts has a
//! request id that the strict rules accept.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redshift_export_worker::message::CompatSettings;
use redshift_export_worker::message::{self, RequestId};

fuzz_target!(|data: &[u8]| {
    let compat = CompatSettings {
        sample_template: Some("t".into()),
        sample_params: [("sku".to_string(), "sku".to_string())].into(),
    };
    match message::parse(data, "fuzz-message", 1 << 20, &compat) {
        Ok(request) => assert!(RequestId::parse(request.request_id.as_str()).is_ok()),
        Err(e) => assert!(!e.code.is_empty()),
    }
});
