// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
// Ferry's XDP steering program: sends to Ferry's AF_XDP socket only what Ferry forwards, and
// passes everything else to the kernel, so the node's own traffic never depends on Ferry.
//
// One instance per interface (its own maps). config[0] = role (1 pod port, 2 uplink),
// config[1] = the node's IPv4 address (network order), config[2] = VXLAN UDP port (host order),
// config[3] = WireGuard UDP port (host order, 0 = WireGuard off).
//
// Pod port: ARP (proxy ARP for 169.254.1.1) and traffic to the node's address go to the
//   kernel; everything else, malformed frames included, goes to Ferry (which counts drops).
// Uplink: IPIP, VXLAN and WireGuard addressed to the node, and plain IPv4 to prefixes in `local`
//   (this node's pods, for Direct/CrossSubnet) go to Ferry; the rest (ARP, the node's own
//   traffic, BGP, SSH, ...) goes to the kernel.
// If no socket is in `xsks` (Ferry stopped), bpf_redirect_map falls back to XDP_PASS.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ROLE_POD 1
#define ROLE_UPLINK 2

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} config SEC(".maps");

struct lpm_key {
	__u32 prefixlen;
	__u32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_key);
	__type(value, __u32);
} local SEC(".maps");

static __always_inline __u32 cfg(__u32 i)
{
	__u32 *v = bpf_map_lookup_elem(&config, &i);
	return v ? *v : 0;
}

SEC("xdp")
int ferry_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 role = cfg(0);
	__u32 node = cfg(1);
	struct ethhdr *eth = data;
	struct iphdr *ip;

	if (role == ROLE_POD) {
		if ((void *)(eth + 1) > end)
			goto to_ferry;
		if (eth->h_proto == bpf_htons(ETH_P_ARP))
			return XDP_PASS;
		if (eth->h_proto != bpf_htons(ETH_P_IP))
			goto to_ferry;
		ip = (void *)(eth + 1);
		if ((void *)(ip + 1) <= end && ip->daddr == node)
			return XDP_PASS;
		goto to_ferry;
	}
	if (role != ROLE_UPLINK)
		return XDP_PASS;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return XDP_PASS;
	if (ip->daddr == node) {
		if (ip->protocol == IPPROTO_IPIP)
			goto to_ferry;
		if (ip->protocol == IPPROTO_UDP && ip->ihl >= 5) {
			struct udphdr *udp = (void *)ip + ip->ihl * 4;
			__u32 wg = cfg(3);
			if ((void *)(udp + 1) <= end &&
			    (udp->dest == bpf_htons((__u16)cfg(2)) ||
			     (wg != 0 && udp->dest == bpf_htons((__u16)wg))))
				goto to_ferry;
		}
		return XDP_PASS;
	}
	struct lpm_key key = { .prefixlen = 32, .addr = ip->daddr };
	if (bpf_map_lookup_elem(&local, &key))
		goto to_ferry;
	return XDP_PASS;

to_ferry:
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
