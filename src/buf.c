/*
 * Growable byte buffers and the allocation wrappers (running out of memory
 * is fatal, so callers need not check), and the few small helpers every
 * file uses: little-endian numbers, hex digits, the monotonic clock.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "ldapfeed.h"

void *
xmalloc(size_t n)
{
	void	*p;

	if ((p = malloc(n ? n : 1)) == NULL)
		fatal(EX_OSERR, "malloc %zu", n);
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void	*p;

	if ((p = calloc(n ? n : 1, size ? size : 1)) == NULL)
		fatal(EX_OSERR, "calloc %zu*%zu", n, size);
	return p;
}

void *
xrealloc(void *old, size_t n)
{
	void	*p;

	if ((p = realloc(old, n ? n : 1)) == NULL)
		fatal(EX_OSERR, "realloc %zu", n);
	return p;
}

char *
xstrdup(const char *s)
{
	char	*p;

	if ((p = strdup(s)) == NULL)
		fatal(EX_OSERR, "strdup");
	return p;
}

/* The slow path of buf_reserve: at least double, so appends stay linear. */
void
buf_grow(struct buf *b, size_t extra)
{
	size_t	 need, cap;

	if (extra > SIZE_MAX - b->len)
		fatalx(EX_SOFTWARE, "buffer size overflow");
	need = b->len + extra;
	if (need <= b->cap)
		return;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

void
buf_add_str(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

void
buf_add_u64(struct buf *b, uint64_t v)
{
	unsigned char	 le[8];

	put_le(le, v, 8);
	buf_add(b, le, sizeof(le));
}

void
buf_put_u32(struct buf *b, size_t off, uint32_t v)
{
	if (off > b->len || b->len - off < 4)
		fatalx(EX_SOFTWARE, "buf_put_u32 out of range");
	put_le(b->data + off, v, 4);
}

void
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list	 ap;
	int	 n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatalx(EX_SOFTWARE, "buf_printf: bad format");
	buf_reserve(b, (size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void
buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

/* Take n bytes off the front; compact only once most of it is taken. */
void
queue_drop(struct queue *q, size_t n)
{
	q->off += n < queue_len(q) ? n : queue_len(q);
	if (q->off == q->b.len) {
		q->off = 0;
		q->b.len = 0;
	} else if (q->off > q->b.len / 2 && q->off >= 64 * 1024) {
		memmove(q->b.data, q->b.data + q->off, q->b.len - q->off);
		q->b.len -= q->off;
		q->off = 0;
	}
}

void
buf_reset(struct buf *b)
{
	b->len = 0;
}

void
buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

uint32_t
get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

uint64_t
get_u64(const unsigned char *p)
{
	return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* A hex digit's value, or -1. */
int
hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Milliseconds on the monotonic clock: for timeouts, never for dates. */
int64_t
clock_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Seconds since t0, a clock_ms() reading. */
double
seconds_since(int64_t t0)
{
	return (clock_ms() - t0) / 1000.0;
}
