/*
 * A worker: one output (doc/outputs.md).  It opens it, meets the others at
 * the barrier, then hands it the reader's records as events until its pipe
 * ends and the output holds nothing undelivered.
 */
#include <sys/ioctl.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "ldapfeed.h"

#define PIPE_CHUNK		(256 * 1024)

struct worker {
	const struct child_ctx	*ctx;
	struct output		*out;
	int			 pipe_fd;
	int			 pipe_eof;
	struct buf		 in;	/* records from the reader */
	uint64_t		 sent;
};

/* One constructor per -t kind (ldapfeed.8, OPTIONS). */
static struct output *(*const outputs[])(const struct child_ctx *) = {
	[OUTPUT_LISTENER] = out_listener_new,
	[OUTPUT_NATS] = out_nats_new,
};


/*
 * The newest change handed to the output, by its entryCSN: the status's
 * last event time (doc/safety.md, "Health figures").
 */
static void
note_csn(struct worker *w, struct span csn)
{
	int64_t	 t;

	if (csn.len > 0 && (t = csn_time_us(csn)) > w->ctx->stats->last_csn_us)
		w->ctx->stats->last_csn_us = t;
}

static int
take_records(struct worker *w)
{
	struct output	*out = w->out;
	struct event	 ev;
	struct span	 rec;
	size_t		 n, off = 0;

	while (!out->ops->full(out)) {
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
		if (out->ops->send(out, &ev) == -1)
			return -1;
		note_csn(w, ev.csn);
		w->sent++;
		w->ctx->stats->messages++;
		w->ctx->stats->events[ev.type]++;
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

/* What is still on its way: in the pipe, read, or taken but undelivered. */
static void
update_queue(struct worker *w)
{
	int	 inpipe = 0;

	if (!w->pipe_eof)
		(void)ioctl(w->pipe_fd, FIONREAD, &inpipe);
	w->ctx->stats->queue = (uint64_t)inpipe + w->in.len +
	    w->out->ops->pending(w->out);
}

static int
run(struct worker *w)
{
	struct output	*out = w->out;
	struct pollfd	 pfd[3];
	int		 asked = 0, timeout;

	for (;;) {
		if (sig_term && !asked) {
			/* Ask for an orderly stop; keep draining meanwhile. */
			child_ask_shutdown(w->ctx);
			asked = 1;
		}
		if (take_records(w) == -1)
			return EX_SOFTWARE;
		if (w->pipe_eof && w->in.len == 0 &&
		    out->ops->pending(out) == 0)
			return out->ops->finish == NULL ||
			    out->ops->finish(out) == 0 ? 0 : EX_SOFTWARE;
		if (w->pipe_eof && w->in.len != 0 && !out->ops->full(out) &&
		    pipe_record_complete(&w->in) == 0) {
			log_warnx("the reader's last record was cut short");
			return EX_SOFTWARE;
		}
		update_queue(w);	/* what is pending as we wait */
		pfd[0].fd = signals_fd();
		pfd[0].events = POLLIN;
		out->ops->wait(out, &pfd[1], &timeout);
		pfd[2].fd = w->pipe_eof || out->ops->full(out) ? -1 :
		    w->pipe_fd;
		pfd[2].events = POLLIN;
		pfd[1].revents = pfd[2].revents = 0;
		if (poll(pfd, 3, timeout) == -1) {
			if (errno == EINTR)
				continue;
			log_warn("poll");
			return EX_SOFTWARE;
		}
		if (pfd[0].revents)
			signals_drain();
		if (out->ops->work(out, &pfd[1]) == -1)
			return EX_SOFTWARE;
		if ((pfd[2].revents & (POLLIN | POLLHUP)) && read_pipe(w) == -1) {
			log_warn("reading the reader's pipe");
			return EX_SOFTWARE;
		}
	}
}

int
worker_main(const struct child_ctx *ctx)
{
	struct worker	 w;
	char		 why[512];
	int		 code;

	memset(&w, 0, sizeof(w));
	w.ctx = ctx;
	w.pipe_fd = ctx->pipe_fd;
	w.out = outputs[ctx->cfg->output_kind](ctx);
	if ((code = w.out->ops->open(w.out, why, sizeof(why))) != 0)
		child_startup_failed(ctx, code, "%s", why);
	ctx->stats->connected = 1;
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
	w.out->ops->close(w.out);
	ctx->stats->connected = 0;
	buf_free(&w.in);
	return code;
}
