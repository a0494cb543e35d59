//! Compiles the minimal XDP_REDIRECT forwarder of `ferry-bench compare` (bpf/redirect.c) with
//! clang into OUT_DIR, as dataplane/build.rs does for the steering program.
#![forbid(unsafe_code)]
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=bpf/redirect.c");
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("redirect.o");
    let arch_include = format!(
        "/usr/include/{}-linux-gnu",
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into())
    );
    let status = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{arch_include}"))
        .args(["-c", "bpf/redirect.c", "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "clang failed to compile bpf/redirect.c ({s}); run scripts/setup.sh (clang, libbpf-dev)"
        ),
        Err(e) => panic!(
            "cannot run clang to build the XDP program ({e}); run scripts/setup.sh (clang, libbpf-dev)"
        ),
    }
}
