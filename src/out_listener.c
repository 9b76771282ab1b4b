/*
 * The Listener output: one connection to a multiprocessing.connection
 * Listener, authenticated both ways (src/wire.c), each event one framed
 * pickle or JSON message (doc/events.md, "The connection").
 */
#include <sys/socket.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "ldapfeed.h"

#define CONNECT_TIMEOUT_MS	10000
#define CLOSE_WAIT_MS		10000	/* for the consumer's close at the end */
#define OUT_HIGH_WATER		(1 << 20)	/* full above */

struct listener {
	struct output	 out;
	int		 sock;
	struct queue	 q;	/* frames not yet sent */
};


/*
 * Connect within CONNECT_TIMEOUT_MS.  A unix socket whose listen queue is
 * full (Python's Listener uses a backlog of 1, and W workers connect at
 * once) fails with EAGAIN without connecting: try again shortly.
 */
static int
connect_consumer(const struct config *cfg, int *fdp)
{
	struct pollfd	 pfd;
	socklen_t	 len;
	long		 deadline = clock_ms() + CONNECT_TIMEOUT_MS, left;
	int		 fd, err, r, pause_ms = 5;

	for (;;) {
		fd = socket(cfg->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC |
		    SOCK_NONBLOCK, 0);
		if (fd == -1)
			return -1;
		if (connect(fd, (const struct sockaddr *)&cfg->addr,
		    cfg->addrlen) == 0)
			break;
		err = errno;
		if (err == EAGAIN && cfg->addr.ss_family == AF_UNIX &&
		    (left = deadline - clock_ms()) > 0 && !sig_term) {
			close(fd);
			poll(NULL, 0, pause_ms < left ? pause_ms : (int)left);
			pause_ms = pause_ms < 200 ? pause_ms * 2 : 200;
			continue;
		}
		if (err != EINPROGRESS) {
			close(fd);
			errno = err == EAGAIN ? ETIMEDOUT : err;
			return -1;
		}
		pfd.fd = fd;
		pfd.events = POLLOUT;
		while ((r = poll(&pfd, 1, (int)(deadline - clock_ms()))) == -1 &&
		    errno == EINTR && !sig_term)
			;
		if (r <= 0) {
			close(fd);
			errno = r == 0 ? ETIMEDOUT : EINTR;
			return -1;
		}
		len = sizeof(err);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 ||
		    err != 0) {
			close(fd);
			errno = err;
			return -1;
		}
		break;
	}
	*fdp = fd;
	return 0;
}

static int
listener_open(struct output *o, char *why, size_t whylen)
{
	struct listener		*l = (struct listener *)o;
	const struct config	*cfg = o->ctx->cfg;
	struct span		 key = { cfg->key.data, cfg->key.len };
	char			 reason[256];
	int			 r;

	if (connect_consumer(cfg, &l->sock) == -1) {
		snprintf(why, whylen, "consumer %s: %s", cfg->output,
		    strerror(errno));
		return EX_UNAVAILABLE;
	}
	if ((r = wire_answer_challenge(l->sock, key, CONNECT_TIMEOUT_MS,
	    reason, sizeof(reason))) == 0)
		r = wire_deliver_challenge(l->sock, key, CONNECT_TIMEOUT_MS,
		    reason, sizeof(reason));
	if (r == WIRE_REFUSED) {
		snprintf(why, whylen, "consumer %s: %s", cfg->output, reason);
		return EX_NOPERM;
	}
	if (r != 0) {
		snprintf(why, whylen, "consumer %s: handshake failed: %s",
		    cfg->output, strerror(errno));
		return EX_UNAVAILABLE;
	}
	return 0;
}

/* Frame one event straight into the output queue. */
static int
listener_send(struct output *o, const struct event *ev)
{
	struct listener	*l = (struct listener *)o;
	struct buf	*b = &l->q.b;
	unsigned char	 hdr[WIRE_MAX_HEADER];
	size_t		 start, len, hlen;

	start = b->len;
	buf_add(b, "\0\0\0\0", 4);
	encode_event(b, ev, o->ctx->cfg->format);
	len = b->len - start - 4;
	hlen = wire_frame_header(hdr, len);
	if (hlen != 4) {	/* a 2 GiB payload: make room for the long form */
		buf_reserve(b, hlen - 4);
		memmove(b->data + start + hlen, b->data + start + 4, len);
		b->len += hlen - 4;
	}
	memcpy(b->data + start, hdr, hlen);
	return 0;
}

static int
listener_full(const struct output *o)
{
	const struct listener	*l = (const struct listener *)o;

	return queue_len(&l->q) >= OUT_HIGH_WATER;
}

static void
listener_wait(struct output *o, struct pollfd *pfd, int *timeout)
{
	struct listener	*l = (struct listener *)o;

	pfd->fd = l->sock;
	pfd->events = POLLIN | (queue_len(&l->q) ? POLLOUT : 0);
	*timeout = -1;
}

/* The consumer never speaks after the handshake: readable means gone. */
static int
consumer_gone(struct listener *l)
{
	char	 junk[512];
	ssize_t	 n;

	n = recv(l->sock, junk, sizeof(junk), MSG_DONTWAIT);
	if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR))
		return 1;
	return 0;
}

static int
listener_work(struct output *o, const struct pollfd *pfd)
{
	struct listener	*l = (struct listener *)o;
	ssize_t		 n;

	if ((pfd->revents & (POLLIN | POLLHUP | POLLERR)) && consumer_gone(l)) {
		o->ctx->stats->connected = 0;
		log_warnx("the consumer closed the connection");
		return -1;
	}
	if (!(pfd->revents & POLLOUT) || queue_len(&l->q) == 0)
		return 0;
	n = send(l->sock, queue_data(&l->q), queue_len(&l->q), MSG_NOSIGNAL);
	if (n == -1 && errno != EINTR && errno != EAGAIN) {
		log_warn("sending to the consumer");
		return -1;
	}
	if (n > 0) {
		queue_drop(&l->q, (size_t)n);
		o->ctx->stats->sent_bytes += (uint64_t)n;
	}
	return 0;
}

/*
 * The last bytes may still sit in the kernel's buffers, unread, when the
 * queue is empty.  A multiprocessing.connection consumer sees EOF once it
 * has read everything, and closes its end (recv() raises EOFError): shut
 * the write side down and wait, bounded, for that close; only then has
 * the consumer read the last event (doc/safety.md, "The last event
 * read").  Whatever it sends meanwhile is thrown away, as always.
 */
static int
listener_finish(struct output *o)
{
	struct listener	*l = (struct listener *)o;
	struct pollfd	 pfd;
	char		 junk[512];
	int64_t		 deadline = clock_ms() + CLOSE_WAIT_MS, left;
	ssize_t		 n;
	int		 r;

	if (shutdown(l->sock, SHUT_WR) == -1) {
		log_warn("shutting the consumer connection down");
		return -1;
	}
	while ((left = deadline - clock_ms()) > 0) {
		pfd.fd = l->sock;
		pfd.events = POLLIN;
		if ((r = poll(&pfd, 1, (int)left)) == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n = recv(l->sock, junk, sizeof(junk), MSG_DONTWAIT);
		if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR))
			return 0;
	}
	log_warnx("the consumer did not close its end within %d s after "
	    "the last event: it may not have read them all, so no marker "
	    "(the next start reloads)", CLOSE_WAIT_MS / 1000);
	return -1;
}

static size_t
listener_pending(const struct output *o)
{
	const struct listener	*l = (const struct listener *)o;

	return queue_len(&l->q);
}

static void
listener_close(struct output *o)
{
	struct listener	*l = (struct listener *)o;

	if (l->sock != -1)
		close(l->sock);
	buf_free(&l->q.b);
	free(l);
}

static const struct output_ops listener_ops = {
	listener_open,
	listener_send,
	listener_full,
	listener_wait,
	listener_work,
	listener_pending,
	listener_close,
	listener_finish
};

struct output *
out_listener_new(const struct child_ctx *ctx)
{
	struct listener	*l;

	l = xcalloc(1, sizeof(*l));
	l->out.ops = &listener_ops;
	l->out.ctx = ctx;
	l->sock = -1;
	return &l->out;
}
