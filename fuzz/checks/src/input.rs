//! The input layout of the decoder targets: a few leading bytes choose the
//! decoder's limit and where the byte stream is cut into reads; the rest is
//! the stream a peer sent.
//!
//! | bytes | field | meaning |
//! |------:|-------|---------|
//! | 2 | `max` | u16 big-endian: the decoder's size limit |
//! | 1 | `n` | how many cuts follow |
//! | `n` | cuts | one byte each: the length of one read (0 is a read that brought nothing) |
//! | rest | stream | the bytes, delivered as the reads above, then whatever is left as one last read |
//!
//! An input shorter than its own fields is read as far as it goes (a
//! missing `max` is 0, missing cuts are none), so every byte string is a
//! valid input. [`Input::build`] writes the layout, for seeds.

/// One decoded fuzz input.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The decoder's size limit.
    pub max: usize,
    cuts: &'a [u8],
    /// Every byte the peer sent, in order.
    pub stream: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads the layout above from `data`.
    pub fn parse(data: &'a [u8]) -> Input<'a> {
        let Some((max, rest)) = data.split_first_chunk::<2>() else {
            return Input {
                max: 0,
                cuts: &[],
                stream: &[],
            };
        };
        let (cuts, stream) = match rest.split_first() {
            Some((&n, rest)) => rest.split_at(usize::from(n).min(rest.len())),
            None => (&[][..], &[][..]),
        };
        Input {
            max: usize::from(u16::from_be_bytes(*max)),
            cuts,
            stream,
        }
    }

    /// The stream as the reads the cuts describe: each cut's length (capped
    /// by what is left), then the remainder as one last read (possibly
    /// empty).
    pub fn reads(&self) -> impl Iterator<Item = &'a [u8]> {
        let mut left = self.stream;
        let mut cuts = self.cuts.iter();
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            match cuts.next() {
                Some(&len) => {
                    let (read, rest) = left.split_at(usize::from(len).min(left.len()));
                    left = rest;
                    Some(read)
                }
                None => {
                    done = true;
                    Some(left)
                }
            }
        })
    }

    /// The bytes of an input with these fields (at most 255 cuts).
    pub fn build(max: u16, cuts: &[u8], stream: &[u8]) -> Vec<u8> {
        let n = u8::try_from(cuts.len()).expect("at most 255 cuts");
        let mut out = Vec::with_capacity(3 + cuts.len() + stream.len());
        out.extend_from_slice(&max.to_be_bytes());
        out.push(n);
        out.extend_from_slice(cuts);
        out.extend_from_slice(stream);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_parse_agree() {
        let data = Input::build(0x0102, &[3, 0, 9], b"abcdefgh");
        let input = Input::parse(&data);
        assert_eq!(input.max, 0x0102);
        assert_eq!(input.stream, b"abcdefgh");
        let reads: Vec<&[u8]> = input.reads().collect();
        assert_eq!(reads, [&b"abc"[..], b"", b"defgh", b""]);
    }

    #[test]
    fn short_inputs_read_as_far_as_they_go() {
        assert_eq!(Input::parse(b"").stream, b"");
        assert_eq!(Input::parse(b"\x01").max, 0);
        let cut_short = Input::parse(b"\x00\x10\x05ab");
        assert_eq!((cut_short.max, cut_short.stream), (16, &b""[..]));
        assert_eq!(cut_short.reads().count(), 3, "two cuts, then the rest");
        let whole = Input::parse(b"\x00\x10\x00xyz");
        assert_eq!(whole.reads().collect::<Vec<_>>(), [&b"xyz"[..]]);
    }
}
