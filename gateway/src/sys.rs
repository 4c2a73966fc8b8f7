//! The gateway's only `unsafe`: reading from a socket straight into the
//! spare capacity of a `BytesMut`.
//!
//! `std::io::Read` wants an initialised `&mut [u8]`, which would mean
//! zeroing the 64 KiB per-thread read buffer before every read, most of
//! which a 16-byte heartbeat never touches. `read(2)` writes only what it
//! returns, so calling it on the uninitialised tail and then extending the
//! length by exactly that much is sound, and costs nothing per read.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

use bytes::{BufMut, BytesMut};

/// Reads once from `fd` into `buf`'s spare capacity (reserving `min_spare`
/// bytes first if needed). Returns the bytes read (0 is end of stream) and
/// whether the read filled all the room it was given: a read that did not
/// has drained the socket, so under edge-triggered readiness the caller
/// need not read again until the next event.
pub fn read_into(
    fd: &impl AsRawFd,
    buf: &mut BytesMut,
    min_spare: usize,
) -> io::Result<(usize, bool)> {
    if buf.capacity() - buf.len() < min_spare {
        buf.reserve(min_spare);
    }
    let spare = buf.chunk_mut();
    // SAFETY: `spare` points at `spare.len()` writable bytes owned by
    // `buf`; read(2) writes at most that many and reports how many, and
    // `fd` is an open socket borrowed for the duration of the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    let filled = n == spare.len();
    // SAFETY: read(2) initialised exactly the first `n` spare bytes.
    unsafe { buf.advance_mut(n) };
    Ok((n, filled))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_read_appends_and_a_short_read_says_drained() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"hello").unwrap();
        let mut buf = BytesMut::from(&b"> "[..]);
        // Room for 4,096 was reserved (BytesMut itself would add only 64
        // to a full buffer), 5 bytes came: not filled.
        assert_eq!(read_into(&b, &mut buf, 4096).unwrap(), (5, false));
        assert_eq!(&buf[..], b"> hello");
        assert!(buf.capacity() - 2 >= 4096, "min_spare was reserved");
        drop(a);
        assert_eq!(read_into(&b, &mut buf, 64).unwrap(), (0, false), "EOF");
        assert_eq!(&buf[..], b"> hello");
    }

    #[test]
    fn a_read_that_fills_the_room_says_filled_and_leaves_the_rest() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut buf = BytesMut::with_capacity(16);
        // The room read_into gets: min_spare is already there, so this is
        // exactly what it offers read(2), whatever the allocator gave.
        let room = buf.capacity();
        let sent: Vec<u8> = (0..room + 10).map(|i| i as u8).collect();
        a.write_all(&sent).unwrap();
        assert_eq!(read_into(&b, &mut buf, 16).unwrap(), (room, true));
        assert_eq!(&buf[..], &sent[..room]);
        // The rest is still in the socket: the next read gets it.
        let mut rest = BytesMut::with_capacity(64);
        assert_eq!(read_into(&b, &mut rest, 64).unwrap(), (10, false));
        assert_eq!(&rest[..], &sent[room..]);
    }

    #[test]
    fn exactly_full_counts_as_filled() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut buf = BytesMut::with_capacity(8);
        let room = buf.capacity();
        a.write_all(&vec![7; room]).unwrap();
        // The socket happens to be empty now, but read(2) cannot tell: a
        // full read must be followed by another under edge triggering.
        assert_eq!(read_into(&b, &mut buf, 8).unwrap(), (room, true));
    }

    #[test]
    fn an_empty_nonblocking_socket_is_would_block_and_changes_nothing() {
        let (_a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut buf = BytesMut::from(&b"kept"[..]);
        let err = read_into(&b, &mut buf, 64).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(&buf[..], b"kept");
    }
}
