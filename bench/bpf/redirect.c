// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
// The smallest useful XDP forwarder, for `ferry-bench compare`: every frame arriving on the
// interface gets new Ethernet addresses (macs[0]: destination then source) and is redirected
// through devmap slot 0 to the other interface. No parsing beyond the Ethernet header: this is
// the upper bound of the kernel's XDP path on this machine, not a router.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} out SEC(".maps");

struct macs {
	__u8 addr[12];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct macs);
} macs SEC(".maps");

SEC("xdp")
int redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct macs *m;

	if (data + 14 > end)
		return XDP_DROP;
	m = bpf_map_lookup_elem(&macs, &key);
	if (!m)
		return XDP_ABORTED;
	__builtin_memcpy(data, m->addr, 12);
	return bpf_redirect_map(&out, 0, 0);
}

char _license[] SEC("license") = "Dual BSD/GPL";
