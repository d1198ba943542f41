//! What turns a part's gzip bytes into an entry's DEFLATE bytes while verifying them, for each
//! layout: passed through (`parts`, [`PassThrough`]) or joined (`single`, [`Joiner`]).

use super::deflate::{PassError, PassThrough};
use super::edits::Edits;
use super::join::{JoinError, Joiner};
use super::{BuildError, corrupt};

/// What turns a part's gzip bytes into an entry's DEFLATE bytes, verifying them.
pub(super) trait Codec: Send + 'static {
    fn feed(&mut self, part: &str, chunk: &[u8], raw: &mut Vec<u8>) -> Result<(), BuildError>;
    /// Data bytes decoded so far.
    fn inflated(&self) -> u64;
    /// Ends the part: (edits, crc, size, compressed size).
    fn done(self, part: &str, raw: &mut Vec<u8>) -> Result<(Edits, u32, u64, u64), BuildError>;
    /// The part's bytes before the offset are final and its edits so far are all of theirs
    /// ([`Joiner::settled`]); `None`: nothing is final before the part ends.
    fn early(&self) -> Option<(u64, &Edits)> {
        None
    }
}

impl Codec for PassThrough {
    fn feed(&mut self, part: &str, chunk: &[u8], raw: &mut Vec<u8>) -> Result<(), BuildError> {
        match PassThrough::feed(self, chunk, raw) {
            Ok(()) => Ok(()),
            Err(PassError::MultiMember) => Err(BuildError::Fallback(format!(
                "{part} has several gzip members"
            ))),
            Err(e) => Err(corrupt(part, e).into()),
        }
    }

    fn inflated(&self) -> u64 {
        PassThrough::inflated(self)
    }

    fn done(self, part: &str, _: &mut Vec<u8>) -> Result<(Edits, u32, u64, u64), BuildError> {
        let edits = self.edits();
        let (crc, compressed, size) = self.finish().map_err(|e| corrupt(part, e))?;
        Ok((edits, crc, size, compressed))
    }
}

impl Codec for Joiner {
    fn feed(&mut self, part: &str, chunk: &[u8], raw: &mut Vec<u8>) -> Result<(), BuildError> {
        Joiner::feed(self, chunk, raw).map_err(|e| refused(part, e))
    }

    fn inflated(&self) -> u64 {
        Joiner::inflated(self)
    }

    fn done(self, part: &str, raw: &mut Vec<u8>) -> Result<(Edits, u32, u64, u64), BuildError> {
        let j = self.finish(raw).map_err(|e| refused(part, e))?;
        Ok((j.edits, j.crc.finalize(), j.size, j.compressed))
    }

    fn early(&self) -> Option<(u64, &Edits)> {
        Some((self.settled(), self.edits()))
    }
}

fn refused(part: &str, e: JoinError) -> BuildError {
    BuildError::Fallback(format!("{part}: {e}"))
}
