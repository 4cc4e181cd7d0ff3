/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kmesh.ko: deferred connect for TCP sockets ("kmesh_defer" ULP).
 *
 * Shared declarations between the ULP (kmesh_defer.c), the destination
 * decision hook point (kmesh_hook.c) and module glue (kmesh_main.c).
 */
#ifndef KMESH_DEFER_H
#define KMESH_DEFER_H

#include <linux/atomic.h>
#include <linux/socket.h>
#include <linux/types.h>
#include <linux/version.h>

#define KMESH_KO_VERSION "0.1.0"
#define KMESH_DEFER_ULP_NAME "kmesh_defer"

/* Bytes of the first send copied to kernel memory for the hook. */
#define KMESH_DEFER_PEEK_MAX 512

struct sock;

/* What made the deferred connect happen. */
enum kmesh_defer_trigger {
	KMESH_DEFER_TRIGGER_SEND,     /* sendmsg/write/writev/sendto/splice (6.5+) */
	KMESH_DEFER_TRIGGER_RECV,     /* recvmsg/read before any send: no data */
	KMESH_DEFER_TRIGGER_SENDPAGE, /* sendfile/splice on kernels < 6.5: no data */
};

/* Which iov_iter flavour carried the first send. */
enum kmesh_defer_iter {
	KMESH_DEFER_ITER_NONE,  /* no data (recv/sendpage trigger, or empty send) */
	KMESH_DEFER_ITER_IOVEC, /* ITER_IOVEC: writev/sendmsg (and send/write before 6.0) */
	KMESH_DEFER_ITER_UBUF,  /* ITER_UBUF (6.0+): write(2), send(2) on newer kernels */
	KMESH_DEFER_ITER_OTHER, /* kernel iterators (kvec, bvec) */
};

/*
 * struct kmesh_defer_req - input/output of the destination decision.
 * @sk:       the socket, locked (lock_sock) by the caller.
 * @dst:      in: the address the application gave connect(2) (after any
 *            cgroup connect4/6 BPF rewrite); out: where to really connect.
 * @addrlen:  in/out: length of *@dst (sizeof(sockaddr_in) or
 *            sizeof(sockaddr_in6)); the family must stay the socket's own
 *            (an AF_INET6 socket may use a v4-mapped address).
 * @data:     kernel copy of the first @len bytes of the first send, or NULL.
 * @len:      number of bytes in @data (at most KMESH_DEFER_PEEK_MAX).
 * @total:    full size of the first send (0 for recv/sendpage triggers).
 * @trigger:  what triggered the connect.
 * @iter:     iterator flavour of the first send.
 */
struct kmesh_defer_req {
	struct sock *sk;
	struct sockaddr_storage *dst;
	int *addrlen;
	const u8 *data;
	size_t len;
	size_t total;
	enum kmesh_defer_trigger trigger;
	enum kmesh_defer_iter iter;
};

int kmesh_defer_pick_dest(struct kmesh_defer_req *req);

/* Counters, exported read-only as module parameters (kmesh_main.c). */
struct kmesh_defer_stats {
	atomic_long_t active;         /* sockets holding the ULP now */
	atomic_long_t deferred;       /* connect(2) calls deferred */
	atomic_long_t connected;      /* deferred connects really started */
	atomic_long_t connect_errors; /* deferred connects failed synchronously */
	atomic_long_t iter_iovec;     /* first sends by ITER_IOVEC */
	atomic_long_t iter_ubuf;      /* first sends by ITER_UBUF */
	atomic_long_t iter_other;     /* first sends by other iterators / no data */
	atomic_long_t recv_trigger;   /* deferred connects triggered by recv */
	atomic_long_t rewrites;       /* destinations changed by the hook */
};

extern struct kmesh_defer_stats kmesh_defer_stats;

/* Test-only destination rewrite (kmesh_main.c parameters, 0 = off). */
extern unsigned short kmesh_test_dport_from;
extern unsigned short kmesh_test_dport_to;

int kmesh_defer_init(void);
void kmesh_defer_exit(void);

#endif /* KMESH_DEFER_H */
