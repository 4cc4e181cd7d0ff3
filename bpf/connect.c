// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Compatibility-mode service load balancing at connect() time.
 *
 * cgroup/connect4 and cgroup/connect6: for TCP sockets of enrolled network
 * namespaces only, look the destination up in km_services (exact address
 * first, then the family's per-port wildcard), pick a cluster by weight, pick
 * a slot of that cluster's slot table by the cluster's policy and rewrite the
 * destination to the slot's endpoint.
 *
 * An IPv4-mapped destination on connect6 (::ffff:a.b.c.d, a dual-stack
 * AF_INET6 socket) is an IPv4 connect: the AF_INET key (exact, then the
 * 0.0.0.0:port wildcard, never [::]:port), an AF_INET endpoint, written back
 * as ::ffff:<endpoint>; km_orig_dst records the IPv4 key.
 *
 * Verdicts: no match, not enrolled, not TCP, or a matched PASSTHROUGH entry
 * (cluster_count 0: a listener claims the VIP, nothing serves it here) leave
 * the destination untouched and allow (return 1). A matched service with no
 * endpoint to pick (empty or missing cluster, endpoint of the other family,
 * corrupt weights) refuses the connect (return 0: connect() fails with EPERM
 * at once instead of running into an unroutable VIP) and counts no_endpoint.
 * A connect that is not rewritten drops the km_orig_dst entry an earlier
 * connect of the same socket may have left.
 *
 * Only helpers and instructions available on 5.10 are used: map lookups,
 * bpf_get_prandom_u32, bpf_spin_lock/unlock, bpf_get_netns_cookie (5.7),
 * bpf_sk_storage_get/delete (5.3 in sock_addr programs; only with
 * KMESH_HAVE_SK_STORAGE), non-fetching atomic adds; the one loop is fully
 * unrolled.
 */
#include "kmesh_uapi.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "kmesh_features.h"
#include "kmesh_types.h"
#include "kmesh_maps.h"

#if !defined(KMESH_HAVE_NETNS_COOKIE) || !KMESH_HAVE_NETNS_COOKIE
#error "connect.c needs bpf_get_netns_cookie in cgroup sock_addr programs (5.7+)"
#endif
#ifndef KMESH_HAVE_SK_STORAGE
#error "kmesh_features.h must define KMESH_HAVE_SK_STORAGE"
#endif
#ifndef KMESH_HAVE_IPV6
#error "kmesh_features.h must define KMESH_HAVE_IPV6"
#endif

char _license[] SEC("license") = "Dual BSD/GPL";

#define KM_READ_U32(p)	   (*(volatile __u32 *)&(p))
#define KM_WRITE_U32(p, v) (*(volatile __u32 *)&(p) = (v))

/* Scales a uniform u32 into [0, n) without a division. */
static __always_inline __u32 km_rand_below(__u32 n)
{
	return (__u32)(((__u64)bpf_get_prandom_u32() * n) >> 32);
}

static __always_inline void km_count(void *map, __u32 id, int redirected)
{
	struct km_stats *s = bpf_map_lookup_elem(map, &id);

	if (!s)
		return;
	/* Per-CPU slot, but the program may be preempted (migrate_disable only). */
	if (redirected)
		__sync_fetch_and_add(&s->redirected, 1);
	else
		__sync_fetch_and_add(&s->no_endpoint, 1);
}

/* Weighted pick among a service's clusters. Returns 0 and sets *cid on success. */
static __always_inline int km_pick_cluster(const struct km_service *svc, __u32 *cid)
{
	__u32 n = svc->cluster_count;
	int found = 0;
	__u32 r;

	if (n == 0 || n > KM_MAX_CLUSTERS)
		return -1;
	if (n == 1) {
		*cid = svc->clusters[0].cluster_id;
		return 0;
	}
	if (svc->total_weight == 0)
		return -1;
	r = km_rand_below(svc->total_weight);
	/* Fully unrolled (no break/return inside) so no verifier loop support is needed. */
#pragma unroll
	for (int i = 0; i < KM_MAX_CLUSTERS; i++) {
		__u32 w = i < n ? svc->clusters[i].weight : 0;

		if (!found && r < w) {
			*cid = svc->clusters[i].cluster_id;
			found = 1;
		}
		r -= found ? 0 : w;
	}
	return found ? 0 : -1; /* -1: total_weight exceeds the sum of the weights */
}

/* Picks a slot of the cluster's slot table by its policy. */
static __always_inline const struct km_addr *km_pick_endpoint(__u32 cid, __u8 family)
{
	struct km_slot_key skey = {.cluster_id = cid};
	const struct km_addr *ep;
	struct km_cluster *cl;
	__u32 count, idx;

	cl = bpf_map_lookup_elem(&km_clusters, &cid);
	if (!cl)
		return NULL;
	count = cl->slot_count;
	if (count == 0)
		return NULL;

	if (cl->policy == KM_POLICY_RANDOM) {
		idx = km_rand_below(count);
	} else {
		/* KM_POLICY_ROUND_ROBIN: one cursor shared by all CPUs. */
		bpf_spin_lock(&cl->lock);
		idx = cl->rr_next;
		if (idx >= count)
			idx = 0;
		cl->rr_next = idx + 1 >= count ? 0 : idx + 1;
		bpf_spin_unlock(&cl->lock);
	}

	skey.slot = idx;
	ep = bpf_map_lookup_elem(&km_slots, &skey);
	if (!ep && idx != 0) {
		/* The table is shrinking right now: slot 0 always outlives the others. */
		skey.slot = 0;
		ep = bpf_map_lookup_elem(&km_slots, &skey);
	}
	if (!ep || ep->family != family)
		return NULL;
	return ep;
}

#if KMESH_HAVE_SK_STORAGE
/*
 * The connect is not rewritten: drop the km_orig_dst entry an earlier connect
 * of this socket left (it connected to a VIP, failed, and now connects
 * elsewhere). Looked up without F_CREATE first: a socket without an entry,
 * the common case, pays one lookup and allocates nothing.
 */
static __always_inline void km_forget_orig_dst(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	if (sk && bpf_sk_storage_get(&km_orig_dst, sk, 0, 0))
		bpf_sk_storage_delete(&km_orig_dst, sk);
}
#else
static __always_inline void km_forget_orig_dst(struct bpf_sock_addr *ctx)
{
	(void)ctx;
}
#endif

static __always_inline int km_connect(struct bpf_sock_addr *ctx, __u8 family)
{
	const struct km_service *svc;
	const struct km_addr *ep;
	struct km_addr key = {};
	struct km_addr orig;
	int mapped = 0;
	__u64 cookie;
	/*
	 * Initialised: clang may load it before km_pick_cluster's verdict, and
	 * 5.10's verifier rejects a read of uninitialised stack.
	 */
	__u32 cid = 0;

	if (ctx->type != KM_SOCK_STREAM)
		return 1;
	cookie = bpf_get_netns_cookie(ctx);
	if (!bpf_map_lookup_elem(&km_enrolled, &cookie))
		return 1;

	key.port = (__be16)KM_READ_U32(ctx->user_port);
	if (family == KM_AF_INET) {
		key.family = KM_AF_INET;
		key.ip[0] = KM_READ_U32(ctx->user_ip4);
	} else {
		key.ip[0] = KM_READ_U32(ctx->user_ip6[0]);
		key.ip[1] = KM_READ_U32(ctx->user_ip6[1]);
		key.ip[2] = KM_READ_U32(ctx->user_ip6[2]);
		key.ip[3] = KM_READ_U32(ctx->user_ip6[3]);
		if (key.ip[0] == 0 && key.ip[1] == 0 && key.ip[2] == bpf_htonl(0x0000ffff)) {
			/* ::ffff:a.b.c.d (dual-stack socket): an IPv4 connect. */
			key.family = KM_AF_INET;
			key.ip[0] = key.ip[3];
			key.ip[2] = 0;
			key.ip[3] = 0;
			mapped = 1;
		} else {
			key.family = KM_AF_INET6;
		}
	}
	orig = key;

	svc = bpf_map_lookup_elem(&km_services, &key);
	if (!svc) {
		/* The wildcard of key.family: 0.0.0.0:port for a mapped destination. */
		key.ip[0] = 0;
		key.ip[1] = 0;
		key.ip[2] = 0;
		key.ip[3] = 0;
		svc = bpf_map_lookup_elem(&km_services, &key);
		if (!svc) {
			km_forget_orig_dst(ctx);
			return 1;
		}
	}
	if (svc->cluster_count == 0) {
		/* PASSTHROUGH: claimed, not served here; it also shadows the wildcard. */
		km_forget_orig_dst(ctx);
		return 1;
	}

	if (km_pick_cluster(svc, &cid) < 0) {
		/* Corrupt entry: > 16 clusters, total_weight 0 or beyond the weights. */
		km_count(&km_svc_stats, svc->service_id, 0);
		km_forget_orig_dst(ctx);
		return 0;
	}
	ep = km_pick_endpoint(cid, key.family);
	if (!ep) {
		/* Empty or missing cluster, or an endpoint of the other family: refuse. */
		km_count(&km_svc_stats, svc->service_id, 0);
		km_count(&km_clust_stats, cid, 0);
		km_forget_orig_dst(ctx);
		return 0;
	}

	if (family == KM_AF_INET) {
		KM_WRITE_U32(ctx->user_ip4, ep->ip[0]);
	} else if (mapped) {
		/* user_ip6[0..2] already hold the ::ffff: prefix. */
		KM_WRITE_U32(ctx->user_ip6[3], ep->ip[0]);
	} else {
		KM_WRITE_U32(ctx->user_ip6[0], ep->ip[0]);
		KM_WRITE_U32(ctx->user_ip6[1], ep->ip[1]);
		KM_WRITE_U32(ctx->user_ip6[2], ep->ip[2]);
		KM_WRITE_U32(ctx->user_ip6[3], ep->ip[3]);
	}
	KM_WRITE_U32(ctx->user_port, (__u32)ep->port);

#if KMESH_HAVE_SK_STORAGE
	{
		struct bpf_sock *sk = ctx->sk;
		struct km_orig_dst *od;

		if (sk) {
			od = bpf_sk_storage_get(&km_orig_dst, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
			if (od) {
				od->addr = orig;
				od->service_id = svc->service_id;
				od->cluster_id = cid;
			}
		}
	}
#else
	(void)orig;
#endif

	km_count(&km_svc_stats, svc->service_id, 1);
	km_count(&km_clust_stats, cid, 1);
	return 1;
}

SEC("cgroup/connect4")
int kmesh_connect4(struct bpf_sock_addr *ctx)
{
	return km_connect(ctx, KM_AF_INET);
}

#if KMESH_HAVE_IPV6
SEC("cgroup/connect6")
int kmesh_connect6(struct bpf_sock_addr *ctx)
{
	return km_connect(ctx, KM_AF_INET6);
}
#endif
