/*
 * A worker: one connection to the consumer.  It connects and authenticates,
 * meets the others at the barrier, then turns the reader's records into
 * framed pickle or JSON messages until its pipe ends, and drains.
 */
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "ldapfeed.h"

#define CONNECT_TIMEOUT_MS	10000
#define OUT_HIGH_WATER		(1 << 20)	/* stop reading the pipe above */
#define PIPE_CHUNK		(256 * 1024)

struct worker {
	const struct child_ctx	*ctx;
	int			 sock;
	int			 pipe_fd;
	int			 pipe_eof;
	struct buf		 in;	/* records from the reader */
	struct queue		 out;	/* frames for the consumer */
	uint64_t		 sent;
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

/* Frame one event straight into the output buffer. */
static void
frame_event(struct worker *w, struct event *ev)
{
	unsigned char	 hdr[WIRE_MAX_HEADER];
	size_t		 start, len, hlen;

	start = w->out.b.len;
	buf_add(&w->out.b, "\0\0\0\0", 4);
	encode_event(&w->out.b, ev, w->ctx->cfg->format);
	len = w->out.b.len - start - 4;
	hlen = wire_frame_header(hdr, len);
	if (hlen != 4) {	/* a 2 GiB payload: make room for the long form */
		buf_reserve(&w->out.b, hlen - 4);
		memmove(w->out.b.data + start + hlen, w->out.b.data + start + 4,
		    len);
		w->out.b.len += hlen - 4;
	}
	memcpy(w->out.b.data + start, hdr, hlen);
	w->sent++;
	w->ctx->stats->messages++;
	w->ctx->stats->events[ev->type]++;
}

static int
take_records(struct worker *w)
{
	struct event	 ev;
	struct span	 rec;
	size_t		 n, off = 0;

	while (queue_len(&w->out) < OUT_HIGH_WATER) {
		struct buf	 view = { w->in.data + off, w->in.len - off, 0 };

		if ((n = pipe_record_complete(&view)) == 0)
			break;
		rec.p = w->in.data + off;
		rec.len = n;
		if (pipe_record_decode(rec, &ev) == -1) {
			log_warnx("malformed record from the reader");
			return -1;
		}
		if (ev.type == EV_HELLO) {
			ev.worker = (int)w->ctx->index;
			ev.workers = (int)w->ctx->workers;
		}
		frame_event(w, &ev);
		off += n;
	}
	buf_consume(&w->in, off);
	return 0;
}

static int
read_pipe(struct worker *w)
{
	ssize_t	 n;

	buf_reserve(&w->in, PIPE_CHUNK);
	n = read(w->pipe_fd, w->in.data + w->in.len, w->in.cap - w->in.len);
	if (n == -1)
		return errno == EINTR || errno == EAGAIN ? 0 : -1;
	if (n == 0) {
		w->pipe_eof = 1;
		return 0;
	}
	w->in.len += (size_t)n;
	return 0;
}

static int
write_out(struct worker *w)
{
	ssize_t	 n;

	n = send(w->sock, queue_data(&w->out), queue_len(&w->out),
	    MSG_NOSIGNAL);
	if (n == -1)
		return errno == EINTR || errno == EAGAIN ? 0 : -1;
	queue_drop(&w->out, (size_t)n);
	return 0;
}

/* The consumer never speaks after the handshake: readable means gone. */
static int
consumer_gone(struct worker *w)
{
	char	 junk[512];
	ssize_t	 n;

	n = recv(w->sock, junk, sizeof(junk), MSG_DONTWAIT);
	if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR))
		return 1;
	return 0;
}

/* What is still on its way: in the pipe, read, or framed but unsent. */
static void
update_queue(struct worker *w)
{
	int	 inpipe = 0;

	if (!w->pipe_eof)
		(void)ioctl(w->pipe_fd, FIONREAD, &inpipe);
	w->ctx->stats->queue = (uint64_t)inpipe + w->in.len +
	    queue_len(&w->out);
}

static int
run(struct worker *w)
{
	struct pollfd	 pfd[3];
	int		 asked = 0, r;

	for (;;) {
		if (sig_term && !asked) {
			/* Ask for an orderly stop; keep draining meanwhile. */
			child_ask_shutdown(w->ctx);
			asked = 1;
		}
		if (take_records(w) == -1)
			return EX_SOFTWARE;
		if (w->pipe_eof && queue_len(&w->out) == 0 && w->in.len == 0)
			return 0;
		if (w->pipe_eof && w->in.len != 0 && queue_len(&w->out) == 0 &&
		    pipe_record_complete(&w->in) == 0) {
			log_warnx("the reader's last record was cut short");
			return EX_SOFTWARE;
		}
		update_queue(w);	/* what is pending as we wait */
		pfd[0].fd = signals_fd();
		pfd[0].events = POLLIN;
		pfd[1].fd = w->sock;
		pfd[1].events = POLLIN | (queue_len(&w->out) ? POLLOUT : 0);
		pfd[2].fd = w->pipe_eof || queue_len(&w->out) >= OUT_HIGH_WATER ?
		    -1 : w->pipe_fd;
		pfd[2].events = POLLIN;
		if ((r = poll(pfd, 3, -1)) == -1) {
			if (errno == EINTR)
				continue;
			log_warn("poll");
			return EX_SOFTWARE;
		}
		if (pfd[0].revents)
			signals_drain();
		if ((pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) &&
		    consumer_gone(w)) {
			log_warnx("the consumer closed the connection");
			return EX_SOFTWARE;
		}
		if ((pfd[1].revents & POLLOUT) && write_out(w) == -1) {
			log_warn("sending to the consumer");
			return EX_SOFTWARE;
		}
		if ((pfd[2].revents & (POLLIN | POLLHUP)) && read_pipe(w) == -1) {
			log_warn("reading the reader's pipe");
			return EX_SOFTWARE;
		}
	}
}

int
worker_main(const struct child_ctx *ctx)
{
	const struct config	*cfg = ctx->cfg;
	struct worker		 w;
	struct span		 key = { cfg->key.data, cfg->key.len };
	char			 why[256];
	int			 r, code;

	memset(&w, 0, sizeof(w));
	w.ctx = ctx;
	w.pipe_fd = ctx->pipe_fd;
	if (connect_consumer(cfg, &w.sock) == -1)
		child_startup_failed(ctx, EX_UNAVAILABLE, "consumer %s: %s",
		    cfg->output, strerror(errno));
	if ((r = wire_answer_challenge(w.sock, key, CONNECT_TIMEOUT_MS, why,
	    sizeof(why))) == 0)
		r = wire_deliver_challenge(w.sock, key, CONNECT_TIMEOUT_MS, why,
		    sizeof(why));
	if (r == WIRE_REFUSED)
		child_startup_failed(ctx, EX_NOPERM, "consumer %s: %s",
		    cfg->output, why);
	if (r != 0)
		child_startup_failed(ctx, EX_UNAVAILABLE, "consumer %s: "
		    "handshake failed: %s", cfg->output, strerror(errno));
	config_purge(ctx->cfg, PURGE_KEY);	/* its work is done */
	if (barrier_wait(ctx->barrier, &sig_term, ctx->supervisor) == -1)
		exit(EX_SOFTWARE);

	if (fcntl(w.pipe_fd, F_SETFL, O_NONBLOCK) == -1)
		fatal(EX_OSERR, "fcntl");
	ctx->stats->phase = PHASE_RUNNING;
	code = run(&w);
	if (code == 0)
		log_debug("drained: %llu messages sent",
		    (unsigned long long)w.sent);
	close(w.sock);
	buf_free(&w.in);
	buf_free(&w.out.b);
	return code;
}
