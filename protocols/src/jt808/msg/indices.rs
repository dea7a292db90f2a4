//! Lists of WORD package indices (0x8003 §8.4, 0x8800 §8.52), either as
//! received (big-endian bytes borrowed from the body) or built by the caller
//! (e.g. the reassembler's missing list).

use bytes::{BufMut, BytesMut};

#[derive(Debug, Clone, Copy)]
pub enum PackageIndices<'a> {
    /// Big-endian WORDs as they appear on the wire.
    Wire(&'a [u8]),
    /// Indices supplied by the caller.
    List(&'a [u16]),
}

impl Default for PackageIndices<'_> {
    fn default() -> Self {
        PackageIndices::List(&[])
    }
}

impl<'a> PackageIndices<'a> {
    pub fn len(&self) -> usize {
        match self {
            PackageIndices::Wire(b) => b.len() / 2,
            PackageIndices::List(l) => l.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        let (w, l): (&'a [u8], &'a [u16]) = match *self {
            PackageIndices::Wire(b) => (b, &[]),
            PackageIndices::List(l) => (&[], l),
        };
        w.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .chain(l.iter().copied())
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        for i in self.iter() {
            out.put_u16(i);
        }
    }
}

impl PartialEq for PackageIndices<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for PackageIndices<'_> {}
