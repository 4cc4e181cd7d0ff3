/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The kernel's BPF UAPI types, from one of two sources chosen by the builder
 * (KMESH_USE_VMLINUX_H in the generated kmesh_features.h):
 *   0: the host's linux/bpf.h (mapped into the container) and linux/types.h;
 *   1: vmlinux.h, the UAPI types kmesh uses taken from the running kernel's
 *      BTF (builder/uapi.go lists them), when the host's bpf.h is missing,
 *      unparsable or belongs to another kernel.
 */
#ifndef KMESH_UAPI_H
#define KMESH_UAPI_H

#include "kmesh_features.h"

#if defined(KMESH_USE_VMLINUX_H) && KMESH_USE_VMLINUX_H
#include "vmlinux.h"
#else
#include <linux/types.h>
#include <linux/bpf.h>
#endif

#endif /* KMESH_UAPI_H */
