//! [`Lab`]: a running lab and the guard that tears it down.
//!
//! Its rooms: this file holds the types, building a lab (`up`), attaching, listing and tearing
//! down; `state` the state files under [`STATE_DIR`] and lab ids; `run` what runs inside a lab's
//! namespaces (commands, spawned processes, ping, captures, each node's tables).

mod run;
mod state;

use state::{
    claim_state, exists, fresh_id, io_err, log_dir, now_unix, preflight, read_state, state_path,
    write_state,
};
pub use state::{normalize_id, prefix_of};

use crate::plan::{NsPlan, Plan};
use crate::status::{self, LabStatus};
use crate::sys;
use crate::topology::{Topology, TopologySpec};
use crate::LabError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

/// Where labs record themselves: `<STATE_DIR>/fl-<id>.json`, and `<STATE_DIR>/fl-<id>/` for the
/// logs of processes started with [`Lab::spawn_in`].
pub const STATE_DIR: &str = "/run/ferry-lab";
/// Every lab's namespaces are named `fl-<id>-<target>`.
pub const PREFIX_ROOT: &str = "fl-";
/// Longest lab id.
pub const ID_MAX: usize = 10;
/// When set (to anything but `0`), a guard that drops leaves its lab up and says how to remove it
/// (for looking at a failed test's lab).
pub const KEEP_ENV: &str = "FERRY_LAB_KEEP";

/// How long `up` waits for a freshly built lab to match its plan (carriers to settle).
pub const VERIFY_SETTLE: Duration = Duration::from_secs(3);

/// How far `up` got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Claimed and being built (or the builder died: `down` removes it).
    Building,
    Up,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Building => "building",
            Phase::Up => "up",
        })
    }
}

/// The state file: enough for another process to find, inspect and remove the lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub id: String,
    pub prefix: String,
    pub phase: Phase,
    /// The process whose guard removes the lab when it ends; `None` for labs that stay up until
    /// `ferry-lab down` (the CLI's `up`, [`Lab::persist`]).
    pub owner_pid: Option<u32>,
    pub created_unix: u64,
    pub topology: TopologySpec,
}

/// Options of [`Lab::up`].
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The lab id (`[a-z0-9]`, at most [`ID_MAX`]); `None` picks a fresh random one.
    pub id: Option<String>,
    /// Remove a lab with the same id first instead of failing.
    pub replace: bool,
    /// Compare the built lab against its plan (like `status`) before returning.
    pub verify: bool,
    /// Fail on purpose after this step (for testing the rollback).
    pub fail_after: Option<BuildStep>,
}

/// The steps of [`Lab::up`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStep {
    Namespaces,
    Links,
    Configure,
    Verify,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            id: None,
            replace: false,
            verify: true,
            fail_after: None,
        }
    }
}

impl UpOptions {
    pub fn with_id(id: &str) -> Self {
        UpOptions {
            id: Some(id.to_owned()),
            ..UpOptions::default()
        }
    }
}

/// What [`Lab::down_id`] removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DownReport {
    pub id: String,
    pub namespaces: Vec<String>,
    pub killed: Vec<i32>,
    pub state_file: bool,
}

impl fmt::Display for DownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lab {}{}: removed {} namespace(s), killed {} process(es){}",
            PREFIX_ROOT,
            self.id,
            self.namespaces.len(),
            self.killed.len(),
            if self.state_file {
                ", removed the state file"
            } else {
                ""
            }
        )
    }
}

/// A lab found by [`Lab::list`].
#[derive(Debug, Clone, Serialize)]
pub struct LabInfo {
    pub id: String,
    pub prefix: String,
    /// From the state file, if there is one.
    pub state: Option<LabState>,
    pub namespaces: Vec<String>,
    /// Its owner process is gone (the lab outlived the test that made it), or it has
    /// namespaces but no state file.
    pub orphaned: bool,
}

/// Timings of [`Lab::up`], for the curious and for the tests' budget.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct UpTimings {
    pub total: Duration,
    pub namespaces: Duration,
    pub links: Duration,
    pub configure: Duration,
    pub verify: Duration,
}

/// A lab: its namespaces, links and addresses, built from a [`Topology`].
///
/// A `Lab` returned by [`Lab::up`] is a guard: dropping it — normally, on an early return, or
/// while a panic unwinds — kills every process in its namespaces and deletes them (which deletes
/// every link of the lab) and its state file. [`Lab::persist`] disarms it; [`Lab::attach`]
/// returns an unarmed handle to a lab made elsewhere.
#[derive(Debug)]
pub struct Lab {
    id: String,
    prefix: String,
    topology: Topology,
    plan: Plan,
    armed: bool,
    timings: UpTimings,
}

impl Lab {
    /// Builds a lab. On any failure everything created so far is removed and the error says
    /// which step failed; on success the returned guard removes the lab when dropped.
    ///
    /// Steps: claim the state file; add every namespace (one `ip -batch`); create every veth
    /// pair directly inside its two namespaces (one `ip -batch`, nothing ever in the root
    /// namespace); per namespace, sysctls and offloads (one `sh`) and bridges, addresses, links
    /// and routes (one `ip -n NS -batch`); optionally compare the result against the plan.
    pub fn up(topology: &Topology, opts: &UpOptions) -> Result<Lab, LabError> {
        let t0 = Instant::now();
        preflight(topology)?;
        let id = match &opts.id {
            Some(id) => normalize_id(id)?,
            None => fresh_id()?,
        };
        if let Some(detail) = exists(&id)? {
            if opts.replace {
                Lab::down_id(&id)?;
            } else {
                return Err(LabError::Exists { id, detail });
            }
        }
        let mut state = LabState {
            id: id.clone(),
            prefix: prefix_of(&id),
            phase: Phase::Building,
            owner_pid: Some(std::process::id()),
            created_unix: now_unix(),
            topology: topology.spec().clone(),
        };
        claim_state(&state)?;
        // From here on, the guard owns whatever exists.
        let mut lab = Lab {
            prefix: prefix_of(&id),
            id,
            topology: topology.clone(),
            plan: Plan::new(topology),
            armed: true,
            timings: UpTimings::default(),
        };
        let built = lab.build(opts).and_then(|()| {
            state.phase = Phase::Up;
            write_state(&state)
        });
        if let Err(e) = built {
            lab.armed = false;
            let rollback = match Lab::down_id(&lab.id) {
                Ok(r) => format!("rolled back: {r}"),
                Err(e2) => format!(
                    "ROLLBACK FAILED ({e2}); run `ferry-lab down --lab {}`",
                    lab.id
                ),
            };
            return Err(LabError::UpFailed {
                id: lab.id.clone(),
                source: Box::new(e),
                rollback,
            });
        }
        lab.timings.total = t0.elapsed();
        Ok(lab)
    }

    fn build(&mut self, opts: &UpOptions) -> Result<(), LabError> {
        let injected = |step: BuildStep| -> Result<(), LabError> {
            if opts.fail_after == Some(step) {
                return Err(LabError::Injected(step));
            }
            Ok(())
        };
        let t = Instant::now();
        sys::ip_batch(
            None,
            &self.plan.netns_add_lines(&self.prefix),
            false,
            "adding the namespaces",
        )?;
        self.timings.namespaces = t.elapsed();
        injected(BuildStep::Namespaces)?;

        let t = Instant::now();
        sys::ip_batch(
            None,
            &self.plan.veth_lines(&self.prefix),
            false,
            "creating the veth pairs",
        )?;
        self.timings.links = t.elapsed();
        injected(BuildStep::Links)?;

        let t = Instant::now();
        self.configure_all()?;
        self.timings.configure = t.elapsed();
        injected(BuildStep::Configure)?;

        if opts.verify {
            // Bridges get their carrier from the kernel's link watcher, a moment after their
            // ports' peers come up: give the lab a few seconds to settle.
            let t = Instant::now();
            loop {
                let st = self.status()?;
                if st.is_healthy() {
                    break;
                }
                if t.elapsed() > VERIFY_SETTLE {
                    return Err(LabError::Unhealthy {
                        problems: st.problems,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.timings.verify = t.elapsed();
        }
        injected(BuildStep::Verify)
    }

    /// Sysctls, offloads, bridges, addresses, links up and routes, namespace by namespace. The
    /// namespaces are independent once the veths exist, so two run at a time.
    fn configure_all(&self) -> Result<(), LabError> {
        let results: Vec<Result<(), LabError>> = std::thread::scope(|s| {
            let chunks: Vec<Vec<&NsPlan>> = {
                let mut a = Vec::new();
                let mut b = Vec::new();
                for (i, ns) in self.plan.namespaces.iter().enumerate() {
                    if i % 2 == 0 {
                        a.push(ns);
                    } else {
                        b.push(ns);
                    }
                }
                vec![a, b]
            };
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    s.spawn(move || -> Result<(), LabError> {
                        for ns in chunk {
                            self.configure(ns)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(LabError::Io {
                            what: "configuring namespaces".into(),
                            source: std::io::Error::other("a configuration thread panicked"),
                        })
                    })
                })
                .collect()
        });
        results.into_iter().collect()
    }

    fn configure(&self, ns: &NsPlan) -> Result<(), LabError> {
        let netns = format!("{}{}", self.prefix, ns.target);
        sys::run(
            Command::new("ip")
                .args(["netns", "exec", &netns, "sh", "-ec"])
                .arg(ns.config_script(self.plan.disable_offloads)),
            None,
            &format!("setting sysctls and offloads in {netns}"),
        )?;
        sys::ip_batch(
            Some(&netns),
            &ns.ip_lines(),
            false,
            &format!("configuring links, addresses and routes in {netns}"),
        )?;
        Ok(())
    }

    /// A handle to a lab made by another process (the CLI, another test), from its state file.
    /// Dropping it does not remove the lab.
    pub fn attach(id: &str) -> Result<Lab, LabError> {
        let id = normalize_id(id)?;
        let Some(state) = read_state(&id)? else {
            let hint = if sys::netns_with_prefix(&prefix_of(&id))?.is_empty() {
                String::new()
            } else {
                format!(
                    "; its namespaces exist but the state file is gone: `ferry-lab down --lab {id}` removes them"
                )
            };
            return Err(LabError::NotFound { id, hint });
        };
        let topology = Topology::from_spec(state.topology)?;
        Ok(Lab {
            prefix: prefix_of(&id),
            id,
            plan: Plan::new(&topology),
            topology,
            armed: false,
            timings: UpTimings::default(),
        })
    }

    /// Removes lab `id`: kills every process in its namespaces, deletes the namespaces (and so
    /// every link in them) and its state file and logs. Needs nothing but the id: it works
    /// without a state file, and on half-built labs.
    pub fn down_id(id: &str) -> Result<DownReport, LabError> {
        let id = normalize_id(id)?;
        let prefix = prefix_of(&id);
        let mut report = DownReport {
            id: id.clone(),
            ..DownReport::default()
        };
        let namespaces = sys::netns_with_prefix(&prefix)?;
        // A process still inside a namespace would keep it (and its links) alive after the
        // name is gone.
        for (pid, _) in sys::pids_in(&namespaces) {
            sys::signal(pid, libc::SIGKILL);
            report.killed.push(pid);
        }
        if !namespaces.is_empty() {
            let lines: Vec<String> = namespaces
                .iter()
                .map(|n| format!("netns del {n}"))
                .collect();
            // -force: go on after an error; what is left is checked below.
            let _ = sys::ip_batch(None, &lines, true, "deleting the namespaces");
        }
        let left = sys::netns_with_prefix(&prefix)?;
        if !left.is_empty() {
            return Err(LabError::Leftovers {
                id,
                namespaces: left,
            });
        }
        report.namespaces = namespaces;
        match fs::remove_file(state_path(&id)) {
            Ok(()) => report.state_file = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("removing {}", state_path(&id).display()))(e)),
        }
        // Temporary files of writers that died between writing and renaming.
        let stale = format!("{PREFIX_ROOT}{id}.json.");
        if let Ok(dir) = fs::read_dir(STATE_DIR) {
            for e in dir.filter_map(std::result::Result::ok) {
                if e.file_name().to_string_lossy().starts_with(&stale) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let _ = fs::remove_dir_all(log_dir(&id));
        Ok(report)
    }

    /// Every lab on the machine: state files in [`STATE_DIR`] and namespaces named `fl-<id>-…`.
    pub fn list() -> Result<Vec<LabInfo>, LabError> {
        let mut ids: Vec<String> = Vec::new();
        if let Ok(dir) = fs::read_dir(STATE_DIR) {
            for e in dir.filter_map(std::result::Result::ok) {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = name
                    .strip_prefix(PREFIX_ROOT)
                    .and_then(|n| n.strip_suffix(".json"))
                {
                    ids.push(id.to_owned());
                }
            }
        }
        let all = sys::netns_list()?;
        for n in &all {
            if let Some((id, _)) = n.strip_prefix(PREFIX_ROOT).and_then(|r| r.split_once('-')) {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        ids.dedup();
        let mut out = Vec::new();
        for id in ids {
            if normalize_id(&id).is_err() {
                continue;
            }
            let prefix = prefix_of(&id);
            let state = read_state(&id).ok().flatten();
            let namespaces: Vec<String> = all
                .iter()
                .filter(|n| n.starts_with(&prefix))
                .cloned()
                .collect();
            let orphaned = match &state {
                None => true,
                Some(s) => s.owner_pid.is_some_and(|p| !sys::process_alive(p)),
            };
            out.push(LabInfo {
                id,
                prefix,
                state,
                namespaces,
                orphaned,
            });
        }
        Ok(out)
    }

    /// Leaves the lab up when this handle drops, and records that no process owns it any more
    /// (what `ferry-lab up` does).
    pub fn persist(mut self) -> Result<String, LabError> {
        if let Some(mut state) = read_state(&self.id)? {
            state.owner_pid = None;
            write_state(&state)?;
        }
        self.armed = false;
        Ok(self.id.clone())
    }

    /// Removes the lab now, reporting errors (dropping the guard does the same silently).
    pub fn down(mut self) -> Result<DownReport, LabError> {
        self.armed = false;
        Lab::down_id(&self.id)
    }

    /// The lab id (`ab12`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The namespace prefix (`fl-ab12-`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// How long `up` took, step by step.
    pub fn timings(&self) -> UpTimings {
        self.timings
    }

    /// Removes every lab whose owner process is gone (a test run that was killed before its
    /// guards could drop) and every lab that has namespaces but no state file. Labs without an
    /// owner (`ferry-lab up`) and labs whose owner still runs are left alone.
    pub fn reap_orphans() -> Result<Vec<DownReport>, LabError> {
        let mut reports = Vec::new();
        for l in Lab::list()? {
            if l.orphaned {
                reports.push(Lab::down_id(&l.id)?);
            }
        }
        Ok(reports)
    }

    /// The live lab compared against its plan.
    pub fn status(&self) -> Result<LabStatus, LabError> {
        let phase = read_state(&self.id)?
            .map(|s| s.phase.to_string())
            .unwrap_or_else(|| "unknown".into());
        status::gather(
            &self.id,
            &self.prefix,
            self.topology.name(),
            &phase,
            &self.plan,
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if std::env::var_os(KEEP_ENV).is_some_and(|v| v != "0") {
            eprintln!(
                "ferry-lab: {KEEP_ENV} is set: leaving lab {}{} up; remove it with `ferry-lab down --lab {}`",
                PREFIX_ROOT, self.id, self.id
            );
            return;
        }
        if let Err(e) = Lab::down_id(&self.id) {
            eprintln!(
                "ferry-lab: tearing down lab {}{} failed: {e}; run `ferry-lab down --lab {}`",
                PREFIX_ROOT, self.id, self.id
            );
        }
    }
}
