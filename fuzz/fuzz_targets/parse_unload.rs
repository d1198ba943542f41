//! redshift-data-local's UNLOAD parser takes any text without panicking, and the SELECT of
//! anything it accepts lexes without panicking either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redshift_data_local::sqltext::tokenize;
use redshift_data_local::unload::parse::parse_unload;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    if let Ok(spec) = parse_unload(sql) {
        let _ = tokenize(&spec.select);
    }
});
