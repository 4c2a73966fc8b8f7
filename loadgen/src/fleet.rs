//! The parent's side of the workers: spawning `loadgen worker` processes,
//! sending them commands, collecting their reports, and making sure every
//! one of them is gone when the fleet is dropped (killed by PID if it has
//! not exited by itself).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::stats::{Counters, Stats};
use crate::wire::{FromWorker, ToWorker, WorkerSpec};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    #[error("starting worker {id} ({exe}): {source}")]
    Spawn {
        id: u32,
        exe: String,
        source: std::io::Error,
    },
    #[error("worker {0} exited early")]
    Exited(u32),
    #[error("timed out waiting for {what} from {missing} worker(s)")]
    Timeout { what: &'static str, missing: usize },
}

#[derive(Debug)]
enum Msg {
    Report(Box<FromWorker>),
    Exited(u32),
}

/// The running workers and what they last said.
#[derive(Debug)]
pub struct Fleet {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    rx: Receiver<Msg>,
    /// Latest progress counters of each worker.
    pub progress: Vec<Counters>,
    ramp_done: Vec<bool>,
    /// Unix µs at which each worker's last session of the ramp finished.
    pub ramp_end_unix_us: Vec<u64>,
    exited: Vec<bool>,
    snaps: HashMap<u32, Vec<Option<Counters>>>,
    finals: Vec<Option<(Stats, u64)>>,
}

impl Fleet {
    /// Starts one `exe worker` per spec, each given its spec on stdin.
    pub fn spawn(exe: &Path, specs: &[WorkerSpec]) -> Result<Fleet, FleetError> {
        let (tx, rx) = mpsc::channel();
        let mut fleet = Fleet {
            children: Vec::new(),
            stdins: Vec::new(),
            rx,
            progress: vec![Counters::default(); specs.len()],
            ramp_done: vec![false; specs.len()],
            ramp_end_unix_us: vec![0; specs.len()],
            exited: vec![false; specs.len()],
            snaps: HashMap::new(),
            finals: vec![None; specs.len()],
        };
        for spec in specs {
            let err = |source| FleetError::Spawn {
                id: spec.id,
                exe: exe.display().to_string(),
                source,
            };
            let mut child = Command::new(exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(err)?;
            let mut stdin = child.stdin.take();
            let stdout = child.stdout.take();
            fleet.children.push(child);
            let line = serde_json::to_string(spec).map_err(|e| err(e.into()))?;
            if let Some(s) = stdin.as_mut() {
                writeln!(s, "{line}").map_err(err)?;
            }
            fleet.stdins.push(stdin);
            let id = spec.id;
            let tx = tx.clone();
            if let Some(out) = stdout {
                std::thread::spawn(move || {
                    for line in BufReader::new(out).lines() {
                        let Ok(line) = line else { break };
                        match serde_json::from_str::<FromWorker>(&line) {
                            Ok(m) => {
                                if tx.send(Msg::Report(Box::new(m))).is_err() {
                                    return;
                                }
                            }
                            Err(e) => eprintln!("worker {id}: unreadable report: {e}"),
                        }
                    }
                    let _ = tx.send(Msg::Exited(id));
                });
            }
        }
        Ok(fleet)
    }

    pub fn len(&self) -> usize {
        self.children.len()
    }

    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Handles reports for up to `wait`; returns after the first batch.
    /// An early worker exit is an error.
    pub fn pump(&mut self, wait: Duration) -> Result<(), FleetError> {
        let first = match self.rx.recv_timeout(wait) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return Ok(()),
        };
        self.handle(first)?;
        while let Ok(m) = self.rx.try_recv() {
            self.handle(m)?;
        }
        Ok(())
    }

    fn handle(&mut self, m: Msg) -> Result<(), FleetError> {
        let m = match m {
            Msg::Report(r) => Ok(*r),
            Msg::Exited(id) => Err(id),
        };
        match m {
            Ok(FromWorker::Progress {
                worker,
                ramp_done,
                ramp_end_unix_us,
                counters,
            }) => {
                let w = worker as usize;
                if w < self.progress.len() {
                    self.progress[w] = counters;
                    self.ramp_done[w] = ramp_done;
                    self.ramp_end_unix_us[w] = ramp_end_unix_us;
                }
            }
            Ok(FromWorker::Snap {
                worker,
                id,
                counters,
            }) => {
                let n = self.children.len();
                let slot = self.snaps.entry(id).or_insert_with(|| vec![None; n]);
                if let Some(s) = slot.get_mut(worker as usize) {
                    *s = Some(counters);
                }
            }
            Ok(FromWorker::Final {
                worker,
                peak_rss_kib,
                stats,
            }) => {
                if let Some(f) = self.finals.get_mut(worker as usize) {
                    *f = Some((*stats, peak_rss_kib));
                }
            }
            Err(id) => {
                let w = id as usize;
                if let Some(e) = self.exited.get_mut(w) {
                    *e = true;
                }
                if self.finals.get(w).is_some_and(Option::is_none) {
                    return Err(FleetError::Exited(id));
                }
            }
        }
        Ok(())
    }

    /// Sends `cmd` to every worker still listening.
    pub fn send_all(&mut self, cmd: ToWorker) {
        let Ok(line) = serde_json::to_string(&cmd) else {
            return;
        };
        for s in &mut self.stdins {
            if let Some(w) = s.as_mut()
                && writeln!(w, "{line}").and_then(|()| w.flush()).is_err()
            {
                *s = None;
            }
        }
    }

    /// Sum of the latest progress of every worker.
    pub fn total(&self) -> Counters {
        let mut t = Counters::default();
        for c in &self.progress {
            t.merge(c);
        }
        t
    }

    pub fn all_ramp_done(&self) -> bool {
        self.ramp_done.iter().all(|d| *d)
    }

    /// Asks every worker for its counters now and waits for all answers.
    pub fn snap(&mut self, id: u32, timeout: Duration) -> Result<Counters, FleetError> {
        self.send_all(ToWorker::Snap { id });
        let end = Instant::now() + timeout;
        loop {
            let answers = self
                .snaps
                .get(&id)
                .map(|v| v.iter().filter(|c| c.is_some()).count());
            if answers == Some(self.children.len()) {
                let mut t = Counters::default();
                for c in self.snaps.remove(&id).into_iter().flatten().flatten() {
                    t.merge(&c);
                }
                return Ok(t);
            }
            let now = Instant::now();
            if now >= end {
                return Err(FleetError::Timeout {
                    what: "a snapshot",
                    missing: self.children.len() - answers.unwrap_or(0),
                });
            }
            self.pump(end - now)?;
        }
    }

    /// Stops every worker and merges their final stats. Returns the merged
    /// stats, the sum of the workers' peak RSS (KiB), and how many workers
    /// never reported.
    pub fn stop(&mut self, timeout: Duration) -> (Stats, u64, usize) {
        self.send_all(ToWorker::Stop);
        let end = Instant::now() + timeout;
        while self.finals.iter().any(Option::is_none) && Instant::now() < end {
            // An exit without a final report is counted below, not fatal.
            let _ = self.pump(end.saturating_duration_since(Instant::now()));
        }
        let mut stats = Stats::default();
        let mut rss = 0;
        let mut missing = 0;
        for f in &self.finals {
            match f {
                Some((s, r)) => {
                    stats.merge(s);
                    rss += r;
                }
                None => missing += 1,
            }
        }
        (stats, rss, missing)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Closing stdin tells a worker to stop; give them a moment, then kill.
        self.stdins.clear();
        let end = Instant::now() + Duration::from_secs(5);
        for c in &mut self.children {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() < end => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(None) => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
    }
}
