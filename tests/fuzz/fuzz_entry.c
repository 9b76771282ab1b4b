/*
 * libFuzzer harness for src/entry.c's decoder: the input, less its first
 * byte (the DECODE_* flags), as the attribute list of a SearchResultEntry
 * (RFC 4511, section 4.5.2), the way libldap hands it over.  What comes out
 * must be a well-formed attributes blob.  `make fuzz` builds and runs it.
 */
#include <lber.h>
#include <stdlib.h>

#include "ldapfeed.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	static struct entry	 e;
	struct berval		 bv;
	BerElement		*ber;

	if (len < 1)
		return 0;
	bv.bv_val = (char *)(uintptr_t)(data + 1);
	bv.bv_len = len - 1;
	if ((ber = ber_init(&bv)) == NULL)
		return 0;
	if (entry_decode(ber, data[0] & 3, data[0] & 4 ? "nsUniqueId" :
	    "entryUUID", &e) == 0 &&
	    !attrs_valid((struct span){ e.attrs.data, e.attrs.len }))
		abort();
	ber_free(ber, 1);
	return 0;
}
