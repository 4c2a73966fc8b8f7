//! A connection slot: what the gateway keeps per client while it is idle.
//!
//! 64 bytes: the socket (a file descriptor), the timer wheel's intrusive
//! links, the sans-io [`Session`], and one pointer to buffers that exist
//! only while needed: a partial frame that has not fully arrived, or
//! output the socket would not take yet. An idle session has neither, so
//! it holds no heap memory of its own.

use bytes::BytesMut;
use mio::net::TcpStream;
use slab::Slab;

use crate::session::Session;
use crate::wheel::{Link, Links};

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    pub link: Link,
    pub session: Session,
    pub bufs: Option<Box<Bufs>>,
}

/// Per-connection buffers, allocated only while in use.
#[derive(Debug, Default)]
pub struct Bufs {
    /// The incomplete frame at the front of the stream.
    pub read: BytesMut,
    /// Output the socket would not take yet, in order: whole frames, but
    /// for the first `head` bytes, the rest of a frame partly written.
    pub write: BytesMut,
    /// See `write`: where the first whole frame in it starts.
    pub head: usize,
}

impl Bufs {
    /// `n` bytes of `write` went out.
    pub fn consumed(&mut self, n: usize) {
        self.head = frame_rest(&self.write, self.head, n);
        let _ = self.write.split_to(n);
    }

    /// Drops every whole frame queued, keeping the rest of the frame in
    /// progress (which the client must get whole) and nothing behind it.
    pub fn drop_queued_frames(&mut self) -> usize {
        let dropped = self.write.len() - self.head;
        self.write.truncate(self.head);
        dropped
    }
}

/// In `buf`, whose whole frames start at `start`, how many bytes from
/// offset `n` to the next frame boundary (0 if `n` is on one).
pub fn frame_rest(buf: &[u8], start: usize, n: usize) -> usize {
    let mut off = start;
    while off < n {
        let len = buf
            .get(off..off + 4)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
        off += proto::codec::HEADER_LEN + len;
    }
    off - n
}

impl Conn {
    pub fn new(stream: TcpStream, session: Session) -> Conn {
        Conn {
            stream,
            link: Link::default(),
            session,
            bufs: None,
        }
    }

    /// Takes the parked partial frame, if any.
    pub fn take_read(&mut self) -> Option<BytesMut> {
        let bufs = self.bufs.as_mut()?;
        if bufs.read.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut bufs.read))
    }

    /// Parks a partial frame (or drops the buffers when nothing is left).
    pub fn park_read(&mut self, read: BytesMut) {
        if read.is_empty() {
            self.free_if_empty();
        } else {
            self.bufs.get_or_insert_with(Box::default).read = read;
        }
    }

    /// True while output is queued.
    pub fn has_write(&self) -> bool {
        self.bufs.as_ref().is_some_and(|b| !b.write.is_empty())
    }

    /// The write queue, created on first use.
    pub fn write_queue(&mut self) -> &mut BytesMut {
        &mut self.bufs.get_or_insert_with(Box::default).write
    }

    /// Frees the buffers once both are empty.
    pub fn free_if_empty(&mut self) {
        if self
            .bufs
            .as_ref()
            .is_some_and(|b| b.read.is_empty() && b.write.is_empty())
        {
            self.bufs = None;
        }
    }
}

/// The wheel's view of the slab: each connection's embedded [`Link`].
#[derive(Debug)]
pub struct SlabLinks<'a>(pub &'a mut Slab<Conn>);

impl Links for SlabLinks<'_> {
    fn link(&mut self, key: u32) -> &mut Link {
        &mut self.0[key as usize].link
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_queue_knows_where_its_frames_start() {
        let mut out = BytesMut::new();
        for body in [&b"abcd"[..], b"", b"xyzzy"] {
            proto::codec::encode_raw(&mut out, proto::Kind::Push, 0, body);
        }
        let lens = [16, 12, 17];
        assert_eq!(out.len(), lens.iter().sum::<usize>());
        assert_eq!(frame_rest(&out, 0, 0), 0);
        assert_eq!(frame_rest(&out, 0, 5), 11);
        assert_eq!(frame_rest(&out, 0, 16), 0);
        assert_eq!(frame_rest(&out, 0, 17), 11);
        assert_eq!(frame_rest(&out, 0, 45), 0);
        // Five bytes of the first frame were already written elsewhere.
        let mut bufs = Bufs {
            write: out.split_off(5),
            head: 11,
            ..Bufs::default()
        };
        bufs.consumed(3);
        assert_eq!(bufs.head, 8);
        bufs.consumed(10);
        assert_eq!(bufs.head, 10, "2 bytes into the second frame");
        assert_eq!(bufs.drop_queued_frames(), 17);
        assert_eq!(bufs.write.len(), 10);
        bufs.consumed(10);
        assert_eq!((bufs.head, bufs.write.len()), (0, 0));
    }

    #[test]
    fn an_idle_connection_is_64_bytes() {
        // mio keeps a selector id in every socket in debug builds only;
        // release builds, the ones deployed and measured, are held to 64.
        let debug_extra =
            std::mem::size_of::<TcpStream>() - std::mem::size_of::<std::net::TcpStream>();
        assert_eq!(debug_extra > 0, cfg!(debug_assertions));
        let size = std::mem::size_of::<Conn>();
        assert!(size <= 64 + debug_extra.next_multiple_of(8), "{size}");
        if !cfg!(debug_assertions) {
            assert!(size <= 64, "{size}");
        }
    }
}
