// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Benchmark-only experiment (daemon/bench, case kmesh-skmsg): same-node
 * acceleration with sockops + sk_msg, to decide whether it pays before it
 * is built into bpf/. Established IPv4 TCP sockets of the namespaces in
 * km_bench_ns go into a sockhash keyed by their 4-tuple; a send on one of
 * them is redirected to the peer socket's receive queue when the peer is
 * in the sockhash too, skipping the TCP/IP stack and the veth pair.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char _license[] SEC("license") = "Dual BSD/GPL";

struct km_sock_key {
	__u32 local_ip4;
	__u32 remote_ip4;
	__u32 local_port;  /* host order */
	__u32 remote_port; /* host order */
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct km_sock_key);
	__type(value, __u64);
} km_bench_socks SEC(".maps");

/* netns cookie -> 0: the namespaces the experiment acts on */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u64);
	__type(value, __u32);
} km_bench_ns SEC(".maps");

SEC("sockops")
int km_bench_sockops(struct bpf_sock_ops *skops)
{
	struct km_sock_key key = {};
	__u64 ns;

	if (skops->family != 2 /* AF_INET */)
		return 1;
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	ns = bpf_get_netns_cookie(skops);
	if (!bpf_map_lookup_elem(&km_bench_ns, &ns))
		return 1;
	key.local_ip4 = skops->local_ip4;
	key.remote_ip4 = skops->remote_ip4;
	key.local_port = skops->local_port;
	key.remote_port = bpf_ntohl(skops->remote_port);
	bpf_sock_hash_update(skops, &km_bench_socks, &key, BPF_NOEXIST);
	return 1;
}

SEC("sk_msg")
int km_bench_skmsg(struct sk_msg_md *msg)
{
	struct km_sock_key peer = {};

	if (msg->family != 2 /* AF_INET */)
		return SK_PASS;
	peer.local_ip4 = msg->remote_ip4;
	peer.remote_ip4 = msg->local_ip4;
	peer.local_port = bpf_ntohl(msg->remote_port);
	peer.remote_port = msg->local_port;
	bpf_msg_redirect_hash(msg, &km_bench_socks, &peer, BPF_F_INGRESS);
	return SK_PASS;
}
