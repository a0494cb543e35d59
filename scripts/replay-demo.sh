#!/usr/bin/env bash
# The study lab's pod traffic through Ferry's real pipeline, offline (no privileges needed).
# For each Calico mode, every pod of k8s-w1 sends UDP, ICMP echo and TCP SYN to every other pod;
# `ferry replay` runs k8s-w1's pipeline, tshark shows what went on the wire, and the frames that
# left k8s-w1's uplink are replayed into k8s-w2 and k8s-w0, whose pipelines deliver them to their
# pods. (The network-namespace lab, with AF_XDP and real veths, replaces this when it lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -q -p control -p pipeline --examples --bins
ferry=target/release/ferry
work=$(mktemp -d /tmp/ferry-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

target/release/examples/lab_traffic k8s-w1 "$work/w1-pods.pcapng"
# How k8s-w1's uplink carried the packets for one node's pods: plain, IPIP or VXLAN (from tshark).
declare -A node_ip=([k8s-w2]=192.168.10.102 [k8s-w0]=192.168.20.100)
declare -A node_block=([k8s-w2]=172.16.184.0/26 [k8s-w0]=172.16.34.0/26)
wire_format() { # FILE
  tshark -r "$1" -T fields -E separator=' ' -E aggregator=' ' -e ip.proto -e vxlan.vni 2>/dev/null |
    awk '{ if ($1 == 4) kind = "IPIP"; else if (NF >= 3 && $1 == 17) kind = "VXLAN/" $3; else kind = "plain"; seen[kind]++ }
      END { out = ""; for (k in seen) out = out sprintf("%s×%d ", k, seen[k]); print (out == "" ? "-" : out) }'
}
summary=()
for mode in ipip vxlan direct ipip-cross-subnet vxlan-cross-subnet; do
  echo
  echo "=== mode: $mode ==="
  for n in k8s-w1 k8s-w2 k8s-w0; do
    target/release/examples/dump_lab_tables "$n" "$mode" > "$work/$n.$mode.toml"
  done
  $ferry replay --tables "$work/k8s-w1.$mode.toml" --in "$work/w1-pods.pcapng" \
    --out "$work/w1-out.$mode.pcapng" --json "$work/w1.$mode.json"
  # What left on the uplink, as a capture of its own (tshark keeps the interface names).
  tshark -r "$work/w1-out.$mode.pcapng" -Y 'frame.interface_name == "eth0"' -w "$work/w1-uplink.$mode.pcapng" 2>/dev/null
  echo "--- k8s-w1's uplink, as tshark decodes it (tunnelled packets show outer, inner) ---"
  tshark -r "$work/w1-uplink.$mode.pcapng" -T fields -E separator=' ' -E aggregator=',' \
    -e ip.src -e ip.dst -e _ws.col.Protocol 2>/dev/null | sort | uniq -c | sort -rn | sed 's/^/  /' | head -8
  row=$(printf '%-21s' "$mode")
  for n in k8s-w2 k8s-w0; do
    # The packets the router would hand to this node: to its address (tunnels) or its pods.
    tshark -r "$work/w1-uplink.$mode.pcapng" -Y "ip.dst == ${node_ip[$n]} or ip.dst == ${node_block[$n]}" \
      -w "$work/to-$n.$mode.pcapng" 2>/dev/null
    $ferry replay --tables "$work/$n.$mode.toml" --in "$work/to-$n.$mode.pcapng" \
      --out "$work/$n-in.$mode.pcapng" --json "$work/$n.$mode.json" > "$work/$n.$mode.txt"
    d=$(tshark -r "$work/$n-in.$mode.pcapng" -Y 'frame.interface_name matches "^cali"' 2>/dev/null | wc -l)
    echo "--- $n: $(head -1 "$work/$n.$mode.txt" | cut -d: -f2 | cut -d';' -f1); $d delivered to its pods"
    row+=$(printf '%-22s %-5s' "$(wire_format "$work/to-$n.$mode.pcapng")" "$d")
  done
  summary+=("$row")
done
echo
echo "=== summary: k8s-w1's two pods send UDP, ping and TCP SYN to each pod of k8s-w2 and k8s-w0 ==="
printf '%-21s%-22s %-5s%-22s %-5s\n' "mode" "to k8s-w2 on the wire" "recv" "to k8s-w0 on the wire" "recv"
for l in "${summary[@]}"; do echo "$l"; done
echo
echo "Same subnet (k8s-w2) goes plain in CrossSubnet modes; across the router (k8s-w0) it is tunnelled."
echo "One extra packet to k8s-w2 is a 1500-byte DF datagram: it fits plain, but over a tunnel k8s-w1"
echo "answers it with ICMP fragmentation-needed (MTU 1480 IPIP, 1450 VXLAN) instead."
echo "In direct mode k8s-w1 sends k8s-w0's pods plain to the router, which (as in the study) has no"
echo "pod routes; this offline demo hands them to k8s-w0 directly. The namespace lab shows the drop."
