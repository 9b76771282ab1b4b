/*
 * libFuzzer harness for src/entry.c: the input as the contents of one
 * PartialAttribute from a server.  Every value found must lie inside the
 * input.  `make fuzz` builds and runs it.
 */
#include <stdlib.h>

#include "ldapfeed.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct span	 in = { data, len }, type, vals, v;
	const uint8_t	*end = data + len;
	int		 r;

	if (entry_attr_parse(in, &type, &vals) == -1)
		return 0;
	if (type.p < data || type.p + type.len > end)
		abort();
	while ((r = entry_next_value(&vals, &v)) == 1)
		if (v.p < data || v.p + v.len > end)
			abort();
	return 0;
}
