/*
 * Unit tests for src/syncrepl.c: the Sync Request encoding, the Sync State,
 * Sync Done and Sync Info decoders against hand-built bytes (doc/syncrepl.md,
 * "The controls on the wire"; RFC 4533 sections 2.2-2.5) and hostile ones,
 * and the cookie rules (doc/syncrepl.md, "Cookies").
 */
#include <stdlib.h>
#include <string.h>

#include <lber.h>
#include <ldap.h>

#include "ldapfeed.h"
#include "tap.h"

/* The CSN slapd puts in a single-provider cookie (mod has six digits). */
#define CSN0	"20261125073000.000000Z#000000#000#000000"
#define COOKIE52 "rid=000,csn=" CSN0					/* 0x34 */
#define COOKIE100 COOKIE52 ",delcsn=20261125073100.000000Z#000000#000#000000"

static const unsigned char uuid_a[16] = {
	0x39, 0x06, 0xf8, 0xc4, 0x7c, 0x8b, 0x10, 0x41,
	0x92, 0xe1, 0x05, 0x7a, 0xe5, 0x7b, 0x83, 0xaf
};
static const unsigned char uuid_nul[16] = {
	0x00, 0x00, 0x41, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00
};

static struct span
sp(const void *p, size_t len)
{
	struct span	 s;

	s.p = p;
	s.len = len;
	return s;
}

static struct span
sps(const char *s)
{
	return sp(s, strlen(s));
}

static struct span
bsp(const struct buf *b)
{
	return sp(b->data, b->len);
}

static int
buf_eq(const struct buf *b, const void *p, size_t len)
{
	return b->len == len && (len == 0 || memcmp(b->data, p, len) == 0);
}

static int
buf_eqs(const struct buf *b, const char *s)
{
	return buf_eq(b, s, strlen(s));
}

/* The test's own TLV writer (DER lengths), independent of syncrepl.c. */
static void
tlv(struct buf *b, unsigned char tag, const void *p, size_t len)
{
	buf_add_u8(b, tag);
	if (len < 0x80)
		buf_add_u8(b, (uint8_t)len);
	else if (len < 0x100) {
		buf_add_u8(b, 0x81);
		buf_add_u8(b, (uint8_t)len);
	} else {
		buf_add_u8(b, 0x82);
		buf_add_u8(b, (uint8_t)(len >> 8));
		buf_add_u8(b, (uint8_t)len);
	}
	buf_add(b, p, len);
}

/* Which decoder a message goes to. */
enum kind { K_STATE, K_DONE, K_INFO };

struct outs {
	struct sync_state	 st;
	struct sync_done	 dn;
	struct sync_info	 in;
};

static int
decode(struct outs *o, enum kind k, struct span v, const char **why)
{
	switch (k) {
	case K_STATE:
		return sync_state_decode(v, &o->st, why);
	case K_DONE:
		return sync_done_decode(v, &o->dn, why);
	default:
		return sync_info_decode(v, &o->in, why);
	}
}

/* Decode from an exact-size heap copy, so overreads show in valgrind/ASan. */
static int
decode_copy(struct outs *o, enum kind k, const void *p, size_t len,
    const char **why)
{
	unsigned char	*c;
	int		 rc;

	c = xmalloc(len);
	if (len)
		memcpy(c, p, len);
	rc = decode(o, k, sp(len ? c : NULL, len), why);
	free(c);
	return rc;
}

static void
test_encode(void)
{
	struct buf	 b = { 0 };
	struct span	 ck;
	static const unsigned char ro[] = {
		0x30, 0x06, 0x0a, 0x01, 0x01, 0x01, 0x01, 0x00
	};
	static const unsigned char ro_hint[] = {
		0x30, 0x06, 0x0a, 0x01, 0x01, 0x01, 0x01, 0xff
	};
	const char	*cookie = "rid=000,csn=20261125073000.000000Z#000000#000#000";
	unsigned char	 want[128];
	size_t		 n = 0, clen = strlen(cookie);

	ok(sync_request_encode(&b, SYNC_MODE_REFRESH_ONLY, NULL, 0) == 0 &&
	    buf_eq(&b, ro, sizeof(ro)),
	    "encode: refreshOnly, no cookie, reloadHint FALSE encoded");
	buf_reset(&b);
	ok(sync_request_encode(&b, SYNC_MODE_REFRESH_ONLY, NULL, 1) == 0 &&
	    buf_eq(&b, ro_hint, sizeof(ro_hint)),
	    "encode: refreshOnly, no cookie, reloadHint TRUE is 0xff");

	/* 30 LL 0a 01 03 04 LL <cookie> 01 01 ff */
	ok(clen == 49, "encode: the cookie is 49 bytes");
	want[n++] = 0x30;
	want[n++] = (unsigned char)(3 + 2 + clen + 3);
	want[n++] = 0x0a; want[n++] = 0x01; want[n++] = 0x03;
	want[n++] = 0x04; want[n++] = (unsigned char)clen;
	memcpy(want + n, cookie, clen);
	n += clen;
	want[n++] = 0x01; want[n++] = 0x01; want[n++] = 0xff;
	ck = sps(cookie);
	buf_reset(&b);
	ok(sync_request_encode(&b, SYNC_MODE_REFRESH_AND_PERSIST, &ck, 1) == 0 &&
	    buf_eq(&b, want, n),
	    "encode: refreshAndPersist with cookie and reloadHint TRUE");
	ok(b.len == 59 && b.data[1] == 0x39, "encode: 30 39 ... (59 bytes)");

	/* Appends, and an empty cookie is still sent. */
	buf_reset(&b);
	buf_add_str(&b, "XY");
	ck = sp("", 0);
	ok(sync_request_encode(&b, SYNC_MODE_REFRESH_ONLY, &ck, 0) == 0 &&
	    buf_eq(&b, "XY\x30\x08\x0a\x01\x01\x04\x00\x01\x01\x00", 12),
	    "encode: appends; an empty cookie is encoded as 04 00");

	buf_reset(&b);
	ok(sync_request_encode(&b, 2, NULL, 0) == -1 && b.len == 0,
	    "encode: mode 2 refused, nothing appended");
	ok(sync_request_encode(&b, 0, NULL, 0) == -1,
	    "encode: mode 0 refused");

	/* Binary cookie bytes travel untouched. */
	buf_reset(&b);
	ck = sp("a\0\xff" "b", 4);
	ok(sync_request_encode(&b, SYNC_MODE_REFRESH_ONLY, &ck, 0) == 0 &&
	    buf_eq(&b, "\x30\x0c\x0a\x01\x01\x04\x04" "a\0\xff" "b\x01\x01\x00",
	    14), "encode: binary cookie with NUL and 0xff bytes");

	/* A 200-byte cookie needs long-form lengths. */
	{
		char	 big[200];

		memset(big, 'c', sizeof(big));
		ck = sp(big, sizeof(big));
		buf_reset(&b);
		ok(sync_request_encode(&b, SYNC_MODE_REFRESH_AND_PERSIST, &ck,
		    0) == 0 && b.len == 3 + 3 + 3 + 200 + 3 &&
		    b.data[0] == 0x30 && b.data[1] == 0x81 && b.data[2] == 209 &&
		    b.data[6] == 0x04 && b.data[7] == 0x81 && b.data[8] == 200,
		    "encode: 200-byte cookie with long-form lengths");
	}
	buf_free(&b);
}

/* The state layout: 30 4b 0a 01 03 04 10 <uuid> 04 34 <cookie>. */
static void
build_state(struct buf *m, int state, const unsigned char *uuid,
    size_t uuidlen, const char *cookie)
{
	struct buf	 c = { 0 };
	unsigned char	 e = (unsigned char)state;

	tlv(&c, 0x0a, &e, 1);
	tlv(&c, 0x04, uuid, uuidlen);
	if (cookie != NULL)
		tlv(&c, 0x04, cookie, strlen(cookie));
	buf_reset(m);
	tlv(m, 0x30, c.data, c.len);
	buf_free(&c);
}

static void
test_state(struct outs *o)
{
	struct buf	 m = { 0 };
	const char	*why;
	unsigned char	 u17[17], hand[77];
	size_t		 n = 0;
	int		 s;

	/* Literally the bytes of the example in doc/syncrepl.md, "The controls
	 * on the wire": slapd's Sync State control for a delete, with a cookie. */
	hand[n++] = 0x30; hand[n++] = 0x4b;
	hand[n++] = 0x0a; hand[n++] = 0x01; hand[n++] = 0x03;
	hand[n++] = 0x04; hand[n++] = 0x10;
	memcpy(hand + n, uuid_a, 16); n += 16;
	hand[n++] = 0x04; hand[n++] = 0x34;
	memcpy(hand + n, COOKIE52, 52); n += 52;
	ok(n == 77, "state: hand-built layout is 77 bytes");
	ok(decode_copy(o, K_STATE, hand, n, &why) == 0 &&
	    o->st.state == SYNC_DELETE &&
	    memcmp(o->st.uuid, uuid_a, 16) == 0 && o->st.has_cookie &&
	    buf_eqs(&o->st.cookie, COOKIE52),
	    "state: delete + uuid + cookie (30 4b ...)");

	for (s = 0; s <= 3; s++) {
		build_state(&m, s, uuid_a, 16, NULL);
		ok(decode_copy(o, K_STATE, m.data, m.len, &why) == 0 &&
		    o->st.state == s && !o->st.has_cookie &&
		    o->st.cookie.len == 0,
		    "state: state %d without cookie", s);
	}

	build_state(&m, SYNC_ADD, uuid_nul, 16, "");
	ok(decode_copy(o, K_STATE, m.data, m.len, &why) == 0 &&
	    memcmp(o->st.uuid, uuid_nul, 16) == 0 && o->st.has_cookie &&
	    o->st.cookie.len == 0,
	    "state: UUID with NUL bytes kept raw; empty cookie is present");

	/* Hostile. */
	build_state(&m, 4, uuid_a, 16, NULL);
	ok(decode_copy(o, K_STATE, m.data, m.len, &why) == -1 && why &&
	    strstr(why, "0..3"), "state: state 4 refused (%s)", why);
	build_state(&m, 0xff, uuid_a, 16, NULL);
	ok(decode_copy(o, K_STATE, m.data, m.len, &why) == -1 && why,
	    "state: state -1 refused (%s)", why);
	build_state(&m, 1, uuid_a, 15, NULL);
	ok(decode_copy(o, K_STATE, m.data, m.len, &why) == -1 && why &&
	    strstr(why, "entryUUID") && strstr(why, "shorter"),
	    "state: 15-byte UUID refused (%s)", why);
	memset(u17, 7, sizeof(u17));
	build_state(&m, 1, u17, 17, NULL);
	ok(decode_copy(o, K_STATE, m.data, m.len, &why) == -1 && why &&
	    strstr(why, "longer"), "state: 17-byte UUID refused (%s)", why);
	build_state(&m, 1, u17, 0, NULL);
	ok(decode_copy(o, K_STATE, m.data, m.len, &why) == -1 && why,
	    "state: empty UUID refused (%s)", why);

	hand[0] = 0x31;
	ok(decode_copy(o, K_STATE, hand, n, &why) == -1 && why &&
	    strstr(why, "SEQUENCE"), "state: outer SET tag refused (%s)", why);
	hand[0] = 0x30;
	hand[n - 54] = 0x80;	/* the cookie's tag */
	ok(hand[n - 53] == 0x34 &&
	    decode_copy(o, K_STATE, hand, n, &why) == -1 && why,
	    "state: cookie with tag 0x80 refused (%s)", why);
	hand[n - 54] = 0x04;
	ok(decode_copy(o, K_STATE, hand, n - 1, &why) == -1 && why,
	    "state: truncated by one byte refused (%s)", why);
	{
		unsigned char	 g[78];

		memcpy(g, hand, n);
		g[n] = 0x00;
		ok(decode_copy(o, K_STATE, g, n + 1, &why) == -1 && why &&
		    strstr(why, "trailing"),
		    "state: trailing garbage after SEQUENCE refused (%s)", why);
	}
	{
		/* An enum, a uuid, a cookie and one more OCTET STRING. */
		static const unsigned char x[] = {
			0x30, 0x19, 0x0a, 0x01, 0x01, 0x04, 0x10,
			1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
			0x04, 0x00, 0x04, 0x00
		};
		static const unsigned char noenum[] = {
			0x30, 0x12, 0x04, 0x10,
			1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16
		};
		static const unsigned char zerolen_enum[] = {
			0x30, 0x14, 0x0a, 0x00, 0x04, 0x10,
			1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16
		};
		static const unsigned char long_enum[] = {
			0x30, 0x19, 0x0a, 0x05, 0x00, 0x00, 0x00, 0x00, 0x01,
			0x04, 0x10,
			1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16
		};
		static const unsigned char huge[] = {
			0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x0a, 0x01, 0x01
		};
		static const unsigned char huge8[] = {
			0x30, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
			0xff, 0x0a, 0x01, 0x01
		};
		static const unsigned char huge_inner[] = {
			0x30, 0x09, 0x0a, 0x01, 0x01, 0x04, 0x84, 0xff, 0xff,
			0xff, 0xf0
		};
		static const unsigned char indefinite[] = {
			0x30, 0x80, 0x0a, 0x01, 0x01, 0x00, 0x00
		};
		static const unsigned char bigtag[] = {
			0x3f, 0x81, 0x01, 0x00
		};

		ok(decode_copy(o, K_STATE, x, sizeof(x), &why) == -1 && why,
		    "state: extra element after cookie refused (%s)", why);
		ok(decode_copy(o, K_STATE, noenum, sizeof(noenum), &why) == -1 &&
		    why, "state: missing state refused (%s)", why);
		ok(decode_copy(o, K_STATE, zerolen_enum, sizeof(zerolen_enum),
		    &why) == -1 && why, "state: 0-length ENUMERATED refused (%s)",
		    why);
		ok(decode_copy(o, K_STATE, long_enum, sizeof(long_enum),
		    &why) == -1 && why, "state: 5-byte ENUMERATED refused (%s)",
		    why);
		ok(decode_copy(o, K_STATE, huge, sizeof(huge), &why) == -1 &&
		    why, "state: 2 GiB declared length refused (%s)", why);
		ok(decode_copy(o, K_STATE, huge8, sizeof(huge8), &why) == -1 &&
		    why, "state: 8-byte declared length refused (%s)", why);
		ok(decode_copy(o, K_STATE, huge_inner, sizeof(huge_inner),
		    &why) == -1 && why,
		    "state: huge inner OCTET STRING length refused (%s)", why);
		ok(decode_copy(o, K_STATE, indefinite, sizeof(indefinite),
		    &why) == -1 && why, "state: indefinite length refused (%s)",
		    why);
		ok(decode_copy(o, K_STATE, bigtag, sizeof(bigtag), &why) == -1 &&
		    why, "state: multi-byte tag refused (%s)", why);
		ok(decode_copy(o, K_STATE, NULL, 0, &why) == -1 && why,
		    "state: empty value refused (%s)", why);
	}

	/* A failure leaves no stale cookie behind. */
	ok(decode_copy(o, K_STATE, hand, n, &why) == 0 && o->st.has_cookie,
	    "state: decode again");
	ok(decode_copy(o, K_STATE, hand, 3, &why) == -1 && !o->st.has_cookie &&
	    o->st.cookie.len == 0, "state: failure clears the cookie");

	/* Built with ber_printf. */
	{
		BerElement	*ber = ber_alloc_t(LBER_USE_DER);
		struct berval	 u, c, flat;

		u.bv_val = (char *)(uintptr_t)uuid_nul;
		u.bv_len = 16;
		c.bv_val = (char *)"rid=001,csn=x";
		c.bv_len = 13;
		ber_printf(ber, "{eOO}", (ber_int_t)LDAP_SYNC_MODIFY, &u, &c);
		ber_flatten2(ber, &flat, 0);
		ok(decode_copy(o, K_STATE, flat.bv_val, flat.bv_len, &why) == 0 &&
		    o->st.state == SYNC_MODIFY &&
		    memcmp(o->st.uuid, uuid_nul, 16) == 0 &&
		    buf_eqs(&o->st.cookie, "rid=001,csn=x"),
		    "state: ber_printf {eOO} modify");
		ber_free(ber, 1);
	}
	buf_free(&m);
}

static void
test_done(struct outs *o)
{
	unsigned char	 hand[59];
	size_t		 n = 0;
	const char	*why;
	static const unsigned char nochange[] = { 0x30, 0x03, 0x01, 0x01, 0xff };
	static const unsigned char empty[] = { 0x30, 0x00 };
	static const unsigned char emptyck[] = { 0x30, 0x02, 0x04, 0x00 };
	static const unsigned char f[] = { 0x30, 0x03, 0x01, 0x01, 0x00 };
	static const unsigned char t1[] = { 0x30, 0x03, 0x01, 0x01, 0x01 };
	static const unsigned char boolfirst[] = {
		0x30, 0x07, 0x01, 0x01, 0xff, 0x04, 0x02, 'a', 'b'
	};
	static const unsigned char twobools[] = {
		0x30, 0x06, 0x01, 0x01, 0xff, 0x01, 0x01, 0xff
	};
	static const unsigned char badbool[] = {
		0x30, 0x04, 0x01, 0x02, 0x00, 0xff
	};
	static const unsigned char emptybool[] = { 0x30, 0x02, 0x01, 0x00 };
	static const unsigned char trailing[] = {
		0x30, 0x03, 0x01, 0x01, 0xff, 0x00
	};
	static const unsigned char wrongtag[] = { 0xa1, 0x03, 0x01, 0x01, 0xff };
	static const unsigned char ck80[] = { 0x30, 0x03, 0x80, 0x01, 'x' };
	static const unsigned char ck24[] = {
		0x30, 0x05, 0x24, 0x03, 0x04, 0x01, 'x'
	};
	static const unsigned char shortseq[] = {
		0x30, 0x02, 0x01, 0x01, 0xff
	};

	hand[n++] = 0x30; hand[n++] = 0x39;
	hand[n++] = 0x04; hand[n++] = 0x34;
	memcpy(hand + n, COOKIE52, 52); n += 52;
	hand[n++] = 0x01; hand[n++] = 0x01; hand[n++] = 0xff;
	ok(decode_copy(o, K_DONE, hand, n, &why) == 0 && o->dn.has_cookie &&
	    buf_eqs(&o->dn.cookie, COOKIE52) && o->dn.refresh_deletes == 1,
	    "done: cookie + refreshDeletes TRUE (30 39 ...)");
	ok(decode_copy(o, K_DONE, nochange, sizeof(nochange), &why) == 0 &&
	    !o->dn.has_cookie && o->dn.cookie.len == 0 &&
	    o->dn.refresh_deletes == 1, "done: 30 03 01 01 ff");
	ok(decode_copy(o, K_DONE, empty, sizeof(empty), &why) == 0 &&
	    !o->dn.has_cookie && o->dn.refresh_deletes == 0,
	    "done: empty SEQUENCE, refreshDeletes defaults to FALSE");
	ok(decode_copy(o, K_DONE, emptyck, sizeof(emptyck), &why) == 0 &&
	    o->dn.has_cookie && o->dn.cookie.len == 0 &&
	    o->dn.refresh_deletes == 0, "done: empty cookie is present");
	ok(decode_copy(o, K_DONE, f, sizeof(f), &why) == 0 &&
	    o->dn.refresh_deletes == 0, "done: explicit FALSE");
	ok(decode_copy(o, K_DONE, t1, sizeof(t1), &why) == 0 &&
	    o->dn.refresh_deletes == 1, "done: BER TRUE as 0x01");
	n -= 3;
	hand[1] = 0x36;
	ok(decode_copy(o, K_DONE, hand, n, &why) == 0 && o->dn.has_cookie &&
	    o->dn.refresh_deletes == 0, "done: cookie only");

	ok(decode_copy(o, K_DONE, boolfirst, sizeof(boolfirst), &why) == -1 &&
	    why, "done: cookie after the boolean refused (%s)", why);
	ok(decode_copy(o, K_DONE, twobools, sizeof(twobools), &why) == -1 &&
	    why, "done: two booleans refused (%s)", why);
	ok(decode_copy(o, K_DONE, badbool, sizeof(badbool), &why) == -1 &&
	    why && strstr(why, "BOOLEAN"),
	    "done: 2-byte BOOLEAN refused (%s)", why);
	ok(decode_copy(o, K_DONE, emptybool, sizeof(emptybool), &why) == -1 &&
	    why, "done: 0-byte BOOLEAN refused (%s)", why);
	ok(decode_copy(o, K_DONE, trailing, sizeof(trailing), &why) == -1 &&
	    why, "done: trailing byte refused (%s)", why);
	ok(decode_copy(o, K_DONE, wrongtag, sizeof(wrongtag), &why) == -1 &&
	    why, "done: outer tag a1 refused (%s)", why);
	ok(decode_copy(o, K_DONE, ck80, sizeof(ck80), &why) == -1 && why,
	    "done: cookie tagged 0x80 refused (%s)", why);
	ok(decode_copy(o, K_DONE, ck24, sizeof(ck24), &why) == -1 && why,
	    "done: constructed cookie 0x24 refused (%s)", why);
	ok(decode_copy(o, K_DONE, shortseq, sizeof(shortseq), &why) == -1 &&
	    why, "done: element overruns its SEQUENCE refused (%s)", why);

	{
		BerElement	*ber = ber_alloc_t(LBER_USE_DER);
		struct berval	 c, flat;

		c.bv_val = (char *)"rid=000,csn=\0\xff";
		c.bv_len = 14;
		ber_printf(ber, "{Ob}", &c, (ber_int_t)1);
		ber_flatten2(ber, &flat, 0);
		ok(decode_copy(o, K_DONE, flat.bv_val, flat.bv_len, &why) == 0 &&
		    buf_eq(&o->dn.cookie, "rid=000,csn=\0\xff", 14) &&
		    o->dn.refresh_deletes == 1, "done: ber_printf {Ob}");
		ber_free(ber, 1);
	}
}

/* An a1/a2/a3 message: [cookie] [boolean] [SET of n uuids]. */
static void
build_info(struct buf *m, unsigned char tag, const char *cookie, int boolv,
    int nuuids, const unsigned char *uuid)
{
	struct buf	 c = { 0 }, set = { 0 };
	unsigned char	 b = (unsigned char)boolv;
	int		 i;

	if (cookie != NULL)
		tlv(&c, 0x04, cookie, strlen(cookie));
	if (boolv >= 0)
		tlv(&c, 0x01, &b, 1);
	if (nuuids >= 0) {
		for (i = 0; i < nuuids; i++) {
			unsigned char	 u[16];

			memcpy(u, uuid, 16);
			u[15] = (unsigned char)i;
			u[14] = (unsigned char)(i >> 8);
			tlv(&set, 0x04, u, 16);
		}
		tlv(&c, 0x31, set.data, set.len);
	}
	buf_reset(m);
	tlv(m, tag, c.data, c.len);
	buf_free(&c);
	buf_free(&set);
}

static void
test_info(struct outs *o)
{
	struct buf	 m = { 0 };
	unsigned char	 hand[128];
	size_t		 n;
	const char	*why;
	int		 i, good;

	/* newcookie: 80 34 <cookie> */
	n = 0;
	hand[n++] = 0x80; hand[n++] = 0x34;
	memcpy(hand + n, COOKIE52, 52); n += 52;
	ok(decode_copy(o, K_INFO, hand, n, &why) == 0 &&
	    o->in.type == SYNC_INFO_NEW_COOKIE && o->in.has_cookie &&
	    buf_eqs(&o->in.cookie, COOKIE52), "info: newcookie 80 34");
	ok(decode_copy(o, K_INFO, "\x80\x00", 2, &why) == 0 &&
	    o->in.type == SYNC_INFO_NEW_COOKIE && o->in.has_cookie &&
	    o->in.cookie.len == 0, "info: empty newcookie is present");
	ok(decode_copy(o, K_INFO, hand, n - 1, &why) == -1 && why,
	    "info: truncated newcookie refused (%s)", why);
	hand[n] = 0;
	ok(decode_copy(o, K_INFO, hand, n + 1, &why) == -1 && why,
	    "info: trailing byte after newcookie refused (%s)", why);

	/* refreshDelete: a1 36 04 34 <cookie> */
	hand[0] = 0xa1; hand[1] = 0x36; hand[2] = 0x04; hand[3] = 0x34;
	memcpy(hand + 4, COOKIE52, 52);
	n = 56;
	ok(decode_copy(o, K_INFO, hand, n, &why) == 0 &&
	    o->in.type == SYNC_INFO_REFRESH_DELETE && o->in.has_cookie &&
	    buf_eqs(&o->in.cookie, COOKIE52) && o->in.refresh_done == 1 &&
	    o->in.uuids.len == 0, "info: refreshDelete a1 36, refreshDone "
	    "defaults to TRUE");
	hand[1] = 0x39;
	hand[n++] = 0x01; hand[n++] = 0x01; hand[n++] = 0x00;
	ok(decode_copy(o, K_INFO, hand, n, &why) == 0 &&
	    o->in.type == SYNC_INFO_REFRESH_DELETE && o->in.has_cookie &&
	    o->in.refresh_done == 0, "info: refreshDelete refreshDone FALSE");
	hand[0] = 0xa2;
	ok(decode_copy(o, K_INFO, hand, n, &why) == 0 &&
	    o->in.type == SYNC_INFO_REFRESH_PRESENT && o->in.has_cookie &&
	    o->in.refresh_done == 0, "info: refreshPresent refreshDone FALSE");
	hand[n - 1] = 0xff;
	ok(decode_copy(o, K_INFO, hand, n, &why) == 0 &&
	    o->in.type == SYNC_INFO_REFRESH_PRESENT && o->in.refresh_done == 1,
	    "info: refreshPresent cookie + refreshDone TRUE");
	ok(decode_copy(o, K_INFO, "\xa1\x00", 2, &why) == 0 &&
	    o->in.type == SYNC_INFO_REFRESH_DELETE && !o->in.has_cookie &&
	    o->in.refresh_done == 1, "info: refreshDelete a1 00 (F5)");
	ok(decode_copy(o, K_INFO, "\xa2\x03\x01\x01\xff", 5, &why) == 0 &&
	    o->in.type == SYNC_INFO_REFRESH_PRESENT && !o->in.has_cookie &&
	    o->in.refresh_done == 1, "info: refreshPresent a2 03 01 01 ff");
	ok(decode_copy(o, K_INFO, "\xa1\x05\x31\x03\x04\x01x", 7, &why) == -1 &&
	    why, "info: refreshDelete with a SET refused (%s)", why);

	/* syncIdSet: a3 7d 04 64 <cookie> 01 01 ff 31 12 04 10 <uuid> */
	n = 0;
	hand[n++] = 0xa3; hand[n++] = 0x7d;
	hand[n++] = 0x04; hand[n++] = 0x64;
	memcpy(hand + n, COOKIE100, 100); n += 100;
	hand[n++] = 0x01; hand[n++] = 0x01; hand[n++] = 0xff;
	hand[n++] = 0x31; hand[n++] = 0x12; hand[n++] = 0x04; hand[n++] = 0x10;
	memcpy(hand + n, uuid_nul, 16); n += 16;
	ok(n == 127, "info: hand-built syncIdSet is 127 bytes");
	ok(decode_copy(o, K_INFO, hand, n, &why) == 0 &&
	    o->in.type == SYNC_INFO_ID_SET && o->in.has_cookie &&
	    buf_eqs(&o->in.cookie, COOKIE100) && o->in.refresh_deletes == 1 &&
	    buf_eq(&o->in.uuids, uuid_nul, 16),
	    "info: syncIdSet a3 7d cookie + refreshDeletes + 1 UUID");
	hand[n - 17] = 0x0f;	/* the UUID's length: 15, one byte left over */
	ok(decode_copy(o, K_INFO, hand, n, &why) == -1 && why,
	    "info: UUID length 15 in the SET refused (%s)", why);
	hand[n - 17] = 0x10;
	hand[n - 18] = 0x02;	/* an INTEGER in the SET */
	ok(decode_copy(o, K_INFO, hand, n, &why) == -1 && why &&
	    strstr(why, "non-OCTET"), "info: INTEGER in the SET refused (%s)",
	    why);
	hand[n - 18] = 0x04;
	hand[n - 20] = 0x30;	/* a SEQUENCE for the SET */
	ok(decode_copy(o, K_INFO, hand, n, &why) == -1 && why,
	    "info: syncUUIDs as SEQUENCE refused (%s)", why);
	hand[n - 20] = 0x31;

	build_info(&m, 0xa3, NULL, -1, 256, uuid_a);
	good = decode_copy(o, K_INFO, m.data, m.len, &why) == 0 &&
	    o->in.type == SYNC_INFO_ID_SET && !o->in.has_cookie &&
	    o->in.refresh_deletes == 0 && o->in.uuids.len == 256 * 16;
	for (i = 0; good && i < 256; i++)
		good = memcmp(o->in.uuids.data + 16 * i, uuid_a, 14) == 0 &&
		    o->in.uuids.data[16 * i + 14] == (i >> 8) &&
		    o->in.uuids.data[16 * i + 15] == (i & 0xff);
	ok(good && m.len == 4616 && m.data[1] == 0x82,
	    "info: syncIdSet of 256 UUIDs, long lengths, in order");
	/* Bigger than the decoder's stack copy: the heap path. */
	build_info(&m, 0xa3, COOKIE52, 0xff, 600, uuid_a);
	good = decode_copy(o, K_INFO, m.data, m.len, &why) == 0 &&
	    o->in.type == SYNC_INFO_ID_SET && o->in.has_cookie &&
	    o->in.refresh_deletes == 1 && o->in.uuids.len == 600 * 16;
	for (i = 0; good && i < 600; i++)
		good = o->in.uuids.data[16 * i + 14] == (i >> 8) &&
		    o->in.uuids.data[16 * i + 15] == (i & 0xff);
	ok(good && m.len > 8192, "info: syncIdSet of 600 UUIDs (%zu bytes)",
	    m.len);
	ok(decode_copy(o, K_INFO, m.data, m.len - 1, &why) == -1 &&
	    !o->in.has_cookie && o->in.uuids.len == 0 && o->in.cookie.len == 0,
	    "info: failure clears cookie and uuids (%s)", why);

	build_info(&m, 0xa3, NULL, -1, 256, uuid_a);
	/* Cut after 100 UUIDs, the declared lengths unchanged. */
	ok(decode_copy(o, K_INFO, m.data, 4 + 4 + 100 * 18, &why) == -1 &&
	    why, "info: 256-UUID set cut short refused (%s)", why);
	build_info(&m, 0xa3, NULL, -1, 0, uuid_a);
	ok(m.len == 4 && decode_copy(o, K_INFO, m.data, m.len, &why) == 0 &&
	    o->in.type == SYNC_INFO_ID_SET && o->in.uuids.len == 0 &&
	    !o->in.has_cookie && o->in.refresh_deletes == 0,
	    "info: empty syncIdSet a3 02 31 00 is legal");
	build_info(&m, 0xa3, "", 0xff, 0, uuid_a);
	ok(decode_copy(o, K_INFO, m.data, m.len, &why) == 0 &&
	    o->in.has_cookie && o->in.cookie.len == 0 &&
	    o->in.refresh_deletes == 1 && o->in.uuids.len == 0,
	    "info: empty syncIdSet with empty cookie and TRUE");
	build_info(&m, 0xa3, "c", 0, -1, uuid_a);
	ok(decode_copy(o, K_INFO, m.data, m.len, &why) == -1 && why,
	    "info: syncIdSet without its SET refused (%s)", why);

	/* Unknown and malformed CHOICEs. */
	ok(decode_copy(o, K_INFO, "\xa4\x00", 2, &why) == -1 && why &&
	    strstr(why, "CHOICE"), "info: CHOICE [4] refused (%s)", why);
	ok(decode_copy(o, K_INFO, "\xa0\x02\x04\x00", 4, &why) == -1 && why,
	    "info: constructed [0] refused (%s)", why);
	ok(decode_copy(o, K_INFO, "\x81\x00", 2, &why) == -1 && why,
	    "info: primitive [1] refused (%s)", why);
	ok(decode_copy(o, K_INFO, "\x30\x03\x01\x01\xff", 5, &why) == -1 && why,
	    "info: a SEQUENCE refused (%s)", why);
	ok(decode_copy(o, K_INFO, "\xa1\x03\x80\x01x", 5, &why) == -1 && why,
	    "info: cookie tagged 0x80 inside refreshDelete refused (%s)", why);
	ok(decode_copy(o, K_INFO, "\xa1\x84\xff\xff\xff\xff", 6, &why) == -1 &&
	    why, "info: 4 GiB declared length refused (%s)", why);
	ok(decode_copy(o, K_INFO, "\xa3\x04\x31\x02\x04\x10", 6, &why) == -1 &&
	    why, "info: UUID declared longer than the SET refused (%s)", why);
	ok(decode_copy(o, K_INFO, "\xa3\x02\x31\x00\x00", 5, &why) == -1 &&
	    why, "info: trailing byte after syncIdSet refused (%s)", why);
	ok(decode_copy(o, K_INFO, "\xa3\x03\x31\x00\x00", 5, &why) == -1 &&
	    why, "info: byte after the SET inside syncIdSet refused (%s)", why);
	ok(decode_copy(o, K_INFO, "\xa1", 1, &why) == -1 && why,
	    "info: lone tag refused (%s)", why);

	/* Built with ber_printf, as slapd's syncprov does. */
	{
		BerElement	*ber = ber_alloc_t(LBER_USE_DER);
		struct berval	 c, uu[3], flat;

		c.bv_val = (char *)"rid=000,csn=y";
		c.bv_len = 13;
		uu[0].bv_val = (char *)(uintptr_t)uuid_a;
		uu[0].bv_len = 16;
		uu[1].bv_val = (char *)(uintptr_t)uuid_nul;
		uu[1].bv_len = 16;
		uu[2].bv_val = NULL;
		uu[2].bv_len = 0;
		ber_printf(ber, "t{Ob[W]N}", (ber_tag_t)LDAP_TAG_SYNC_ID_SET,
		    &c, (ber_int_t)1, uu);
		ber_flatten2(ber, &flat, 0);
		ok(decode_copy(o, K_INFO, flat.bv_val, flat.bv_len, &why) == 0 &&
		    o->in.type == SYNC_INFO_ID_SET &&
		    buf_eqs(&o->in.cookie, "rid=000,csn=y") &&
		    o->in.refresh_deletes == 1 && o->in.uuids.len == 32 &&
		    memcmp(o->in.uuids.data, uuid_a, 16) == 0 &&
		    memcmp(o->in.uuids.data + 16, uuid_nul, 16) == 0,
		    "info: ber_printf t{Ob[W]N} syncIdSet");
		ber_free(ber, 1);

		ber = ber_alloc_t(LBER_USE_DER);
		ber_printf(ber, "t{Ob}", (ber_tag_t)LDAP_TAG_SYNC_REFRESH_PRESENT,
		    &c, (ber_int_t)0);
		ber_flatten2(ber, &flat, 0);
		ok(decode_copy(o, K_INFO, flat.bv_val, flat.bv_len, &why) == 0 &&
		    o->in.type == SYNC_INFO_REFRESH_PRESENT &&
		    o->in.refresh_done == 0 && o->in.has_cookie,
		    "info: ber_printf t{Ob} refreshPresent");
		ber_free(ber, 1);

		ber = ber_alloc_t(LBER_USE_DER);
		ber_printf(ber, "tO", (ber_tag_t)LDAP_TAG_SYNC_NEW_COOKIE, &c);
		ber_flatten2(ber, &flat, 0);
		ok(decode_copy(o, K_INFO, flat.bv_val, flat.bv_len, &why) == 0 &&
		    o->in.type == SYNC_INFO_NEW_COOKIE &&
		    buf_eqs(&o->in.cookie, "rid=000,csn=y"),
		    "info: ber_printf tO newcookie");
		ber_free(ber, 1);
	}
	buf_free(&m);
}

/* What a successful decode may hold, whatever the input. */
static int
consistent(const struct outs *o, enum kind k, size_t len)
{
	switch (k) {
	case K_STATE:
		return o->st.state >= 0 && o->st.state <= 3 &&
		    o->st.cookie.len < len &&
		    (o->st.has_cookie || o->st.cookie.len == 0);
	case K_DONE:
		return o->dn.cookie.len < len &&
		    (o->dn.refresh_deletes == 0 || o->dn.refresh_deletes == 1) &&
		    (o->dn.has_cookie || o->dn.cookie.len == 0);
	default:
		return o->in.cookie.len < len && o->in.uuids.len % 16 == 0 &&
		    o->in.uuids.len < len &&
		    (o->in.type == SYNC_INFO_ID_SET || o->in.uuids.len == 0) &&
		    (o->in.refresh_done == 0 || o->in.refresh_done == 1) &&
		    (o->in.refresh_deletes == 0 || o->in.refresh_deletes == 1);
	}
}

/* Truncate at every length and flip every byte of a valid message. */
static void
mutate(struct outs *o, enum kind k, const struct buf *m, const char *name)
{
	unsigned char	*c;
	const char	*why;
	size_t		 len, i;
	int		 bad_trunc = 0, bad_flip = 0, rc, x;
	static const unsigned char flips[] = { 0xff, 0x01, 0x80, 0x7f };

	for (len = 0; len < m->len; len++) {
		why = NULL;
		if (decode_copy(o, k, m->data, len, &why) != -1 || why == NULL)
			bad_trunc++;
	}
	ok(bad_trunc == 0, "mutate %s: every truncation (%zu) refused", name,
	    m->len);

	c = xmalloc(m->len);
	for (i = 0; i < m->len; i++) {
		for (x = 0; x < (int)sizeof(flips); x++) {
			memcpy(c, m->data, m->len);
			c[i] ^= flips[x];
			why = NULL;
			rc = decode(o, k, sp(c, m->len), &why);
			if (rc == 0 ? !consistent(o, k, m->len) :
			    rc != -1 || why == NULL)
				bad_flip++;
		}
	}
	free(c);
	ok(bad_flip == 0, "mutate %s: %zu byte flips decode or fail cleanly",
	    name, m->len * sizeof(flips));
}

static void
test_mutations(struct outs *o)
{
	struct buf	 m = { 0 };
	unsigned char	 e = 1;
	struct buf	 c = { 0 };

	build_state(&m, 3, uuid_nul, 16, COOKIE52);
	mutate(o, K_STATE, &m, "state");

	tlv(&c, 0x04, COOKIE52, 52);
	e = 0xff;
	tlv(&c, 0x01, &e, 1);
	buf_reset(&m);
	tlv(&m, 0x30, c.data, c.len);
	mutate(o, K_DONE, &m, "done");

	buf_reset(&m);
	tlv(&m, 0x80, COOKIE52, 52);
	mutate(o, K_INFO, &m, "newcookie");
	build_info(&m, 0xa1, COOKIE52, 0, -1, uuid_a);
	mutate(o, K_INFO, &m, "refreshDelete");
	build_info(&m, 0xa3, COOKIE100, 0xff, 3, uuid_a);
	mutate(o, K_INFO, &m, "syncIdSet");
	build_info(&m, 0xa3, NULL, -1, 256, uuid_nul);
	mutate(o, K_INFO, &m, "syncIdSet 256");
	buf_free(&m);
	buf_free(&c);
}

#define A1	"20261125073000.000000Z#000000#001#000000"
#define A2	"20261125073000.000000Z#000000#002#000000"
#define A3	"20261125073000.000000Z#000000#003#000000"
#define B1	"20261125080000.000000Z#000000#001#000000"
#define B2	"20261125080000.000000Z#000000#002#000000"
#define B3	"20261125080000.000000Z#000000#003#000000"

static int
merge_is(const char *stored, const char *received, const char *want)
{
	struct buf	 out = { 0 };
	int		 r;

	buf_add_str(&out, "junk");
	cookie_merge(&out, sps(stored), sps(received));
	r = buf_eqs(&out, want);
	if (!r)
		printf("# got \"%.*s\"\n# want \"%s\"\n", (int)out.len,
		    out.data ? (char *)out.data : "", want);
	buf_free(&out);
	return r;
}

static void
test_cookies(void)
{
	struct buf	 out = { 0 }, big_s = { 0 }, big_r = { 0 }, want = { 0 };
	int		 i;

	ok(cookie_has_csn(sps(COOKIE52)) == 1, "has_csn: slapd cookie");
	ok(cookie_has_csn(sps("rid=000")) == 0, "has_csn: rid=000 alone");
	ok(cookie_has_csn(sps("")) == 0, "has_csn: empty cookie");
	/* the health figures' server times (doc/safety.md) */
	ok(csn_time_us(sps("20261206065619.276973Z#000000#000#000000")) ==
	    1796540179276973LL, "csn time: seconds and microseconds, UTC");
	ok(csn_time_us(sps("2026120606561x.276973Z#0")) == 0 &&
	    csn_time_us(sps("20261206")) == 0, "csn time: not a CSN");
	ok(cookie_time_us(sps("rid=000,csn=20261206065619.000001Z#000000#001"
	    "#000000;20261206065620.000000Z#000000#002#000000")) ==
	    1796540180000000LL && cookie_time_us(sps("rid=000")) == 0,
	    "cookie time: the newest CSN of the vector");
	ok(cookie_has_csn(sp(NULL, 0)) == 0, "has_csn: NULL span");
	ok(cookie_has_csn(sps("rid=000,csn=")) == 0, "has_csn: csn= empty");
	ok(cookie_has_csn(sps("rid=000,csn=;;")) == 0,
	    "has_csn: csn= with only empty CSNs");
	ok(cookie_has_csn(sps("rid=000,csn=;" A1)) == 1,
	    "has_csn: one empty and one real CSN");
	ok(cookie_has_csn(sps("rid=000,delcsn=" A1)) == 0,
	    "has_csn: delcsn= is not csn=");
	ok(cookie_has_csn(sps("rid=000,xcsn=" A1)) == 0,
	    "has_csn: xcsn= is not csn=");
	ok(cookie_has_csn(sps("csn=" A1)) == 1, "has_csn: csn= first");
	ok(cookie_has_csn(sps("rid=000,sid=001,csn=" A1 ";" A2 ",delcsn=" A3))
	    == 1, "has_csn: sid= and delcsn= around it");
	ok(cookie_has_csn(sp("rid=\0\xff,csn=\0", 12)) == 1,
	    "has_csn: binary bytes, NUL CSN counts as non-empty");
	ok(cookie_has_csn(sp("rid=000,csn=" A1, 11)) == 0,
	    "has_csn: length-delimited, not NUL-terminated");
	ok(cookie_has_csn(sp("rid=000\0,csn=x", 14)) == 1,
	    "has_csn: a NUL before the field does not end the cookie");

	/* Single provider: plain replacement. */
	ok(merge_is("rid=000,csn=" CSN0,
	    "rid=000,csn=20261125090000.000000Z#000000#000#000000",
	    "rid=000,csn=20261125090000.000000Z#000000#000#000000"),
	    "merge: single provider, received replaces");
	/* Received always wins for its SID, even if older. */
	ok(merge_is("rid=000,csn=" B1, "rid=000,csn=" A1, "rid=000,csn=" A1),
	    "merge: received CSN wins for its SID");
	/* Two SIDs. */
	ok(merge_is("rid=001,sid=002,csn=" A1 ";" A2,
	    "rid=001,sid=002,csn=" B2,
	    "rid=001,sid=002,csn=" A1 ";" B2), "merge: two SIDs merged");
	ok(merge_is("rid=001,csn=" A2, "rid=001,csn=" B3 ";" B1,
	    "rid=001,csn=" B1 ";" A2 ";" B3),
	    "merge: union ordered by SID");
	ok(merge_is("rid=001,csn=" A3 ";" A1 ";" A2, "rid=001,csn=" B2,
	    "rid=001,csn=" A1 ";" B2 ";" A3),
	    "merge: unordered stored vector sorted");
	ok(merge_is("rid=001,csn=x#0#00a#0;x#0#009#0", "rid=001,csn=y#0#0A#0",
	    "rid=001,csn=x#0#009#0;y#0#0A#0"),
	    "merge: SIDs compared as hex numbers (0A == 00a > 009)");
	/* CSN-less received keeps the stored cookie. */
	ok(merge_is("rid=000,csn=" A1, "rid=000", "rid=000,csn=" A1),
	    "merge: CSN-less received keeps stored");
	ok(merge_is("rid=000,csn=" A1, "", "rid=000,csn=" A1),
	    "merge: empty received keeps stored");
	ok(merge_is("rid=000", "rid=000,csn=" A1 ",delcsn=" A2,
	    "rid=000,csn=" A1 ",delcsn=" A2),
	    "merge: CSN-less stored is replaced verbatim");
	ok(merge_is("", "rid=000", ""),
	    "merge: neither has a CSN: stored (empty) stays");
	/* delcsn dropped. */
	ok(merge_is("rid=000,csn=" A1, "rid=000,csn=" A1 ",delcsn=" B1,
	    "rid=000,csn=" A1), "merge: delcsn= dropped");
	ok(merge_is("rid=000,csn=" A1, "rid=000,delcsn=" B1 ",csn=" B2,
	    "rid=000,csn=" A1 ";" B2), "merge: delcsn= before csn= dropped");
	/* Malformed CSNs: received ones kept verbatim, stored ones dropped. */
	ok(merge_is("rid=000,csn=junk;" A1, "rid=000,csn=garbage;" B2 ";x#y",
	    "rid=000,csn=" A1 ";" B2 ";garbage;x#y"),
	    "merge: malformed CSNs kept from received only");
	ok(merge_is("rid=000,csn=" A1, "rid=000,csn=a#b#zz#c",
	    "rid=000,csn=" A1 ";a#b#zz#c"), "merge: non-hex SID is malformed");
	/* Several csn= fields become one; other fields kept in order. */
	ok(merge_is("rid=000,csn=" A1, "rid=000,csn=" B2 ",x=1,csn=" B3 ",",
	    "rid=000,csn=" A1 ";" B2 ";" B3 ",x=1,"),
	    "merge: csn= fields joined; unknown and empty fields kept");
	/* Two received CSNs for one SID: the greater. */
	ok(merge_is("rid=000,csn=" A2, "rid=000,csn=" A1 ";" B1,
	    "rid=000,csn=" B1 ";" A2), "merge: duplicate SID keeps greater");
	/* Binary bytes. */
	{
		static const char st[] = "rid=\0\xff\x01,csn=" A1;
		static const char rc[] = "rid=\0\xff\x01,csn=" B2 ",z=\0";
		static const char wt[] = "rid=\0\xff\x01,csn=" A1 ";" B2 ",z=\0";

		cookie_merge(&out, sp(st, sizeof(st) - 1),
		    sp(rc, sizeof(rc) - 1));
		ok(buf_eq(&out, wt, sizeof(wt) - 1),
		    "merge: binary bytes kept exactly");
		cookie_merge(&out, sp(st, sizeof(st) - 1), sp("rid=\0", 5));
		ok(buf_eq(&out, st, sizeof(st) - 1),
		    "merge: binary CSN-less received keeps binary stored");
	}
	/* Many SIDs (beyond the on-stack vector). */
	buf_add_str(&big_s, "rid=000,csn=");
	buf_add_str(&big_r, "rid=000,csn=");
	buf_add_str(&want, "rid=000,csn=");
	for (i = 0; i < 60; i++) {
		if (i)
			buf_add_str(&big_s, ";");
		buf_printf(&big_s, "S#0#%03x#0", 59 - i);
		if (i % 2 == 0) {
			if (i)
				buf_add_str(&big_r, ";");
			buf_printf(&big_r, "R#0#%03x#0", 58 - i);
		}
	}
	for (i = 0; i < 60; i++) {
		if (i)
			buf_add_str(&want, ";");
		buf_printf(&want, "%c#0#%03x#0", i % 2 == 0 ? 'R' : 'S', i);
	}
	cookie_merge(&out, bsp(&big_s), bsp(&big_r));
	ok(buf_eq(&out, want.data, want.len), "merge: 60 SIDs, 30 received");

	buf_free(&out);
	buf_free(&big_s);
	buf_free(&big_r);
	buf_free(&want);
}

/* 389-ds cookies: host:port#binddn:base:filter#changenumber */
static void
test_changenumber(void)
{
	uint64_t	 cn = 7;

	ok(cookie_changenumber(sps("localhost:389#uid=feed,ou=services,"
	    "dc=example,dc=com:dc=example,dc=com:(objectClass=*)#38"), &cn) ==
	    1 && cn == 38, "changenumber: the number after the last #");
	ok(cookie_changenumber(sps("h:1#b:d:(f)#0"), &cn) == 1 && cn == 0,
	    "changenumber: 0 (an empty Retro Changelog)");
	cn = 7;
	ok(cookie_changenumber(sps("rid=000,csn=20261206065619.276973Z#000000"
	    "#000#000000"), &cn) == 1 && cn == 0,
	    "changenumber: digits after the last # count (the caller knows "
	    "the server)");
	cn = 7;
	ok(cookie_changenumber(sps("h:1#b:d:(f)#"), &cn) == 0 && cn == 7,
	    "changenumber: nothing after the #");
	ok(cookie_changenumber(sps("h:1#b:d:(f)#12a"), &cn) == 0 && cn == 7,
	    "changenumber: not a number");
	ok(cookie_changenumber(sps("no hash at all"), &cn) == 0 && cn == 7,
	    "changenumber: no #");
	ok(cookie_changenumber(sps("h:1#b:d:(f)#99999999999999999999"), &cn) ==
	    0 && cn == 7, "changenumber: more than 64 bits");
	ok(cookie_changenumber(sp(NULL, 0), &cn) == 0 && cn == 7,
	    "changenumber: empty cookie");
}

int
main(void)
{
	struct outs	 o;

	memset(&o, 0, sizeof(o));
	log_init(1, 0, "test_syncrepl");
	test_encode();
	test_state(&o);
	test_done(&o);
	test_info(&o);
	test_mutations(&o);
	test_cookies();
	test_changenumber();
	sync_state_free(&o.st);
	sync_done_free(&o.dn);
	sync_info_free(&o.in);
	return tap_done();
}
