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
#define KM_MAX_SOCKETS	      65536  /* km_socks: accelerated sockets on the node */
#define KM_MAX_LOCAL_IPS      16384  /* km_local_ips: addresses of enrolled namespaces (LRU) */

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
	__u64 no_endpoint; /* matched, but no endpoint to pick: refused (EPERM) */
};

/*
 * km_socks (sockhash) key: one established TCP socket by its own view of the
 * connection. The peer of {local, remote} is the socket keyed {remote,
 * local}. IPv4 (and IPv4-mapped IPv6) uses ip[0] only with family
 * KM_AF_INET; ports are in host byte order.
 */
struct km_sock_key {
	__u32 family;
	__u32 local_port;
	__u32 remote_port;
	__be32 local_ip[4];
	__be32 remote_ip[4];
};

/* km_local_ips (LRU hash) key; the value is the namespace's netns cookie. */
struct km_ip {
	__u32 family; /* KM_AF_INET (ip[0] only) or KM_AF_INET6 */
	__be32 ip[4];
};

/* km_accel_sk (sk_storage) value: a sending socket's one-time decision. */
#define KM_ACCEL_UNDECIDED 0
#define KM_ACCEL_REDIRECT  1 /* the peer was in km_socks at the first send */
#define KM_ACCEL_PASS	   2 /* it was not: this socket never redirects */

struct km_accel_sk {
	__u32 state;
};

/*
 * km_accel_ctl (array, one entry): user space's switch. PASS_ALL sends every
 * message through TCP/IP (uninstall sets it, then waits for readers to
 * drain what was redirected to them before it frees km_socks: the kernel
 * drops a socket's unread redirected bytes when it leaves the map).
 */
#define KM_ACCEL_CTL_PASS_ALL 1

struct km_accel_ctl {
	__u32 flags;
};

/* km_accel_stats (per-CPU, one entry): what the acceleration did. */
struct km_accel_stats {
	__u64 sockets;	   /* sockets added to km_socks */
	__u64 sock_errors; /* sockets that could not be added (map full, duplicate key) */
	__u64 redirected;  /* messages handed to the peer socket */
	__u64 passed;	   /* messages sent through TCP/IP: no peer, or no decision storage */
	__u64 not_local;   /* sockets not added: the peer is no address of an enrolled namespace here */
};

#endif /* __KMESH_TYPES_H__ */
