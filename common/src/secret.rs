//! Secrets read from files: the gateway's token HMAC key
//! (`--secret-file`) and the logic server's API key (`--api-key-file`).
//!
//! A secret file holds the secret's bytes, with one trailing newline removed
//! (so `echo key > file` and an editor's final newline both work; a second
//! newline, or a `\r`, is part of the secret). An empty secret or an
//! unreadable file is an error naming the path: the operator's to fix, at
//! start-up, never a silent empty key.
//!
//! [`Secret`] keeps the bytes out of `Debug` output (so a config or error
//! dump cannot log them) and compares in constant time.

use std::fmt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// Why a secret file could not be used. Either way the operator's setting
/// is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The file could not be read (missing, a directory, no permission).
    #[error("reading the secret file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file holds nothing but at most one newline.
    #[error("the secret file {path} is empty")]
    Empty { path: PathBuf },
}

/// Secret bytes. `Debug` shows only the length; [`Secret::ct_eq`] compares
/// without an early exit.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, consuming the secret.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// Whether `candidate` equals the secret, in time that depends only on
    /// the lengths (for bearer keys presented by clients).
    pub fn ct_eq(&self, candidate: &[u8]) -> bool {
        self.0.ct_eq(candidate).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// The secret in `path`: its bytes with one trailing newline removed.
pub fn read_secret_file(path: &Path) -> Result<Secret, SecretError> {
    let mut bytes = std::fs::read(path).map_err(|source| SecretError::Read {
        path: path.to_owned(),
        source,
    })?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(SecretError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(Secret(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, content: &[u8]) -> PathBuf {
        let path = dir.path().join("secret");
        std::fs::write(&path, content).expect("write the secret file");
        path
    }

    #[test]
    fn exactly_one_trailing_newline_is_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cases: [(&[u8], &[u8]); 4] = [
            (b"abc", b"abc"),
            (b"abc\n", b"abc"),
            (b"abc\n\n", b"abc\n"),
            (b"abc\r\n", b"abc\r"),
        ];
        for (content, want) in cases {
            let got = read_secret_file(&file(&dir, content)).expect("a secret");
            assert_eq!(got.expose(), want, "{content:?}");
        }
    }

    #[test]
    fn an_empty_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        for content in [&b""[..], b"\n"] {
            let path = file(&dir, content);
            let err = read_secret_file(&path).expect_err("empty");
            assert!(matches!(&err, SecretError::Empty { path: p } if *p == path));
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("nope");
        let err = read_secret_file(&missing).expect_err("missing");
        assert!(matches!(&err, SecretError::Read { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound));
        assert!(err.to_string().contains("nope"), "{err}");
        // A directory is unreadable as a file too.
        let err = read_secret_file(dir.path()).expect_err("a directory");
        assert!(matches!(err, SecretError::Read { .. }));
    }

    #[test]
    fn debug_hides_the_bytes_and_compare_is_exact() {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = read_secret_file(&file(&dir, b"hunter2\n")).expect("a secret");
        assert_eq!(format!("{s:?}"), "Secret(7 bytes)");
        assert!(s.ct_eq(b"hunter2"));
        assert!(!s.ct_eq(b"hunter3"));
        assert!(!s.ct_eq(b"hunter2\n"));
        assert!(!s.ct_eq(b""));
    }
}
