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

/*
 * km_services, km_clusters and km_slots are BPF_F_NO_PREALLOC. A connect
 * holds a pointer to the value it looked up while user space replaces or
 * deletes that element (batch loads, slot table shrinks). A preallocated hash
 * recycles the replaced element at once (the per-CPU extra element, the
 * freelist) without an RCU grace period, so the connect could read another
 * key's value. Without preallocation, 5.10 to 6.0 free the element only after
 * an RCU grace period (call_rcu), which closes that window. Since 6.1 the
 * elements come from bpf_mem_alloc, whose per-CPU free list hands a freed
 * element out again without waiting either: there the flag does not close
 * the window (no map flag does), it only allocates on demand. bpf_spin_lock
 * values (km_clusters) are allowed in such maps. Memory: bpf/README.md.
 */

/* (family, port, ip) -> service; ip all-zero is the per-port wildcard. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KM_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct km_addr);
	__type(value, struct km_service);
} km_services SEC(".maps");

/* cluster_id -> policy, slot count, round-robin cursor. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KM_MAX_CLUSTER_IDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct km_cluster);
} km_clusters SEC(".maps");

/* (cluster_id, slot) -> endpoint: the expanded weighted slot tables. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KM_MAX_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
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
