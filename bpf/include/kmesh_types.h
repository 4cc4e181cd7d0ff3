/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Key and value layouts shared by the compatibility-mode BPF programs and
 * their Go mirrors in daemon/maps (checked against this object's BTF by
 * daemon/maps layout tests). Every struct has explicit padding: no implicit
 * holes, no tail padding, so Go and C agree byte for byte.
 */
#ifndef __KMESH_TYPES_H__
#define __KMESH_TYPES_H__

#include "kmesh_uapi.h"

/* Address families as the kernel spells them (ctx->user_family). */
#define KM_AF_INET  2
#define KM_AF_INET6 10

#define KM_SOCK_STREAM 1

/* Weighted clusters per service entry. */
#define KM_MAX_CLUSTERS 16
/* Upper bound of a cluster's slot table (user space caps the expansion). */
#define KM_MAX_SLOTS_PER_CLUSTER 1024

/* Map sizes (max_entries). */
#define KM_MAX_ENROLLED_NETNS 4096
#define KM_MAX_SERVICES	      32768  /* service entries; service_id < KM_MAX_SERVICES */
#define KM_MAX_CLUSTER_IDS    32768  /* clusters; cluster_id < KM_MAX_CLUSTER_IDS */
#define KM_MAX_SLOTS	      262144 /* all clusters' slot tables together */

/* Load-balancing policy of a cluster (km_cluster.policy). */
#define KM_POLICY_ROUND_ROBIN 0
#define KM_POLICY_RANDOM      1

/*
 * An IPv4 or IPv6 transport address: the services map key and the slot
 * (endpoint) value. IPv4 uses ip[0] only, ip[1..3] are zero. ip and port are
 * in network byte order. A service key with an all-zero ip is a wildcard for
 * that family and port.
 */
struct km_addr {
	__u8 family; /* KM_AF_INET or KM_AF_INET6 */
	__u8 pad;
	__be16 port;
	__be32 ip[4];
};

struct km_weighted_cluster {
	__u32 cluster_id;
	__u32 weight;
};

struct km_service {
	__u32 service_id; /* index into km_svc_stats */
	__u32 cluster_count;
	__u32 total_weight; /* sum of clusters[0..cluster_count).weight */
	struct km_weighted_cluster clusters[KM_MAX_CLUSTERS];
};

/*
 * rr_next is protected by lock (bpf_spin_lock): fetching atomics
 * (BPF_ATOMIC_FETCH) need 5.12, so a shared exact round-robin counter on 5.10
 * needs the lock. User-space updates never touch the lock word.
 */
struct km_cluster {
	__u32 policy;
	__u32 slot_count; /* slots [0, slot_count) exist in km_slots */
	struct bpf_spin_lock lock;
	__u32 rr_next;
};

struct km_slot_key {
	__u32 cluster_id;
	__u32 slot;
};

/* km_orig_dst (sk_storage) value: the destination before the rewrite. */
struct km_orig_dst {
	struct km_addr addr;
	__u32 service_id;
	__u32 cluster_id;
};

/* Per-CPU counters, one per service (km_svc_stats) and per cluster (km_clust_stats). */
struct km_stats {
	__u64 redirected;  /* connects rewritten to an endpoint */
	__u64 no_endpoint; /* matched, but no endpoint to pick: left untouched */
};

#endif /* __KMESH_TYPES_H__ */
