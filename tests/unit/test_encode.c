/*
 * encode.c: exact bytes of small events in both formats.  The expected
 * pickles are Python 3's own pickle.dumps(obj, 3) with the memo stripped
 * (pickletools.optimize); the JSON is written by hand.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ldapfeed.h"
#include "tap.h"

#define S(lit)	((struct span){ (const unsigned char *)(lit), sizeof(lit) - 1 })

static const unsigned char uuid0[16] = {
	0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
	0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f
};
static const unsigned char uuid1[16] = {
	0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01
};

/* Prints where two byte strings part, for a failed check. */
static void
diag(const unsigned char *got, size_t glen, const void *want, size_t wlen)
{
	const unsigned char	*w = want;
	size_t			 i, j;

	for (i = 0; i < glen && i < wlen && got[i] == w[i]; i++)
		;
	printf("# lengths got %zu want %zu, first difference at %zu\n",
	    glen, wlen, i);
	printf("#   got: ");
	for (j = i < 8 ? 0 : i - 8; j < glen && j < i + 24; j++)
		printf("%02x ", got[j]);
	printf("\n#  want: ");
	for (j = i < 8 ? 0 : i - 8; j < wlen && j < i + 24; j++)
		printf("%02x ", w[j]);
	printf("\n");
}

static int
same(const struct buf *b, size_t off, const void *want, size_t wlen)
{
	if (b->len - off == wlen && memcmp(b->data + off, want, wlen) == 0)
		return 1;
	diag(b->data + off, b->len - off, want, wlen);
	return 0;
}

/* Encodes ev alone and compares with want. */
static int
check(const struct event *ev, enum format fmt, const void *want, size_t wlen)
{
	struct buf	 b = { NULL, 0, 0 };
	int		 r;

	encode_event(&b, ev, fmt);
	r = same(&b, 0, want, wlen);
	buf_free(&b);
	return r;
}

#define CHECK(ev, fmt, lit)	check(ev, fmt, lit, sizeof(lit) - 1)

#define EPOCH_HEX	"00112233445566778899aabbccddeeff"

static void
test_hello(void)
{
	struct event	 ev = { .type = EV_HELLO, .worker = 0, .workers = 4,
	    .reload = 1, .uuid = { 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
	    0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff } };

	ok(CHECK(&ev, FORMAT_PICKLE,
	    "\x80\x03}(X\x04\x00\x00\x00typeX\x05\x00\x00\x00hello"
	    "X\x06\x00\x00\x00workerK\x00X\x07\x00\x00\x00workersK\x04"
	    "X\x06\x00\x00\x00" "formatX\x06\x00\x00\x00pickle"
	    "X\x07\x00\x00\x00versionX\x05\x00\x00\x00" LDAPFEED_VERSION
	    "X\x05\x00\x00\x00" "epochX\x20\x00\x00\x00" EPOCH_HEX
	    "X\x06\x00\x00\x00reload\x88u."),
	    "hello pickle, reload true");
	ok(CHECK(&ev, FORMAT_JSON, "{\"type\":\"hello\",\"worker\":0,"
	    "\"workers\":4,\"format\":\"json\",\"version\":\""
	    LDAPFEED_VERSION "\",\"epoch\":\"" EPOCH_HEX "\",\"reload\":true}"),
	    "hello json, reload true");
	ev.worker = 2;
	ev.workers = 300;
	ev.reload = 0;
	ok(CHECK(&ev, FORMAT_PICKLE,
	    "\x80\x03}(X\x04\x00\x00\x00typeX\x05\x00\x00\x00hello"
	    "X\x06\x00\x00\x00workerK\x02X\x07\x00\x00\x00workersM,\x01"
	    "X\x06\x00\x00\x00" "formatX\x06\x00\x00\x00pickle"
	    "X\x07\x00\x00\x00versionX\x05\x00\x00\x00" LDAPFEED_VERSION
	    "X\x05\x00\x00\x00" "epochX\x20\x00\x00\x00" EPOCH_HEX
	    "X\x06\x00\x00\x00reload\x89u."),
	    "hello pickle, reload false, workers 300 (BININT2)");
	ok(CHECK(&ev, FORMAT_JSON, "{\"type\":\"hello\",\"worker\":2,"
	    "\"workers\":300,\"format\":\"json\",\"version\":\""
	    LDAPFEED_VERSION "\",\"epoch\":\"" EPOCH_HEX "\",\"reload\":false}"),
	    "hello json, reload false");
	ok(strcmp(format_name(FORMAT_PICKLE), "pickle") == 0 &&
	    strcmp(format_name(FORMAT_JSON), "json") == 0, "format_name");
}

static void
test_seq(void)
{
	static const struct {
		uint64_t	 seq;
		const char	*json;
		const char	*op;	/* the pickled int */
		size_t		 oplen;
	} t[] = {
#define O(lit)	lit, sizeof(lit) - 1
		{ 0, "0", O("K\x00") },
		{ 1, "1", O("K\x01") },
		{ 255, "255", O("K\xff") },
		{ 256, "256", O("M\x00\x01") },
		{ 65535, "65535", O("M\xff\xff") },
		{ 65536, "65536", O("J\x00\x00\x01\x00") },
		{ 2147483647ULL, "2147483647", O("J\xff\xff\xff\x7f") },
		{ 2147483648ULL, "2147483648",
		    O("\x8a\x05\x00\x00\x00\x80\x00") },
		{ 4294967295ULL, "4294967295",
		    O("\x8a\x05\xff\xff\xff\xff\x00") },
		{ 4294967296ULL, "4294967296",
		    O("\x8a\x05\x00\x00\x00\x00\x01") },
		{ 1099511627775ULL, "1099511627775",
		    O("\x8a\x06\xff\xff\xff\xff\xff\x00") },
		{ 9223372036854775807ULL, "9223372036854775807",
		    O("\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f") },
		{ 9223372036854775808ULL, "9223372036854775808",
		    O("\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00") },
		{ 18446744073709551615ULL, "18446744073709551615",
		    O("\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\x00") },
#undef O
	};
	static const char pre[] = "\x80\x03}(X\x04\x00\x00\x00type"
	    "X\x0c\x00\x00\x00refresh_doneX\x03\x00\x00\x00seq";
	struct event	 ev = { .type = EV_REFRESH_DONE };
	struct buf	 want = { NULL, 0, 0 };
	size_t		 i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		ev.seq = t[i].seq;
		buf_reset(&want);
		buf_add(&want, pre, sizeof(pre) - 1);
		buf_add(&want, t[i].op, t[i].oplen);
		buf_add(&want, "u.", 2);
		ok(check(&ev, FORMAT_PICKLE, want.data, want.len),
		    "refresh_done pickle seq %s", t[i].json);
		buf_reset(&want);
		buf_printf(&want, "{\"type\":\"refresh_done\",\"seq\":%s}",
		    t[i].json);
		ok(check(&ev, FORMAT_JSON, want.data, want.len),
		    "refresh_done json seq %s", t[i].json);
	}
	buf_free(&want);
}

static void
test_add(void)
{
	struct event		 ev = { .type = EV_ADD, .seq = 70000,
	    .dn = S("cn=x,dc=a") };
	struct attrs_writer	 w;
	struct buf		 blob = { NULL, 0, 0 }, want = { NULL, 0, 0 };
	unsigned char		 big[300];

	memcpy(ev.uuid, uuid0, 16);
	memset(big, 'A', sizeof(big));
	attrs_writer_init(&w, &blob);
	attrs_writer_attr(&w, "cn", 2);
	attrs_writer_value(&w, "x1", 2);
	attrs_writer_value(&w, "", 0);
	attrs_writer_value(&w, "x2", 2);
	attrs_writer_attr(&w, "bad\xffname", 8);
	attrs_writer_value(&w, "\x00\xff", 2);
	attrs_writer_value(&w, big, sizeof(big));
	attrs_writer_attr(&w, "empty", 5);
	attrs_writer_finish(&w);
	ev.new_attrs.p = blob.data;
	ev.new_attrs.len = blob.len;

#define ADD(lit)	buf_add(&want, lit, sizeof(lit) - 1)
	ADD("\x80\x03}(X\x04\x00\x00\x00typeX\x03\x00\x00\x00"
	    "addX\x03\x00\x00\x00seqJp\x11\x01\x00X\x02\x00\x00\x00"
	    "dnX\x09\x00\x00\x00" "cn=x,dc=aX\x04\x00\x00\x00"
	    "uuidX$\x00\x00\x00" "00010203-0405-0607-0809-0a0b0c0d0e0f"
	    "X\x05\x00\x00\x00" "attrs}(X\x02\x00\x00\x00" "cn](C\x02x1"
	    "C\x00" "C\x02x2eX\x0a\x00\x00\x00" "bad\xef\xbf\xbdname](C\x02"
	    "\x00\xff" "B,\x01\x00\x00");
	buf_add(&want, big, sizeof(big));
	ADD("eX\x05\x00\x00\x00" "empty]uu.");
#undef ADD
	ok(check(&ev, FORMAT_PICKLE, want.data, want.len),
	    "add pickle: empty, short, 300-byte and binary values, "
	    "invalid name, no values");
	ok(CHECK(&ev, FORMAT_JSON, "{\"type\":\"add\",\"seq\":70000,"
	    "\"dn\":\"cn=x,dc=a\",\"uuid\":"
	    "\"00010203-0405-0607-0809-0a0b0c0d0e0f\",\"attrs\":{"
	    "\"cn\":[\"x1\",\"\",\"x2\"],"
	    "\"bad\xef\xbf\xbdname\":[{\"base64\":\"AP8=\"},"
	    "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"],"
	    "\"empty\":[]}}"),
	    "add json");

	/* An empty blob, and output appended after what the buffer held. */
	ev.seq = 1;
	ev.new_attrs = attrs_empty;
	buf_reset(&want);
	buf_add_str(&want, "prefix");
	encode_event(&want, &ev, FORMAT_JSON);
#define EMPTY	"{\"type\":\"add\",\"seq\":1,\"dn\":\"cn=x,dc=a\",\"uuid\":" \
	    "\"00010203-0405-0607-0809-0a0b0c0d0e0f\",\"attrs\":{}}"
	ok(memcmp(want.data, "prefix", 6) == 0 &&
	    same(&want, 6, EMPTY, sizeof(EMPTY) - 1),
	    "add json, empty attrs, appended to a buffer");
#undef EMPTY
	buf_free(&want);
	buf_free(&blob);
}

static void
test_modify_delete(void)
{
	struct event		 ev = { .type = EV_MODIFY, .seq = 1ULL << 40,
	    .dn = S("cn=\xc3\xa9") };
	struct attrs_writer	 w;
	struct buf		 old = { NULL, 0, 0 }, new = { NULL, 0, 0 };
	struct buf		 names = { NULL, 0, 0 };

	memset(ev.uuid, 0xff, 16);
	attrs_writer_init(&w, &old);
	attrs_writer_attr(&w, "cn", 2);
	attrs_writer_value(&w, "a1", 2);
	attrs_writer_value(&w, "a2", 2);
	attrs_writer_attr(&w, "sn", 2);
	attrs_writer_value(&w, "s1", 2);
	attrs_writer_value(&w, "s2", 2);
	attrs_writer_finish(&w);
	attrs_writer_init(&w, &new);
	attrs_writer_attr(&w, "mail", 4);
	attrs_writer_value(&w, "m1", 2);
	attrs_writer_value(&w, "m2", 2);
	attrs_writer_attr(&w, "ou", 2);
	attrs_writer_value(&w, "o1", 2);
	attrs_writer_value(&w, "o2", 2);
	attrs_writer_finish(&w);
	buf_add_u32(&names, 2);
	buf_add(&names, "c1", 2);
	buf_add_u32(&names, 2);
	buf_add(&names, "c2", 2);
	ev.old_attrs = (struct span){ old.data, old.len };
	ev.new_attrs = (struct span){ new.data, new.len };
	ev.changed = (struct span){ names.data, names.len };
	ok(CHECK(&ev, FORMAT_PICKLE,
	    "\x80\x03}(X\x04\x00\x00\x00typeX\x06\x00\x00\x00modify"
	    "X\x03\x00\x00\x00seq\x8a\x06\x00\x00\x00\x00\x00\x01"
	    "X\x02\x00\x00\x00" "dnX\x05\x00\x00\x00" "cn=\xc3\xa9"
	    "X\x04\x00\x00\x00uuidX$\x00\x00\x00"
	    "ffffffff-ffff-ffff-ffff-ffffffffffff"
	    "X\x03\x00\x00\x00old}(X\x02\x00\x00\x00" "cn](C\x02" "a1C\x02"
	    "a2eX\x02\x00\x00\x00sn](C\x02s1C\x02s2eu"
	    "X\x03\x00\x00\x00new}(X\x04\x00\x00\x00mail](C\x02m1C\x02m2e"
	    "X\x02\x00\x00\x00ou](C\x02o1C\x02o2eu"
	    "X\x07\x00\x00\x00" "changed](X\x02\x00\x00\x00" "c1"
	    "X\x02\x00\x00\x00" "c2eu."),
	    "modify pickle");
	ok(CHECK(&ev, FORMAT_JSON, "{\"type\":\"modify\",\"seq\":1099511627776,"
	    "\"dn\":\"cn=\xc3\xa9\",\"uuid\":"
	    "\"ffffffff-ffff-ffff-ffff-ffffffffffff\","
	    "\"old\":{\"cn\":[\"a1\",\"a2\"],\"sn\":[\"s1\",\"s2\"]},"
	    "\"new\":{\"mail\":[\"m1\",\"m2\"],\"ou\":[\"o1\",\"o2\"]},"
	    "\"changed\":[\"c1\",\"c2\"]}"),
	    "modify json");
	ev.changed.len = 0;
	ok(CHECK(&ev, FORMAT_JSON, "{\"type\":\"modify\",\"seq\":1099511627776,"
	    "\"dn\":\"cn=\xc3\xa9\",\"uuid\":"
	    "\"ffffffff-ffff-ffff-ffff-ffffffffffff\","
	    "\"old\":{\"cn\":[\"a1\",\"a2\"],\"sn\":[\"s1\",\"s2\"]},"
	    "\"new\":{\"mail\":[\"m1\",\"m2\"],\"ou\":[\"o1\",\"o2\"]},"
	    "\"changed\":[]}"),
	    "modify json, empty changed list");

	memset(&ev, 0, sizeof(ev));
	ev.type = EV_DELETE;
	ev.seq = 3;
	memcpy(ev.uuid, uuid1, 16);
	ev.old_attrs = attrs_empty;
	ok(CHECK(&ev, FORMAT_PICKLE,
	    "\x80\x03}(X\x04\x00\x00\x00typeX\x06\x00\x00\x00" "delete"
	    "X\x03\x00\x00\x00seqK\x03X\x02\x00\x00\x00" "dnX\x00\x00\x00\x00"
	    "X\x04\x00\x00\x00uuidX$\x00\x00\x00"
	    "80000000-0000-0000-0000-000000000001X\x03\x00\x00\x00old}u."),
	    "delete pickle, empty dn and old");
	ev.old_attrs = (struct span){ old.data, old.len };
	ok(CHECK(&ev, FORMAT_JSON, "{\"type\":\"delete\",\"seq\":3,\"dn\":\"\","
	    "\"uuid\":\"80000000-0000-0000-0000-000000000001\","
	    "\"old\":{\"cn\":[\"a1\",\"a2\"],\"sn\":[\"s1\",\"s2\"]}}"),
	    "delete json");
	buf_free(&old);
	buf_free(&new);
	buf_free(&names);
}

static void
test_rename_escapes(void)
{
	struct event	 ev = { .type = EV_RENAME, .seq = 7,
	    .old_dn = S("cn=a\xff"), .dn = S("cn=b") };
	static const unsigned char u[16] = {
		0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
		0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff
	};

	memcpy(ev.uuid, u, 16);
	ok(CHECK(&ev, FORMAT_PICKLE,
	    "\x80\x03}(X\x04\x00\x00\x00typeX\x06\x00\x00\x00rename"
	    "X\x03\x00\x00\x00seqK\x07X\x06\x00\x00\x00old_dn"
	    "X\x07\x00\x00\x00" "cn=a\xef\xbf\xbdX\x02\x00\x00\x00"
	    "dnX\x04\x00\x00\x00" "cn=bX\x04\x00\x00\x00uuidX$\x00\x00\x00"
	    "00112233-4455-6677-8899-aabbccddeeffu."),
	    "rename pickle, invalid old_dn replaced");
	ok(CHECK(&ev, FORMAT_JSON, "{\"type\":\"rename\",\"seq\":7,"
	    "\"old_dn\":\"cn=a\xef\xbf\xbd\",\"dn\":\"cn=b\","
	    "\"uuid\":\"00112233-4455-6677-8899-aabbccddeeff\"}"),
	    "rename json, invalid old_dn replaced");

	ev.old_dn = S("q\"b\\s/\x01\x1f\n\t\r\b\f\x7f\x00" "e\xc3\xa9");
	ev.dn = S("0123456789abcdef\"0123456789abcdef\\\x1b");
	ok(CHECK(&ev, FORMAT_JSON, "{\"type\":\"rename\",\"seq\":7,"
	    "\"old_dn\":\"q\\\"b\\\\s/\\u0001\\u001f\\n\\t\\r\\b\\f\x7f"
	    "\\u0000e\xc3\xa9\","
	    "\"dn\":\"0123456789abcdef\\\"0123456789abcdef\\\\\\u001b\","
	    "\"uuid\":\"00112233-4455-6677-8899-aabbccddeeff\"}"),
	    "rename json escapes quotes, backslashes, control chars, NUL");
	ok(CHECK(&ev, FORMAT_PICKLE,
	    "\x80\x03}(X\x04\x00\x00\x00typeX\x06\x00\x00\x00rename"
	    "X\x03\x00\x00\x00seqK\x07X\x06\x00\x00\x00old_dn"
	    "X\x12\x00\x00\x00q\"b\\s/\x01\x1f\n\t\r\b\f\x7f\x00" "e\xc3\xa9"
	    "X\x02\x00\x00\x00" "dnX#\x00\x00\x00"
	    "0123456789abcdef\"0123456789abcdef\\\x1b"
	    "X\x04\x00\x00\x00uuidX$\x00\x00\x00"
	    "00112233-4455-6677-8899-aabbccddeeffu."),
	    "rename pickle keeps control chars and NUL as they are");
}

/* Encodes an add whose one attribute "v" holds val, as JSON. */
static void
json_value(const char *val, size_t len, struct buf *out)
{
	struct event		 ev = { .type = EV_ADD, .dn = S("x") };
	struct attrs_writer	 w;
	struct buf		 blob = { NULL, 0, 0 }, b = { NULL, 0, 0 };
	static const char	 pre[] = "{\"type\":\"add\",\"seq\":0,\"dn\":\"x\","
	    "\"uuid\":\"00000000-0000-0000-0000-000000000000\","
	    "\"attrs\":{\"v\":[";

	attrs_writer_init(&w, &blob);
	attrs_writer_attr(&w, "v", 1);
	attrs_writer_value(&w, val, len);
	attrs_writer_finish(&w);
	ev.new_attrs = (struct span){ blob.data, blob.len };
	encode_event(&b, &ev, FORMAT_JSON);
	buf_reset(out);
	if (b.len >= sizeof(pre) - 1 + 3 &&
	    memcmp(b.data, pre, sizeof(pre) - 1) == 0 &&
	    memcmp(b.data + b.len - 3, "]}}", 3) == 0)
		buf_add(out, b.data + sizeof(pre) - 1,
		    b.len - (sizeof(pre) - 1) - 3);
	else
		buf_add_str(out, "(unexpected frame)");
	buf_free(&b);
	buf_free(&blob);
}

/* Encodes a rename whose dn is in, as JSON, and returns the dn string. */
static void
json_dn(const char *in, size_t len, struct buf *out)
{
	struct event	 ev = { .type = EV_RENAME, .seq = 1 };
	struct buf	 b = { NULL, 0, 0 };
	static const char pre[] = "{\"type\":\"rename\",\"seq\":1,"
	    "\"old_dn\":\"\",\"dn\":";
	static const char post[] = ",\"uuid\":"
	    "\"00000000-0000-0000-0000-000000000000\"}";

	ev.dn = (struct span){ (const unsigned char *)in, len };
	encode_event(&b, &ev, FORMAT_JSON);
	buf_reset(out);
	if (b.len >= sizeof(pre) + sizeof(post) - 2 &&
	    memcmp(b.data, pre, sizeof(pre) - 1) == 0 &&
	    memcmp(b.data + b.len - (sizeof(post) - 1), post,
	    sizeof(post) - 1) == 0)
		buf_add(out, b.data + sizeof(pre) - 1,
		    b.len - (sizeof(pre) - 1) - (sizeof(post) - 1));
	else
		buf_add_str(out, "(unexpected frame)");
	buf_free(&b);
}

static void
test_utf8(void)
{
#define FD	"\xef\xbf\xbd"
	static const struct {
		const char	*in;
		size_t		 len;
		const char	*what;
		const char	*value;	/* as a JSON value */
		const char	*dn;	/* as a JSON string */
	} t[] = {
#define I(lit)	lit, sizeof(lit) - 1
		{ I(""), "empty", "\"\"", "\"\"" },
		{ I("plain ascii"), "ascii", "\"plain ascii\"",
		    "\"plain ascii\"" },
		{ I("\xc3\xa9"), "2-byte", "\"\xc3\xa9\"", "\"\xc3\xa9\"" },
		{ I("\xe2\x82\xac"), "3-byte", "\"\xe2\x82\xac\"",
		    "\"\xe2\x82\xac\"" },
		{ I("\xf0\x9d\x84\x9e"), "4-byte", "\"\xf0\x9d\x84\x9e\"",
		    "\"\xf0\x9d\x84\x9e\"" },
		{ I("\xf4\x8f\xbf\xbf"), "U+10FFFF",
		    "\"\xf4\x8f\xbf\xbf\"", "\"\xf4\x8f\xbf\xbf\"" },
		{ I("\xed\x9f\xbf"), "U+D7FF", "\"\xed\x9f\xbf\"",
		    "\"\xed\x9f\xbf\"" },
		{ I("\xee\x80\x80"), "U+E000", "\"\xee\x80\x80\"",
		    "\"\xee\x80\x80\"" },
		{ I("\xef\xbf\xbf"), "U+FFFF", "\"\xef\xbf\xbf\"",
		    "\"\xef\xbf\xbf\"" },
		{ I("\xc2\x80"), "U+0080", "\"\xc2\x80\"", "\"\xc2\x80\"" },
		{ I("\xc0\xaf"), "overlong 2-byte",
		    "{\"base64\":\"wK8=\"}", "\"" FD FD "\"" },
		{ I("\xc1\xbf"), "overlong 2-byte C1",
		    "{\"base64\":\"wb8=\"}", "\"" FD FD "\"" },
		{ I("\xe0\x80\xaf"), "overlong 3-byte",
		    "{\"base64\":\"4ICv\"}", "\"" FD FD FD "\"" },
		{ I("\xe0\x9f\xbf"), "overlong 3-byte E0 9F",
		    "{\"base64\":\"4J+/\"}", "\"" FD FD FD "\"" },
		{ I("\xf0\x80\x80\xaf"), "overlong 4-byte",
		    "{\"base64\":\"8ICArw==\"}", "\"" FD FD FD FD "\"" },
		{ I("\xf0\x8f\xbf\xbf"), "overlong 4-byte F0 8F",
		    "{\"base64\":\"8I+/vw==\"}", "\"" FD FD FD FD "\"" },
		{ I("\xed\xa0\x80"), "surrogate U+D800",
		    "{\"base64\":\"7aCA\"}", "\"" FD FD FD "\"" },
		{ I("\xed\xbf\xbf"), "surrogate U+DFFF",
		    "{\"base64\":\"7b+/\"}", "\"" FD FD FD "\"" },
		{ I("\xf4\x90\x80\x80"), "U+110000",
		    "{\"base64\":\"9JCAgA==\"}", "\"" FD FD FD FD "\"" },
		{ I("\xf5\x80\x80\x80"), "F5 lead",
		    "{\"base64\":\"9YCAgA==\"}", "\"" FD FD FD FD "\"" },
		{ I("\xff"), "FF", "{\"base64\":\"/w==\"}", "\"" FD "\"" },
		{ I("\x80"), "lone continuation", "{\"base64\":\"gA==\"}",
		    "\"" FD "\"" },
		{ I("\xe2\x82"), "truncated 3-byte at end",
		    "{\"base64\":\"4oI=\"}", "\"" FD "\"" },
		{ I("\xe2\x82" "A"), "truncated 3-byte before A",
		    "{\"base64\":\"4oJB\"}", "\"" FD "A\"" },
		{ I("\xf0\x9d\x84"), "truncated 4-byte at end",
		    "{\"base64\":\"8J2E\"}", "\"" FD "\"" },
		{ I("\xc3"), "truncated 2-byte", "{\"base64\":\"ww==\"}",
		    "\"" FD "\"" },
		{ I("\xc3\xc3\xa9"), "lead before a valid char",
		    "{\"base64\":\"w8Op\"}", "\"" FD "\xc3\xa9\"" },
		{ I("a\x00" "b"), "NUL inside", "{\"base64\":\"YQBi\"}",
		    "\"a\\u0000b\"" },
		{ I("\x00"), "NUL alone", "{\"base64\":\"AA==\"}",
		    "\"\\u0000\"" },
		{ I("\xff\x00"), "base64 of 2 bytes", "{\"base64\":\"/wA=\"}",
		    "\"" FD "\\u0000\"" },
		{ I("\xff\x00\xfe"), "base64 of 3 bytes",
		    "{\"base64\":\"/wD+\"}", "\"" FD "\\u0000" FD "\"" },
		{ I("\xff\x00\xfe\x80"), "base64 of 4 bytes",
		    "{\"base64\":\"/wD+gA==\"}",
		    "\"" FD "\\u0000" FD FD "\"" },
		{ I("\xff\x00\xfe\x80\xc3"), "base64 of 5 bytes",
		    "{\"base64\":\"/wD+gMM=\"}",
		    "\"" FD "\\u0000" FD FD FD "\"" },
		{ I("0123456789abcdef0123456789abcdef\xff"),
		    "invalid after a long ASCII run",
		    "{\"base64\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWb/\"}",
		    "\"0123456789abcdef0123456789abcdef" FD "\"" },
		{ I("0123456789abcdef\x00" "0123456789abcdef"),
		    "NUL after a long ASCII run",
		    "{\"base64\":\"MDEyMzQ1Njc4OWFiY2RlZgAwMTIzNDU2Nzg5YWJjZGVm\"}",
		    "\"0123456789abcdef\\u00000123456789abcdef\"" },
		{ I("tab\tquote\"\x7f"), "escapes in a value",
		    "\"tab\\tquote\\\"\x7f\"", "\"tab\\tquote\\\"\x7f\"" },
#undef I
	};
	struct buf	 b = { NULL, 0, 0 };
	size_t		 i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		json_value(t[i].in, t[i].len, &b);
		ok(b.len == strlen(t[i].value) &&
		    memcmp(b.data, t[i].value, b.len) == 0,
		    "json value: %s", t[i].what);
		if (b.len != strlen(t[i].value) ||
		    memcmp(b.data, t[i].value, b.len) != 0)
			diag(b.data, b.len, t[i].value, strlen(t[i].value));
		json_dn(t[i].in, t[i].len, &b);
		ok(b.len == strlen(t[i].dn) &&
		    memcmp(b.data, t[i].dn, b.len) == 0,
		    "json dn: %s", t[i].what);
		if (b.len != strlen(t[i].dn) ||
		    memcmp(b.data, t[i].dn, b.len) != 0)
			diag(b.data, b.len, t[i].dn, strlen(t[i].dn));
	}
	buf_free(&b);
#undef FD
}

/* A list of n one-byte values: MARK ... APPENDS per 1000 items. */
static void
test_batches(void)
{
	static const size_t	 sizes[] = { 1, 999, 1000, 1001, 2000, 2500 };
	struct event		 ev = { .type = EV_ADD, .dn = S("x") };
	struct attrs_writer	 w;
	struct buf		 blob = { NULL, 0, 0 }, b = { NULL, 0, 0 };
	struct buf		 want = { NULL, 0, 0 };
	static const char	 pre[] = "X\x05\x00\x00\x00" "attrs}(X\x01"
	    "\x00\x00\x00v]";
	size_t			 i, k, n;

	for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		n = sizes[k];
		buf_reset(&blob);
		attrs_writer_init(&w, &blob);
		attrs_writer_attr(&w, "v", 1);
		for (i = 0; i < n; i++)
			attrs_writer_value(&w, "z", 1);
		attrs_writer_finish(&w);
		ev.new_attrs = (struct span){ blob.data, blob.len };
		buf_reset(&want);
		buf_add(&want, pre, sizeof(pre) - 1);
		for (i = 0; i < n; i++) {
			if (i % 1000 == 0)
				buf_add_u8(&want, '(');
			buf_add(&want, "C\x01z", 3);
			if (i % 1000 == 999 || i == n - 1)
				buf_add_u8(&want, 'e');
		}
		buf_add(&want, "uu.", 3);
		buf_reset(&b);
		encode_event(&b, &ev, FORMAT_PICKLE);
		ok(b.len >= want.len && same(&b, b.len - want.len, want.data,
		    want.len), "pickle list of %zu values in batches of 1000",
		    n);
	}

	/* 1001 attributes: two SETITEMS batches. */
	buf_reset(&blob);
	attrs_writer_init(&w, &blob);
	for (i = 0; i < 1001; i++) {
		char	 name[8];

		snprintf(name, sizeof(name), "a%04zu", i);
		attrs_writer_attr(&w, name, 5);
	}
	attrs_writer_finish(&w);
	ev.new_attrs = (struct span){ blob.data, blob.len };
	buf_reset(&want);
	buf_add_str(&want, "attrs}");
	for (i = 0; i < 1001; i++) {
		if (i % 1000 == 0)
			buf_add_u8(&want, '(');
		buf_printf(&want, "X%c%c%c%ca%04zu]", 5, 0, 0, 0, i);
		if (i % 1000 == 999 || i == 1000)
			buf_add_u8(&want, 'u');
	}
	buf_add(&want, "u.", 2);
	buf_reset(&b);
	encode_event(&b, &ev, FORMAT_PICKLE);
	ok(b.len >= want.len && same(&b, b.len - want.len, want.data,
	    want.len), "pickle dict of 1001 attributes in batches of 1000");
	buf_free(&blob);
	buf_free(&b);
	buf_free(&want);
}

/* Values of 255 bytes are SHORT_BINBYTES, of 256 BINBYTES (as Python does). */
static void
test_bytes_sizes(void)
{
	static const size_t	 sizes[] = { 255, 256 };
	struct event		 ev = { .type = EV_ADD, .dn = S("x") };
	struct attrs_writer	 w;
	struct buf		 blob = { NULL, 0, 0 }, b = { NULL, 0, 0 };
	struct buf		 want = { NULL, 0, 0 };
	unsigned char		 v[256];
	size_t			 k;

	memset(v, 0xab, sizeof(v));
	for (k = 0; k < 2; k++) {
		buf_reset(&blob);
		attrs_writer_init(&w, &blob);
		attrs_writer_attr(&w, "v", 1);
		attrs_writer_value(&w, v, sizes[k]);
		attrs_writer_finish(&w);
		ev.new_attrs = (struct span){ blob.data, blob.len };
		buf_reset(&want);
		buf_add(&want, "v](", 3);
		if (sizes[k] == 255)
			buf_add(&want, "C\xff", 2);
		else
			buf_add(&want, "B\x00\x01\x00\x00", 5);
		buf_add(&want, v, sizes[k]);
		buf_add(&want, "euu.", 4);
		buf_reset(&b);
		encode_event(&b, &ev, FORMAT_PICKLE);
		ok(b.len >= want.len && same(&b, b.len - want.len, want.data,
		    want.len), "pickle value of %zu bytes", sizes[k]);
	}
	buf_free(&blob);
	buf_free(&b);
	buf_free(&want);
}

int
main(void)
{
	test_hello();
	test_seq();
	test_add();
	test_modify_delete();
	test_rename_escapes();
	test_utf8();
	test_bytes_sizes();
	test_batches();
	return tap_done();
}
