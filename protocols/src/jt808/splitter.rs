//! Streaming frame finder (JT/T 808-2013 §4.4.1): finds 0x7e-delimited
//! frames in a caller-owned byte buffer without copying or allocating.
//!
//! Check, then parse: the splitter only looks for delimiters and enforces
//! the size limit; unescaping and validation happen in `parse_packet`.

use core::ops::Range;

use super::error::{Error, ErrorKind};
use super::frame::FLAG;

/// Outcome of looking at the start of a buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Split {
    /// `buf[frame]` is one whole on-wire frame including both 0x7e delimiters.
    /// Drop `consumed` bytes after handling it.
    Frame {
        frame: Range<usize>,
        consumed: usize,
    },
    /// Need more bytes. `consumed` leading bytes can be dropped (may be 0).
    Incomplete { consumed: usize },
    /// A rejected span (oversized frame or garbage before a delimiter).
    /// Drop `consumed` bytes, count `error`, call again.
    Invalid { error: Error, consumed: usize },
}

/// Streaming splitter. Its only state is whether it is skipping the rest of
/// an oversized frame, so that the tail of such a frame is not reported a
/// second time as garbage.
#[derive(Debug, Clone)]
pub struct Splitter {
    max_frame: usize,
    discarding: bool,
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter::new(super::DEFAULT_MAX_FRAME)
    }
}

impl Splitter {
    /// `max_frame` is the largest accepted on-wire frame, delimiters included.
    pub fn new(max_frame: usize) -> Self {
        Splitter {
            max_frame: max_frame.max(2),
            discarding: false,
        }
    }

    /// The configured limit.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Look at the start of `buf`. The caller drops `consumed` bytes after
    /// handling the result and calls again while progress is made.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self, buf: &[u8]) -> Split {
        if self.discarding {
            // Skip the remainder of an oversized frame up to and including
            // its closing delimiter.
            return match memchr::memchr(FLAG, buf) {
                Some(p) => {
                    self.discarding = false;
                    Split::Incomplete { consumed: p + 1 }
                }
                None => Split::Incomplete {
                    consumed: buf.len(),
                },
            };
        }
        let Some(first) = memchr::memchr(FLAG, buf) else {
            if buf.is_empty() {
                return Split::Incomplete { consumed: 0 };
            }
            return Split::Invalid {
                error: Error::new(
                    ErrorKind::Framing,
                    0,
                    "bytes outside a 0x7e-delimited frame",
                ),
                consumed: buf.len(),
            };
        };
        if first > 0 {
            return Split::Invalid {
                error: Error::new(
                    ErrorKind::Framing,
                    0,
                    "bytes outside a 0x7e-delimited frame",
                ),
                consumed: first,
            };
        }
        // Two adjacent flags are an end flag followed by a start flag
        // (§4.4.1); skip to the last flag of a run.
        let mut start = 0;
        while start + 1 < buf.len() && buf[start + 1] == FLAG {
            start += 1;
        }
        let body = &buf[start + 1..];
        let limit_scan = self.max_frame.saturating_sub(1).min(body.len());
        match memchr::memchr(FLAG, &body[..limit_scan]) {
            Some(p) => {
                let end = start + 1 + p + 1;
                Split::Frame {
                    frame: start..end,
                    consumed: end,
                }
            }
            None if body.len() + 1 >= self.max_frame => {
                // Reject before buffering more: the frame is already longer
                // than any frame we accept.
                let closing = memchr::memchr(FLAG, &body[limit_scan..]);
                match closing {
                    Some(p) => Split::Invalid {
                        error: Error::new(
                            ErrorKind::Oversized,
                            start,
                            "frame exceeds the size limit",
                        ),
                        consumed: start + 1 + limit_scan + p + 1,
                    },
                    None => {
                        self.discarding = true;
                        Split::Invalid {
                            error: Error::new(
                                ErrorKind::Oversized,
                                start,
                                "frame exceeds the size limit",
                            ),
                            consumed: buf.len(),
                        }
                    }
                }
            }
            None => Split::Incomplete { consumed: start },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_frames_and_reports_incomplete() {
        let mut s = Splitter::new(100);
        let buf = [0x7e, 1, 2, 0x7e, 0x7e, 3];
        assert_eq!(
            s.next(&buf),
            Split::Frame {
                frame: 0..4,
                consumed: 4
            }
        );
        assert_eq!(s.next(&buf[4..]), Split::Incomplete { consumed: 0 });
        assert_eq!(s.next(&[]), Split::Incomplete { consumed: 0 });
    }

    #[test]
    fn adjacent_flags_and_garbage() {
        let mut s = Splitter::new(100);
        let buf = [9, 9, 0x7e, 0x7e, 1, 0x7e];
        match s.next(&buf) {
            Split::Invalid { error, consumed } => {
                assert_eq!(error.kind, ErrorKind::Framing);
                assert_eq!(consumed, 2);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.next(&buf[2..]),
            Split::Frame {
                frame: 1..4,
                consumed: 4
            }
        );
    }

    #[test]
    fn oversized_rejected_before_end_arrives_and_resyncs() {
        let mut s = Splitter::new(8);
        let mut buf = vec![0x7e];
        buf.extend([1u8; 10]);
        match s.next(&buf) {
            Split::Invalid { error, consumed } => {
                assert_eq!(error.kind, ErrorKind::Oversized);
                assert_eq!(consumed, buf.len());
            }
            other => panic!("{other:?}"),
        }
        // The tail of the big frame is skipped silently, then a good frame follows.
        let tail = [1, 1, 0x7e, 0x7e, 5, 0x7e];
        assert_eq!(s.next(&tail), Split::Incomplete { consumed: 3 });
        assert_eq!(
            s.next(&tail[3..]),
            Split::Frame {
                frame: 0..3,
                consumed: 3
            }
        );
    }
}
