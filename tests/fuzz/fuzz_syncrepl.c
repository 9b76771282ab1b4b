/*
 * libFuzzer harness for src/syncrepl.c: every input goes to the three
 * decoders, to cookie_has_csn and, split in two by its first byte, to
 * cookie_merge; the invariants below abort when broken.
 *
 * Build and run from the top of the tree (not wired into the Makefile):
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -fno-sanitize-recover=all -Iinclude -o fuzz_syncrepl \
 *       tests/fuzz/fuzz_syncrepl.c src/syncrepl.c src/buf.c src/log.c \
 *       -lldap -llber
 *   mkdir -p /tmp/fuzz-syncrepl
 *   ./fuzz_syncrepl -max_total_time=60 /tmp/fuzz-syncrepl \
 *       tests/fuzz/corpus/syncrepl
 * liblber itself is not instrumented: run a crash or the corpus through
 * valgrind too (./fuzz_syncrepl -runs=0 CORPUS under valgrind) to see its
 * reads.
 */
#include <stdlib.h>
#include <string.h>

#include "ldapfeed.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* Reused across inputs, as the reader reuses them across messages. */
static struct sync_state	st;
static struct sync_done		dn;
static struct sync_info		in;
static struct buf		out, again, req;

#define CHECK(c)	do { if (!(c)) abort(); } while (0)

static struct span
sp(const uint8_t *p, size_t len)
{
	struct span	 s;

	s.p = p;
	s.len = len;
	return s;
}

static void
decoders(struct span v)
{
	const char	*why;

	why = NULL;
	if (sync_state_decode(v, &st, &why) == 0) {
		CHECK(why == NULL);
		CHECK(st.state >= 0 && st.state <= 3);
		CHECK(st.cookie.len < v.len);
		CHECK(st.has_cookie || st.cookie.len == 0);
	} else {
		CHECK(why != NULL && *why != '\0');
		CHECK(!st.has_cookie && st.cookie.len == 0);
	}

	why = NULL;
	if (sync_done_decode(v, &dn, &why) == 0) {
		CHECK(why == NULL);
		CHECK(dn.cookie.len < v.len);
		CHECK(dn.refresh_deletes == 0 || dn.refresh_deletes == 1);
	} else
		CHECK(why != NULL && *why != '\0');

	why = NULL;
	if (sync_info_decode(v, &in, &why) == 0) {
		CHECK(why == NULL);
		CHECK(in.cookie.len < v.len && in.uuids.len < v.len);
		CHECK(in.uuids.len % 16 == 0);
		CHECK(in.type == SYNC_INFO_ID_SET || in.uuids.len == 0);
		CHECK(in.refresh_done == 0 || in.refresh_done == 1);
		CHECK(in.refresh_deletes == 0 || in.refresh_deletes == 1);
		CHECK(in.type != SYNC_INFO_NEW_COOKIE || in.has_cookie);
	} else
		CHECK(why != NULL && *why != '\0');
}

static void
cookies(struct span stored, struct span received)
{
	int	 hs, hr;

	hs = cookie_has_csn(stored);
	hr = cookie_has_csn(received);
	CHECK(hs == 0 || hs == 1);
	cookie_merge(&out, stored, received);
	/* Guard rail 1: a CSN, once held, is never lost. */
	if (hs || hr)
		CHECK(cookie_has_csn(sp(out.data, out.len)));
	if (!hr)
		CHECK(out.len == stored.len &&
		    (out.len == 0 || memcmp(out.data, stored.p, out.len) == 0));
	CHECK(out.len <= stored.len + received.len);
	/* Merging the same received cookie again changes nothing. */
	if (hs && hr) {
		cookie_merge(&again, sp(out.data, out.len), received);
		CHECK(again.len == out.len &&
		    (out.len == 0 || memcmp(again.data, out.data, out.len) == 0));
	}

	buf_reset(&req);
	CHECK(sync_request_encode(&req, SYNC_MODE_REFRESH_AND_PERSIST,
	    &received, 1) == 0);
	CHECK(req.len >= received.len + 10 && req.data[0] == 0x30);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t	 k;

	decoders(sp(data, size));
	if (size == 0)
		return 0;
	/* data[0] picks where the stored cookie ends and the received starts. */
	k = 1 + (size_t)data[0] * (size - 1) / 255;
	cookies(sp(data + 1, k - 1), sp(data + k, size - k));
	return 0;
}
