/*
 * The consumer's payloads (doc/events.md): one event as a pickle (protocol
 * 3) or as one UTF-8 JSON object, written in one pass into the output
 * buffer; only a string that needs cleaning is measured before its length
 * prefix.  Hand-written rather than a library's: a streaming encoder that
 * never builds a tree of the event keeps a 100,000-value group linear and
 * small (bench/PROFILE.md); base64 is OpenSSL's.
 */
#include <openssl/evp.h>

#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sysexits.h>

#include "ldapfeed.h"

/* Pickle opcodes; none newer than protocol 3, and no memo. */
#define P_PROTO		0x80
#define P_STOP		'.'
#define P_MARK		'('
#define P_EMPTY_DICT	'}'
#define P_EMPTY_LIST	']'
#define P_SETITEMS	'u'
#define P_APPENDS	'e'
#define P_BININT	'J'
#define P_BININT1	'K'
#define P_BININT2	'M'
#define P_LONG1		0x8a
#define P_BINUNICODE	'X'
#define P_BINBYTES	'B'
#define P_SHORT_BINBYTES 'C'
#define P_NEWTRUE	0x88
#define P_NEWFALSE	0x89

/* Items per MARK ... APPENDS (or SETITEMS), as Python's own pickler does. */
#define BATCH		1000

/*
 * Where the bytes go: appended to b, which grows as needed; with b NULL
 * only len advances, which is how a string that needs cleaning is measured
 * before its length prefix is written.
 */
struct sink {
	struct buf	*b;
	size_t		 len;
};

struct enc {
	struct sink	 s;
	enum format	 fmt;
	int		 nfields;	/* in the event's dict so far */
};

static const char hexdigit[] = "0123456789abcdef";

/* Input bytes per EVP_EncodeBlock call: a multiple of 3 that an int holds. */
#define B64_CHUNK	(3 * (1 << 28))

#define ONES	0x0101010101010101ULL
#define HIGHS	0x8080808080808080ULL

static inline void
put(struct sink *s, const void *d, size_t n)
{
	if (s->b != NULL)
		buf_add(s->b, d, n);
	s->len += n;
}

static inline void
put1(struct sink *s, unsigned char c)
{
	if (s->b != NULL)
		buf_add_u8(s->b, c);
	s->len++;
}

static void
put_u32(struct sink *s, size_t v)
{
	unsigned char	 le[4];

	if (v > UINT32_MAX)
		fatalx(EX_SOFTWARE, "encode: %zu bytes do not fit a pickle", v);
	put_le(le, v, 4);
	put(s, le, sizeof(le));
}

/*
 * The UTF-8 sequence at the head of p (n > 0): returns its length and sets
 * *valid.  Overlongs, surrogates, code points past U+10FFFF and truncated
 * sequences are invalid; an invalid one is its maximal valid prefix (at
 * least one byte), which is what a single U+FFFD stands for in Python's
 * decode(errors="replace").
 */
static size_t
utf8_seq(const unsigned char *p, size_t n, int *valid)
{
	unsigned char	 c = p[0], lo = 0x80, hi = 0xbf;
	size_t		 need, i;

	*valid = 0;
	if (c < 0x80) {
		*valid = 1;
		return 1;
	}
	if (c < 0xc2)
		return 1;		/* a continuation, or an overlong lead */
	if (c < 0xe0)
		need = 2;
	else if (c < 0xf0) {
		need = 3;
		if (c == 0xe0)
			lo = 0xa0;	/* overlong */
		else if (c == 0xed)
			hi = 0x9f;	/* surrogates */
	} else if (c < 0xf5) {
		need = 4;
		if (c == 0xf0)
			lo = 0x90;	/* overlong */
		else if (c == 0xf4)
			hi = 0x8f;	/* past U+10FFFF */
	} else
		return 1;
	for (i = 1; i < need; i++) {
		if (i >= n || p[i] < lo || p[i] > hi)
			return i;
		lo = 0x80;
		hi = 0xbf;
	}
	*valid = 1;
	return need;
}

/* Bytes of plain ASCII (no NUL, no high bit) at the head of p. */
static size_t
ascii_prefix(const unsigned char *p, size_t n)
{
	uint64_t	 w;
	size_t		 i = 0;

	for (; n - i >= 8; i += 8) {
		memcpy(&w, p + i, 8);
		if ((w & HIGHS) || ((w - ONES) & ~w & HIGHS))
			break;
	}
	while (i < n && p[i] != 0 && p[i] < 0x80)
		i++;
	return i;
}

/* A value is a JSON string when it is strictly valid UTF-8 without NUL. */
static int
utf8_text(const unsigned char *p, size_t n)
{
	size_t	 i = 0;
	int	 valid;

	for (;;) {
		i += ascii_prefix(p + i, n - i);
		if (i == n)
			return 1;
		if (p[i] == 0)
			return 0;
		i += utf8_seq(p + i, n - i, &valid);
		if (!valid)
			return 0;
	}
}

/* p as valid UTF-8: each invalid sequence becomes U+FFFD. */
static void
put_utf8_clean(struct sink *s, const unsigned char *p, size_t n)
{
	size_t	 i = 0, run = 0, k;
	int	 valid;

	while (i < n) {
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		k = utf8_seq(p + i, n - i, &valid);
		if (!valid) {
			put(s, p + run, i - run);
			put(s, "\xef\xbf\xbd", 3);
			run = i + k;
		}
		i += k;
	}
	put(s, p + run, n - run);
}

/* Pickle. */

static void
pk_uint(struct sink *s, uint64_t v)
{
	unsigned char	 b[11];
	size_t		 n;

	if (v <= 0xff) {
		b[0] = P_BININT1;
		b[1] = v;
		put(s, b, 2);
	} else if (v <= 0xffff) {
		b[0] = P_BININT2;
		b[1] = v & 0xff;
		b[2] = v >> 8;
		put(s, b, 3);
	} else if (v <= INT32_MAX) {
		put1(s, P_BININT);
		put_u32(s, v);
	} else {
		/*
		 * BININT is signed: larger values are LONG1, a little-endian
		 * two's complement, so a set top bit needs a zero sign byte.
		 */
		b[0] = P_LONG1;
		for (n = 0; v != 0; v >>= 8)
			b[2 + n++] = v & 0xff;
		if (b[2 + n - 1] & 0x80)
			b[2 + n++] = 0;
		b[1] = n;
		put(s, b, 2 + n);
	}
}

static void
pk_int(struct sink *s, int v)
{
	if (v >= 0)
		pk_uint(s, (uint64_t)v);
	else {
		put1(s, P_BININT);
		put_u32(s, (uint32_t)v);
	}
}

static void
pk_str(struct sink *s, const unsigned char *p, size_t n)
{
	struct sink	 m = { NULL, 0 };

	put1(s, P_BINUNICODE);
	if (ascii_prefix(p, n) == n) {	/* the usual case: as it is */
		put_u32(s, n);
		put(s, p, n);
		return;
	}
	put_utf8_clean(&m, p, n);
	put_u32(s, m.len);
	put_utf8_clean(s, p, n);
}

/* An ASCII literal of ours. */
static void
pk_lit(struct sink *s, const char *str)
{
	size_t	 n = strlen(str);

	put1(s, P_BINUNICODE);
	put_u32(s, n);
	put(s, str, n);
}

static void
pk_bytes(struct sink *s, const unsigned char *p, size_t n)
{
	if (n < 256) {
		put1(s, P_SHORT_BINBYTES);
		put1(s, n);
	} else {
		put1(s, P_BINBYTES);
		put_u32(s, n);
	}
	put(s, p, n);
}

/* JSON. */

static const unsigned char json_short[0x20] = {
	['\b'] = 'b', ['\t'] = 't', ['\n'] = 'n', ['\f'] = 'f', ['\r'] = 'r'
};

/* Bytes at the head of p that a JSON string holds as they are (ASCII). */
static size_t
json_plain_prefix(const unsigned char *p, size_t n)
{
	uint64_t	 w, q, b;
	size_t		 i = 0;

	for (; n - i >= 8; i += 8) {
		memcpy(&w, p + i, 8);
		q = w ^ (ONES * '"');
		b = w ^ (ONES * '\\');
		/* high bit, a byte below 0x20, a quote or a backslash */
		if ((w & HIGHS) || ((w - ONES * 0x20) & ~w & HIGHS) ||
		    ((q - ONES) & ~q & HIGHS) || ((b - ONES) & ~b & HIGHS))
			break;
	}
	while (i < n && p[i] >= 0x20 && p[i] < 0x80 && p[i] != '"' &&
	    p[i] != '\\')
		i++;
	return i;
}

/*
 * A JSON string: quotes, backslashes and control characters escaped,
 * non-ASCII UTF-8 as it is, invalid sequences as U+FFFD.
 */
static void
js_str(struct sink *s, const unsigned char *p, size_t n)
{
	unsigned char	 esc[6] = { '\\', 'u', '0', '0' };
	size_t		 i = 0, run = 0, k;
	int		 valid;

	put1(s, '"');
	while ((i += json_plain_prefix(p + i, n - i)) < n) {
		if (p[i] >= 0x80) {
			k = utf8_seq(p + i, n - i, &valid);
			if (valid) {
				i += k;
				continue;
			}
			put(s, p + run, i - run);
			put(s, "\xef\xbf\xbd", 3);
		} else {
			k = 1;
			put(s, p + run, i - run);
			if (p[i] >= 0x20) {
				esc[1] = p[i];
				put(s, esc, 2);
			} else if (json_short[p[i]]) {
				esc[1] = json_short[p[i]];
				put(s, esc, 2);
			} else {
				esc[1] = 'u';
				esc[4] = hexdigit[p[i] >> 4];
				esc[5] = hexdigit[p[i] & 0xf];
				put(s, esc, 6);
			}
		}
		i += k;
		run = i;
	}
	put(s, p + run, n - run);
	put1(s, '"');
}

static void
js_base64(struct sink *s, const unsigned char *p, size_t n)
{
	size_t	 i, k, out = (n + 2) / 3 * 4;

	put(s, "{\"base64\":\"", 11);
	if (s->b != NULL) {
		/* Room for the text and the NUL EVP_EncodeBlock ends it with. */
		buf_reserve(s->b, out + 1);
		for (i = 0; i < n; i += k) {
			k = n - i < B64_CHUNK ? n - i : B64_CHUNK;
			s->b->len += (size_t)EVP_EncodeBlock(s->b->data +
			    s->b->len, p + i, (int)k);
		}
	}
	s->len += out;
	put(s, "\"}", 2);
}

static void
js_value(struct sink *s, const unsigned char *p, size_t n)
{
	if (utf8_text(p, n))
		js_str(s, p, n);
	else
		js_base64(s, p, n);
}

static void
js_uint(struct sink *s, uint64_t v)
{
	char	 d[20];
	size_t	 n = sizeof(d);

	do {
		d[--n] = '0' + v % 10;
		v /= 10;
	} while (v != 0);
	put(s, d + n, sizeof(d) - n);
}

/* The event's dict, field by field, in either format. */

static void
key(struct enc *e, const char *k)
{
	if (e->fmt == FORMAT_PICKLE)
		pk_lit(&e->s, k);
	else {
		if (e->nfields > 0)
			put1(&e->s, ',');
		put1(&e->s, '"');
		put(&e->s, k, strlen(k));
		put(&e->s, "\":", 2);
	}
	e->nfields++;
}

static void
val_lit(struct enc *e, const char *v)
{
	if (e->fmt == FORMAT_PICKLE)
		pk_lit(&e->s, v);
	else {
		put1(&e->s, '"');
		put(&e->s, v, strlen(v));
		put1(&e->s, '"');
	}
}

static void
val_str(struct enc *e, struct span v)
{
	if (v.len == 0)
		v.p = (const unsigned char *)"";	/* no arithmetic on NULL */
	if (e->fmt == FORMAT_PICKLE)
		pk_str(&e->s, v.p, v.len);
	else
		js_str(&e->s, v.p, v.len);
}

static void
val_uint(struct enc *e, uint64_t v)
{
	if (e->fmt == FORMAT_PICKLE)
		pk_uint(&e->s, v);
	else
		js_uint(&e->s, v);
}

static void
val_int(struct enc *e, int v)
{
	if (e->fmt == FORMAT_PICKLE)
		pk_int(&e->s, v);
	else {
		if (v < 0)
			put1(&e->s, '-');
		js_uint(&e->s, v < 0 ? -(uint64_t)v : (uint64_t)v);
	}
}

static void
val_bool(struct enc *e, int v)
{
	if (e->fmt == FORMAT_PICKLE)
		put1(&e->s, v ? P_NEWTRUE : P_NEWFALSE);
	else if (v)
		put(&e->s, "true", 4);
	else
		put(&e->s, "false", 5);
}

/* The uuid as 8-4-4-4-12 lowercase hex (doc/events.md, "Common fields"). */
void
uuid_format(const unsigned char uuid[16], char str[37])
{
	size_t	 i, n = 0;

	for (i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			str[n++] = '-';
		str[n++] = hexdigit[uuid[i] >> 4];
		str[n++] = hexdigit[uuid[i] & 0xf];
	}
	str[n] = '\0';
}

/* The store's epoch as 32 lowercase hex digits (doc/store.md). */
void
epoch_format(const unsigned char epoch[16], char str[33])
{
	size_t	 i;

	for (i = 0; i < 16; i++) {
		str[2 * i] = hexdigit[epoch[i] >> 4];
		str[2 * i + 1] = hexdigit[epoch[i] & 0xf];
	}
	str[32] = '\0';
}

static void
val_uuid(struct enc *e, const unsigned char uuid[16])
{
	char	 str[37];

	uuid_format(uuid, str);
	val_lit(e, str);
}

static void
val_epoch(struct enc *e, const unsigned char epoch[16])
{
	char	 str[33];

	epoch_format(epoch, str);
	val_lit(e, str);
}

/* Opens item i of a pickled list or dict: each BATCH items share a MARK. */
static void
batch_open(struct sink *s, size_t i)
{
	if (i % BATCH == 0)
		put1(s, P_MARK);
}

/* Closes item i of n. */
static void
batch_close(struct sink *s, size_t i, size_t n, unsigned char op)
{
	if ((i + 1) % BATCH == 0 || i + 1 == n)
		put1(s, op);
}

/* ATTRS: attribute name -> list of values. */
static void
val_attrs(struct enc *e, struct span blob)
{
	struct attrs_iter	 it;
	struct span		 name, v;
	struct sink		*s = &e->s;
	uint32_t		 nvals, j;
	size_t			 i, nattrs;
	int			 pickle = e->fmt == FORMAT_PICKLE, r;

	if (attrs_iter_init(&it, blob) == -1)
		fatalx(EX_SOFTWARE, "encode: malformed attribute blob");
	nattrs = it.attrs_left;
	put1(s, pickle ? P_EMPTY_DICT : '{');
	for (i = 0; (r = attrs_next_attr(&it, &name, &nvals)) == 1; i++) {
		if (pickle) {
			batch_open(s, i);
			pk_str(s, name.p, name.len);
			put1(s, P_EMPTY_LIST);
		} else {
			if (i > 0)
				put1(s, ',');
			js_str(s, name.p, name.len);
			put(s, ":[", 2);
		}
		for (j = 0; j < nvals; j++) {
			if (attrs_next_value(&it, &v) != 1)
				fatalx(EX_SOFTWARE,
				    "encode: malformed attribute blob");
			if (pickle) {
				batch_open(s, j);
				pk_bytes(s, v.p, v.len);
				batch_close(s, j, nvals, P_APPENDS);
			} else {
				if (j > 0)
					put1(s, ',');
				js_value(s, v.p, v.len);
			}
		}
		if (pickle)
			batch_close(s, i, nattrs, P_SETITEMS);
		else
			put1(s, ']');
	}
	if (r == -1)
		fatalx(EX_SOFTWARE, "encode: malformed attribute blob");
	if (!pickle)
		put1(s, '}');
}

/* A list of str from a names list, in its order. */
static void
val_names(struct enc *e, struct span list)
{
	struct span	 name, rest;
	struct sink	*s = &e->s;
	size_t		 i, n;
	int		 pickle = e->fmt == FORMAT_PICKLE, r;

	/* Count first: the pickle's batches need to know the last name. */
	rest = list;
	for (n = 0; (r = names_iter(&rest, &name)) == 1; n++)
		;
	if (r == -1)
		fatalx(EX_SOFTWARE, "encode: malformed names list");
	put1(s, pickle ? P_EMPTY_LIST : '[');
	for (i = 0; i < n; i++) {
		names_iter(&list, &name);
		if (pickle) {
			batch_open(s, i);
			pk_str(s, name.p, name.len);
			batch_close(s, i, n, P_APPENDS);
		} else {
			if (i > 0)
				put1(s, ',');
			js_str(s, name.p, name.len);
		}
	}
	if (!pickle)
		put1(s, ']');
}

const char *
event_type_name(enum event_type type)
{
	switch (type) {
	case EV_HELLO:
		return "hello";
	case EV_ADD:
		return "add";
	case EV_MODIFY:
		return "modify";
	case EV_RENAME:
		return "rename";
	case EV_DELETE:
		return "delete";
	case EV_REFRESH_DONE:
		return "refresh_done";
	}
	fatalx(EX_SOFTWARE, "encode: unknown event type %d", (int)type);
}

static void
encode_fields(struct enc *e, const struct event *ev)
{
	const char	*type = event_type_name(ev->type);

	e->nfields = 0;
	if (e->fmt == FORMAT_PICKLE) {
		put1(&e->s, P_PROTO);
		put1(&e->s, 3);
		put1(&e->s, P_EMPTY_DICT);
		put1(&e->s, P_MARK);
	} else
		put1(&e->s, '{');
	key(e, "type");
	val_lit(e, type);
	if (ev->type == EV_HELLO) {
		key(e, "worker");
		val_int(e, ev->worker);
		key(e, "workers");
		val_int(e, ev->workers);
		key(e, "format");
		val_lit(e, format_name(e->fmt));
		key(e, "version");
		val_lit(e, LDAPFEED_VERSION);
		key(e, "epoch");
		val_epoch(e, ev->uuid);
		key(e, "reload");
		val_bool(e, ev->reload);
	} else {
		key(e, "seq");
		val_uint(e, ev->seq);
	}
	if (ev->type == EV_RENAME) {
		key(e, "old_dn");
		val_str(e, ev->old_dn);
	}
	if (ev->type == EV_ADD || ev->type == EV_MODIFY ||
	    ev->type == EV_RENAME || ev->type == EV_DELETE) {
		key(e, "dn");
		val_str(e, ev->dn);
		key(e, "uuid");
		val_uuid(e, ev->uuid);
		if (ev->csn.len > 0) {
			key(e, "csn");
			val_str(e, ev->csn);
		}
	}
	if (ev->type == EV_ADD) {
		key(e, "attrs");
		val_attrs(e, ev->new_attrs);
	}
	if (ev->type == EV_MODIFY || ev->type == EV_DELETE) {
		key(e, "old");
		val_attrs(e, ev->old_attrs);
	}
	if (ev->type == EV_MODIFY) {
		key(e, "new");
		val_attrs(e, ev->new_attrs);
		key(e, "changed");
		val_names(e, ev->changed);
		/* (the reader always fills both; a blob is never empty) */
		if (ev->added.len > 0 && ev->removed.len > 0) {
			key(e, "added");
			val_attrs(e, ev->added);
			key(e, "removed");
			val_attrs(e, ev->removed);
		}
	}
	if (e->fmt == FORMAT_PICKLE) {
		put1(&e->s, P_SETITEMS);
		put1(&e->s, P_STOP);
	} else
		put1(&e->s, '}');
}

void
encode_event(struct buf *out, const struct event *ev, enum format fmt)
{
	struct enc	 e;

	if (fmt != FORMAT_PICKLE && fmt != FORMAT_JSON)
		fatalx(EX_SOFTWARE, "encode: unknown format %d", (int)fmt);
	e.fmt = fmt;
	e.s.b = out;
	e.s.len = 0;
	encode_fields(&e, ev);
}

const char *
format_name(enum format fmt)
{
	switch (fmt) {
	case FORMAT_PICKLE:
		return "pickle";
	case FORMAT_JSON:
		return "json";
	}
	return "unknown";
}
