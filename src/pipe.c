/*
 * Reader -> worker records: one event, length-prefixed, of any size, over
 * the worker's pipe; and the DN hash that picks the worker.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "ldapfeed.h"

/*
 * u64 length of the rest, u8 type, u8 reload, u64 seq, uuid[16], then eight
 * u64-length-prefixed fields: dn, old_dn, old_attrs, new_attrs, changed,
 * added, removed, csn.
 */
#define RECORD_FIXED	(1 + 1 + 8 + 16)

static void
add_field(struct buf *b, struct span s)
{
	buf_add_u64(b, s.len);
	buf_add(b, s.p, s.len);
}

void
pipe_record_encode(struct buf *b, const struct event *ev)
{
	size_t	 total;

	total = RECORD_FIXED + 8 * 8 + ev->dn.len + ev->old_dn.len +
	    ev->old_attrs.len + ev->new_attrs.len + ev->changed.len +
	    ev->added.len + ev->removed.len + ev->csn.len;
	buf_reserve(b, 8 + total);
	buf_add_u64(b, total);
	buf_add_u8(b, (uint8_t)ev->type);
	buf_add_u8(b, ev->reload ? 1 : 0);
	buf_add_u64(b, ev->seq);
	buf_add(b, ev->uuid, 16);
	add_field(b, ev->dn);
	add_field(b, ev->old_dn);
	add_field(b, ev->old_attrs);
	add_field(b, ev->new_attrs);
	add_field(b, ev->changed);
	add_field(b, ev->added);
	add_field(b, ev->removed);
	add_field(b, ev->csn);
}

size_t
pipe_record_complete(const struct buf *b)
{
	uint64_t	 total;

	if (b->len < 8)
		return 0;
	total = get_u64(b->data);
	if (total > b->len - 8)
		return 0;
	return 8 + (size_t)total;
}

static int
take_field(struct span *rest, struct span *out)
{
	uint64_t	 len;

	if (rest->len < 8)
		return -1;
	len = get_u64(rest->p);
	if (len > rest->len - 8)
		return -1;
	out->p = rest->p + 8;
	out->len = (size_t)len;
	rest->p += 8 + len;
	rest->len -= 8 + len;
	return 0;
}

int
pipe_record_decode(struct span rec, struct event *ev)
{
	struct span	 rest;

	memset(ev, 0, sizeof(*ev));
	if (rec.len < 8 + RECORD_FIXED || get_u64(rec.p) != rec.len - 8)
		return -1;
	rest.p = rec.p + 8;
	rest.len = rec.len - 8;
	ev->type = rest.p[0];
	ev->reload = rest.p[1];
	ev->seq = get_u64(rest.p + 2);
	memcpy(ev->uuid, rest.p + 10, 16);
	rest.p += RECORD_FIXED;
	rest.len -= RECORD_FIXED;
	if (ev->type < EV_HELLO || ev->type > EV_REFRESH_DONE ||
	    take_field(&rest, &ev->dn) == -1 ||
	    take_field(&rest, &ev->old_dn) == -1 ||
	    take_field(&rest, &ev->old_attrs) == -1 ||
	    take_field(&rest, &ev->new_attrs) == -1 ||
	    take_field(&rest, &ev->changed) == -1 ||
	    take_field(&rest, &ev->added) == -1 ||
	    take_field(&rest, &ev->removed) == -1 ||
	    take_field(&rest, &ev->csn) == -1 || rest.len != 0)
		return -1;
	return 0;
}

/*
 * The reader's side: a queue per worker, flushed without blocking while
 * there is LDAP work to do, and blocking (backpressure, never loss) when a
 * queue grows past PIPES_HIGH_WATER or the caller needs everything out.
 */
void
pipes_init(struct pipes *p, int *fds, unsigned n)
{
	unsigned	 i;

	p->n = n;
	p->fd = fds;
	p->q = xcalloc(n, sizeof(*p->q));
	p->write_min = 0;
	for (i = 0; i < n; i++)
		if (fcntl(fds[i], F_SETFL, O_NONBLOCK) == -1)
			fatal(EX_OSERR, "fcntl");
}

void
pipes_free(struct pipes *p)
{
	unsigned	 i;

	for (i = 0; i < p->n; i++) {
		buf_free(&p->q[i].b);
		if (p->fd[i] != -1)
			close(p->fd[i]);
		p->fd[i] = -1;
	}
	free(p->q);
	p->q = NULL;
}

static int
write_some(struct pipes *p, unsigned i, size_t min)
{
	ssize_t	 n;

	if (queue_len(&p->q[i]) == 0 || queue_len(&p->q[i]) < min)
		return 0;
	n = write(p->fd[i], queue_data(&p->q[i]), queue_len(&p->q[i]));
	if (n == -1) {
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		log_warn("pipe to worker %u", i);
		return -1;
	}
	queue_drop(&p->q[i], (size_t)n);
	return 0;
}

size_t
pipes_pending(const struct pipes *p)
{
	size_t		 total = 0;
	unsigned	 i;

	for (i = 0; i < p->n; i++)
		total += queue_len(&p->q[i]);
	return total;
}

/*
 * Write what the pipes take.  With all set, wait until every queue is
 * empty; otherwise leave queues under write_min alone, and wait only while
 * some queue is over the high-water mark.  A signal wakes the wait (the
 * caller checks its flags) but never drops data.
 */
int
pipes_flush(struct pipes *p, int all)
{
	struct pollfd	*pfd;
	unsigned	 i, waiting;
	int		 r = 0;

	pfd = xcalloc(p->n + 1, sizeof(*pfd));
	for (;;) {
		for (i = 0; i < p->n; i++)
			if (write_some(p, i, all ? 0 : p->write_min) == -1) {
				r = -1;
				goto out;
			}
		for (i = 0, waiting = 0; i < p->n; i++) {
			pfd[i].fd = -1;
			if (queue_len(&p->q[i]) > (all ? 0 : PIPES_HIGH_WATER)) {
				pfd[i].fd = p->fd[i];
				pfd[i].events = POLLOUT;
				waiting++;
			}
		}
		if (waiting == 0)
			break;
		pfd[p->n].fd = signals_fd();
		pfd[p->n].events = POLLIN;
		if (poll(pfd, p->n + 1, -1) == -1 && errno != EINTR) {
			log_warn("poll");
			r = -1;
			goto out;
		}
		if (pfd[p->n].revents)
			signals_drain();
		for (i = 0; i < p->n; i++)
			if (pfd[i].fd != -1 && (pfd[i].revents & (POLLERR |
			    POLLNVAL))) {
				log_warnx("worker %u's pipe is closed", i);
				r = -1;
				goto out;
			}
	}
out:
	free(pfd);
	return r;
}

void
pipes_send(struct pipes *p, unsigned worker, const struct event *ev)
{
	pipe_record_encode(&p->q[worker].b, ev);
}

/* One event to every worker (hello, refresh_done). */
void
pipes_send_all(struct pipes *p, const struct event *ev)
{
	unsigned	 i;

	for (i = 0; i < p->n; i++)
		pipe_record_encode(&p->q[i].b, ev);
}
