/*
 * RFC 4533 syncrepl: the Sync Request control encoded with liblber, the Sync
 * State and Sync Done controls and the Sync Info message decoded from
 * hostile bytes (doc/syncrepl.md, "The controls on the wire"; RFC 4533
 * sections 2.2-2.5), and the OpenLDAP cookie rules (doc/syncrepl.md,
 * "Cookies").
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lber.h>
#include <ldap.h>

#include "ldapfeed.h"

#define TAG_SEQUENCE	0x30UL
#define TAG_SET		0x31UL
#define TAG_BOOLEAN	0x01UL
#define TAG_OCTETS	0x04UL
#define TAG_ENUM	0x0aUL

/*
 * Decoding works on a private copy of the value with one spare byte after
 * it: liblber peeks at the octet that follows every element it skips, which
 * for the last element is one past the end of the value.  libldap's own
 * buffers always carry that byte; a caller's span need not.  Values this
 * small (slapd's largest, a syncIdSet of 256 UUIDs, is under 5 KiB) live on
 * the stack; larger ones are rare enough to take one allocation.  The
 * BerElement itself is opaque in <lber.h> (no BerElementBuffer), so each
 * decode allocates and frees that one small struct.
 */
#define DECODE_STACK	8192
#define DECODE_MAX	(64UL * 1024 * 1024)

struct decoder {
	BerElement	*ber;
	unsigned char	 stack[DECODE_STACK + 1];
	unsigned char	*heap;
};

static int
decoder_open(struct decoder *d, struct span value, const char **why)
{
	struct berval	 bv;
	unsigned char	*copy;

	d->ber = NULL;
	d->heap = NULL;
	if (value.len == 0 || value.p == NULL) {
		*why = "sync message: empty value";
		return -1;
	}
	if (value.len > DECODE_MAX) {
		*why = "sync message: value larger than 64 MiB";
		return -1;
	}
	if (value.len <= DECODE_STACK)
		copy = d->stack;
	else
		copy = d->heap = xmalloc(value.len + 1);
	memcpy(copy, value.p, value.len);
	copy[value.len] = 0;
	if ((d->ber = ber_alloc_t(0)) == NULL) {
		free(d->heap);
		d->heap = NULL;
		*why = "sync message: out of memory";
		return -1;
	}
	bv.bv_val = (char *)copy;
	bv.bv_len = value.len;
	ber_init2(d->ber, &bv, 0);
	return 0;
}

static void
decoder_close(struct decoder *d)
{
	if (d->ber != NULL)
		ber_free(d->ber, 0);	/* the buffer is ours, not lber's */
	free(d->heap);
	d->ber = NULL;
	d->heap = NULL;
}

static ber_len_t
decoder_left(struct decoder *d)
{
	int	 n = ber_remaining(d->ber);

	return n > 0 ? (ber_len_t)n : 0;
}

/* What to say when entering a constructed element fails. */
struct enter_why {
	const char	*tag;
	const char	*truncated;
	const char	*trailing;
};

/*
 * Enter a constructed element with the given tag.  Every constructed
 * element in these messages is the last thing in its parent, so it must
 * reach exactly to the end of the value: that one check rejects trailing
 * garbage and lets liblber's end-of-buffer check stand in for the parent's
 * bounds everywhere inside.
 */
static int
enter(struct decoder *d, ber_tag_t want, const struct enter_why *w,
    const char **why)
{
	ber_len_t	 len;
	ber_tag_t	 tag;

	if ((tag = ber_peek_tag(d->ber, &len)) == LBER_DEFAULT) {
		/* liblber refuses lengths beyond the end of the value */
		*why = w->truncated;
		return -1;
	}
	if (tag != want) {
		*why = w->tag;
		return -1;
	}
	if (ber_skip_tag(d->ber, &len) == LBER_DEFAULT) {
		*why = w->truncated;
		return -1;
	}
	if (len != decoder_left(d)) {
		*why = w->trailing;
		return -1;
	}
	return 0;
}

static const struct enter_why state_seq = {
	"sync state: not a SEQUENCE",
	"sync state: truncated, or a length beyond the value",
	"sync state: trailing bytes after the SEQUENCE"
};
static const struct enter_why done_seq = {
	"sync done: not a SEQUENCE",
	"sync done: truncated, or a length beyond the value",
	"sync done: trailing bytes after the SEQUENCE"
};
static const struct enter_why info_choice = {
	"sync info: unknown CHOICE tag",
	"sync info: truncated, or a length beyond the value",
	"sync info: trailing bytes after the CHOICE"
};
static const struct enter_why info_set = {
	"sync info: syncUUIDs is not a SET",
	"sync info: syncUUIDs SET is truncated",
	"sync info: bytes after the syncUUIDs SET"
};

/* The tag of the next element, 0 at the end, LBER_DEFAULT if malformed. */
static ber_tag_t
next_tag(struct decoder *d, ber_len_t *len)
{
	*len = 0;
	if (decoder_left(d) == 0)
		return 0;
	return ber_peek_tag(d->ber, len);
}

static int
get_octets(struct decoder *d, struct berval *bv)
{
	/* NOTERM: read in place and never write into the value. */
	return ber_get_stringbv(d->ber, bv, LBER_BV_NOTERM) == LBER_DEFAULT ?
	    -1 : 0;
}

static int
get_cookie(struct decoder *d, int *has, struct buf *cookie)
{
	struct berval	 bv;

	if (get_octets(d, &bv) == -1)
		return -1;
	buf_add(cookie, bv.bv_val, bv.bv_len);
	*has = 1;
	return 0;
}

/* A BOOLEAN is one octet; any non-zero octet is TRUE (liblber gives -1). */
static int
get_bool(struct decoder *d, ber_len_t len, int *val)
{
	ber_int_t	 b;

	if (len != 1 || ber_get_boolean(d->ber, &b) == LBER_DEFAULT)
		return -1;
	*val = b != 0;
	return 0;
}

int
sync_request_encode(struct buf *out, int mode, const struct span *cookie,
    int reload_hint)
{
	BerElement	*ber;
	struct berval	 cv, flat;
	int		 rc = -1;

	if (mode != SYNC_MODE_REFRESH_ONLY &&
	    mode != SYNC_MODE_REFRESH_AND_PERSIST)
		return -1;
	if ((ber = ber_alloc_t(LBER_USE_DER)) == NULL)
		return -1;
	if (ber_printf(ber, "{e", (ber_int_t)mode) == -1)
		goto done;
	if (cookie != NULL) {
		cv.bv_val = (char *)(uintptr_t)cookie->p;	/* lber only reads it */
		cv.bv_len = cookie->len;
		if (ber_printf(ber, "O", &cv) == -1)
			goto done;
	}
	/* Always sent, FALSE too, as slapd's own consumer does. */
	if (ber_printf(ber, "bN}", (ber_int_t)(reload_hint ? 1 : 0)) == -1)
		goto done;
	if (ber_flatten2(ber, &flat, 0) == -1)
		goto done;
	buf_add(out, flat.bv_val, flat.bv_len);
	rc = 0;
 done:
	ber_free(ber, 1);
	return rc;
}

int
sync_state_decode(struct span value, struct sync_state *out, const char **why)
{
	struct decoder	 d;
	struct berval	 bv;
	ber_len_t	 len;
	ber_tag_t	 tag;
	ber_int_t	 state;
	int		 rc = -1;

	buf_reset(&out->cookie);
	out->has_cookie = 0;
	out->state = -1;
	memset(out->uuid, 0, sizeof(out->uuid));
	*why = NULL;
	if (decoder_open(&d, value, why) == -1)
		return -1;
	if (enter(&d, TAG_SEQUENCE, &state_seq, why) == -1)
		goto done;

	if ((tag = next_tag(&d, &len)) != TAG_ENUM) {
		*why = tag == LBER_DEFAULT ? "sync state: state is truncated" :
		    "sync state: state is missing or not an ENUMERATED";
		goto done;
	}
	if (len < 1 || ber_get_enum(d.ber, &state) == LBER_DEFAULT) {
		*why = "sync state: bad ENUMERATED encoding";
		goto done;
	}
	if (state < SYNC_PRESENT || state > SYNC_DELETE) {
		*why = "sync state: state is not 0..3";
		goto done;
	}

	if ((tag = next_tag(&d, &len)) != TAG_OCTETS) {
		*why = tag == LBER_DEFAULT ?
		    "sync state: entryUUID is truncated" :
		    "sync state: entryUUID is missing or not an OCTET STRING";
		goto done;
	}
	if (get_octets(&d, &bv) == -1) {
		*why = "sync state: entryUUID is truncated";
		goto done;
	}
	if (bv.bv_len != sizeof(out->uuid)) {
		*why = bv.bv_len < sizeof(out->uuid) ?
		    "sync state: entryUUID is shorter than 16 bytes" :
		    "sync state: entryUUID is longer than 16 bytes";
		goto done;
	}
	memcpy(out->uuid, bv.bv_val, sizeof(out->uuid));

	if ((tag = next_tag(&d, &len)) == TAG_OCTETS) {
		if (get_cookie(&d, &out->has_cookie, &out->cookie) == -1) {
			*why = "sync state: cookie is truncated";
			goto done;
		}
		tag = next_tag(&d, &len);
	}
	if (tag != 0) {
		*why = tag == LBER_DEFAULT ? "sync state: truncated element" :
		    "sync state: element after entryUUID is not an OCTET STRING "
		    "cookie";
		goto done;
	}
	out->state = state;
	rc = 0;
 done:
	decoder_close(&d);
	if (rc == -1) {
		buf_reset(&out->cookie);
		out->has_cookie = 0;
	}
	return rc;
}

/*
 * What Sync Done and the refresh and syncIdSet choices of Sync Info share
 * (RFC 4533, sections 2.5 and 2.6): an optional cookie, then an optional
 * BOOLEAN into *flag.  Returns the tag after them, or 0 (*why set).
 */
static ber_tag_t
cookie_then_flag(struct decoder *d, const char *what, const char *flag_name,
    int *has_cookie, struct buf *cookie, int *flag, const char **why)
{
	static char	 msg[96];
	ber_len_t	 len;
	ber_tag_t	 tag;

	if ((tag = next_tag(d, &len)) == TAG_OCTETS) {
		if (get_cookie(d, has_cookie, cookie) == -1) {
			snprintf(msg, sizeof(msg), "%s: cookie is truncated",
			    what);
			*why = msg;
			return 0;
		}
		tag = next_tag(d, &len);
	}
	if (tag == TAG_BOOLEAN) {
		if (get_bool(d, len, flag) == -1) {
			snprintf(msg, sizeof(msg), "%s: bad %s BOOLEAN", what,
			    flag_name);
			*why = msg;
			return 0;
		}
		tag = next_tag(d, &len);
	}
	return tag;
}

/* The end of a SEQUENCE: nothing may follow what it holds. */
static int
sequence_end(ber_tag_t tag, const char *what, const char **why)
{
	static char	 msg[128];

	if (tag == 0)
		return 0;
	snprintf(msg, sizeof(msg), tag == LBER_DEFAULT ?
	    "%s: truncated element" : "%s: element is not an OCTET STRING "
	    "cookie or a BOOLEAN, or out of order", what);
	*why = msg;
	return -1;
}

int
sync_done_decode(struct span value, struct sync_done *out, const char **why)
{
	struct decoder	 d;
	ber_tag_t	 tag;
	int		 rc = -1;

	buf_reset(&out->cookie);
	out->has_cookie = 0;
	out->refresh_deletes = 0;
	*why = NULL;
	if (decoder_open(&d, value, why) == -1)
		return -1;
	if (enter(&d, TAG_SEQUENCE, &done_seq, why) == -1)
		goto done;
	tag = cookie_then_flag(&d, "sync done", "refreshDeletes",
	    &out->has_cookie, &out->cookie, &out->refresh_deletes, why);
	if (*why == NULL && sequence_end(tag, "sync done", why) == 0)
		rc = 0;
 done:
	decoder_close(&d);
	if (rc == -1) {
		buf_reset(&out->cookie);
		out->has_cookie = 0;
		out->refresh_deletes = 0;
	}
	return rc;
}

/*
 * The Sync Done control among a SearchResultDone's controls, decoded into
 * out: 1, 0 when there is none, -1 (and *why) when it is malformed.
 */
int
sync_done_find(struct ldapcontrol **ctrls, struct sync_done *out,
    const char **why)
{
	LDAPControl	*c;

	if ((c = ldap_control_find(LDAP_CONTROL_SYNC_DONE, ctrls, NULL)) ==
	    NULL)
		return 0;
	return sync_done_decode((struct span){ (unsigned char *)
	    c->ldctl_value.bv_val, c->ldctl_value.bv_len }, out, why) == -1 ?
	    -1 : 1;
}

/* syncIdSet's syncUUIDs: SET OF OCTET STRING (SIZE(16)), possibly empty. */
static int
info_uuids(struct decoder *d, struct sync_info *out, const char **why)
{
	struct berval	 bv;
	ber_len_t	 len;
	ber_tag_t	 tag;

	if (enter(d, TAG_SET, &info_set, why) == -1)
		return -1;
	while ((tag = next_tag(d, &len)) != 0) {
		if (tag == LBER_DEFAULT) {
			*why = "sync info: truncated syncUUIDs element";
			return -1;
		}
		if (tag != TAG_OCTETS) {
			*why = "sync info: syncUUIDs holds a non-OCTET STRING";
			return -1;
		}
		if (get_octets(d, &bv) == -1) {
			*why = "sync info: truncated syncUUIDs element";
			return -1;
		}
		if (bv.bv_len != 16) {
			*why = bv.bv_len < 16 ?
			    "sync info: a syncUUID is shorter than 16 bytes" :
			    "sync info: a syncUUID is longer than 16 bytes";
			return -1;
		}
		buf_add(&out->uuids, bv.bv_val, 16);
	}
	return 0;
}

int
sync_info_decode(struct span value, struct sync_info *out, const char **why)
{
	struct decoder	 d;
	struct berval	 bv;
	ber_len_t	 len;
	ber_tag_t	 tag, choice;
	int		 rc = -1;

	buf_reset(&out->cookie);
	buf_reset(&out->uuids);
	out->type = SYNC_INFO_NEW_COOKIE;
	out->has_cookie = 0;
	out->refresh_done = 1;
	out->refresh_deletes = 0;
	*why = NULL;
	if (decoder_open(&d, value, why) == -1)
		return -1;

	choice = ber_peek_tag(d.ber, &len);
	switch (choice) {
	case LDAP_TAG_SYNC_NEW_COOKIE:
		/* [0] primitive: the whole element is the cookie. */
		if (get_octets(&d, &bv) == -1) {
			*why = "sync info: newcookie is truncated";
			goto done;
		}
		if (decoder_left(&d) != 0) {
			*why = "sync info: trailing bytes after newcookie";
			goto done;
		}
		buf_add(&out->cookie, bv.bv_val, bv.bv_len);
		out->has_cookie = 1;
		out->type = SYNC_INFO_NEW_COOKIE;
		rc = 0;
		goto done;
	case LDAP_TAG_SYNC_REFRESH_DELETE:
		out->type = SYNC_INFO_REFRESH_DELETE;
		break;
	case LDAP_TAG_SYNC_REFRESH_PRESENT:
		out->type = SYNC_INFO_REFRESH_PRESENT;
		break;
	case LDAP_TAG_SYNC_ID_SET:
		out->type = SYNC_INFO_ID_SET;
		break;
	case LBER_DEFAULT:
		*why = "sync info: truncated, or a length beyond the value";
		goto done;
	default:
		*why = "sync info: unknown CHOICE tag";
		goto done;
	}
	if (enter(&d, choice, &info_choice, why) == -1)
		goto done;
	if (choice == LDAP_TAG_SYNC_ID_SET)
		tag = cookie_then_flag(&d, "sync info", "refreshDeletes",
		    &out->has_cookie, &out->cookie, &out->refresh_deletes, why);
	else
		tag = cookie_then_flag(&d, "sync info", "refreshDone",
		    &out->has_cookie, &out->cookie, &out->refresh_done, why);
	if (*why != NULL)
		goto done;
	if (choice == LDAP_TAG_SYNC_ID_SET) {
		if (tag != TAG_SET) {
			*why = tag == LBER_DEFAULT ?
			    "sync info: truncated element in syncIdSet" :
			    "sync info: syncIdSet has no syncUUIDs SET";
			goto done;
		}
		if (info_uuids(&d, out, why) == -1)
			goto done;
		tag = next_tag(&d, &len);
	}
	if (sequence_end(tag, "sync info", why) == 0)
		rc = 0;
 done:
	decoder_close(&d);
	if (rc == -1) {
		buf_reset(&out->cookie);
		buf_reset(&out->uuids);
		out->has_cookie = 0;
	}
	return rc;
}

void
sync_state_free(struct sync_state *s)
{
	buf_free(&s->cookie);
}

void
sync_done_free(struct sync_done *s)
{
	buf_free(&s->cookie);
}

void
sync_info_free(struct sync_info *s)
{
	buf_free(&s->cookie);
	buf_free(&s->uuids);
}

/*
 * Cookies.  The bytes are opaque except for the comma-separated fields
 * rid=, sid=, csn= (CSNs separated by ';') and delcsn=; nothing here
 * assumes text or a NUL terminator.
 */

/* Take the next sep-separated piece off the front of *s. */
static int
split_next(struct span *s, unsigned char sep, struct span *piece)
{
	const unsigned char	*e;

	if (s->p == NULL)
		return 0;
	piece->p = s->p;
	if ((e = memchr(s->p, sep, s->len)) == NULL) {
		piece->len = s->len;
		s->p = NULL;
		s->len = 0;
	} else {
		piece->len = (size_t)(e - s->p);
		s->len -= piece->len + 1;
		s->p = e + 1;
	}
	return 1;
}

static int
has_prefix(struct span s, const char *pfx)
{
	size_t	 n = strlen(pfx);

	return s.len >= n && memcmp(s.p, pfx, n) == 0;
}

/* Iterate the fields of a cookie: an empty cookie has none. */
static struct span
fields_of(struct span cookie)
{
	struct span	 s = cookie;

	if (s.len == 0)
		s.p = NULL;
	else if (s.p == NULL)
		s.len = 0;
	return s;
}

/*
 * The change number that ends a 389-ds cookie
 * (host:port#binddn:base:filter#changenumber, doc/providers.md): 1 and
 * *cn, or 0 when the cookie does not end so.
 */
int
cookie_changenumber(struct span cookie, uint64_t *cn)
{
	size_t		 i = cookie.len;
	uint64_t	 v = 0;

	while (i > 0 && cookie.p[i - 1] != '#')
		i--;
	if (i == 0 || i == cookie.len)
		return 0;
	for (; i < cookie.len; i++) {
		if (cookie.p[i] < '0' || cookie.p[i] > '9' ||
		    v > (UINT64_MAX - 9) / 10)
			return 0;
		v = v * 10 + (uint64_t)(cookie.p[i] - '0');
	}
	*cn = v;
	return 1;
}

/*
 * Is it OpenLDAP's cookie (rid=NNN,...), whose rules ldapfeed knows?  Any
 * other server's cookie (389-ds: host:port#binddn:base:filter#changenumber)
 * is opaque: kept as the server sent it (doc/syncrepl.md, "Cookies").
 */
int
cookie_is_openldap(struct span cookie)
{
	return has_prefix(cookie, "rid=");
}

static int
span_cmp(struct span a, struct span b)
{
	int	 c;

	c = memcmp(a.p, b.p, a.len < b.len ? a.len : b.len);
	if (c != 0)
		return c;
	return a.len < b.len ? -1 : a.len > b.len;
}

int
cookie_has_csn(struct span cookie)
{
	struct span	 fields, f, list, csn;

	fields = fields_of(cookie);
	while (split_next(&fields, ',', &f)) {
		if (!has_prefix(f, "csn="))
			continue;
		list.p = f.p + 4;
		list.len = f.len - 4;
		while (split_next(&list, ';', &csn))
			if (csn.len > 0)
				return 1;
	}
	return 0;
}

/*
 * The server time of a CSN, YYYYmmddHHMMSS.uuuuuuZ#..., in microseconds
 * since the epoch (UTC); 0 when it is not one.  For the health figures
 * (doc/safety.md, "Health figures"): entryCSN is the time of an entry's
 * last change.
 */
int64_t
csn_time_us(struct span csn)
{
	struct tm	 tm;
	int64_t		 us = 0;
	int		 d[14], i;
	time_t		 t;

	if (csn.len < 22 || csn.p[14] != '.' || csn.p[21] != 'Z')
		return 0;
	for (i = 0; i < 14; i++) {
		if (csn.p[i] < '0' || csn.p[i] > '9')
			return 0;
		d[i] = csn.p[i] - '0';
	}
	for (i = 15; i < 21; i++) {
		if (csn.p[i] < '0' || csn.p[i] > '9')
			return 0;
		us = us * 10 + (csn.p[i] - '0');
	}
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = d[0] * 1000 + d[1] * 100 + d[2] * 10 + d[3] - 1900;
	tm.tm_mon = d[4] * 10 + d[5] - 1;
	tm.tm_mday = d[6] * 10 + d[7];
	tm.tm_hour = d[8] * 10 + d[9];
	tm.tm_min = d[10] * 10 + d[11];
	tm.tm_sec = d[12] * 10 + d[13];
	if ((t = timegm(&tm)) == (time_t)-1)
		return 0;
	return (int64_t)t * 1000000 + us;
}

/* The newest CSN time of an OpenLDAP cookie's csn= vector, or 0. */
int64_t
cookie_time_us(struct span cookie)
{
	struct span	 fields, f, list, csn;
	int64_t		 t, newest = 0;

	fields = fields_of(cookie);
	while (split_next(&fields, ',', &f)) {
		if (!has_prefix(f, "csn="))
			continue;
		list.p = f.p + 4;
		list.len = f.len - 4;
		while (split_next(&list, ';', &csn))
			if ((t = csn_time_us(csn)) > newest)
				newest = t;
	}
	return newest;
}

/*
 * One CSN of a vector, YYYYmmddHHMMSS.uuuuuuZ#cnt#SID#mod.  The SID is the
 * third '#' field; slapd reads it as hex, so we compare it as a number and
 * "00a" and "0a" are the same server.
 */
struct csnref {
	struct span	 csn;
	unsigned long	 sid;
	int		 received;
};

/* 1 and the SID of a well-formed CSN, 0 if it has no usable SID field. */
static int
csn_sid(struct span csn, unsigned long *sid)
{
	struct span	 s = csn, piece;
	size_t		 i;
	int		 n, h;

	for (n = 0; n < 3; n++)
		if (!split_next(&s, '#', &piece))
			return 0;
	if (piece.len == 0 || piece.len > 8)
		return 0;
	*sid = 0;
	for (i = 0; i < piece.len; i++) {
		if ((h = hex_digit(piece.p[i])) == -1)
			return 0;
		*sid = *sid << 4 | (unsigned long)h;
	}
	return 1;
}


/* By SID; within one SID the received CSNs first, the newest first. */
static int
csnref_cmp(const void *va, const void *vb)
{
	const struct csnref	*a = va, *b = vb;

	if (a->sid != b->sid)
		return a->sid < b->sid ? -1 : 1;
	if (a->received != b->received)
		return a->received ? -1 : 1;
	return span_cmp(b->csn, a->csn);
}

/*
 * Collect the well-formed CSNs of a cookie's csn= fields into v (NULL only
 * counts them) and return how many.
 */
static size_t
csn_collect(struct span cookie, int received, struct csnref *v)
{
	struct span	 fields, f, list, csn;
	unsigned long	 sid;
	size_t		 n = 0;

	fields = fields_of(cookie);
	while (split_next(&fields, ',', &f)) {
		if (!has_prefix(f, "csn="))
			continue;
		list.p = f.p + 4;
		list.len = f.len - 4;
		while (split_next(&list, ';', &csn)) {
			if (csn.len == 0 || !csn_sid(csn, &sid))
				continue;
			if (v != NULL) {
				v[n].csn = csn;
				v[n].sid = sid;
				v[n].received = received;
			}
			n++;
		}
	}
	return n;
}

static void
csn_emit(struct buf *out, struct span csn, int *first)
{
	if (!*first)
		buf_add_u8(out, ';');
	buf_add(out, csn.p, csn.len);
	*first = 0;
}

/* The merged csn= field: the vector by SID, then received's malformed CSNs. */
static void
csn_merge_field(struct buf *out, struct span stored, struct span received)
{
	struct csnref	 small[32], *v;
	struct span	 fields, f, list, csn;
	unsigned long	 sid;
	size_t		 nr, ns, n, i;
	int		 first = 1;

	nr = csn_collect(received, 1, NULL);
	ns = csn_collect(stored, 0, NULL);
	n = nr + ns;	/* each is below a cookie's length: no overflow */
	v = n <= sizeof(small) / sizeof(small[0]) ? small :
	    xcalloc(n, sizeof(*v));
	csn_collect(received, 1, v);
	csn_collect(stored, 0, v + nr);
	qsort(v, n, sizeof(*v), csnref_cmp);

	buf_add_str(out, "csn=");
	for (i = 0; i < n; i++)
		if (i == 0 || v[i].sid != v[i - 1].sid)
			csn_emit(out, v[i].csn, &first);
	if (v != small)
		free(v);

	fields = fields_of(received);
	while (split_next(&fields, ',', &f)) {
		if (!has_prefix(f, "csn="))
			continue;
		list.p = f.p + 4;
		list.len = f.len - 4;
		while (split_next(&list, ';', &csn))
			if (csn.len > 0 && !csn_sid(csn, &sid))
				csn_emit(out, csn, &first);
	}
}

/*
 * The cookie to store after receiving one, given the stored one.
 *
 * A received cookie without a CSN never replaces a stored one (slapd sends
 * "rid=000" alone under load, and sending that back means a full reload);
 * a stored cookie without a CSN is simply replaced.  Otherwise the result
 * is the received cookie with its CSN vector merged with the stored one by
 * server ID, because a persist-stage cookie carries only the CSN of the
 * server that made the change and the provider treats a vector missing one
 * of its SIDs as a consumer that knows nothing:
 *   - per SID, the received CSN wins; a SID only the stored cookie has
 *     keeps its stored CSN (two received CSNs of one SID: the greater);
 *   - the vector is ordered by SID, read as hex as slapd does;
 *   - received CSNs with no usable SID field (fewer than three '#' fields,
 *     or a SID that is not 1-8 hex digits) are kept verbatim after the
 *     vector; stored ones are dropped;
 *   - all csn= fields become one, at the place of the first;
 *   - delcsn= is dropped: it names one delete, not a state to resume from;
 *   - every other field (rid=, sid=, anything unknown) is kept in order.
 */
void
cookie_merge(struct buf *out, struct span stored, struct span received)
{
	struct span	 fields, f;
	int		 first = 1, merged = 0;

	buf_reset(out);
	if (!cookie_has_csn(received)) {
		buf_add(out, stored.p, stored.len);
		return;
	}
	if (!cookie_has_csn(stored)) {
		buf_add(out, received.p, received.len);
		return;
	}
	fields = fields_of(received);
	while (split_next(&fields, ',', &f)) {
		if (has_prefix(f, "delcsn="))
			continue;
		if (has_prefix(f, "csn=")) {
			if (merged)
				continue;
			merged = 1;
			if (!first)
				buf_add_u8(out, ',');
			csn_merge_field(out, stored, received);
		} else {
			if (!first)
				buf_add_u8(out, ',');
			buf_add(out, f.p, f.len);
		}
		first = 0;
	}
}
