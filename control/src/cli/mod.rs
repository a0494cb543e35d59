//! What the `ferry` command shows and replays outside the daemon: the calicoctl-style views of
//! cluster state ([`show`], printed with the `texttable` crate, the one table printer) and the
//! offline pcap replay of the pipeline ([`replay`]). Everything here renders or reads files and returns
//! text or a summary, so the output is tested as a user reads it. May not live here: argument
//! parsing (the binary, `src/main.rs`), cluster logic (the core), anything that talks to the
//! kernel or the API server.

pub mod replay;
pub mod show;
