/*
 * encode_sample FORMAT: encodes a fixed list of events with encode_event and
 * writes each payload to stdout after its 4-byte big-endian length, for
 * tests/e2e/test_encode_roundtrip.py, which builds the same list in Python.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "ldapfeed.h"

#define LIT(lit)	(lit), sizeof(lit) - 1
#define CSN		"20261206065619.276973Z#000000#000#000000"

static const uint64_t seqs[] = {
	0, 1, 255, 256, 65535, 65536, 2147483647ULL, 2147483648ULL,
	4294967295ULL, 4294967296ULL, 9223372036854775807ULL,
	9223372036854775808ULL, 18446744073709551615ULL
};
#define NSEQS	(sizeof(seqs) / sizeof(seqs[0]))

static const struct {
	const char	*p;
	size_t		 len;
} odd_dns[] = {
	{ LIT("cn=caf\xc3\xa9,dc=example") },
	{ LIT("cn=\xff\xfe,dc=x") },
	{ LIT("cn=\"quoted\",dc=x") },
	{ LIT("cn=back\\slash,dc=x") },
	{ LIT("cn=ctl\x01\x02\n\t\r\b\f\x1f\x7f") },
	{ LIT("cn=nul\x00x") },
	{ LIT("cn=trunc\xe2\x82") },
	{ LIT("cn=surr\xed\xa0\x80") },
	{ LIT("cn=\xf0\x9d\x84\x9e") },
	{ LIT("") },
	{ LIT("cn=\xe6\x97\xa5\xe6\x9c\xac") },
	{ LIT("cn=overlong\xc0\xaf,dc=x") },
};
#define NDNS	(sizeof(odd_dns) / sizeof(odd_dns[0]))

static enum format	 fmt;
static unsigned		 nevents;

static void
write_all(const void *p, size_t len)
{
	const unsigned char	*c = p;
	ssize_t			 n;

	while (len > 0) {
		if ((n = write(STDOUT_FILENO, c, len)) == -1) {
			if (errno == EINTR)
				continue;
			fatal(EX_IOERR, "write");
		}
		c += n;
		len -= n;
	}
}

static void
emit(struct event *ev)
{
	struct buf	 b = { NULL, 0, 0 };
	unsigned char	 hdr[4];
	int		 k;

	/* uuid byte k of event i: (i * 17 + k * 13) mod 256 */
	for (k = 0; k < 16; k++)
		ev->uuid[k] = (nevents * 17 + k * 13) & 0xff;
	nevents++;
	encode_event(&b, ev, fmt);
	hdr[0] = b.len >> 24;
	hdr[1] = b.len >> 16;
	hdr[2] = b.len >> 8;
	hdr[3] = b.len;
	write_all(hdr, sizeof(hdr));
	write_all(b.data, b.len);
	buf_free(&b);
}

static struct span
span_of(const struct buf *b)
{
	struct span	 s = { b->data, b->len };

	return s;
}

static void
add_names(struct buf *b, const char *name)
{
	buf_add_u32(b, strlen(name));
	buf_add_str(b, name);
}

int
main(int argc, char *argv[])
{
	struct event		 ev;
	struct attrs_writer	 w;
	struct buf		 a = { NULL, 0, 0 }, o = { NULL, 0, 0 };
	struct buf		 names = { NULL, 0, 0 };
	struct buf		 added = { NULL, 0, 0 }, removed = { NULL, 0, 0 };
	unsigned char		*big, byte;
	char			 val[64];
	size_t			 i, n;

	log_init(1, 0, "encode_sample");
	if (argc != 2)
		fatalx(EX_USAGE, "usage: encode_sample pickle|json");
	if (strcmp(argv[1], "pickle") == 0)
		fmt = FORMAT_PICKLE;
	else if (strcmp(argv[1], "json") == 0)
		fmt = FORMAT_JSON;
	else
		fatalx(EX_USAGE, "usage: encode_sample pickle|json");

	/* 0, 1: hello */
	memset(&ev, 0, sizeof(ev));
	ev.type = EV_HELLO;
	ev.worker = 0;
	ev.workers = 1;
	ev.reload = 1;
	emit(&ev);
	ev.worker = 3;
	ev.workers = 8;
	ev.reload = 0;
	emit(&ev);

	/* 2: add, every kind of value */
	attrs_writer_init(&w, &a);
	attrs_writer_attr(&w, LIT("objectClass"));
	attrs_writer_value(&w, LIT("top"));
	attrs_writer_value(&w, LIT("person"));
	attrs_writer_attr(&w, LIT("allBytes"));
	big = xmalloc(1 << 20);
	for (i = 0; i < 256; i++)
		big[i] = i;
	attrs_writer_value(&w, big, 256);
	attrs_writer_attr(&w, LIT("eachByte"));
	for (i = 0; i < 256; i++) {
		byte = i;
		attrs_writer_value(&w, &byte, 1);
	}
	attrs_writer_attr(&w, LIT("nonUtf8"));
	attrs_writer_value(&w, LIT("\xc3\x28"));
	attrs_writer_value(&w, LIT("\xe2\x82"));
	attrs_writer_value(&w, LIT("\xe2\x82" "A"));
	attrs_writer_value(&w, LIT("\xed\xa0\x80"));
	attrs_writer_value(&w, LIT("\xed\xbf\xbf"));
	attrs_writer_value(&w, LIT("\xf4\x90\x80\x80"));
	attrs_writer_value(&w, LIT("\xc0\xaf"));
	attrs_writer_value(&w, LIT("\xe0\x80\xaf"));
	attrs_writer_value(&w, LIT("\xf0\x80\x80\xaf"));
	attrs_writer_value(&w, LIT("\xf5\x80\x80\x80"));
	attrs_writer_value(&w, LIT("\xff"));
	attrs_writer_value(&w, LIT("\x80"));
	attrs_writer_value(&w, LIT("ok\xfe"));
	attrs_writer_value(&w, LIT("\xf0\x9d\x84"));
	attrs_writer_attr(&w, LIT("utf8"));
	attrs_writer_value(&w, LIT("\xc3\xa9"));
	attrs_writer_value(&w, LIT("\xe2\x82\xac"));
	attrs_writer_value(&w, LIT("\xf0\x9d\x84\x9e"));
	attrs_writer_value(&w, LIT("\xf4\x8f\xbf\xbf"));
	attrs_writer_value(&w, LIT("\xed\x9f\xbf"));
	attrs_writer_value(&w, LIT("\xee\x80\x80"));
	attrs_writer_value(&w, LIT("\xef\xbf\xbf"));
	attrs_writer_value(&w, LIT("tab\there"));
	attrs_writer_value(&w, LIT("quote\"back\\slash"));
	attrs_writer_value(&w, LIT("ctl\x01\x1f\x7f"));
	attrs_writer_value(&w, LIT("nl\ncr\r"));
	attrs_writer_value(&w, LIT("\xc3\xbcn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9 "
	    "\xe2\x88\x91 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"));
	attrs_writer_attr(&w, LIT("nul"));
	attrs_writer_value(&w, LIT("a\x00" "b"));
	attrs_writer_value(&w, LIT("\x00"));
	attrs_writer_value(&w, LIT("\x00\x00\x00"));
	attrs_writer_attr(&w, LIT("empty"));
	attrs_writer_value(&w, LIT(""));
	attrs_writer_attr(&w, LIT("noValues"));
	attrs_writer_attr(&w, LIT("bad\xffname"));
	attrs_writer_value(&w, LIT("v"));
	attrs_writer_attr(&w, LIT("quo\"te\\name"));
	attrs_writer_value(&w, LIT("v2"));
	attrs_writer_finish(&w);
	memset(&ev, 0, sizeof(ev));
	ev.type = EV_ADD;
	ev.seq = 1;
	ev.dn = (struct span){ (const unsigned char *)
	    "cn=binary,dc=example,dc=com", 27 };
	ev.new_attrs = span_of(&a);
	emit(&ev);

	/* 3: add, no attributes at all */
	ev.seq = 2;
	ev.dn = (struct span){ (const unsigned char *)"cn=empty", 8 };
	ev.new_attrs = attrs_empty;
	emit(&ev);

	/* 4: add, two 1 MiB values */
	buf_reset(&a);
	attrs_writer_init(&w, &a);
	attrs_writer_attr(&w, LIT("jpegPhoto"));
	for (i = 0; i < 1 << 20; i++)
		big[i] = (i * 7 + (i >> 8)) & 0xff;
	attrs_writer_value(&w, big, 1 << 20);
	attrs_writer_attr(&w, LIT("description"));
	for (i = 0; i < 1 << 20; i++)
		big[i] = 0x20 + (i * 31) % 95;
	attrs_writer_value(&w, big, 1 << 20);
	attrs_writer_finish(&w);
	ev.seq = 3;
	ev.dn = (struct span){ (const unsigned char *)"cn=large", 8 };
	ev.new_attrs = span_of(&a);
	emit(&ev);
	free(big);

	/* 5: add, a 100,000-member group and lists around the batch size */
	buf_reset(&a);
	attrs_writer_init(&w, &a);
	attrs_writer_attr(&w, LIT("member"));
	for (i = 0; i < 100000; i++) {
		n = snprintf(val, sizeof(val),
		    "uid=user%06zu,ou=people,dc=example,dc=com", i);
		attrs_writer_value(&w, val, n);
	}
	attrs_writer_attr(&w, LIT("batch999"));
	for (i = 0; i < 999; i++) {
		n = snprintf(val, sizeof(val), "%zu", i);
		attrs_writer_value(&w, val, n);
	}
	attrs_writer_attr(&w, LIT("batch1001"));
	for (i = 0; i < 1001; i++) {
		n = snprintf(val, sizeof(val), "%zu", i);
		attrs_writer_value(&w, val, n);
	}
	attrs_writer_finish(&w);
	ev.seq = 4;
	ev.dn = (struct span){ (const unsigned char *)"cn=group", 8 };
	ev.new_attrs = span_of(&a);
	emit(&ev);

	/* 6: modify */
	buf_reset(&a);
	buf_reset(&o);
	attrs_writer_init(&w, &o);
	attrs_writer_attr(&w, LIT("cn"));
	attrs_writer_value(&w, LIT("old"));
	attrs_writer_attr(&w, LIT("description"));
	attrs_writer_value(&w, LIT("x"));
	attrs_writer_finish(&w);
	attrs_writer_init(&w, &a);
	attrs_writer_attr(&w, LIT("cn"));
	attrs_writer_value(&w, LIT("new"));
	attrs_writer_attr(&w, LIT("mail"));
	attrs_writer_value(&w, LIT("a@b"));
	attrs_writer_finish(&w);
	add_names(&names, "cn");
	add_names(&names, "description");
	add_names(&names, "mail");
	memset(&ev, 0, sizeof(ev));
	ev.type = EV_MODIFY;
	ev.seq = 5;
	ev.dn = (struct span){ (const unsigned char *)"cn=mod", 6 };
	ev.old_attrs = span_of(&o);
	ev.new_attrs = span_of(&a);
	ev.changed = span_of(&names);
	/* with its entryCSN, and what appeared and went per changed name */
	ev.csn = (struct span){ (const unsigned char *)CSN, strlen(CSN) };
	attrs_writer_init(&w, &added);
	attrs_writer_attr(&w, LIT("cn"));
	attrs_writer_value(&w, LIT("new"));
	attrs_writer_attr(&w, LIT("description"));
	attrs_writer_attr(&w, LIT("mail"));
	attrs_writer_value(&w, LIT("a@b"));
	attrs_writer_finish(&w);
	attrs_writer_init(&w, &removed);
	attrs_writer_attr(&w, LIT("cn"));
	attrs_writer_value(&w, LIT("old"));
	attrs_writer_attr(&w, LIT("description"));
	attrs_writer_value(&w, LIT("x"));
	attrs_writer_attr(&w, LIT("mail"));
	attrs_writer_finish(&w);
	ev.added = span_of(&added);
	ev.removed = span_of(&removed);
	emit(&ev);
	ev.csn.len = 0;
	ev.added.len = 0;
	ev.removed.len = 0;

	/* 7: modify, nothing in it */
	ev.seq = 6;
	ev.old_attrs = attrs_empty;
	ev.new_attrs = attrs_empty;
	ev.changed.len = 0;
	emit(&ev);

	/* 8: modify, 2500 changed names */
	buf_reset(&names);
	for (i = 0; i < 2500; i++) {
		snprintf(val, sizeof(val), "n%04zu", i);
		add_names(&names, val);
	}
	ev.seq = 7;
	ev.changed = span_of(&names);
	emit(&ev);

	/* 9: rename, 10: delete */
	memset(&ev, 0, sizeof(ev));
	ev.type = EV_RENAME;
	ev.seq = 8;
	ev.old_dn = (struct span){ (const unsigned char *)"cn=old,dc=x", 11 };
	ev.dn = (struct span){ (const unsigned char *)"cn=new,dc=x", 11 };
	emit(&ev);
	buf_reset(&o);
	attrs_writer_init(&w, &o);
	attrs_writer_attr(&w, LIT("cn"));
	attrs_writer_value(&w, LIT("gone"));
	attrs_writer_attr(&w, LIT("jpegPhoto"));
	attrs_writer_value(&w, LIT("\xff\xd8\xff"));
	attrs_writer_finish(&w);
	memset(&ev, 0, sizeof(ev));
	ev.type = EV_DELETE;
	ev.seq = 9;
	ev.dn = (struct span){ (const unsigned char *)"cn=gone,dc=x", 12 };
	ev.old_attrs = span_of(&o);
	emit(&ev);

	/* refresh_done at each boundary seq */
	memset(&ev, 0, sizeof(ev));
	ev.type = EV_REFRESH_DONE;
	for (i = 0; i < NSEQS; i++) {
		ev.seq = seqs[i];
		emit(&ev);
	}

	/* odd DNs: a rename to the next one, then a delete holding it */
	for (i = 0; i < NDNS; i++) {
		memset(&ev, 0, sizeof(ev));
		ev.type = EV_RENAME;
		ev.seq = seqs[i % NSEQS];
		ev.old_dn = (struct span){ (const unsigned char *)odd_dns[i].p,
		    odd_dns[i].len };
		ev.dn = (struct span){
		    (const unsigned char *)odd_dns[(i + 1) % NDNS].p,
		    odd_dns[(i + 1) % NDNS].len };
		emit(&ev);
		buf_reset(&o);
		attrs_writer_init(&w, &o);
		attrs_writer_attr(&w, odd_dns[i].p, odd_dns[i].len);
		attrs_writer_value(&w, odd_dns[i].p, odd_dns[i].len);
		attrs_writer_finish(&w);
		memset(&ev, 0, sizeof(ev));
		ev.type = EV_DELETE;
		ev.seq = seqs[NSEQS - 1 - i % NSEQS];
		ev.dn = (struct span){ (const unsigned char *)odd_dns[i].p,
		    odd_dns[i].len };
		ev.old_attrs = span_of(&o);
		emit(&ev);
	}

	buf_free(&a);
	buf_free(&o);
	buf_free(&names);
	buf_free(&added);
	buf_free(&removed);
	return 0;
}
