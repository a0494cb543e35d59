//! Running `ip`, `ethtool` and friends, and the few things read straight from the kernel: the
//! named network namespaces (`/run/netns`) and which processes live in them.

use crate::LabError;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Output, Stdio};

/// Where `ip netns` keeps its namespace files.
pub const NETNS_DIR: &str = "/run/netns";

/// `cmd` as a shell-like string, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

fn spawn_error(cmd: &Command, source: std::io::Error) -> LabError {
    LabError::Spawn {
        command: describe(cmd),
        source,
    }
}

/// Runs `cmd` with `input` on stdin (if any), captures its output, and fails with its stderr if
/// it exits non-zero.
pub fn run(cmd: &mut Command, input: Option<&str>, what: &str) -> Result<Output, LabError> {
    let out = run_unchecked(cmd, input)?;
    if !out.status.success() {
        return Err(LabError::Command {
            what: what.to_owned(),
            command: describe(cmd),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}

/// Runs `cmd` and captures its output, whatever its exit status.
pub fn run_unchecked(cmd: &mut Command, input: Option<&str>) -> Result<Output, LabError> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| spawn_error(cmd, e))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A child that exits early closes the pipe; its status and stderr tell why.
        let _ = stdin.write_all(text.as_bytes());
    }
    child.wait_with_output().map_err(|e| spawn_error(cmd, e))
}

/// Runs `argv` (the program, then its arguments) and returns its stdout; fails with its stderr
/// if it exits non-zero. The one command runner of the labs and benchmarks.
pub fn run_args<S: AsRef<std::ffi::OsStr>>(argv: &[S]) -> Result<String, LabError> {
    let (program, args) = argv.split_first().ok_or(LabError::EmptyCommand)?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = run(&mut cmd, None, "running a command")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until something listens on TCP `port` in network namespace `netns` (as `ss` shows
/// it), for a server started in the background; fails naming the port after `timeout`.
pub fn wait_tcp_listening(
    netns: &str,
    port: u16,
    timeout: std::time::Duration,
) -> Result<(), LabError> {
    let end = std::time::Instant::now() + timeout;
    let filter = format!("sport = :{port}");
    loop {
        let out = run(
            Command::new("ip").args(["netns", "exec", netns, "ss", "-Hltn", &filter]),
            None,
            "listing listening sockets",
        )?;
        if !out.stdout.trim_ascii().is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() >= end {
            return Err(LabError::Timeout {
                what: format!("a server listening on TCP port {port} in {netns}"),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `ip [-n NETNS] [-force] -batch -` with these lines on stdin.
pub fn ip_batch(
    netns: Option<&str>,
    lines: &[String],
    force: bool,
    what: &str,
) -> Result<Output, LabError> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    if force {
        cmd.arg("-force");
    }
    cmd.args(["-batch", "-"]);
    let mut text = lines.join("\n");
    text.push('\n');
    run(&mut cmd, Some(&text), what)
}

/// The named network namespaces (`ip netns list`, read directly).
pub fn netns_list() -> Result<Vec<String>, LabError> {
    let dir = match std::fs::read_dir(NETNS_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LabError::Io {
                what: format!("reading {NETNS_DIR}"),
                source,
            })
        }
    };
    let mut names: Vec<String> = dir
        .filter_map(std::result::Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// The named namespaces whose name starts with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Result<Vec<String>, LabError> {
    Ok(netns_list()?
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect())
}

/// The identity (device, inode) of a named namespace.
pub(crate) fn netns_id(name: &str) -> Option<(u64, u64)> {
    let m = std::fs::metadata(format!("{NETNS_DIR}/{name}")).ok()?;
    Some((m.dev(), m.ino()))
}

/// The identity (device, inode) of a process's network namespace.
pub(crate) fn pid_netns_id(pid: u32) -> Option<(u64, u64)> {
    let m = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
    Some((m.dev(), m.ino()))
}

/// Processes living in any of these named namespaces (`ip netns pids`, for all of them in one
/// pass over `/proc`), as (pid, namespace).
pub fn pids_in(namespaces: &[String]) -> Vec<(i32, String)> {
    let ids: Vec<((u64, u64), String)> = namespaces
        .iter()
        .filter_map(|ns| Some((netns_id(ns)?, ns.clone())))
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in proc.filter_map(std::result::Result::ok) {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(m) = std::fs::metadata(e.path().join("ns/net")) else {
            continue;
        };
        if let Some((_, ns)) = ids.iter().find(|(k, _)| *k == (m.dev(), m.ino())) {
            found.push((pid, ns.clone()));
        }
    }
    found
}

/// Sends `sig` to a process (`pid` > 0) or a process group (`pid` < 0). Errors (the process is
/// already gone) are ignored.
pub(crate) fn signal(pid: i32, sig: i32) {
    if let Ok(sig) = nix::sys::signal::Signal::try_from(sig) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

pub(crate) fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether we run as root (the lab needs CAP_NET_ADMIN and CAP_SYS_ADMIN).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether `program` can be found on PATH (or, given as a path, is a file).
pub fn have_program(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|d| d.join(program).is_file())
}

/// A few random bytes from the kernel, for lab ids.
pub(crate) fn random_u32() -> u32 {
    use std::io::Read;
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        if f.read_exact(&mut b).is_ok() {
            return u32::from_ne_bytes(b);
        }
    }
    // Fall back to the clock and pid: uniqueness is checked by the caller anyway.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
}
