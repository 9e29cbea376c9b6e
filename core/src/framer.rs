//! Line framing: bytes in, complete lines out.
//!
//! [`LineFramer`] owns one fixed buffer for the line being assembled. It never allocates, never grows, and never
//! loses its place: a line may arrive split over any number of reads and one read may carry many lines. Empty lines
//! (StarlingX writes `\n{...}\n`) are skipped and a trailing `\r` is dropped. A line longer than [`MAX_LINE`] is
//! reported once as [`FrameError::LineTooLong`] and discarded up to the next `\n`; framing then carries on.
//!
//! It must never interpret the bytes of a line: that is the codec's job.

use core::fmt;

/// The longest line (JSON text without its terminator) the protocol allows, in bytes.
pub const MAX_LINE: usize = 1056;

/// Room for a line and a `\r` that precedes its `\n`: what a framer's storage holds.
pub const LINE_BUF: usize = MAX_LINE + 1;
const BUF: usize = LINE_BUF;

/// Where a [`LineFramer`] keeps a line that arrived in parts. The default is an inline array; a host with many
/// connections can provide storage that exists only while a partial line is held (most reads carry whole lines,
/// which are framed without any copy), so an idle or well-behaved peer costs no line buffer at all.
pub trait LineStorage {
    /// The buffer, [`LINE_BUF`] bytes.
    fn buf(&mut self) -> &mut [u8; LINE_BUF];
    /// Nothing is held any more: storage made on demand may be let go.
    fn release(&mut self) {}
}

impl LineStorage for [u8; LINE_BUF] {
    fn buf(&mut self) -> &mut [u8; LINE_BUF] {
        self
    }
}

/// Why a line was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FrameError {
    /// The line exceeded [`MAX_LINE`] bytes; everything up to the next `\n` is discarded.
    LineTooLong,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::LineTooLong => write!(f, "line longer than {MAX_LINE} bytes"),
        }
    }
}

impl core::error::Error for FrameError {}

/// Splits a byte stream into lines, across reads, in bounded memory.
///
/// Feed it with [`LineFramer::push`] until the input is used up:
///
/// ```
/// use vigil_core::LineFramer;
/// let mut framer = LineFramer::new();
/// let mut input: &[u8] = b"\n{\"a\":1}\r\n{\"b\"";
/// let mut lines = 0;
/// while !input.is_empty() {
///     let (used, item) = framer.push(input);
///     if let Some(Ok(line)) = item {
///         assert_eq!(line, b"{\"a\":1}");
///         lines += 1;
///     }
///     input = &input[used..];
/// }
/// assert_eq!(lines, 1); // `{"b"` waits in the framer for the rest of its line
/// ```
#[derive(Clone)]
pub struct LineFramer<S = [u8; LINE_BUF]> {
    buf: S,
    len: u16,
    discarding: bool,
}

impl LineFramer {
    /// An empty framer with inline storage.
    pub const fn new() -> Self {
        LineFramer { buf: [0; BUF], len: 0, discarding: false }
    }
}

impl<S: LineStorage> LineFramer<S> {
    /// An empty framer keeping partial lines in `storage`.
    pub const fn with_storage(storage: S) -> Self {
        LineFramer { buf: storage, len: 0, discarding: false }
    }

    /// Forgets any partial line (for a new connection).
    pub fn reset(&mut self) {
        self.len = 0;
        self.discarding = false;
        self.buf.release();
    }

    /// Bytes of an incomplete line held now.
    pub fn buffered(&self) -> usize {
        usize::from(self.len)
    }

    /// Consumes bytes from `input` up to and including the end of the next complete line, or all of `input` if it
    /// holds no line end. Returns how many bytes were consumed and, when one is ready, a line (without its `\n` or
    /// `\r\n`, never empty) or the error that replaced it.
    ///
    /// A line that arrives whole in `input` while nothing is buffered is returned without copying.
    pub fn push<'a>(&'a mut self, input: &'a [u8]) -> (usize, Option<Result<&'a [u8], FrameError>>) {
        if self.len == 0 {
            // the line returned last time (if it came from storage) has been used: storage may go
            self.buf.release();
        }
        let mut start = 0;
        if self.discarding {
            match memchr_nl(input) {
                Some(p) => {
                    self.discarding = false;
                    start = p + 1;
                }
                None => return (input.len(), None),
            }
        }
        loop {
            let rest = &input[start..];
            let Some(p) = memchr_nl(rest) else {
                let held = usize::from(self.len);
                if held + rest.len() > BUF {
                    self.len = 0;
                    self.discarding = true;
                    return (input.len(), Some(Err(FrameError::LineTooLong)));
                }
                if rest.is_empty() {
                    return (input.len(), None);
                }
                self.buf.buf()[held..held + rest.len()].copy_from_slice(rest);
                self.len = (held + rest.len()) as u16;
                return (input.len(), None);
            };
            let used = start + p + 1;
            let segment = &rest[..p];
            let held = usize::from(self.len);
            if held == 0 {
                let line = strip_cr(segment);
                if line.is_empty() {
                    start = used;
                    continue;
                }
                if line.len() > MAX_LINE {
                    return (used, Some(Err(FrameError::LineTooLong)));
                }
                return (used, Some(Ok(line)));
            }
            self.len = 0;
            if held + segment.len() > BUF {
                return (used, Some(Err(FrameError::LineTooLong)));
            }
            let total = held + segment.len();
            let buf = self.buf.buf();
            buf[held..total].copy_from_slice(segment);
            let end = if buf[total - 1] == b'\r' { total - 1 } else { total };
            if end == 0 {
                start = used;
                continue;
            }
            if end > MAX_LINE {
                return (used, Some(Err(FrameError::LineTooLong)));
            }
            return (used, Some(Ok(&self.buf.buf()[..end])));
        }
    }
}

impl Default for LineFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> fmt::Debug for LineFramer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineFramer").field("buffered", &self.len).field("discarding", &self.discarding).finish()
    }
}

/// The first newline of `b` (a heartbeat's answer is ~190 bytes, scanned once per answer: `memchr` compares 16
/// bytes at a time where the target has SIMD, a word at a time elsewhere).
fn memchr_nl(b: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', b)
}

fn strip_cr(line: &[u8]) -> &[u8] {
    match line.split_last() {
        Some((b'\r', head)) => head,
        _ => line,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_first_newline_is_found_at_every_position_and_alignment() {
        // three words and a remainder: every place a newline can sit relative to a word
        let mut buf = [b'a'; 27];
        for len in 0..27 {
            assert_eq!(super::memchr_nl(&buf[..len]), None);
            for nl in 0..len {
                buf[nl] = b'\n';
                for second in nl + 1..len {
                    buf[second] = b'\n';
                    assert_eq!(super::memchr_nl(&buf[..len]), Some(nl), "len {len}, newlines at {nl} and {second}");
                    buf[second] = b'a';
                }
                // bytes that differ from '\n' by one bit or borrow, around it
                for (i, b) in buf[..len].iter_mut().enumerate() {
                    if i != nl {
                        *b = [0x0b, 0x09, 0x8a, 0x00, 0xff][i % 5];
                    }
                }
                assert_eq!(super::memchr_nl(&buf[..len]), Some(nl));
                for (i, b) in buf[..len].iter_mut().enumerate() {
                    if i != nl {
                        *b = b'a';
                    }
                }
                buf[nl] = b'a';
            }
        }
    }

    /// Storage that exists only while a partial line is held (as a host would do it with a Box), counting.
    #[derive(Default)]
    struct OnDemand {
        buf: Option<std::boxed::Box<[u8; LINE_BUF]>>,
        made: u32,
    }

    impl LineStorage for OnDemand {
        fn buf(&mut self) -> &mut [u8; LINE_BUF] {
            if self.buf.is_none() {
                self.made += 1;
            }
            self.buf.get_or_insert_with(|| std::boxed::Box::new([0; LINE_BUF]))
        }
        fn release(&mut self) {
            self.buf = None;
        }
    }

    #[test]
    fn storage_is_needed_only_for_a_partial_line_and_let_go_after() {
        let mut f = LineFramer::with_storage(OnDemand::default());
        let whole = b"{\"a\":1}\n{\"b\":2}\n";
        let mut input: &[u8] = whole;
        while !input.is_empty() {
            let (n, item) = f.push(input);
            assert!(matches!(item, Some(Ok(_))));
            input = &input[n..];
        }
        assert_eq!(f.buf.made, 0, "whole lines are framed without storage");
        let (n, item) = f.push(b"{\"c\"");
        assert_eq!((n, item.is_none()), (4, true));
        assert!(f.buf.buf.is_some(), "a partial line is held");
        let (_, item) = f.push(b":3}\n");
        assert_eq!(item, Some(Ok(&b"{\"c\":3}"[..])));
        let (_, item) = f.push(b"{\"d\":4}\n");
        assert_eq!(item, Some(Ok(&b"{\"d\":4}"[..])));
        assert!(f.buf.buf.is_none(), "let go once the line was used");
        assert_eq!(f.buf.made, 1);
    }

    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// Runs `chunks` through a framer; returns lines and errors in order.
    fn frame(chunks: &[&[u8]]) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut f = LineFramer::new();
        let mut out = Vec::new();
        for chunk in chunks {
            let mut input = *chunk;
            while !input.is_empty() {
                let (used, item) = f.push(input);
                assert!(used > 0, "push must always make progress");
                if let Some(item) = item {
                    out.push(item.map(<[u8]>::to_vec));
                }
                input = &input[used..];
            }
        }
        out
    }

    #[test]
    fn several_lines_in_one_read_and_empty_lines_skipped() {
        let out = frame(&[b"\n{a}\n\n{b}\r\n\r\n{c}\n"]);
        assert_eq!(out, [Ok(b"{a}".to_vec()), Ok(b"{b}".to_vec()), Ok(b"{c}".to_vec())]);
    }

    #[test]
    fn line_split_over_reads() {
        let out = frame(&[b"{ab", b"", b"cd", b"e}\r", b"\n{x"]);
        assert_eq!(out, [Ok(b"{abcde}".to_vec())]);
    }

    #[test]
    fn line_exactly_at_limit_passes_and_one_over_fails() {
        let at = [b'x'; MAX_LINE];
        let mut stream = at.to_vec();
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(&[b'y'; MAX_LINE + 1]);
        stream.extend_from_slice(b"\n{ok}\n");
        let out = frame(&[&stream]);
        assert_eq!(out, [Ok(at.to_vec()), Err(FrameError::LineTooLong), Ok(b"{ok}".to_vec())]);
        // the same, split into single bytes, so the buffered path is exercised
        let singles: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(frame(&singles), out);
    }

    #[test]
    fn endless_line_is_reported_once_and_framing_recovers() {
        let junk = [b'z'; 700];
        let mut chunks: Vec<&[u8]> = std::vec![&junk[..]; 50];
        chunks.push(b"tail\n{after}\n");
        let out = frame(&chunks);
        assert_eq!(out, [Err(FrameError::LineTooLong), Ok(b"{after}".to_vec())]);
    }

    #[test]
    fn buffered_count_tracks_partial_line() {
        let mut f = LineFramer::new();
        let (used, item) = f.push(b"abc");
        assert_eq!((used, item), (3, None));
        assert_eq!(f.buffered(), 3);
        f.reset();
        assert_eq!(f.buffered(), 0);
    }
}
