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
    /// Output the socket would not take yet, in order.
    pub write: BytesMut,
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
