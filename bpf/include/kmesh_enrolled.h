/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * km_enrolled, the one map every object shares (the loader hands the same
 * map to each by name): the network namespaces kmesh acts on.
 */
#ifndef __KMESH_ENROLLED_H__
#define __KMESH_ENROLLED_H__

#include <bpf/bpf_helpers.h>

#include "kmesh_types.h"

/* netns cookie -> flags (reserved, 0). Presence enrolls the namespace. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KM_MAX_ENROLLED_NETNS);
	__type(key, __u64);
	__type(value, __u32);
} km_enrolled SEC(".maps");

#endif /* __KMESH_ENROLLED_H__ */
