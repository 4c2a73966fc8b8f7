//! A connection slot: what the gateway keeps per client while it is idle.
//!
//! 64 bytes: the socket (a file descriptor), the timer wheel's intrusive
//! links, and the sans-io [`Connection`] (the session and one pointer to
//! buffers that exist only while needed: a partial frame that has not
//! fully arrived, or output the socket would not take yet). An idle
//! session has neither, so it holds no heap memory of its own.

use mio::net::TcpStream;
use slab::Slab;

use crate::connection::Connection;
use crate::wheel::{Link, Links};

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    pub link: Link,
    pub conn: Connection,
}

impl Conn {
    pub fn new(stream: TcpStream, conn: Connection) -> Conn {
        Conn {
            stream,
            link: Link::default(),
            conn,
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
        // The sans-io part: the 40-byte session and one pointer.
        assert_eq!(std::mem::size_of::<Connection>(), 48);
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
