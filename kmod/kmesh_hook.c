// SPDX-License-Identifier: GPL-2.0
/*
 * The destination decision hook point of kmesh_defer.
 *
 * kmesh_defer_pick_dest() runs once per deferred socket, at its first send
 * (or first recv), with the socket locked, before the real connect. It sees
 * the destination the application connected to (after any cgroup
 * connect4/connect6 BPF rewrite) and a kernel copy of the first bytes the
 * application sends (for example an HTTP request line and headers), and may
 * rewrite the destination in place.
 *
 * This is where the L7 decision will plug in: run a BPF program over
 * req->data (a struct_ops, or a kfunc-visible program type chosen by the
 * L7 work) and write its verdict to *req->dst. Contract:
 *   - return 0 to connect to *req->dst (changed or not);
 *   - return a negative errno to fail the send (the socket is then
 *     unconnected, as after a failed connect(2)); -ECONNREFUSED and
 *     -ENETUNREACH read naturally to applications;
 *   - keep req->dst's family (AF_INET for AF_INET sockets; AF_INET6, possibly
 *     v4-mapped, for AF_INET6 sockets) and set *req->addrlen accordingly;
 *   - do not sleep for long: the application's send is waiting; the socket
 *     lock is held (process context, may sleep briefly, e.g. GFP_KERNEL).
 *
 * Today the body only has a test hook: with the module parameters
 * test_dport_from/test_dport_to set (both non-zero), a connect to port
 * test_dport_from is sent to test_dport_to instead. vmtest uses it to prove
 * that the destination is decided at first send.
 *
 * noinline so the hook point stays a traceable symbol.
 */

#include <linux/in.h>
#include <linux/in6.h>
#include <linux/kernel.h>
#include <net/sock.h>

#include "kmesh_defer.h"

static __be16 *kd_dport(struct sockaddr_storage *dst)
{
	switch (dst->ss_family) {
	case AF_INET:
		return &((struct sockaddr_in *)dst)->sin_port;
	case AF_INET6:
		return &((struct sockaddr_in6 *)dst)->sin6_port;
	}
	return NULL;
}

noinline int kmesh_defer_pick_dest(struct kmesh_defer_req *req)
{
	unsigned short from = READ_ONCE(kmesh_test_dport_from);
	unsigned short to = READ_ONCE(kmesh_test_dport_to);
	__be16 *port;

	if (!from || !to)
		return 0;
	port = kd_dport(req->dst);
	if (port && *port == htons(from)) {
		*port = htons(to);
		atomic_long_inc(&kmesh_defer_stats.rewrites);
	}
	return 0;
}
