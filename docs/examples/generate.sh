#!/usr/bin/env bash
# Regenerates the example tables of every lab node and mode (without the comments of
# k8s-w1.tables.toml, which a test keeps equal to the fixture).
set -euo pipefail
cd "$(dirname "$0")/../.."
for node in k8s-m k8s-w1 k8s-w2 k8s-w0; do
  for mode in ipip vxlan direct ipip-cross-subnet vxlan-cross-subnet; do
    cargo run -q -p pipeline --example dump_lab_tables -- "$node" "$mode" > "target/$node.$mode.tables.toml"
  done
done
echo "written to target/*.tables.toml"
