//! The `gateway` binary: `gateway [flags]` runs the server; `gateway token`
//! mints a login token; `gateway doctor` checks the machine.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use gateway::cli::{Cli, Command};
use gateway::server::Server;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Token {
            secret_file,
            uin,
            device,
            ttl_secs,
        }) => {
            let secret = gateway::config::read_secret_file(&secret_file)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("clock before 1970")?
                .as_secs();
            let token = proto::TokenKey::new(&secret).mint(uin, device, now + ttl_secs);
            println!("{}", hex::encode(token));
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Doctor { sessions }) => {
            let mut out = std::io::stdout().lock();
            let ok = gateway::doctor::run_live(sessions, &mut out)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        None => {
            let cfg = cli.run.load()?;
            let server = Server::start(&cfg)?;
            server.handle_signals()?;
            // One line on stdout for whoever started us (tests, c1m).
            let mut out = std::io::stdout().lock();
            write!(out, "gateway listening on {}", server.local_addr)?;
            if let Some(m) = server.metrics_addr {
                write!(out, " metrics on {m}")?;
            }
            writeln!(out)?;
            out.flush()?;
            drop(out);
            tracing::info!(addr = %server.local_addr, "gateway started");
            server.join()?;
            tracing::info!("gateway stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}
