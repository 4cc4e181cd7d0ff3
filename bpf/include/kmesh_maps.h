/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps of the connect programs (connect.c). Names are stable: the daemon pins
 * them by name (daemon/maps). Sizes are documented in bpf/README.md.
 */
#ifndef __KMESH_MAPS_H__
#define __KMESH_MAPS_H__

#include <bpf/bpf_helpers.h>

#include "kmesh_features.h"
#include "kmesh_types.h"

#include "kmesh_enrolled.h"

/* (family, port, ip) -> service; ip all-zero is the per-port wildcard. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KM_MAX_SERVICES);
	__type(key, struct km_addr);
	__type(value, struct km_service);
} km_services SEC(".maps");

/* cluster_id -> policy, slot count, round-robin cursor. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KM_MAX_CLUSTER_IDS);
	__type(key, __u32);
	__type(value, struct km_cluster);
} km_clusters SEC(".maps");

/* (cluster_id, slot) -> endpoint: the expanded weighted slot tables. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KM_MAX_SLOTS);
	__type(key, struct km_slot_key);
	__type(value, struct km_addr);
} km_slots SEC(".maps");

/* service_id -> per-CPU counters. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KM_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct km_stats);
} km_svc_stats SEC(".maps");

/* cluster_id -> per-CPU counters. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KM_MAX_CLUSTER_IDS);
	__type(key, __u32);
	__type(value, struct km_stats);
} km_clust_stats SEC(".maps");

#if KMESH_HAVE_SK_STORAGE
/* socket -> original destination (user space looks it up by socket fd). */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct km_orig_dst);
} km_orig_dst SEC(".maps");
#endif

#endif /* __KMESH_MAPS_H__ */
