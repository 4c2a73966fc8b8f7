//! The bodies of Millgate's fuzz targets: one `check(data)` per target that
//! drives a sans-io component with arbitrary input and panics when an
//! invariant breaks.
//!
//! Two callers share every check: the cargo-fuzz binaries in
//! `fuzz/fuzz_targets/` (their own workspace, built by `cargo fuzz`), and
//! `tests/corpus.rs` here, which replays every file of `fuzz/corpus/<target>/`
//! and `fuzz/seeds/<target>/` in `cargo test --workspace`, so a checked-in
//! input that once crashed stays fixed. The checks use only public API of
//! the crates they drive.
//!
//! | target | drives | module |
//! |--------|--------|--------|
//! | `client_frame` | `proto::decode` (the client frame codec) | [`client_frame`] |
//! | `link_frame` | `proto::link::decode` (the gateway <-> logic link) | [`link_frame`] |
//! | `connection` | `gateway::connection` (the connection policy, on a virtual clock) | [`connection`] |
//!
//! Adding a target `NAME`: a module here with `pub fn check(data: &[u8])`,
//! a row in [`TARGETS`], `fuzz/fuzz_targets/NAME.rs` calling it, a `[[bin]]`
//! in `fuzz/Cargo.toml`, and seed inputs in `fuzz/seeds/NAME/`. The replay
//! test fails until all five agree.
#![forbid(unsafe_code)]

pub mod client_frame;
pub mod connection;
pub mod input;
pub mod link_frame;
pub mod stream;

/// One fuzz target: its name (the cargo-fuzz binary and corpus directory)
/// and its check.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub check: fn(&[u8]),
}

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    Target {
        name: "client_frame",
        check: client_frame::check,
    },
    Target {
        name: "link_frame",
        check: link_frame::check,
    },
    Target {
        name: "connection",
        check: connection::check,
    },
];
