//! Engine values built from pieces with one copy.
//!
//! fjall keeps every value in its own allocation and copies a `Vec` handed to it (`Slice::from`),
//! so a value first gathered in a growing `Vec` was copied once per doubling of the vector, once
//! more into its final shape and once into fjall's allocation. The track-log value of a group
//! commit and the chunks of a fold are the store's largest values, tens of kilobytes a second per
//! thousand terminals: building them straight into fjall's allocation, from the pieces they are
//! made of, was a tenth of the store threads' instructions per position (session 18).

use std::io::Read;

/// The concatenation of `parts`, which together hold exactly `len` bytes, as one engine value.
pub(super) fn joined<'a>(len: usize, parts: impl IntoIterator<Item = &'a [u8]>) -> fjall::Slice {
    let mut reader = Parts {
        current: &[],
        rest: parts.into_iter(),
    };
    // `from_reader` allocates `len` bytes without zeroing them and fills them with `read_exact`;
    // our reader copies from memory and fails only if the parts are shorter than `len`, which
    // is a bug in the caller's count. It is public but hidden from the docs of fjall's value
    // type (value-log's `Slice`), so outside its semver promise: Cargo.lock pins the version
    // whose behaviour this relies on, and this module's tests check it.
    let value = fjall::Slice::from_reader(&mut reader, len).expect("the parts hold `len` bytes");
    debug_assert!(
        reader.current.is_empty() && reader.rest.all(|part| part.is_empty()),
        "the parts hold more than `len` bytes"
    );
    value
}

/// Reads the parts one after the other.
struct Parts<'a, I> {
    current: &'a [u8],
    rest: I,
}

impl<'a, I: Iterator<Item = &'a [u8]>> Read for Parts<'a, I> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rest.next() {
                Some(part) => self.current = part,
                None => return Ok(0),
            }
        }
        self.current.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::joined;

    #[test]
    fn joins_parts_of_any_length_in_order() {
        let parts: [&[u8]; 5] = [b"", b"ab", b"", b"cde", b"f"];
        assert_eq!(&*joined(6, parts), b"abcdef");
        assert_eq!(&*joined(0, [b"" as &[u8]]), b"");
        let long = vec![7u8; 70_000];
        let value = joined(70_003, [&long[..], b"xyz"]);
        assert_eq!(value.len(), 70_003);
        assert_eq!(&value[69_999..], b"\x07xyz");
    }

    #[test]
    #[should_panic(expected = "the parts hold")]
    fn a_short_count_of_parts_is_a_bug() {
        joined(4, [b"abc" as &[u8]]);
    }
}
