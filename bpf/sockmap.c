// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Same-node acceleration: a TCP connection whose two ends are sockets of
 * enrolled network namespaces on this node skips the TCP/IP stack and the
 * veth pair in between. A send on one end is handed straight to the other
 * end's receive queue.
 *
 * sockops (cgroup, BPF_CGROUP_SOCK_OPS): when a TCP socket of an enrolled
 * namespace becomes established (either end), its local address is
 * recorded in km_local_ips (with the namespace's cookie), and the socket is
 * added to km_socks, keyed by its own view of the connection (struct
 * km_sock_key), only if its peer's address is in km_local_ips too, for a
 * namespace still enrolled: a connection to another node never has a peer
 * here and would pay the sk_msg path on every send for nothing. The first
 * connection to an address not seen yet is therefore not accelerated.
 * Loopback connections are left alone: their addresses are not unique on
 * the node, so two namespaces could hold the same key.
 *
 * sk_msg (on km_socks, BPF_SK_MSG_VERDICT): runs for every send on a
 * socket in km_socks. The first send decides, once per socket, and the
 * decision sticks (km_accel_sk): if the peer socket is in km_socks, this and
 * every later send is redirected to it; if not, none is. Deciding once keeps
 * the byte stream in order: the client's first send can race the server's
 * socket into km_socks, and bytes sent through TCP/IP before bytes
 * redirected would reach the reader after them (it reads redirected data
 * first).
 *
 * km_accel_ctl's PASS_ALL sends everything through TCP/IP (uninstall, and
 * --same-node-accel=false), and each socket that sends while it is set stays
 * on TCP/IP for good: bytes already redirected are still read first, so
 * order holds, and a later switch back cannot reorder.
 *
 * Built only with KMESH_HAVE_SAME_NODE_ACCEL (sock_ops with
 * bpf_get_netns_cookie, 5.15+, and sk_msg with bpf_sk_storage_get); without
 * it the object holds no program and the data plane runs without it.
 */
#include "kmesh_uapi.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "kmesh_features.h"
#include "kmesh_types.h"

#ifndef KMESH_HAVE_SAME_NODE_ACCEL
#error "kmesh_features.h must define KMESH_HAVE_SAME_NODE_ACCEL"
#endif

char _license[] SEC("license") = "Dual BSD/GPL";

#if KMESH_HAVE_SAME_NODE_ACCEL

#include "kmesh_enrolled.h"

/* The established sockets of enrolled namespaces, by their own view. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, KM_MAX_SOCKETS);
	__type(key, struct km_sock_key);
	__type(value, __u64);
} km_socks SEC(".maps");

/* address -> netns cookie: addresses enrolled namespaces have on this node. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, KM_MAX_LOCAL_IPS);
	__type(key, struct km_ip);
	__type(value, __u64);
} km_local_ips SEC(".maps");

/* socket -> its one-time redirect decision. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct km_accel_sk);
} km_accel_sk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct km_accel_ctl);
} km_accel_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct km_accel_stats);
} km_accel_stats SEC(".maps");

enum km_accel_counter { KM_SOCKETS, KM_SOCK_ERRORS, KM_REDIRECTED, KM_PASSED, KM_NOT_LOCAL };

static __always_inline void km_accel_count(enum km_accel_counter c)
{
	__u32 zero = 0;
	struct km_accel_stats *s = bpf_map_lookup_elem(&km_accel_stats, &zero);

	if (!s)
		return;
	switch (c) {
	case KM_SOCKETS:
		__sync_fetch_and_add(&s->sockets, 1);
		break;
	case KM_SOCK_ERRORS:
		__sync_fetch_and_add(&s->sock_errors, 1);
		break;
	case KM_REDIRECTED:
		__sync_fetch_and_add(&s->redirected, 1);
		break;
	case KM_PASSED:
		__sync_fetch_and_add(&s->passed, 1);
		break;
	case KM_NOT_LOCAL:
		__sync_fetch_and_add(&s->not_local, 1);
		break;
	}
}

/*
 * The addresses of one socket as its context gives them: ip4 for AF_INET,
 * ip6 for AF_INET6 (read field by field: context loads must be direct).
 */
struct km_sock_view {
	__u32 family;
	__u32 local_port;  /* host byte order */
	__u32 remote_port; /* network byte order in the upper half (as the context has it) */
	__be32 local_ip4, remote_ip4;
	__be32 local_ip6[4], remote_ip6[4];
};

#define KM_READ_VIEW(v, ctx)                                                   \
	do {                                                                   \
		(v).family = (ctx)->family;                                    \
		(v).local_port = (ctx)->local_port;                            \
		(v).remote_port = (ctx)->remote_port;                          \
		if ((v).family == KM_AF_INET) {                                \
			(v).local_ip4 = (ctx)->local_ip4;                      \
			(v).remote_ip4 = (ctx)->remote_ip4;                    \
		} else if ((v).family == KM_AF_INET6) {                        \
			(v).local_ip6[0] = (ctx)->local_ip6[0];                \
			(v).local_ip6[1] = (ctx)->local_ip6[1];                \
			(v).local_ip6[2] = (ctx)->local_ip6[2];                \
			(v).local_ip6[3] = (ctx)->local_ip6[3];                \
			(v).remote_ip6[0] = (ctx)->remote_ip6[0];              \
			(v).remote_ip6[1] = (ctx)->remote_ip6[1];              \
			(v).remote_ip6[2] = (ctx)->remote_ip6[2];              \
			(v).remote_ip6[3] = (ctx)->remote_ip6[3];              \
		}                                                              \
	} while (0)

static __always_inline int km_is_mapped4(const __be32 *ip6)
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int km_is_loopback4(__be32 ip)
{
	return (bpf_ntohl(ip) >> 24) == 127;
}

static __always_inline int km_is_loopback6(const __be32 *ip6)
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == 0 && ip6[3] == bpf_htonl(1);
}

/*
 * Fills key with v's connection ({local, remote}, or {remote, local} when
 * peer is set). IPv4-mapped IPv6 becomes IPv4, so that a dual-stack server
 * socket and an IPv4 client find each other. Returns -1 for what is not
 * accelerated: other families and loopback.
 */
static __always_inline int km_sock_key(struct km_sock_key *key, const struct km_sock_view *v, int peer)
{
	__be32 l[4] = {}, r[4] = {};
	__u32 family = v->family;

	if (family == KM_AF_INET) {
		l[0] = v->local_ip4;
		r[0] = v->remote_ip4;
	} else if (family == KM_AF_INET6 && km_is_mapped4(v->local_ip6) && km_is_mapped4(v->remote_ip6)) {
		family = KM_AF_INET;
		l[0] = v->local_ip6[3];
		r[0] = v->remote_ip6[3];
	} else if (family == KM_AF_INET6) {
		if (km_is_loopback6(v->local_ip6) || km_is_loopback6(v->remote_ip6))
			return -1;
		__builtin_memcpy(l, v->local_ip6, sizeof(l));
		__builtin_memcpy(r, v->remote_ip6, sizeof(r));
	} else {
		return -1;
	}
	if (family == KM_AF_INET && (km_is_loopback4(l[0]) || km_is_loopback4(r[0])))
		return -1;

	key->family = family;
	if (peer) {
		key->local_port = bpf_ntohl(v->remote_port);
		key->remote_port = v->local_port;
		__builtin_memcpy(key->local_ip, r, sizeof(r));
		__builtin_memcpy(key->remote_ip, l, sizeof(l));
	} else {
		key->local_port = v->local_port;
		key->remote_port = bpf_ntohl(v->remote_port);
		__builtin_memcpy(key->local_ip, l, sizeof(l));
		__builtin_memcpy(key->remote_ip, r, sizeof(r));
	}
	return 0;
}

/* Records ip as an address of the enrolled namespace cookie. */
static __always_inline void km_learn(__u32 family, const __be32 *ip, __u64 cookie)
{
	struct km_ip k = {.family = family};
	__u64 *known;

	__builtin_memcpy(k.ip, ip, sizeof(k.ip));
	known = bpf_map_lookup_elem(&km_local_ips, &k);
	if (!known || *known != cookie)
		bpf_map_update_elem(&km_local_ips, &k, &cookie, BPF_ANY);
}

/* Is ip an address of a namespace on this node that is still enrolled? */
static __always_inline int km_is_local(__u32 family, const __be32 *ip)
{
	struct km_ip k = {.family = family};
	__u64 *cookie;

	__builtin_memcpy(k.ip, ip, sizeof(k.ip));
	cookie = bpf_map_lookup_elem(&km_local_ips, &k);
	return cookie && bpf_map_lookup_elem(&km_enrolled, cookie);
}

SEC("sockops")
int kmesh_sockops(struct bpf_sock_ops *skops)
{
	struct km_sock_view v = {};
	struct km_sock_key key = {};
	__u32 op = skops->op;
	__u64 cookie;

	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	KM_READ_VIEW(v, skops);
	if (km_sock_key(&key, &v, 0) < 0)
		return 1;
	cookie = bpf_get_netns_cookie(skops);
	if (!bpf_map_lookup_elem(&km_enrolled, &cookie))
		return 1;
	km_learn(key.family, key.local_ip, cookie);
	if (!km_is_local(key.family, key.remote_ip)) {
		km_accel_count(KM_NOT_LOCAL);
		return 1;
	}
	if (bpf_sock_hash_update(skops, &km_socks, &key, BPF_NOEXIST) == 0)
		km_accel_count(KM_SOCKETS);
	else
		km_accel_count(KM_SOCK_ERRORS);
	return 1;
}

SEC("sk_msg")
int kmesh_sk_msg(struct sk_msg_md *msg)
{
	struct km_sock_view v = {};
	struct km_sock_key peer = {};
	struct km_accel_sk *st;
	struct km_accel_ctl *ctl;
	struct bpf_sock *sk = msg->sk;
	__u32 zero = 0;

	if (!sk) {
		km_accel_count(KM_PASSED);
		return SK_PASS;
	}
	st = bpf_sk_storage_get(&km_accel_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st) {
		km_accel_count(KM_PASSED);
		return SK_PASS;
	}
	/*
	 * PASS_ALL turns every socket to TCP/IP for good: switched back off,
	 * it must not make a socket redirect after bytes it sent through
	 * TCP/IP.
	 */
	ctl = bpf_map_lookup_elem(&km_accel_ctl, &zero);
	if (ctl && (ctl->flags & KM_ACCEL_CTL_PASS_ALL))
		st->state = KM_ACCEL_PASS;
	if (st->state == KM_ACCEL_PASS) {
		km_accel_count(KM_PASSED);
		return SK_PASS;
	}
	KM_READ_VIEW(v, msg);
	if (km_sock_key(&peer, &v, 1) == 0 && bpf_msg_redirect_hash(msg, &km_socks, &peer, BPF_F_INGRESS) == SK_PASS) {
		st->state = KM_ACCEL_REDIRECT;
		km_accel_count(KM_REDIRECTED);
		return SK_PASS;
	}
	/*
	 * No peer: from now on this socket never redirects. On its first send
	 * that is the decision; a socket that redirected before has lost its
	 * peer (it closed, or left km_socks): its bytes go out as TCP, and must
	 * keep doing so.
	 */
	st->state = KM_ACCEL_PASS;
	km_accel_count(KM_PASSED);
	return SK_PASS;
}

#endif /* KMESH_HAVE_SAME_NODE_ACCEL */
