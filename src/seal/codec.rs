//! A strict little-endian binary codec for the plaintext formats.
//!
//! Decoding never panics: every read is bounds-checked, lengths are capped
//! by the remaining input, and trailing bytes are an error.

use crate::{Error, Result};

/// Appends fields to a buffer.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    /// `u8`.
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    /// `u32` LE.
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// `u64` LE.
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// `i64` LE.
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// 32 raw bytes.
    pub fn id(&mut self, v: &[u8; 32]) {
        self.0.extend_from_slice(v);
    }
    /// `u32` length then the bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).expect("field below 4 GiB"));
        self.0.extend_from_slice(v);
    }
}

/// Reads fields from a buffer.
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, naming `what` in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::corrupt(self.what, "truncated"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    /// `u8`.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    /// `u32` LE.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    /// `u64` LE.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    /// `i64` LE.
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    /// 32 raw bytes.
    pub fn id(&mut self) -> Result<[u8; 32]> {
        Ok(self.take(32)?.try_into().expect("32"))
    }
    /// `u32` length then the bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// A count of items of at least `min_item` bytes each, checked against
    /// the remaining input so that a forged count cannot allocate.
    pub fn count(&mut self, min_item: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.buf.len() {
            return Err(Error::corrupt(self.what, "count exceeds input"));
        }
        Ok(n)
    }
    /// Errors unless the input is used up.
    pub fn finish(self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::corrupt(self.what, "trailing bytes"))
        }
    }
    /// An error about this input.
    pub fn err(&self, detail: impl Into<String>) -> Error {
        Error::corrupt(self.what, detail)
    }
}
