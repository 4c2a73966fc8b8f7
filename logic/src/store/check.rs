//! The journal check run before fjall opens a data directory: it tells a
//! torn tail (recovered from) apart from corruption in the middle
//! (refused, naming the file), so that neither silently loses data.
//!
//! Why it exists: fjall's own recovery refuses a batch whose checksum is
//! wrong (without naming the file), but it *truncates* the journal at the
//! first entry it cannot decode, wherever that is; a flipped tag byte in
//! the middle of a journal would make it drop every later batch without a
//! word. And a power loss can leave a last batch whose checksum is wrong,
//! which fjall refuses although it was never acknowledged as synced.
//!
//! The rule: journals are written strictly in order and a journal is
//! synced in full before the next one is created, so
//! - in any journal but the newest, every problem is corruption;
//! - in the newest, a problem is a torn tail if no complete batch end
//!   follows it (beyond the broken batch's own end): everything after it
//!   was still being written when the process or the machine died. That
//!   tail is cut off here (and logged), so fjall opens cleanly. A complete
//!   batch after a bad one is corruption: refused.
//!
//! The format read here is fjall 3's journal (`journal/entry.rs`:
//! start `1 count:u32 seqno:u64`, item `2 type:u8 compression:u8
//! keyspace:u64 key_len:u16 value_len:u32 disk_len:u32 key value`, end
//! `3 xxh3:u64 "FJL\x03"`, clear `4 keyspace:u64`, little-endian, zeros
//! after the last batch of a preallocated file), pinned by the fjall
//! version in `Cargo.toml` and by the unit tests, which check real fjall
//! journals. A user's message body that happens to contain a whole fake
//! batch end inside a torn tail would make this refuse to start: loud,
//! never silent.

use std::path::{Path, PathBuf};

use std::hash::Hasher;

const MAGIC: &[u8] = b"FJL\x03";
const START_LEN: usize = 13;
const ITEM_HEADER: usize = 21;
const END_LEN: usize = 13;
const CLEAR_LEN: usize = 9;

/// Why a data directory's journal cannot be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalProblem {
    #[error(
        "journal {file} is corrupt at byte {offset}: {what}, and complete batches follow it; \
         refusing to start rather than drop them (restore the data directory from a backup, \
         or move this file away to accept losing what it holds)"
    )]
    Corrupt {
        file: PathBuf,
        offset: u64,
        what: &'static str,
    },
    #[error("reading journal {file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
}

/// A torn tail that was cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    pub file: PathBuf,
    pub offset: u64,
    pub dropped: u64,
    pub what: &'static str,
}

/// Checks every `*.jnl` file in `dir` (fjall's directory), oldest first;
/// cuts a torn tail off the newest and returns what it cut.
pub fn check_journals(dir: &Path) -> Result<Vec<Repaired>, JournalProblem> {
    let io = |file: &Path| {
        let file = file.to_owned();
        move |source| JournalProblem::Io { file, source }
    };
    let mut journals: Vec<(u64, PathBuf)> = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jnl"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(id) = id {
            journals.push((id, path));
        }
    }
    journals.sort();
    let mut repaired = Vec::new();
    let last = journals.len().saturating_sub(1);
    for (i, (_, path)) in journals.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let Some(bad) = first_problem(&bytes) else {
            continue;
        };
        let follows = ends_after(&bytes, bad.resume);
        if i != last || follows {
            return Err(JournalProblem::Corrupt {
                file: path.clone(),
                offset: bad.at as u64,
                what: bad.what,
            });
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        file.set_len(bad.at as u64).map_err(io(path))?;
        file.sync_all().map_err(io(path))?;
        let dropped = last_nonzero(&bytes).saturating_sub(bad.at) as u64;
        tracing::warn!(
            file = %path.display(),
            offset = bad.at,
            dropped,
            what = bad.what,
            "journal had a torn tail (a crash while writing it); cut off"
        );
        repaired.push(Repaired {
            file: path.clone(),
            offset: bad.at as u64,
            dropped,
            what: bad.what,
        });
    }
    Ok(repaired)
}

/// Where the journal stops being a sequence of valid batches.
#[derive(Debug)]
struct Problem {
    /// Start of the first bad batch.
    at: usize,
    /// Where to look for later batch ends (past the bad batch's own end
    /// if it has one).
    resume: usize,
    what: &'static str,
}

/// The first problem in `b`, or `None` if it is valid batches followed
/// only by zeros (preallocation) or nothing.
fn first_problem(b: &[u8]) -> Option<Problem> {
    let mut pos = 0;
    loop {
        match b.get(pos) {
            None => return None,
            Some(0) if b[pos..].iter().all(|&x| x == 0) => return None,
            _ => {}
        }
        match batch(b, pos) {
            Ok(end) => pos = end,
            Err((resume, what)) => {
                return Some(Problem {
                    at: pos,
                    resume,
                    what,
                });
            }
        }
    }
}

/// Parses the batch at `pos`; its end, or (where to resume, why not).
fn batch(b: &[u8], pos: usize) -> Result<usize, (usize, &'static str)> {
    let start = b
        .get(pos..pos + START_LEN)
        .ok_or((pos, "a batch start cut short"))?;
    if start[0] != 1 {
        return Err((pos, "no batch start where one must be"));
    }
    let count = u32::from_le_bytes([start[1], start[2], start[3], start[4]]);
    let mut at = pos + START_LEN;
    let mut hasher = xxhash_rust::xxh3::Xxh3::default();
    for _ in 0..count {
        let tag = *b.get(at).ok_or((at, "a batch cut short"))?;
        let len = match tag {
            2 => {
                let h = b
                    .get(at..at + ITEM_HEADER)
                    .ok_or((at, "an item cut short"))?;
                if h[2] > 1 {
                    return Err((at, "an item with an unknown compression"));
                }
                let key_len = u16::from_le_bytes([h[11], h[12]]) as usize;
                let disk_len = u32::from_le_bytes([h[17], h[18], h[19], h[20]]) as usize;
                ITEM_HEADER + key_len + disk_len
            }
            4 => CLEAR_LEN,
            _ => return Err((at, "a batch with fewer items than it announced")),
        };
        let entry = b.get(at..at + len).ok_or((at, "an item cut short"))?;
        hasher.update(entry);
        at += len;
    }
    let end = b
        .get(at..at + END_LEN)
        .ok_or((at, "a batch without its end"))?;
    if end[0] != 3 || &end[9..] != MAGIC {
        return Err((at, "a batch without its end"));
    }
    let want = u64::from_le_bytes([
        end[1], end[2], end[3], end[4], end[5], end[6], end[7], end[8],
    ]);
    if hasher.finish() != want {
        return Err((at + END_LEN, "a batch whose checksum does not match"));
    }
    Ok(at + END_LEN)
}

/// Whether a complete batch end (tag, checksum, magic) starts at or after
/// `from`.
fn ends_after(b: &[u8], from: usize) -> bool {
    let from = from.max(9);
    b.get(from..).is_some_and(|rest| {
        rest.windows(MAGIC.len())
            .enumerate()
            .any(|(i, w)| w == MAGIC && b[from + i - 9] == 3)
    })
}

fn last_nonzero(b: &[u8]) -> usize {
    b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1)
}
