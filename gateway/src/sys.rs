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
    fn reads_append_and_zero_means_eof() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"hello").unwrap();
        let mut buf = BytesMut::from(&b"> "[..]);
        assert_eq!(read_into(&b, &mut buf, 64).unwrap(), (5, false));
        assert_eq!(&buf[..], b"> hello");
        a.write_all(b"abc").unwrap();
        let mut exact = BytesMut::with_capacity(3);
        assert_eq!(
            read_into(&b, &mut exact, 3).unwrap().1,
            exact.capacity() == 3
        );
        drop(a);
        assert_eq!(read_into(&b, &mut buf, 64).unwrap().0, 0);
    }
}
