//! A connection's own buffers, which exist only while needed: a partial
//! frame that has not fully arrived, or output the socket would not take
//! yet. An idle connection has neither.

use bytes::BytesMut;

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
}
