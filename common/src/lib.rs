//! Millgate's shared foundations, used by the `gateway` and `logic`
//! binaries: [`config`] (one serde struct per binary, from defaults, a TOML
//! file and flags), [`logging`] (the tracing subscriber), [`secret`]
//! (secret files), [`metrics`] (Prometheus through `prometheus-client`,
//! with single-writer counters and histograms for the hot path) and
//! [`http`] (the `/metrics`, `/healthz`, `/ready` server, extensible with
//! JSON routes).
//!
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod config;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod secret;
