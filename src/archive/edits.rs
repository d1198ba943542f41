//! The few changes that turn an unloaded part's bytes into the DEFLATE data its entry holds:
//! gzip headers and trailers left out, a final block's BFINAL bit cleared, the last byte's
//! padding cleared and alignment bytes put in. Decoding a part records them ([`Edits`]); the
//! part's bytes can then be read again and changed without decoding ([`Apply`]), which is what
//! lets parts be decoded in parallel while the entry is written in order.

/// One change, at a byte offset of the part's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Leave out `len` bytes from `at`.
    Skip { at: u64, len: u64 },
    /// AND the byte at `at` with `mask`.
    Mask { at: u64, mask: u8 },
    /// Put `bytes` before the byte at `at`.
    Insert { at: u64, bytes: Vec<u8> },
}

impl Edit {
    fn at(&self) -> u64 {
        match self {
            Edit::Skip { at, .. } | Edit::Mask { at, .. } | Edit::Insert { at, .. } => *at,
        }
    }
}

/// Changes in the order of their offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits(Vec<Edit>);

impl Edits {
    /// Adds a change at or after the last one; masks of one byte are combined.
    pub fn push(&mut self, edit: Edit) {
        if let (
            Some(Edit::Mask { at, mask }),
            Edit::Mask {
                at: next,
                mask: more,
            },
        ) = (self.0.last_mut(), &edit)
            && at == next
        {
            *mask &= more;
            return;
        }
        debug_assert!(self.0.last().is_none_or(|last| last.at() <= edit.at()));
        self.0.push(edit);
    }

    /// Applies the changes to the part's bytes as they stream.
    pub fn apply(&self) -> Apply {
        Apply {
            edits: self.clone(),
            next: 0,
            offset: 0,
            skip_until: 0,
        }
    }
}

/// [`Edits`] being applied to a stream of bytes. The changes may be known only up to some
/// offset while the part is still being decoded: [`Apply::update`] takes the longer list.
#[derive(Debug, Default)]
pub struct Apply {
    edits: Edits,
    next: usize,
    /// Bytes of the part seen so far.
    offset: u64,
    /// A skip in progress ends here.
    skip_until: u64,
}

impl Apply {
    /// Bytes of the part seen so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Takes `edits`, the changes recorded so far, in place of the fewer it had: those it had
    /// and those applied must be where `edits` starts (a decoder adds changes only at or after
    /// the bytes it has let go, and those are all this has been fed).
    pub fn update(&mut self, edits: &Edits) {
        debug_assert!(edits.0.starts_with(&self.edits.0[..self.next]));
        self.edits.clone_from(edits);
    }

    /// The next bytes of the part, changed, onto `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) {
        while !chunk.is_empty() {
            if self.offset < self.skip_until {
                let n = (self.skip_until - self.offset).min(chunk.len() as u64) as usize;
                chunk = &chunk[n..];
                self.offset += n as u64;
                continue;
            }
            match self.edits.0.get(self.next) {
                Some(edit) if edit.at() <= self.offset => {
                    self.next += 1;
                    match edit {
                        Edit::Skip { at, len } => self.skip_until = at + len,
                        Edit::Insert { bytes, .. } => out.extend_from_slice(bytes),
                        Edit::Mask { mask, .. } => {
                            out.push(chunk[0] & mask);
                            chunk = &chunk[1..];
                            self.offset += 1;
                        }
                    }
                }
                next => {
                    let until = next.map_or(u64::MAX, Edit::at);
                    let n = (until - self.offset).min(chunk.len() as u64) as usize;
                    out.extend_from_slice(&chunk[..n]);
                    chunk = &chunk[n..];
                    self.offset += n as u64;
                }
            }
        }
    }

    /// The end of the part: whatever is to be put after its last byte.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        while let Some(Edit::Insert { at, bytes }) = self.edits.0.get(self.next)
            && *at <= self.offset
        {
            out.extend_from_slice(bytes);
            self.next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_masks_and_inserts_apply_in_any_chunking() {
        let mut edits = Edits::default();
        edits.push(Edit::Skip { at: 0, len: 3 });
        edits.push(Edit::Mask { at: 4, mask: 0x0f });
        edits.push(Edit::Mask { at: 4, mask: 0xfe });
        edits.push(Edit::Insert {
            at: 6,
            bytes: vec![9, 9],
        });
        edits.push(Edit::Skip { at: 6, len: 2 });
        edits.push(Edit::Insert {
            at: 10,
            bytes: vec![7],
        });
        let input: Vec<u8> = (0..10).map(|i| 0xf0 | i).collect();
        let want = vec![0xf3, 0x04, 0xf5, 9, 9, 0xf8, 0xf9, 7];
        for chunk in 1..=10 {
            let mut apply = edits.apply();
            let mut out = Vec::new();
            for piece in input.chunks(chunk) {
                apply.feed(piece, &mut out);
            }
            apply.finish(&mut out);
            assert_eq!(out, want, "chunk {chunk}");
            assert_eq!(apply.offset(), 10);
        }
    }

    #[test]
    fn changes_learnt_as_the_bytes_stream_apply_as_if_known_from_the_start() {
        let mut edits = Edits::default();
        edits.push(Edit::Skip { at: 0, len: 2 });
        edits.push(Edit::Mask { at: 5, mask: 0x0f });
        edits.push(Edit::Insert {
            at: 8,
            bytes: vec![9],
        });
        edits.push(Edit::Skip { at: 8, len: 2 });
        let input: Vec<u8> = (0..10).map(|i| 0xf0 | i).collect();
        let mut whole = edits.apply();
        let mut want = Vec::new();
        whole.feed(&input, &mut want);
        whole.finish(&mut want);
        // Fed up to each offset knowing only the changes before it, then the rest.
        for upto in 0..=10 {
            let known = Edits(edits.0.iter().filter(|e| e.at() < upto).cloned().collect());
            let mut apply = Apply::default();
            apply.update(&known);
            let mut out = Vec::new();
            apply.feed(&input[..upto as usize], &mut out);
            apply.update(&edits);
            apply.feed(&input[upto as usize..], &mut out);
            apply.finish(&mut out);
            assert_eq!(out, want, "known up to {upto}");
        }
    }
}
