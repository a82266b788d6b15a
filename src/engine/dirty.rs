//! A dirty chunk: the bytes written into one chunk since the last seal, kept
//! as sparse extents over the chunk it started from.
//!
//! A 4 KiB write into a 64 KiB (or 1 MiB) chunk holds 4 KiB of memory, not the whole
//! chunk: the base chunk is only opened when the dirty chunk is read where
//! nothing was written, or sealed with holes left to fill. Memory charged to
//! the dirty budget is the sum of the extents' lengths, so random small
//! writes over a large file stay within the budget instead of pulling one
//! whole chunk into memory per write. A write covering a chunk whole never
//! becomes a dirty chunk: the engine seals it straight from the request.

use crate::Result;
use crate::repo::Repo;
use crate::repo::view::ChunkOverlay;
use crate::seal::tree::ChunkRef;
use std::collections::BTreeMap;

/// Bytes written into one chunk, over the chunk it started from.
#[derive(Clone, Debug, Default)]
pub(crate) struct DirtyChunk {
    /// The sealed chunk this one started from (`None`: a hole or new chunk).
    base: ChunkRef,
    /// Bytes of `base` still visible; a truncate below it hides the rest.
    base_len: usize,
    /// Length of the chunk.
    len: usize,
    /// Written ranges by start offset: disjoint and not touching each other.
    extents: BTreeMap<usize, Vec<u8>>,
}

impl DirtyChunk {
    /// A dirty chunk over `base`, whose visible length is `len` (the file's
    /// bytes within this chunk).
    pub(crate) fn new(base: ChunkRef, len: usize) -> Self {
        DirtyChunk {
            base_len: if base.is_some() { len } else { 0 },
            base,
            len,
            extents: BTreeMap::new(),
        }
    }

    /// Bytes held in memory (charged to the dirty budget).
    pub(crate) fn held(&self) -> usize {
        self.extents.values().map(Vec::len).sum()
    }

    /// Writes `data` at `at`; returns the change in bytes held.
    pub(crate) fn write(&mut self, at: usize, data: &[u8]) -> isize {
        let end = at + data.len();
        self.len = self.len.max(end);
        if data.is_empty() {
            return 0;
        }
        // The extents overlapping or touching [at, end], highest first.
        let touching: Vec<usize> = self
            .extents
            .range(..=end)
            .rev()
            .take_while(|(k, v)| *k + v.len() >= at)
            .map(|(k, _)| *k)
            .collect();
        match touching.as_slice() {
            [] => {
                self.extents.insert(at, data.to_vec());
                data.len() as isize
            }
            // Inside or appending to a single extent: edit it in place.
            [k] if *k <= at => {
                let v = self.extents.get_mut(k).expect("listed");
                let before = v.len();
                let from = at - k;
                if v.len() < from + data.len() {
                    v.resize(from + data.len(), 0);
                }
                v[from..from + data.len()].copy_from_slice(data);
                (v.len() - before) as isize
            }
            _ => {
                let start = at.min(*touching.last().expect("non-empty"));
                let stop = touching
                    .iter()
                    .map(|k| k + self.extents[k].len())
                    .max()
                    .unwrap_or(end)
                    .max(end);
                let mut merged = vec![0u8; stop - start];
                let mut before = 0;
                for k in &touching {
                    let v = self.extents.remove(k).expect("listed");
                    before += v.len();
                    merged[k - start..k - start + v.len()].copy_from_slice(&v);
                }
                merged[at - start..end - start].copy_from_slice(data);
                let after = merged.len();
                self.extents.insert(start, merged);
                after as isize - before as isize
            }
        }
    }

    /// Cuts the chunk to `len` bytes; returns the change in bytes held.
    pub(crate) fn truncate(&mut self, len: usize) -> isize {
        let before = self.held();
        self.len = len;
        self.base_len = self.base_len.min(len);
        let _ = self.extents.split_off(&len);
        if let Some((k, v)) = self.extents.range_mut(..len).next_back() {
            v.truncate(len - k);
        }
        self.held() as isize - before as isize
    }

    /// Whether the extents cover `[from, to)` entirely.
    fn covered(&self, from: usize, to: usize) -> bool {
        if from >= to {
            return true;
        }
        let mut pos = from;
        if let Some((k, v)) = self.extents.range(..=from).next_back() {
            pos = pos.max(k + v.len());
        }
        for (k, v) in self.extents.range(from + 1..to) {
            if *k > pos {
                return false;
            }
            pos = pos.max(k + v.len());
        }
        pos >= to
    }

    /// Copies bytes `[from, from + dst.len())` of the chunk into `dst`
    /// (zeros where neither an extent nor the base has bytes). `dst` must
    /// arrive zeroed.
    pub(crate) fn read_into(&self, repo: &Repo, from: usize, dst: &mut [u8]) -> Result<()> {
        let to = from + dst.len();
        let base_to = to.min(self.base_len);
        if let Some(id) = &self.base
            && from < base_to
            && !self.covered(from, base_to)
        {
            let base = repo.chunk(id)?;
            let stop = base_to.min(base.len());
            if from < stop {
                dst[..stop - from].copy_from_slice(&base[from..stop]);
            }
        }
        let first = self
            .extents
            .range(..=from)
            .next_back()
            .map_or(from, |(k, _)| *k);
        for (k, v) in self.extents.range(first..to) {
            let (s, e) = ((*k).max(from), (k + v.len()).min(to));
            if s < e {
                dst[s - from..e - from].copy_from_slice(&v[s - k..e - k]);
            }
        }
        Ok(())
    }

    /// The whole chunk's bytes, ready to seal. Leaves the chunk holding
    /// exactly those bytes (one extent, no base), so that a caller whose
    /// seal fails keeps the same content dirty.
    pub(crate) fn materialize(&mut self, repo: &Repo) -> Result<()> {
        let whole = matches!(self.extents.first_key_value(), Some((0, v)) if v.len() == self.len);
        if !whole || self.extents.len() != 1 {
            let mut out = vec![0u8; self.len];
            self.read_into(repo, 0, &mut out)?;
            self.extents = BTreeMap::from([(0, out)]);
        }
        self.base = None;
        self.base_len = 0;
        Ok(())
    }

    /// The chunk's bytes after [`DirtyChunk::materialize`].
    pub(crate) fn bytes(&self) -> &[u8] {
        self.extents.get(&0).map_or(&[], Vec::as_slice)
    }

    /// Like [`DirtyChunk::bytes`], by value.
    pub(crate) fn into_bytes(mut self) -> Vec<u8> {
        self.extents.remove(&0).unwrap_or_default()
    }
}

impl ChunkOverlay for BTreeMap<u64, DirtyChunk> {
    fn read_chunk(&self, repo: &Repo, idx: u64, from: usize, dst: &mut [u8]) -> Option<Result<()>> {
        self.get(&idx).map(|d| d.read_into(repo, from, dst))
    }

    fn holds(&self, idx: u64) -> bool {
        self.contains_key(&idx)
    }
}

#[cfg(test)]
mod tests {
    use super::DirtyChunk;

    /// Applies writes and truncates to both a `DirtyChunk` without a base
    /// and a plain Vec, comparing extents' view with the Vec's.
    fn check(ops: &[(usize, usize, u8)]) {
        let mut d = DirtyChunk::new(None, 0);
        let mut model: Vec<u8> = Vec::new();
        for &(at, n, b) in ops {
            if b == 0 {
                d.truncate(at);
                model.truncate(at);
            } else {
                d.write(at, &vec![b; n]);
                if model.len() < at + n {
                    model.resize(at + n, 0);
                }
                model[at..at + n].fill(b);
            }
            let mut got = Vec::new();
            for (k, v) in &d.extents {
                if got.len() < *k {
                    got.resize(*k, 0);
                }
                got.extend_from_slice(v);
            }
            got.resize(d.len, 0);
            assert_eq!(got, model, "after {:?}", (at, n, b));
            assert_eq!(d.len, model.len());
            let keys: Vec<_> = d.extents.iter().map(|(k, v)| (*k, k + v.len())).collect();
            for w in keys.windows(2) {
                assert!(w[0].1 < w[1].0, "extents touch or overlap: {keys:?}");
            }
        }
    }

    #[test]
    fn extents_merge_like_a_flat_buffer() {
        check(&[(0, 4, 1), (4, 4, 2), (10, 2, 3), (8, 2, 4), (1, 20, 5)]);
        check(&[
            (100, 10, 1),
            (0, 10, 2),
            (50, 10, 3),
            (5, 100, 4),
            (60, 0, 0),
            (70, 5, 6),
        ]);
        check(&[
            (10, 10, 1),
            (30, 10, 2),
            (50, 10, 3),
            (15, 40, 4),
            (25, 0, 0),
            (0, 3, 5),
        ]);
        check(&[
            (0, 8, 1),
            (2, 2, 2),
            (20, 1, 3),
            (19, 1, 4),
            (21, 1, 5),
            (4, 0, 0),
        ]);
    }

    #[test]
    fn coverage() {
        let mut d = DirtyChunk::new(None, 0);
        d.write(0, &[1; 10]);
        d.write(20, &[1; 10]);
        assert!(d.covered(0, 10));
        assert!(d.covered(2, 8));
        assert!(!d.covered(5, 15));
        assert!(!d.covered(10, 20));
        assert!(d.covered(22, 30));
        d.write(10, &[1; 10]);
        assert!(d.covered(0, 30));
        assert!(!d.covered(0, 31));
    }
}
