#!/usr/bin/env bash
# Installs what Ferry's build, demo and tests need on a fresh Debian machine (run as root).
# Idempotent: skips what is already there.
set -euo pipefail
need=()
# clang + libbpf-dev build the XDP program; iperf3 for `ferry-lab bench`; python3 runs the lab tools;
# ethtool turns the labs' veth offloads off (and the CNI tests read them); nftables and
# conntrack for the kernel side of the policy benchmark; wireguard-go and wireguard-tools for
# the WireGuard interop lab; dpdk-dev (dpdk-testpmd) and linux-perf for `ferry-bench compare`;
# prometheus (the server and promtool) for the metrics tests and the Prometheus lab.
for pkg in tshark tcpdump nftables conntrack iproute2 ethtool iputils-ping iperf3 python3 clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config wireguard-go wireguard-tools dpdk-dev linux-perf prometheus; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer no without a prompt.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "setup: cargo is missing; install Rust (rustup) first" >&2
  exit 1
fi
command -v cargo-nextest >/dev/null || echo "setup: cargo-nextest not found; tests run with cargo test"
echo "setup: ok ($(cargo --version), $(tshark --version | head -1))"
