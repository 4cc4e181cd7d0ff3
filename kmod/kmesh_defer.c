// SPDX-License-Identifier: GPL-2.0
/*
 * kmesh_defer: a TCP ULP that defers connect(2) until the first I/O.
 *
 * A socket that gets the ULP (setsockopt(SOL_TCP, TCP_ULP, "kmesh_defer")
 * before connect) has its struct proto switched to a copy of tcp_prot /
 * tcpv6_prot whose connect, disconnect, sendmsg, recvmsg (and sendpage
 * before 6.5) are ours:
 *
 *  connect(2)   stores the destination in the per-socket context, marks the
 *               socket the way the kernel marks an active TCP Fast Open
 *               socket with "defer_connect" (state SYN_SENT + defer bit),
 *               and returns 0 without a route lookup, a port or a SYN.
 *               Because of the defer bit, inet_stream_connect() returns 0
 *               for blocking and non-blocking sockets alike and tcp_poll()
 *               reports EPOLLOUT, so the application goes on to write.
 *  first send   copies the first bytes to kernel memory, asks the hook
 *               kmesh_defer_pick_dest() (kmesh_hook.c) where to go, puts
 *               the socket back to a fresh CLOSE socket with the stock
 *               proto, and runs the stock connect (tcp_v4_connect /
 *               tcp_v6_connect) to the chosen address. The data then goes
 *               through the stock tcp_sendmsg, which waits for the
 *               handshake (blocking, honours SO_SNDTIMEO), returns EAGAIN
 *               (non-blocking), or returns the connect error (for example
 *               ECONNREFUSED), exactly as on a normally connecting socket.
 *  recv first   (server-speaks-first protocols) connects to the original
 *               destination without data and then receives.
 *  disconnect   (connect(AF_UNSPEC), shutdown, close with zero linger)
 *               drops the pending destination silently: nothing was sent.
 *
 * After the real connect the socket uses the stock proto again, so the data
 * path costs nothing. The ULP itself stays attached until the socket is
 * destroyed: it holds a reference on this module (tcp_ulp_ops.owner), so
 * rmmod is refused while any socket uses it, and ->release puts the stock
 * proto back before that reference is dropped.
 */

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#include <net/inet_connection_sock.h>
#include <net/inet_sock.h>
#include <net/sock.h>
#include <net/tcp.h>
#if IS_ENABLED(CONFIG_IPV6)
#include <net/ipv6.h>
#include <net/transp_v6.h>
#endif

#include "kmesh_compat.h"
#include "kmesh_defer.h"

enum { KD_V4, KD_V6, KD_NPROTO };

/* Copies of tcp_prot / tcpv6_prot with our operations; built at init. */
static struct proto kd_prot[KD_NPROTO];

/* Per-socket state, in icsk_ulp_data; freed by ->release. */
struct kd_ctx {
	struct proto *orig;          /* tcp_prot or tcpv6_prot */
	struct sockaddr_storage dst; /* destination given to connect(2) */
	int addrlen;
	bool pending;                /* connect deferred, not yet performed */
};

static inline struct kd_ctx *kd_ctx(const struct sock *sk)
{
	return (__force struct kd_ctx *)inet_csk(sk)->icsk_ulp_data;
}

/*
 * Put the stock proto back, but only over ours: once restored, the kernel
 * may legitimately switch protos itself (IPV6_ADDRFORM moves an
 * established v4-mapped AF_INET6 socket to tcp_prot).
 */
static void kd_restore_proto(struct sock *sk, const struct kd_ctx *ctx)
{
	const struct proto *cur = READ_ONCE(sk->sk_prot);

	if (cur == &kd_prot[KD_V4] || cur == &kd_prot[KD_V6])
		WRITE_ONCE(sk->sk_prot, ctx->orig);
}

/* The same up-front checks tcp_v4_connect / tcp_v6_connect make. */
static int kd_check_addr(const struct sock *sk, const struct sockaddr *uaddr,
			 int addr_len)
{
	if (sk->sk_family == AF_INET) {
		if (addr_len < (int)sizeof(struct sockaddr_in))
			return -EINVAL;
		if (uaddr->sa_family != AF_INET)
			return -EAFNOSUPPORT;
		return 0;
	}
#if IS_ENABLED(CONFIG_IPV6)
	if (sk->sk_family == AF_INET6) {
		if (addr_len < SIN6_LEN_RFC2133)
			return -EINVAL;
		if (uaddr->sa_family != AF_INET6)
			return -EAFNOSUPPORT;
		return 0;
	}
#endif
	return -EAFNOSUPPORT;
}

/*
 * Copy up to @cap bytes of the pending send into @buf without consuming the
 * iterator (the real send consumes msg->msg_iter afterwards).
 */
static size_t kd_peek(const struct msghdr *msg, u8 *buf, size_t cap,
		      enum kmesh_defer_iter *kind)
{
	const struct iov_iter *from = &msg->msg_iter;
	size_t want = min(cap, iov_iter_count(from));
	size_t got = 0;

	*kind = KMESH_DEFER_ITER_NONE;
	if (!want)
		return 0;

	if (iter_is_iovec(from)) {
		const struct iovec *iov = kmesh_iter_iov(from);
		size_t off = from->iov_offset;
		unsigned long seg;

		*kind = KMESH_DEFER_ITER_IOVEC;
		for (seg = 0; seg < from->nr_segs && got < want; seg++) {
			size_t n;

			if (iov[seg].iov_len <= off) {
				off -= iov[seg].iov_len;
				continue;
			}
			n = min(iov[seg].iov_len - off, want - got);
			if (copy_from_user(buf + got,
					   (const u8 __user *)iov[seg].iov_base + off, n))
				break;
			got += n;
			off = 0;
		}
		return got;
	}
#ifdef KMESH_HAVE_ITER_UBUF
	if (iter_is_ubuf(from)) {
		*kind = KMESH_DEFER_ITER_UBUF;
		if (copy_from_user(buf, (const u8 __user *)from->ubuf + from->iov_offset,
				   want))
			return 0;
		return want;
	}
#endif
	{
		/* kvec / bvec (kernel senders, splice in 6.5+): a private copy. */
		struct iov_iter it = *from;

		*kind = KMESH_DEFER_ITER_OTHER;
		return copy_from_iter(buf, want, &it);
	}
}

static void kd_count_iter(enum kmesh_defer_iter kind)
{
	switch (kind) {
	case KMESH_DEFER_ITER_IOVEC:
		atomic_long_inc(&kmesh_defer_stats.iter_iovec);
		break;
	case KMESH_DEFER_ITER_UBUF:
		atomic_long_inc(&kmesh_defer_stats.iter_ubuf);
		break;
	default:
		atomic_long_inc(&kmesh_defer_stats.iter_other);
		break;
	}
}

/*
 * Perform the deferred connect. Socket locked, ctx->pending set.
 * @msg is the first send (NULL when triggered by recv or sendpage).
 * Returns 0 when the connect was started (the SYN is out, or TCP Fast Open
 * took over), or the synchronous connect error, which the caller returns
 * from the send/recv; the socket is then unconnected, as after a failed
 * connect(2).
 */
static int kd_connect_now(struct sock *sk, struct kd_ctx *ctx,
			  struct msghdr *msg, enum kmesh_defer_trigger trigger)
{
	struct sockaddr_storage dst = ctx->dst;
	int addrlen = ctx->addrlen;
	struct kmesh_defer_req req = {
		.sk = sk,
		.dst = &dst,
		.addrlen = &addrlen,
		.trigger = trigger,
		.iter = KMESH_DEFER_ITER_NONE,
	};
	u8 *buf = NULL;
	int err;

	if (msg) {
		req.total = iov_iter_count(&msg->msg_iter);
		if (req.total)
			buf = kmalloc(KMESH_DEFER_PEEK_MAX, GFP_KERNEL | __GFP_NOWARN);
		if (buf) {
			req.len = kd_peek(msg, buf, KMESH_DEFER_PEEK_MAX, &req.iter);
			req.data = buf;
		}
		kd_count_iter(req.iter);
	}
	if (trigger == KMESH_DEFER_TRIGGER_RECV)
		atomic_long_inc(&kmesh_defer_stats.recv_trigger);

	err = kmesh_defer_pick_dest(&req);
	kfree(buf);
	if (!err && (addrlen < (int)sizeof(sa_family_t) || addrlen > (int)sizeof(dst) ||
		     dst.ss_family != ctx->dst.ss_family))
		err = -EINVAL; /* a hook must keep the socket's family */

	/* Back to a fresh, unconnected socket with the stock proto. */
	ctx->pending = false;
	kmesh_set_defer_bit(sk, false);
	kmesh_state_store(sk, TCP_CLOSE);
	kd_restore_proto(sk, ctx);

	if (!err)
		err = ctx->orig->connect(sk, (struct sockaddr *)&dst, addrlen);
	if (err) {
		if (sk->sk_state != TCP_CLOSE)
			tcp_set_state(sk, TCP_CLOSE);
		if (sk->sk_socket)
			sk->sk_socket->state = SS_UNCONNECTED;
		atomic_long_inc(&kmesh_defer_stats.connect_errors);
		return err;
	}
	atomic_long_inc(&kmesh_defer_stats.connected);
	return 0;
}

/* proto->connect: called by __inet_stream_connect with the socket locked. */
static int kd_connect(struct sock *sk, struct sockaddr *uaddr, int addr_len)
{
	struct kd_ctx *ctx = kd_ctx(sk);
	int err;

	/*
	 * sendto(MSG_FASTOPEN) connects from inside tcp_sendmsg: that is TCP
	 * Fast Open's own deferral, not ours.
	 */
	if (tcp_sk(sk)->fastopen_req)
		return ctx->orig->connect(sk, uaddr, addr_len);

	err = kd_check_addr(sk, uaddr, addr_len);
	if (err)
		return err;

	memset(&ctx->dst, 0, sizeof(ctx->dst));
	ctx->addrlen = min_t(int, addr_len, sizeof(ctx->dst));
	memcpy(&ctx->dst, uaddr, ctx->addrlen);
	ctx->pending = true;

	/*
	 * Look like an active Fast Open socket that defers its SYN: SYN_SENT
	 * plus the defer bit. The socket is not hashed and has no port, so no
	 * packet can reach it; tcp_poll() reports EPOLLOUT; close() in this
	 * state sends nothing.
	 */
	kmesh_set_defer_bit(sk, true);
	kmesh_state_store(sk, TCP_SYN_SENT);
	atomic_long_inc(&kmesh_defer_stats.deferred);
	return 0;
}

/* proto->disconnect: socket locked (connect AF_UNSPEC, shutdown, linger 0). */
static int kd_disconnect(struct sock *sk, int flags)
{
	struct kd_ctx *ctx = kd_ctx(sk);

	if (ctx->pending) {
		/* Nothing was ever sent: forget the destination, no reset, no error. */
		ctx->pending = false;
		kmesh_set_defer_bit(sk, false);
		kmesh_state_store(sk, TCP_CLOSE);
	}
	return ctx->orig->disconnect(sk, flags);
}

/* Connect now if still pending; returns the connect error or 0. */
static int kd_trigger(struct sock *sk, struct msghdr *msg,
		      enum kmesh_defer_trigger trigger)
{
	struct kd_ctx *ctx = kd_ctx(sk);
	int err = 0;

	lock_sock(sk);
	if (ctx->pending)
		err = kd_connect_now(sk, ctx, msg, trigger);
	release_sock(sk);
	return err;
}

static int kd_sendmsg(struct sock *sk, struct msghdr *msg, size_t size)
{
	int err = kd_trigger(sk, msg, KMESH_DEFER_TRIGGER_SEND);

	if (err)
		return err;
	/* The connect already happened: do not start a Fast Open on top. */
	msg->msg_flags &= ~MSG_FASTOPEN;
	return kd_ctx(sk)->orig->sendmsg(sk, msg, size);
}

#ifdef KMESH_RECVMSG_HAS_NOBLOCK
static int kd_recvmsg(struct sock *sk, struct msghdr *msg, size_t len,
		      int noblock, int flags, int *addr_len)
{
	if (!(flags & MSG_ERRQUEUE)) {
		int err = kd_trigger(sk, NULL, KMESH_DEFER_TRIGGER_RECV);

		if (err)
			return err;
	}
	return kd_ctx(sk)->orig->recvmsg(sk, msg, len, noblock, flags, addr_len);
}
#else
static int kd_recvmsg(struct sock *sk, struct msghdr *msg, size_t len,
		      int flags, int *addr_len)
{
	if (!(flags & MSG_ERRQUEUE)) {
		int err = kd_trigger(sk, NULL, KMESH_DEFER_TRIGGER_RECV);

		if (err)
			return err;
	}
	return kd_ctx(sk)->orig->recvmsg(sk, msg, len, flags, addr_len);
}
#endif

#ifdef KMESH_HAVE_SENDPAGE
static int kd_sendpage(struct sock *sk, struct page *page, int offset,
		       size_t size, int flags)
{
	int err = kd_trigger(sk, NULL, KMESH_DEFER_TRIGGER_SENDPAGE);

	if (err)
		return err;
	return kd_ctx(sk)->orig->sendpage(sk, page, offset, size, flags);
}
#endif

static int kd_ulp_init(struct sock *sk)
{
	struct proto *prot;
	struct kd_ctx *ctx;

	/* Only the stock TCP protos: not sockmap's, MPTCP's or another ULP's. */
	if (sk->sk_family == AF_INET && sk->sk_prot == &tcp_prot)
		prot = &kd_prot[KD_V4];
#if IS_ENABLED(CONFIG_IPV6)
	else if (sk->sk_family == AF_INET6 && sk->sk_prot == &tcpv6_prot)
		prot = &kd_prot[KD_V6];
#endif
	else
		return -EOPNOTSUPP;

	/* Deferral only means something before connect(2). */
	if (sk->sk_state != TCP_CLOSE ||
	    (sk->sk_socket && sk->sk_socket->state != SS_UNCONNECTED))
		return -EISCONN;

	/* May run from BPF (bpf_setsockopt) in atomic context. */
	ctx = kzalloc(sizeof(*ctx), GFP_ATOMIC);
	if (!ctx)
		return -ENOMEM;
	ctx->orig = sk->sk_prot;
	rcu_assign_pointer(inet_csk(sk)->icsk_ulp_data, ctx);
	WRITE_ONCE(sk->sk_prot, prot);
	atomic_long_inc(&kmesh_defer_stats.active);
	return 0;
}

/*
 * Called from tcp_cleanup_ulp() when the socket is destroyed, before the
 * module reference is dropped: put the stock proto back so nothing of this
 * module is reachable from the socket afterwards.
 */
static void kd_ulp_release(struct sock *sk)
{
	struct kd_ctx *ctx = kd_ctx(sk);

	if (!ctx)
		return;
	kd_restore_proto(sk, ctx);
	rcu_assign_pointer(inet_csk(sk)->icsk_ulp_data, NULL);
	kfree(ctx);
	atomic_long_dec(&kmesh_defer_stats.active);
}

static struct tcp_ulp_ops kd_ulp_ops __read_mostly = {
	.name = KMESH_DEFER_ULP_NAME,
	.owner = THIS_MODULE,
	.init = kd_ulp_init,
	.release = kd_ulp_release,
	/* No .clone: the kernel refuses listen() on a socket with this ULP. */
};

static void kd_build_proto(struct proto *p, const struct proto *base)
{
	*p = *base;
	p->connect = kd_connect;
	p->disconnect = kd_disconnect;
	p->sendmsg = kd_sendmsg;
	p->recvmsg = kd_recvmsg;
#ifdef KMESH_HAVE_SENDPAGE
	p->sendpage = kd_sendpage;
#endif
}

int kmesh_defer_init(void)
{
	kd_build_proto(&kd_prot[KD_V4], &tcp_prot);
#if IS_ENABLED(CONFIG_IPV6)
	kd_build_proto(&kd_prot[KD_V6], &tcpv6_prot);
#endif
	return tcp_register_ulp(&kd_ulp_ops);
}

void kmesh_defer_exit(void)
{
	tcp_unregister_ulp(&kd_ulp_ops);
}

MODULE_ALIAS_TCP_ULP(KMESH_DEFER_ULP_NAME);
