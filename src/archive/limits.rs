//! What one export may unpack: a cap on the bytes of data of all its parts together, and on
//! how far one part may inflate relative to its compressed size (a decompression bomb placed
//! in the upload bucket is refused long before it fills anything). Both are checked as the
//! data streams, so a refused part costs only what was read before the check tripped.

use crate::error::JobError;

/// The running count of one export against its caps.
#[derive(Debug, Clone)]
pub struct Budget {
    max_bytes: u64,
    max_ratio: u64,
    /// Data bytes of the parts finished so far.
    done: u64,
}

/// Compressed bytes below which the ratio is not judged (a tiny part's ratio says nothing).
const RATIO_FLOOR_BYTES: u64 = 64 * 1024;

impl Budget {
    pub fn new(max_bytes: u64, max_ratio: u64) -> Budget {
        Budget {
            max_bytes,
            max_ratio,
            done: 0,
        }
    }

    /// Checks a part in progress: `compressed` bytes read, `inflated` data bytes so far.
    pub fn check(&self, part: &str, compressed: u64, inflated: u64) -> Result<(), JobError> {
        if self.done.saturating_add(inflated) > self.max_bytes {
            return Err(JobError::rejected(
                "export_too_large",
                format!(
                    "the export unpacks to more than {} bytes (archive.max_uncompressed_bytes)",
                    self.max_bytes
                ),
            ));
        }
        if inflated
            > self
                .max_ratio
                .saturating_mul(compressed.max(RATIO_FLOOR_BYTES))
        {
            return Err(JobError::Archive(format!(
                "part {part} inflates more than {}:1 (archive.max_inflate_ratio)",
                self.max_ratio
            )));
        }
        Ok(())
    }

    /// Counts a finished part.
    pub fn add(&mut self, inflated: u64) {
        self.done = self.done.saturating_add(inflated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_ratios_are_capped() {
        let mut b = Budget::new(1_000_000, 100);
        assert!(b.check("p", 10_000, 900_000).is_ok());
        b.add(900_000);
        let e = b.check("q", 10_000, 200_000).unwrap_err();
        assert_eq!(e.code(), "export_too_large");
        let b = Budget::new(u64::MAX, 100);
        assert!(
            b.check("p", 1, RATIO_FLOOR_BYTES * 100).is_ok(),
            "small parts are not judged"
        );
        let e = b.check("p", 1 << 20, (1 << 20) * 101).unwrap_err();
        assert_eq!(e.code(), "archive_failed");
    }
}
