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

/// What the splitter is skipping, so that one bad span is reported once no
/// matter how its bytes are split across reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    Nothing,
    /// Garbage before a delimiter, already reported.
    Garbage,
    /// The rest of an oversized frame, already reported, up to and
    /// including its closing delimiter.
    Oversized,
}

/// Streaming splitter. Its only state is what it is skipping, so the
/// events it reports do not depend on how the stream is chunked.
#[derive(Debug, Clone)]
pub struct Splitter {
    max_frame: usize,
    skip: Skip,
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter::new(super::DEFAULT_MAX_FRAME)
    }
}

fn garbage() -> Error {
    Error::new(
        ErrorKind::Framing,
        0,
        "bytes outside a 0x7e-delimited frame",
    )
}

impl Splitter {
    /// `max_frame` is the largest accepted on-wire frame, delimiters included.
    pub fn new(max_frame: usize) -> Self {
        Splitter {
            max_frame: max_frame.max(2),
            skip: Skip::Nothing,
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
        // Usual case: the buffer starts at a frame's opening flag.
        if self.skip == Skip::Nothing && buf.first() == Some(&FLAG) {
            return self.find(buf, Some(0));
        }
        let flag = memchr::memchr(FLAG, buf);
        let skipped = match (self.skip, flag) {
            (Skip::Nothing, _) => 0,
            (Skip::Oversized, Some(p)) => p + 1,
            (Skip::Garbage, Some(p)) => p,
            (Skip::Oversized | Skip::Garbage, None) => {
                return Split::Incomplete {
                    consumed: buf.len(),
                }
            }
        };
        self.skip = Skip::Nothing;
        if skipped == 0 {
            return self.find(buf, flag);
        }
        // The skipped span was reported when it started; carry on with
        // what follows it in the same call.
        let rest = &buf[skipped..];
        match self.find(rest, memchr::memchr(FLAG, rest)) {
            Split::Frame { frame, consumed } => Split::Frame {
                frame: frame.start + skipped..frame.end + skipped,
                consumed: consumed + skipped,
            },
            Split::Incomplete { consumed } => Split::Incomplete {
                consumed: consumed + skipped,
            },
            Split::Invalid {
                mut error,
                consumed,
            } => {
                error.offset += skipped;
                Split::Invalid {
                    error,
                    consumed: consumed + skipped,
                }
            }
        }
    }

    /// Look for a frame at the start of `buf`, whose first 0x7e is at `flag`.
    fn find(&mut self, buf: &[u8], flag: Option<usize>) -> Split {
        let first = match flag {
            None if buf.is_empty() => return Split::Incomplete { consumed: 0 },
            None => {
                self.skip = Skip::Garbage;
                return Split::Invalid {
                    error: garbage(),
                    consumed: buf.len(),
                };
            }
            Some(p) => p,
        };
        if first > 0 {
            return Split::Invalid {
                error: garbage(),
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
                let error = Error::new(ErrorKind::Oversized, start, "frame exceeds the size limit");
                match memchr::memchr(FLAG, &body[limit_scan..]) {
                    Some(p) => Split::Invalid {
                        error,
                        consumed: start + 1 + limit_scan + p + 1,
                    },
                    None => {
                        self.skip = Skip::Oversized;
                        Split::Invalid {
                            error,
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
        assert_eq!(
            s.next(&tail),
            Split::Frame {
                frame: 3..6,
                consumed: 6
            }
        );
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    /// On-wire hex of every reference frame, in file order.
    fn reference_frames() -> Vec<(String, Vec<u8>)> {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/jt808/frames.jsonl"
        ))
        .unwrap();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["id"].as_str().unwrap().to_string(),
                    hex::decode(v["hex"].as_str().unwrap()).unwrap(),
                )
            })
            .collect()
    }

    #[derive(Debug, PartialEq)]
    enum Event {
        Frame(Vec<u8>),
        Invalid(ErrorKind),
    }

    /// Feed `stream` in chunks of `chunk` bytes into a bounded buffer, as a
    /// connection would, and record what the splitter reports.
    fn run(stream: &[u8], chunk: usize, max_frame: usize) -> Vec<Event> {
        let mut s = Splitter::new(max_frame);
        let mut buf: Vec<u8> = Vec::new();
        let mut events = Vec::new();
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match s.next(&buf) {
                    Split::Frame { frame, consumed } => {
                        events.push(Event::Frame(buf[frame].to_vec()));
                        buf.drain(..consumed);
                    }
                    Split::Invalid { error, consumed } => {
                        events.push(Event::Invalid(error.kind));
                        buf.drain(..consumed);
                    }
                    Split::Incomplete { consumed } => {
                        buf.drain(..consumed);
                        break;
                    }
                }
                assert!(buf.len() <= max_frame + chunk, "buffer grew past the limit");
            }
        }
        events
    }

    #[test]
    fn reference_stream_splits_the_same_at_any_chunk_size() {
        let frames = reference_frames();
        assert!(frames.len() >= 96);
        // Frames that are whole on the wire come out exactly as they went in.
        let whole: Vec<_> = frames
            .iter()
            .filter(|(id, _)| id != "jt808-mut-truncated" && id != "jt808-mut-raw-7e-inside")
            .map(|(_, b)| b.clone())
            .collect();
        let stream: Vec<u8> = whole.concat();
        let expected: Vec<Event> = whole.iter().cloned().map(Event::Frame).collect();
        for chunk in [1, 2, 3, 7, 64, 1500, stream.len()] {
            assert!(
                run(&stream, chunk, DEFAULT_MAX_FRAME_FOR_TEST) == expected,
                "chunk {chunk}"
            );
        }
        // With the malformed frames mixed in, the outcome still does not
        // depend on how the bytes arrive.
        let all: Vec<u8> = frames.iter().flat_map(|(_, b)| b.clone()).collect();
        let reference = run(&all, all.len(), DEFAULT_MAX_FRAME_FOR_TEST);
        for chunk in [1, 5, 100] {
            assert_eq!(
                run(&all, chunk, DEFAULT_MAX_FRAME_FOR_TEST),
                reference,
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn small_limit_rejects_big_frames_and_keeps_small_ones() {
        let frames = reference_frames();
        let stream: Vec<u8> = frames
            .iter()
            .filter(|(id, _)| id != "jt808-mut-truncated" && id != "jt808-mut-raw-7e-inside")
            .flat_map(|(_, b)| b.clone())
            .collect();
        let limit = 200;
        for chunk in [1, 13, 4096] {
            let ev = run(&stream, chunk, limit);
            let small = frames
                .iter()
                .filter(|(id, b)| {
                    b.len() <= limit
                        && id != "jt808-mut-truncated"
                        && id != "jt808-mut-raw-7e-inside"
                })
                .count();
            let got_small = ev.iter().filter(|e| matches!(e, Event::Frame(_))).count();
            assert_eq!(ev, run(&stream, 1, limit), "chunk {chunk} vs byte by byte");
            assert_eq!(got_small, small, "chunk {chunk}");
            assert!(ev.contains(&Event::Invalid(ErrorKind::Oversized)));
            assert!(ev
                .iter()
                .all(|e| matches!(e, Event::Frame(f) if f.len() <= limit)
                    || *e == Event::Invalid(ErrorKind::Oversized)));
        }
    }

    const DEFAULT_MAX_FRAME_FOR_TEST: usize = crate::jt808::DEFAULT_MAX_FRAME;
}
