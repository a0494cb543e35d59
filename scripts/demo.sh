#!/usr/bin/env bash
# Ferry's main job: the study lab as real network namespaces (router k8s-rtr, nodes k8s-m,
# k8s-w1, k8s-w2 on 192.168.10.0/24 and k8s-w0 on 192.168.20.0/24, two pods per worker), Ferry
# forwarding pod traffic on every node over AF_XDP, mode by mode (IPIP, VXLAN, Direct, IPIP
# CrossSubnet, VXLAN CrossSubnet): ping and 10 MB TCP with a checksum between every pod pair
# across nodes, what tshark sees on the router's link, a summary table; then the lab is torn
# down. Then the control plane (scripts/cluster-demo.sh): the study's external-pool walkthrough
# with `ferry apply`, `ferry node run --manifests` and pods wired by `ferry-cni`.
# (scripts/replay-demo.sh is the same story offline, through `ferry replay`.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "building ferry and ferry-lab (release)..."
cargo build --release -q -p control -p testbeds --bins  # ferry, ferry-cni, ferry-lab
target/release/ferry-lab test "$@"
bash scripts/cluster-demo.sh
