//! Named network namespaces made outside a [`crate::Lab`] — a pod's namespace as a container
//! runtime makes it, or a benchmark's few namespaces — with the same teardown as a lab's: when
//! the guard drops, every process inside is killed and the namespaces (and so every link in
//! them) are deleted, on failure too.

use crate::sys::{self, run};
use crate::LabError;
use std::process::Command;

/// The namespaces made through it; deleted on drop.
#[derive(Debug, Default)]
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    pub fn new() -> Namespaces {
        Namespaces::default()
    }

    /// `ip netns add NAME` with its loopback up (as a runtime leaves a pod's namespace). The
    /// guard owns it from the moment it exists.
    pub fn add(&mut self, name: &str) -> Result<(), LabError> {
        run(
            Command::new("ip").args(["netns", "add", name]),
            None,
            "creating a namespace",
        )?;
        self.names.push(name.to_owned());
        run(
            Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]),
            None,
            "bringing loopback up",
        )?;
        Ok(())
    }

    /// A veth pair: `a` in namespace `ns_a`, `b` in `ns_b`, both up.
    pub fn veth(&self, (a, ns_a): (&str, &str), (b, ns_b): (&str, &str)) -> Result<(), LabError> {
        run(
            Command::new("ip").args([
                "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b,
            ]),
            None,
            "creating a veth pair",
        )?;
        for (ns, dev) in [(ns_a, a), (ns_b, b)] {
            run(
                Command::new("ip").args(["-n", ns, "link", "set", dev, "up"]),
                None,
                "bringing a veth up",
            )?;
        }
        Ok(())
    }

    /// The namespaces, in the order they were made.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // A process still inside a namespace would keep it (and its links) alive after the
        // name is gone.
        for (pid, _) in sys::pids_in(&self.names) {
            sys::signal(pid, libc::SIGKILL);
        }
        for n in &self.names {
            if let Err(e) = run(
                Command::new("ip").args(["netns", "del", n]),
                None,
                "deleting a namespace",
            ) {
                eprintln!("ferry-lab: {e}");
            }
        }
    }
}
