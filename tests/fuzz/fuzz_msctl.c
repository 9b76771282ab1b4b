/*
 * libFuzzer harness for src/msctl.c: every input goes to the DirSync
 * response decoder; a value it accepts must hold a cookie no longer than
 * the input, and encoding a request with that cookie must succeed.
 *
 * make fuzz builds and runs it with the others (tests/fuzz/corpus/msctl).
 */
#include <stdlib.h>
#include <string.h>

#include "ldapfeed.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static struct buf	cookie, req;

#define CHECK(c)	do { if (!(c)) abort(); } while (0)

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct span	 v = { data, len };
	const char	*why = NULL;
	int		 more = -1;

	if (dirsync_response_decode(v, &more, &cookie, &why) == 0) {
		CHECK(more == 0 || more == 1);
		CHECK(cookie.len <= len);
		CHECK(dirsync_request_encode(&req, 0, buf_span(&cookie)) == 0);
		CHECK(req.len > cookie.len);
	} else
		CHECK(why != NULL);
	return 0;
}
