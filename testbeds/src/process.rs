//! Processes started inside lab namespaces, killed when their guard drops.

use crate::sys::{self, describe};
use crate::LabError;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long [`LabChild::stop`] waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// A process running in a lab namespace (in a process group of its own). Dropping it stops it:
/// SIGTERM to the whole group, then SIGKILL after [`STOP_GRACE`].
#[derive(Debug)]
pub struct LabChild {
    child: Option<Child>,
    label: String,
    log: Option<PathBuf>,
    stderr: Option<Arc<Mutex<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl LabChild {
    /// Spawns `cmd` (typically from [`crate::Lab::command`]) in a new process group, so that
    /// stopping it also stops whatever it started. Stdio is as configured on `cmd`.
    pub fn spawn(cmd: &mut Command, label: &str) -> Result<LabChild, LabError> {
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            command: describe(cmd),
            source,
        })?;
        Ok(LabChild {
            child: Some(child),
            label: label.to_owned(),
            log: None,
            stderr: None,
            reader: None,
        })
    }

    /// As [`LabChild::spawn`], with stdin from /dev/null and stdout and stderr to the file `log`
    /// (created; read with [`LabChild::output`]).
    pub fn spawn_logged(cmd: &mut Command, label: &str, log: &Path) -> Result<LabChild, LabError> {
        let io = |what: &str| {
            let what = format!("{what} {}", log.display());
            move |source| LabError::Io { what, source }
        };
        let f = std::fs::File::create(log).map_err(io("creating"))?;
        let f2 = f.try_clone().map_err(io("opening"))?;
        cmd.stdin(Stdio::null()).stdout(f).stderr(f2);
        Ok(LabChild::spawn(cmd, label)?.with_log(log.to_owned()))
    }

    pub(crate) fn with_log(mut self, log: PathBuf) -> Self {
        self.log = Some(log);
        self
    }

    /// The process id (also its process group id).
    pub fn id(&self) -> u32 {
        self.child
            .as_ref()
            .map(std::process::Child::id)
            .unwrap_or(0)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The file its stdout and stderr go to, if [`crate::Lab::spawn_in`] started it.
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// What it has written so far (its log file, or the stderr collected by a capture).
    pub fn output(&self) -> String {
        if let Some(buf) = &self.stderr {
            return buf.lock().map(|s| s.clone()).unwrap_or_default();
        }
        self.log
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until its output contains `marker` (a "ready" line). Fails with the end of its
    /// output when it exits first or `timeout` passes.
    pub fn wait_for_output(&mut self, marker: &str, timeout: Duration) -> Result<(), LabError> {
        let end = Instant::now() + timeout;
        loop {
            if self.output().contains(marker) {
                return Ok(());
            }
            let gone = self.try_wait()?;
            if gone.is_some() || Instant::now() >= end {
                let out = self.output();
                let lines: Vec<&str> = out.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                let why = match gone {
                    Some(status) => format!("it exited: {status}"),
                    None => format!("still running after {timeout:?}"),
                };
                return Err(LabError::NotReady {
                    what: self.label.clone(),
                    marker: marker.to_owned(),
                    why,
                    tail,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, LabError> {
        let Some(c) = self.child.as_mut() else {
            return Ok(None);
        };
        c.try_wait().map_err(|source| LabError::Io {
            what: format!("waiting for {}", self.label),
            source,
        })
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None)) && self.child.is_some()
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, LabError> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= end {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal (e.g. `libc::SIGINT`) to its process group.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            if let Ok(pid) = i32::try_from(c.id()) {
                sys::signal(-pid, sig);
            }
        }
    }

    /// Stops it (SIGTERM to the group, SIGKILL after [`STOP_GRACE`]) and returns how it ended.
    pub fn stop(mut self) -> Result<ExitStatus, LabError> {
        self.stop_inner()?.ok_or_else(|| LabError::Timeout {
            what: format!("{} to exit", self.label),
        })
    }

    fn stop_inner(&mut self) -> Result<Option<ExitStatus>, LabError> {
        if self.child.is_none() {
            return Ok(None);
        }
        let status = match self.try_wait()? {
            Some(s) => Some(s),
            None => {
                self.signal(libc::SIGTERM);
                match self.wait_timeout(STOP_GRACE)? {
                    Some(s) => Some(s),
                    None => {
                        self.signal(libc::SIGKILL);
                        self.wait_timeout(Duration::from_secs(2))?
                    }
                }
            }
        };
        // Whatever else is left in its group goes too.
        self.signal(libc::SIGKILL);
        self.child = None;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Ok(status)
    }
}

impl Drop for LabChild {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            eprintln!("ferry-lab: stopping {}: {e}", self.label);
        }
    }
}

/// A background `tcpdump` writing a pcap file, started by [`crate::Lab::capture`].
#[derive(Debug)]
pub struct Capture {
    child: LabChild,
    file: PathBuf,
}

impl Capture {
    /// Spawns `cmd` (a tcpdump with `-w`), and waits until tcpdump says it is listening.
    pub(crate) fn start(mut cmd: Command, label: &str, file: PathBuf) -> Result<Capture, LabError> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = LabChild::spawn(&mut cmd, label)?;
        let stderr = child.child.as_mut().and_then(|c| c.stderr.take());
        let buf = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(stderr) = stderr {
            let buf2 = Arc::clone(&buf);
            child.reader = Some(std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let listening = line.contains("listening on");
                    if let Ok(mut b) = buf2.lock() {
                        b.push_str(&line);
                        b.push('\n');
                    }
                    if listening {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
            }));
        }
        child.stderr = Some(buf);
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            if rx.recv_timeout(Duration::from_millis(20)).is_ok() {
                return Ok(Capture { child, file });
            }
            if let Some(status) = child.try_wait()? {
                return Err(LabError::Command {
                    what: "starting a capture".into(),
                    command: label.into(),
                    status: status.to_string(),
                    stderr: child.output(),
                });
            }
            if Instant::now() >= end {
                return Err(LabError::Timeout {
                    what: format!("{label} to start listening"),
                });
            }
        }
    }

    /// Captures on `iface` of a namespace the lab did not make (a pod's, made by a CNI), with
    /// the same tcpdump options as [`crate::Lab::capture`].
    pub fn in_netns(
        netns: &str,
        iface: &str,
        file: &Path,
        filter: &[String],
    ) -> Result<Capture, LabError> {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            netns,
            "tcpdump",
            "--immediate-mode",
            "-n",
            "-e",
            "-U",
        ])
        .args(["-Z", "root", "-i", iface, "-w"])
        .arg(file)
        .args(filter);
        Capture::start(cmd, &format!("tcpdump on {netns}:{iface}"), file.to_owned())
    }

    pub fn path(&self) -> &Path {
        &self.file
    }

    /// What tcpdump printed on stderr so far.
    pub fn output(&self) -> String {
        self.child.output()
    }

    /// Waits until what has been captured so far satisfies `done` (given the file: tcpdump
    /// writes every packet as it comes), or `timeout` passes, then stops the capture and
    /// returns the file. The caller checks what the file holds: it names what it expected
    /// and what it saw. To show that something did *not* cross, wait for a packet sent after
    /// it on the same path.
    pub fn stop_when(
        self,
        timeout: Duration,
        mut done: impl FnMut(&Path) -> bool,
    ) -> Result<PathBuf, LabError> {
        let end = Instant::now() + timeout;
        while !done(&self.file) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop()
    }

    /// Stops tcpdump (it flushes the file on SIGTERM) and returns the file. Whatever is still
    /// in flight may be missed: wait for what the test needs first ([`Capture::stop_when`]).
    pub fn stop(self) -> Result<PathBuf, LabError> {
        let file = self.file.clone();
        self.child.stop()?;
        Ok(file)
    }
}
