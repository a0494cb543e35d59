#!/usr/bin/env bash
# Proves that the pipeline and `ferry replay` need no clang: with CLANG=/bin/false (which the
# xdp crate's build script runs to compile the XDP program), the pipeline crate's tests build
# and pass, and `ferry` built without the node daemon replays lab traffic through the pipeline.
# Neither the pipeline nor the cluster core depends on aya or xdp (nor the core on the adapters'
# tokio, kube or rtnetlink).
set -euo pipefail
cd "$(dirname "$0")/.."
export CLANG=/bin/false
dir=target/no-clang
if ! out=$(cargo test -q -p pipeline --target-dir "$dir" 2>&1); then
    echo "$out"
    echo "no-clang: the pipeline's tests failed without clang" >&2
    exit 1
fi
echo "$out" | grep -E "^test result" | sed 's/^/no-clang: pipeline /'
cargo build -q -p control --no-default-features --bin ferry --example lab_traffic --target-dir "$dir"
if cargo tree -p pipeline -e normal,build --prefix none | grep -Eq '^(aya|xdp) '; then
    echo "no-clang: the pipeline crate depends on aya or xdp" >&2
    exit 1
fi
# The cluster core (control/cluster) sits between the two: no dataplane I/O, and none of the
# adapters' runtimes or clients either.
if cargo tree -p cluster -e normal,build --prefix none | grep -Eq '^(aya|xdp|tokio|kube|rtnetlink) '; then
    echo "no-clang: the cluster crate depends on aya, xdp, tokio, kube or rtnetlink" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$dir/debug/examples/lab_traffic" k8s-w1 "$work/in.pcapng" >/dev/null
"$dir/debug/ferry" replay --tables docs/examples/k8s-w1.tables.toml \
    --in "$work/in.pcapng" --out "$work/out.pcapng" --json "$work/summary.json" >/dev/null
python3 - "$work/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
p = s["pipeline"]
if p["rx_packets"] == 0 or p["tx_packets"] == 0:
    sys.exit(f"no-clang: ferry replay forwarded nothing: {p}")
print(f"no-clang: ferry replay without the node daemon: {p['rx_packets']} in, {p['tx_packets']} out")
PY
