/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kernel API differences between the supported kernels (5.10, 6.1, 6.12).
 * Every version check of the module lives here.
 */
#ifndef KMESH_COMPAT_H
#define KMESH_COMPAT_H

#include <linux/uio.h>
#include <linux/version.h>
#include <net/inet_sock.h>
#include <net/sock.h>

/*
 * inet->defer_connect (the TCP Fast Open "connect on first write" bit) moved
 * from a bitfield of struct inet_sock into inet->inet_flags in 6.6.
 * Callers hold the socket lock.
 */
static inline bool kmesh_defer_bit(const struct sock *sk)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
	return inet_test_bit(DEFER_CONNECT, sk);
#else
	return inet_sk(sk)->defer_connect;
#endif
}

static inline void kmesh_set_defer_bit(struct sock *sk, bool on)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
	if (on)
		inet_set_bit(DEFER_CONNECT, sk);
	else
		inet_clear_bit(DEFER_CONNECT, sk);
#else
	inet_sk(sk)->defer_connect = on;
#endif
}

/*
 * inet_sk_state_store() is not exported; this is its body without the
 * inet_sock_set_state tracepoint (the deferred window is not a real TCP
 * state transition, so tracers should not see one).
 */
static inline void kmesh_state_store(struct sock *sk, int state)
{
	smp_store_release(&sk->sk_state, state);
}

/* ITER_UBUF (single user buffer) exists since 6.0. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 0, 0)
#define KMESH_HAVE_ITER_UBUF 1
#endif

/* The current iovec of an ITER_IOVEC iterator: ->iov became ->__iov in 6.4. */
static inline const struct iovec *kmesh_iter_iov(const struct iov_iter *i)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
	return iter_iov(i);
#else
	return i->iov;
#endif
}

/* proto->recvmsg lost its "noblock" argument in 5.19. */
#if LINUX_VERSION_CODE < KERNEL_VERSION(5, 19, 0)
#define KMESH_RECVMSG_HAS_NOBLOCK 1
#endif

/* proto->sendpage was removed in 6.5 (splice goes through sendmsg). */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 5, 0)
#define KMESH_HAVE_SENDPAGE 1
#endif

#endif /* KMESH_COMPAT_H */
