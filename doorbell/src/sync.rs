//! The sync facade: the atomics the handshake is written with. They are
//! std's in every build, and loom's under the `loom` feature, so that the
//! code loom explores is the code that ships, not a copy of it.

#[cfg(feature = "loom")]
pub use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
#[cfg(not(feature = "loom"))]
pub use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
