//! A logic server on a data directory that a test kills with SIGKILL (by
//! PID) and starts again on the same directory and address.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `logic` process on `dir`, killed on drop.
pub struct Durable {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// From spawn to the `listening` line.
    pub started_in: Duration,
}

impl Durable {
    /// Starts `logic` on `dir`, listening on `listen` (port 0 picks one),
    /// with `extra` flags.
    pub fn start(dir: &Path, listen: &str, extra: &[&str]) -> Durable {
        let t0 = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_logic"))
            .args(["--listen", listen, "--threads", "2"])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn logic");
        let stdout = child.stdout.take().expect("stdout");
        let line = BufReader::new(stdout)
            .lines()
            .next()
            .expect("a line")
            .expect("utf-8");
        let addr = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("expected listening, got {line}"))
            .trim()
            .parse()
            .expect("an address");
        Durable {
            child: Some(child),
            addr,
            dir: dir.to_owned(),
            started_in: t0.elapsed(),
        }
    }

    /// Starts `logic` on `dir` and expects it to exit with an error;
    /// returns what it printed on stderr.
    pub fn refused(dir: &Path, extra: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_logic"))
            .args(["--listen", "127.0.0.1:0", "--threads", "1"])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .output()
            .expect("run logic");
        assert!(!out.status.success(), "it started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// SIGKILL, then wait for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let ok = Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .expect("kill");
            assert!(ok.success());
            child.wait().expect("reaped");
        }
    }

    /// Kills and starts again on the same directory and address.
    pub fn restart(&mut self, extra: &[&str]) {
        self.kill9();
        let addr = self.addr.to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The address is free once the killed process is reaped; a
            // retry covers a slow kernel.
            let t0 = Instant::now();
            let mut child = Command::new(env!("CARGO_BIN_EXE_logic"))
                .args(["--listen", &addr, "--threads", "2"])
                .arg("--data-dir")
                .arg(&self.dir)
                .args(extra)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn logic");
            let stdout = child.stdout.take().expect("stdout");
            let first = BufReader::new(stdout).lines().next();
            if let Some(Ok(line)) = first
                && line.starts_with("listening ")
            {
                self.child = Some(child);
                self.started_in = t0.elapsed();
                return;
            }
            let _ = child.wait();
            assert!(Instant::now() < deadline, "logic did not restart on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
