//! A binary's configuration with `common::config`: a nested table, an
//! `Option`, an enum, a list, a shorthand flag and a subcommand.
//!
//!     cargo run -p millgate-common --example settings -- --help
//!     cargo run -p millgate-common --example settings -- --store disk --upstream 127.0.0.1:1,127.0.0.1:2
//!     cargo run -p millgate-common --example settings -- token --uin 5

use std::net::SocketAddr;
use std::path::PathBuf;

use common::config::{Invocation, Loader};
use serde::{Deserialize, Serialize};

/// Everything the demo server can be told.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Address the server listens on.
    listen: SocketAddr,
    /// Worker threads; 0 means one per core.
    threads: usize,
    /// File holding the API key (one trailing newline removed). Without
    /// one the API is off.
    api_key_file: Option<PathBuf>,
    /// Where messages are kept.
    store: Store,
    /// Upstream servers, tried in order.
    upstream: Vec<SocketAddr>,
    /// Retry policy towards the upstreams.
    retry: Retry,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Store {
    /// In memory: lost on restart.
    Memory,
    /// Appended to files under the data directory.
    Disk,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
struct Retry {
    /// Delay before the first retry.
    initial_ms: u32,
    /// Longest delay between retries.
    max_ms: u32,
    /// Factor applied to the delay after each failure.
    factor: f32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            threads: 0,
            api_key_file: None,
            store: Store::Memory,
            upstream: Vec::new(),
            retry: Retry::default(),
        }
    }
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            initial_ms: 100,
            max_ms: 10_000,
            factor: 1.5,
        }
    }
}

/// Subcommands, with clap derive as usual.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print a token for a uin.
    Token {
        #[arg(long)]
        uin: u64,
    },
}

fn main() {
    let invocation = Loader::<Config>::new("settings")
        .with_command(|c| c.about("The common::config demo").version("0.1.0"))
        .shorthand(
            "retry-ms",
            "Both retry delays",
            &["retry.initial_ms", "retry.max_ms"],
        )
        .dispatch::<Command>();
    match invocation {
        Invocation::Run(loaded) => println!("{:#?}", loaded.config),
        Invocation::Sub(Command::Token { uin }) => println!("a token for {uin}"),
    }
}
