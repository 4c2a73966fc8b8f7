//! Feeding a byte stream to a decoder the way a connection does: append
//! each read to one receive buffer, take whole messages off its front until
//! the decoder asks for more bytes, stop at the first refusal (the
//! connection would close).

use bytes::BytesMut;

/// What a decoder made of a whole stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<M, E> {
    /// Every message decoded, in order.
    pub msgs: Vec<M>,
    /// How the stream ended.
    pub end: End<E>,
}

/// The state after the last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End<E> {
    /// The decoder refused a message; nothing after it was decoded.
    Refused(E),
    /// The decoder wants more bytes; these were still buffered.
    Waiting(Vec<u8>),
}

/// Feeds `reads` through `decode` (one call takes at most one message).
pub fn feed<'a, M, E>(
    reads: impl IntoIterator<Item = &'a [u8]>,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<M>, E>,
) -> Outcome<M, E> {
    let mut buf = BytesMut::new();
    let mut msgs = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match decode(&mut buf) {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        msgs,
                        end: End::Refused(e),
                    };
                }
            }
        }
    }
    Outcome {
        msgs,
        end: End::Waiting(buf.to_vec()),
    }
}
