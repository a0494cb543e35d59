#!/usr/bin/env bash
# Ferry's whole test suite: installs what it needs, checks formatting and lints, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A fresh build in CI gains nothing from incremental compilation but gigabytes on disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "== the pipeline and ferry replay without clang (CLANG=/bin/false)"
# Nothing on the replay path may need the BPF toolchain: the pipeline's tests and a \`ferry\`
# without the node daemon build and run in a target directory of their own with clang
# unavailable (the xdp crate's build script would fail on it).
bash scripts/no-clang.sh
echo "== cargo test"
# Tests leave nothing in the temporary directory: they run with one of their own, checked below.
export TMPDIR="$PWD/target/test-tmp"
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"
cargo test --workspace --all-targets 2>&1 | tee target/test.log
# One closing line for the whole suite.
passed=$(grep -Eo '[0-9]+ passed' target/test.log | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' target/test.log | awk '{s+=$1} END {print s+0}')
echo "$passed passed, $failed failed"
left=$(ls -A "$TMPDIR")
if [ -n "$left" ]; then
    echo "the tests left files in the temporary directory ($TMPDIR):"
    echo "$left"
    exit 1
fi
