#!/usr/bin/env bash
# The control plane, by hand, as a newcomer would run it: the study's "external-pool"
# walkthrough on the study lab's nodes and router (namespaces, no pods yet).
#   1. a manifest directory is the cluster: the nodes and the default pool, then the study's
#      IPPool external-pool (172.18.0.0/16, blockSize 24, CrossSubnet, nodeSelector !all()),
#      namespace external-ns (annotated to use it) and the nginx Deployment (3 replicas),
#      applied with `ferry apply -f`;
#   2. `ferry node run --manifests` on every worker;
#   3. each replica wired by `ferry-cni` exactly as a container runtime calls it;
#   4. the calicoctl-style views, and every replica fetching a page from the others.
# Everything is torn down at the end, also on failure. Run as root after scripts/setup.sh
# (scripts/demo.sh runs it after the mode table). Takes about 30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${FERRY_BIN:-target/release}
FERRY=$BIN/ferry
LABTOOL=$BIN/ferry-lab
CNI=$(realpath "$BIN/ferry-cni")
ID=cd$$
PREFIX=fl-$ID-
WORK=$(mktemp -d /tmp/ferry-cluster-demo.XXXXXX)
M=$WORK/manifests
S=$WORK/state
mkdir -p "$M" "$S"
PODNS=()
DAEMONS=()

cleanup() {
    status=$?
    if [ "$status" != 0 ]; then
        for n in k8s-w1 k8s-w2 k8s-w0; do
            [ -f "$WORK/$n.log" ] && { echo "--- ferry on $n"; tail -20 "$WORK/$n.log"; }
            "$LABTOOL" exec "$n" -- "$(realpath "$FERRY")" node status 2>/dev/null | grep -E "drops|packets" || true
        done
    fi
    if { [ "$status" != 0 ] && [ -n "${FERRY_DEMO_KEEP:-}" ]; } || [ "${FERRY_DEMO_KEEP:-}" = always ]; then
        echo "FERRY_DEMO_KEEP: lab $ID and $WORK left up; ferry-lab down --lab $ID to remove"
        trap - EXIT
        exit "$status"
    fi
    for p in "${DAEMONS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for n in "${PODNS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    "$LABTOOL" down --lab "$ID" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "lab: router k8s-rtr, nodes k8s-m, k8s-w1, k8s-w2 (192.168.10.0/24), k8s-w0 (192.168.20.0/24)"
sed '/^\[\[pods\]\]/,$d' testbeds/topologies/study.toml > "$WORK/nodes-only.toml"
"$LABTOOL" up --lab "$ID" --topology "$WORK/nodes-only.toml" >/dev/null

step "the cluster: nodes and the default pool as files, the study's manifests with ferry apply"
for n in k8s-m:192.168.10.10 k8s-w1:192.168.10.101 k8s-w2:192.168.10.102 k8s-w0:192.168.20.100; do
    cat >> "$M/00-nodes.yaml" <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: ${n%%:*}
  annotations:
    projectcalico.org/IPv4Address: ${n#*:}/24
EOF
done
cp control/tests/manifests/study/01-default-pool.yaml "$M/"
for f in 02-external-pool.yaml 03-external-ns.yaml 04-nginx.yaml; do
    echo "\$ ferry apply -f $f"
    "$FERRY" apply -f "control/tests/manifests/study/$f" --manifests "$M"
done
echo '$ ferry get ippools -o wide'
"$FERRY" get ippools -o wide --manifests "$M"

step "ferry node run --manifests on k8s-w1, k8s-w2, k8s-w0"
for n in k8s-w1 k8s-w2 k8s-w0; do
    "$LABTOOL" exec "$n" -- "$(realpath "$FERRY")" node run --manifests "$M" --node "$n" \
        --state "$S" --uplink eth0 --metrics 127.0.0.1:9091 > "$WORK/$n.log" 2>&1 &
    DAEMONS+=($!)
done
for n in k8s-w1 k8s-w2 k8s-w0; do
    for _ in $(seq 100); do grep -qs "forwarding on" "$WORK/$n.log" && break; sleep 0.1; done
    grep -qs "forwarding on" "$WORK/$n.log" || exit 1
done
echo "three daemons forwarding"

step "kubelet: each nginx replica wired by ferry-cni (CNI_COMMAND=ADD, config on stdin)"
declare -A IP
nodes=(k8s-w1 k8s-w2 k8s-w0)
i=0
for pod in nginx-0 nginx-1 nginx-2; do
    node=${nodes[$i]}; i=$((i + 1))
    ns=$PREFIX$pod
    ip netns add "$ns"; PODNS+=("$ns")
    conf='{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"ferry-cni","manifests":"'$M'","state":"'$S'","nodename":"'$node'","mtu":1480}'
    out=$(echo "$conf" | "$LABTOOL" exec "$node" -- env CNI_COMMAND=ADD CNI_CONTAINERID="ctr-$pod" \
        CNI_NETNS="/var/run/netns/$ns" CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin \
        CNI_ARGS="K8S_POD_NAMESPACE=external-ns;K8S_POD_NAME=$pod" "$CNI")
    IP[$pod]=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])' <<<"$out")
    echo "$pod on $node: ${IP[$pod]}"
    ip netns exec "$ns" python3 testbeds/tools/httpd.py "${IP[$pod]}" 80 > "$WORK/http-$pod.log" 2>&1 &
    DAEMONS+=($!)
    for _ in $(seq 50); do grep -qs listening "$WORK/http-$pod.log" && break; sleep 0.1; done
done

step "calicoctl-style views"
echo '$ ferry ipam show --show-blocks'
"$FERRY" ipam show --show-blocks --manifests "$M" --state "$S"
echo '$ ferry get wep -n external-ns'
"$FERRY" get wep -n external-ns --manifests "$M" --state "$S"

step "HTTP between the replicas across nodes (CrossSubnet: plain to k8s-w2, IPIP to k8s-w0)"
fetch='import sys, urllib.request
try: sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=1).status == 200 else 1)
except Exception: sys.exit(1)'
fail=0
for a in nginx-0 nginx-1 nginx-2; do
    for b in nginx-0 nginx-1 nginx-2; do
        [ "$a" = "$b" ] && continue
        ok=no
        for _ in $(seq 25); do
            if ip netns exec "$PREFIX$a" python3 -c "$fetch" "http://${IP[$b]}/"; then ok=yes; break; fi
            sleep 0.2
        done
        printf '  %s -> %-8s http://%-14s %s\n' "$a" "$b" "${IP[$b]}/" "$ok"
        if [ "$ok" != yes ] && [ -n "${FERRY_DEMO_DEBUG:-}" ]; then
            for n in k8s-w1 k8s-w2; do
                echo "-- $n"; "$LABTOOL" exec "$n" -- "$(realpath "$FERRY")" node status | grep -v ITEM
                "$LABTOOL" exec "$n" -- cat /proc/net/arp
                "$LABTOOL" exec "$n" -- python3 -c "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9091/metrics').read().decode())" | grep -E "^ferry_(rx|tx|host|drops)" | grep -v " 0$"
            done
        fi
        [ "$ok" = yes ] || fail=1
    done
done
echo '$ ferry node status   (on k8s-w1)'
"$LABTOOL" exec k8s-w1 -- "$(realpath "$FERRY")" node status
exit $fail
