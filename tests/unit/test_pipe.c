/*
 * src/pipe.c: the reader -> worker records (encode, decode, what counts as
 * complete), partial and full flushes, and a 10 MiB record through a real
 * pipe; also the byte queues of src/buf.c that the records wait in.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ldapfeed.h"
#include "tap.h"
#include "fixtures.h"


static int
span_eq(struct span a, struct span b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

int
main(void)
{
	struct event	 ev, out;
	struct buf	 b = { 0 }, attrs = { 0 }, big = { 0 };
	struct attrs_writer w;
	struct pipes	 p;
	int		 fds[2];
	char		 buf[256];
	size_t		 n, i;

	/* A full record round trip. */
	attrs_writer_init(&w, &attrs);
	attrs_writer_attr(&w, "cn", 2);
	attrs_writer_value(&w, "Alice", 5);
	attrs_writer_value(&w, "", 0);
	attrs_writer_attr(&w, "jpegPhoto", 9);
	attrs_writer_value(&w, "\0\xff\x01", 3);
	attrs_writer_finish(&w);
	memset(&ev, 0, sizeof(ev));
	ev.type = EV_RENAME;
	ev.seq = 0xfedcba9876543210ULL;
	memcpy(ev.uuid, "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b"
	    "\x0c\x0d\x0e\x0f", 16);
	ev.dn = S("uid=b,dc=x");
	ev.old_dn = S("uid=a,dc=x");
	ev.new_attrs = (struct span){ attrs.data, attrs.len };
	ev.old_attrs = attrs_empty;
	ev.changed = S("");
	pipe_record_encode(&b, &ev);
	n = pipe_record_complete(&b);
	ok(n == b.len, "record complete once all bytes are there");
	ok(pipe_record_decode((struct span){ b.data, n }, &out) == 0,
	    "record decodes");
	ok(out.type == EV_RENAME && out.seq == ev.seq &&
	    memcmp(out.uuid, ev.uuid, 16) == 0, "type, seq, uuid survive");
	ok(span_eq(out.dn, ev.dn) && span_eq(out.old_dn, ev.old_dn) &&
	    span_eq(out.new_attrs, ev.new_attrs) &&
	    span_eq(out.old_attrs, attrs_empty), "fields survive");
	for (i = 0; i < b.len; i++) {
		struct buf	 cut = { b.data, i, 0 };

		if (pipe_record_complete(&cut) != 0)
			break;
	}
	ok(i == b.len, "no prefix of a record counts as complete");
	b.data[8] = 99;
	ok(pipe_record_decode((struct span){ b.data, n }, &out) == -1,
	    "unknown type refused");
	ok(pipe_record_decode((struct span){ b.data, n - 1 }, &out) == -1,
	    "short record refused");
	buf_reset(&b);

	/* A byte queue taken from the front in pieces keeps its bytes. */
	{
		struct queue	 q = { { 0 }, 0 };
		size_t		 taken = 0, bad = 0, k;

		for (k = 0; k < 3 << 20; k++)
			buf_add_u8(&q.b, (uint8_t)(k * 7));
		while (queue_len(&q) > 0) {
			size_t	 piece = queue_len(&q) < 200000 ?
				    queue_len(&q) : 200000;

			for (k = 0; k < piece; k++)
				bad += queue_data(&q)[k] !=
				    (uint8_t)((taken + k) * 7);
			queue_drop(&q, piece);
			taken += piece;
			if (q.off > 0 && q.off > q.b.len / 2 &&
			    q.off >= 64 * 1024)
				bad++;	/* should have compacted */
		}
		ok(bad == 0 && taken == 3 << 20 && q.b.len == 0 && q.off == 0,
		    "queue: 3 MiB taken in 200 KB pieces, bytes intact");
		buf_add(&q.b, "abc", 3);
		queue_drop(&q, 1);
		buf_add(&q.b, "d", 1);
		ok(queue_len(&q) == 3 && memcmp(queue_data(&q), "bcd", 3) == 0,
		    "queue: appending after a partial take");
		queue_drop(&q, 99);
		ok(queue_len(&q) == 0 && q.off == 0, "queue: over-taking empties it");
		buf_free(&q.b);
	}

	/* A partial flush leaves queues under write_min; a full one does not. */
	if (pipe(fds) == -1 || fcntl(fds[0], F_SETFL, O_NONBLOCK) == -1)
		return 1;
	pipes_init(&p, &fds[1], 1);
	memset(&ev, 0, sizeof(ev));
	ev.type = EV_ADD;
	ev.seq = 3;
	ev.dn = S("cn=small,dc=x");
	pipes_send(&p, 0, &ev);
	p.write_min = 65536;
	ok(pipes_flush(&p, 0) == 0 && pipes_pending(&p) > 0 &&
	    read(fds[0], buf, sizeof(buf)) == -1 && errno == EAGAIN,
	    "partial flush: a queue under write_min stays queued");
	ok(pipes_flush(&p, 1) == 0 && pipes_pending(&p) == 0 &&
	    read(fds[0], buf, sizeof(buf)) > 0,
	    "full flush: it is written all the same");
	p.write_min = 0;
	pipes_send(&p, 0, &ev);
	ok(pipes_flush(&p, 0) == 0 && pipes_pending(&p) == 0,
	    "partial flush with write_min 0 writes every queue");
	pipes_free(&p);
	close(fds[0]);

	/* A 10 MiB value streams through a real pipe. */
	buf_reserve(&big, 10 << 20);
	memset(big.data, 'x', 10 << 20);
	big.len = 10 << 20;
	memset(&ev, 0, sizeof(ev));
	ev.type = EV_ADD;
	ev.seq = 7;
	ev.dn = S("cn=big,dc=x");
	ev.new_attrs = (struct span){ big.data, big.len };
	if (pipe(fds) == -1)
		return 1;
	if (fork() == 0) {
		close(fds[0]);
		signals_init();
		pipes_init(&p, &fds[1], 1);
		pipes_send(&p, 0, &ev);
		pipes_send(&p, 0, &ev);
		_exit(pipes_flush(&p, 1) == 0 ? 0 : 1);
	}
	close(fds[1]);
	for (;;) {
		ssize_t	 r;

		buf_reserve(&b, 1 << 16);
		r = read(fds[0], b.data + b.len, b.cap - b.len);
		if (r <= 0)
			break;
		b.len += (size_t)r;
	}
	n = pipe_record_complete(&b);
	ok(n > 0 && pipe_record_decode((struct span){ b.data, n }, &out) == 0 &&
	    out.new_attrs.len == 10 << 20 && out.seq == 7,
	    "a 10 MiB record arrives whole");
	ok(b.len == 2 * n, "and the next one after it");
	buf_free(&b);
	buf_free(&attrs);
	buf_free(&big);
	return tap_done();
}
