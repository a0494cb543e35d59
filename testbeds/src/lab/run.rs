//! What runs inside a lab's namespaces: commands, spawned processes, ping, packet captures, and
//! each node's forwarding tables.

use super::*;
use crate::plan::NsPlan;
use crate::process::{Capture, LabChild};
use crate::sys;
use crate::LabError;
use std::ffi::OsStr;
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

impl Lab {
    /// The namespace of a node, a pod or the router, by its topology name.
    pub fn netns(&self, target: &str) -> Result<String, LabError> {
        if self.plan.ns(target).is_some() {
            Ok(format!("{}{target}", self.prefix))
        } else {
            Err(LabError::UnknownTarget {
                target: target.to_owned(),
                known: self.targets().join(", "),
            })
        }
    }

    /// The namespace of a node (`fl-ab12-k8s-w1`).
    pub fn node_netns(&self, node: &str) -> Result<String, LabError> {
        match self.topology.node(node) {
            Some(_) => self.netns(node),
            None => Err(LabError::UnknownTarget {
                target: node.to_owned(),
                known: self
                    .topology
                    .nodes()
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The namespace of a pod (`fl-ab12-k8s-w1-pod1`).
    pub fn pod_netns(&self, pod: &str) -> Result<String, LabError> {
        match self.topology.pod(pod) {
            Some(_) => self.netns(pod),
            None => Err(LabError::UnknownTarget {
                target: pod.to_owned(),
                known: self
                    .topology
                    .pods()
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The router's namespace.
    pub fn router_netns(&self) -> String {
        format!("{}{}", self.prefix, self.topology.router().name)
    }

    /// Every target name: router, nodes, pods.
    pub fn targets(&self) -> Vec<String> {
        self.plan
            .namespaces
            .iter()
            .map(|n| n.target.clone())
            .collect()
    }

    /// A command that runs `program` inside a target's namespace (`ip netns exec NS program`;
    /// the process is the program itself: `ip` execs it after entering the namespace). Add
    /// arguments and stdio as usual.
    pub fn command<S: AsRef<OsStr>>(&self, target: &str, program: S) -> Result<Command, LabError> {
        let netns = self.netns(target)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec"]).arg(netns).arg(program);
        Ok(cmd)
    }

    fn argv_command<I, S>(&self, target: &str, argv: I) -> Result<Command, LabError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut it = argv.into_iter();
        let program = it.next().ok_or(LabError::EmptyCommand)?;
        let mut cmd = self.command(target, program)?;
        cmd.args(it);
        Ok(cmd)
    }

    /// Runs `argv` in a target's namespace to completion and returns its output, whatever its
    /// exit status.
    pub fn exec<I, S>(&self, target: &str, argv: I) -> Result<Output, LabError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.argv_command(target, argv)?;
        sys::run_unchecked(&mut cmd, None)
    }

    /// Runs `argv` in a target's namespace; fails (with its stderr) unless it exits 0; returns
    /// its stdout.
    pub fn exec_ok<I, S>(&self, target: &str, argv: I) -> Result<String, LabError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.argv_command(target, argv)?;
        let out = sys::run(&mut cmd, None, &format!("running a command in {target}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `argv` in a target's namespace, in the background, in a process group of its
    /// own, stdout and stderr to `/run/ferry-lab/fl-<id>/<target>.<program>.<n>.log` (see
    /// [`LabChild::log_path`], [`LabChild::output`]). Returns once the process is inside the
    /// namespace. The child is stopped when the returned guard drops, and killed by the lab's
    /// own teardown in any case.
    pub fn spawn_in<I, S>(&self, target: &str, argv: I) -> Result<LabChild, LabError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let argv: Vec<S> = argv.into_iter().collect();
        let program = argv
            .first()
            .map(|p| {
                Path::new(p.as_ref())
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .ok_or(LabError::EmptyCommand)?;
        let dir = log_dir(&self.id);
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let mut n = 0;
        let path = loop {
            let p = dir.join(format!("{target}.{program}.{n}.log"));
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        let log =
            fs::File::create(&path).map_err(io_err(format!("creating {}", path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(io_err(format!("opening {}", path.display())))?;
        let mut cmd = self.argv_command(target, argv)?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        Ok(self.spawn_command(target, cmd)?.with_log(path))
    }

    /// Starts a command made with [`Lab::command`] for `target` (stdio as configured on it) in
    /// the background, and returns once the process is inside the namespace (or has already
    /// exited), so that a teardown from then on is sure to find it.
    pub fn spawn_command(&self, target: &str, mut cmd: Command) -> Result<LabChild, LabError> {
        let netns = self.netns(target)?;
        let program = cmd
            .get_args()
            .nth(3)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| "command".into());
        let mut child = LabChild::spawn(&mut cmd, &format!("{program} in {target}"))?;
        let want = sys::netns_id(&netns);
        let end = Instant::now() + Duration::from_secs(5);
        while want.is_some() && sys::pid_netns_id(child.id()) != want {
            if child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() >= end {
                return Err(LabError::Timeout {
                    what: format!("{} to enter {netns}", child.label()),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(child)
    }

    /// `ping -c 1` from a target to an address: whether a reply came within `timeout_s` seconds.
    pub fn ping(&self, from: &str, to: Ipv4Addr, timeout_s: u32) -> Result<bool, LabError> {
        let out = self.exec(
            from,
            [
                "ping",
                "-n",
                "-q",
                "-c",
                "1",
                "-W",
                &timeout_s.max(1).to_string(),
                &to.to_string(),
            ],
        )?;
        Ok(out.status.success())
    }

    /// Which namespace and interface a link name means:
    /// `TARGET:IFACE` (any interface, even one made later, e.g. by Ferry), `NODE` or `POD`
    /// (its `eth0`), or a bare interface name that is unique in the lab (`caliw1p1`, `br10`).
    pub fn resolve_link(&self, link: &str) -> Result<(String, String), LabError> {
        let bad = |reason: String| LabError::UnknownLink {
            link: link.to_owned(),
            reason,
        };
        if let Some((target, iface)) = link.split_once(':') {
            self.netns(target)?;
            if iface.is_empty() {
                return Err(bad("no interface after ':'".into()));
            }
            return Ok((target.to_owned(), iface.to_owned()));
        }
        if let Some(ns) = self.plan.ns(link) {
            if ns.role == crate::plan::Role::Router {
                let links: Vec<String> = ns
                    .links
                    .iter()
                    .map(|l| format!("{link}:{}", l.name))
                    .collect();
                return Err(bad(format!(
                    "the router has several links; name one: {} (or {link}:any)",
                    links.join(", ")
                )));
            }
            return Ok((link.to_owned(), "eth0".to_owned()));
        }
        let hits: Vec<&NsPlan> = self
            .plan
            .namespaces
            .iter()
            .filter(|n| n.link(link).is_some())
            .collect();
        match hits.as_slice() {
            [one] => Ok((one.target.clone(), link.to_owned())),
            [] => Err(bad(format!(
                "no target or interface of that name (targets: {})",
                self.targets().join(", ")
            ))),
            many => Err(bad(format!(
                "several namespaces have it; say which: {}",
                many.iter()
                    .map(|n| format!("{}:{link}", n.target))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The tcpdump command for a link (see [`Lab::resolve_link`]): `--immediate-mode -n -e -U
    /// -Z root` (every packet handed over and written at once, no privilege drop), writing `file` if given, stopping after `count` packets if given, with a
    /// filter expression.
    pub fn capture_command(
        &self,
        link: &str,
        file: Option<&Path>,
        count: Option<u64>,
        filter: &[String],
    ) -> Result<Command, LabError> {
        let (target, iface) = self.resolve_link(link)?;
        let mut cmd = self.command(&target, "tcpdump")?;
        cmd.args([
            "--immediate-mode",
            "-n",
            "-e",
            "-U",
            "-Z",
            "root",
            "-i",
            &iface,
        ]);
        if let Some(f) = file {
            cmd.arg("-w").arg(f);
        }
        if let Some(c) = count {
            cmd.arg("-c").arg(c.to_string());
        }
        cmd.args(filter);
        Ok(cmd)
    }

    /// Captures on a link into a pcap file in the background; returns once tcpdump listens.
    /// [`Capture::stop`] ends it and returns the file.
    pub fn capture(&self, link: &str, file: &Path, filter: &[String]) -> Result<Capture, LabError> {
        let cmd = self.capture_command(link, Some(file), None, filter)?;
        Capture::start(cmd, &format!("tcpdump on {link}"), file.to_owned())
    }

    /// Ferry's forwarding tables for a node of this lab (see [`crate::tables::tables_spec`]).
    pub fn tables_spec(
        &self,
        node: &str,
        ipip_mode: pipeline::tables::EncapMode,
        vxlan_mode: pipeline::tables::EncapMode,
    ) -> Result<pipeline::tables::TablesSpec, LabError> {
        Ok(crate::tables::tables_spec(
            &self.topology,
            node,
            ipip_mode,
            vxlan_mode,
        )?)
    }
}
