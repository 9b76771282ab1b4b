/*
 * libFuzzer harness for the command line: the input, split at NUL bytes,
 * is an argv for config_parse (the LDAP URL, the consumer's address, every
 * flag).  A parse must end in success or one error line, never a crash or
 * a leak.  `make fuzz` builds and runs it.
 */
#include <stdlib.h>
#include <string.h>

#include "ldapfeed.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define MAX_ARGS	32

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct config	 cfg;
	char		*copy, *argv[MAX_ARGS + 2], err[512];
	size_t		 i, start;
	int		 argc = 0, r;

	if (len > 4096)
		return 0;
	copy = malloc(len + 1);
	memcpy(copy, data, len);
	copy[len] = '\0';
	argv[argc++] = "ldapfeed";
	for (i = start = 0; i <= len && argc <= MAX_ARGS; i++) {
		if (i == len || copy[i] == '\0') {
			argv[argc++] = copy + start;
			start = i + 1;
		}
	}
	argv[argc] = NULL;
	err[0] = '\0';
	r = config_parse(&cfg, argc, argv, err, sizeof(err));
	/* An error always says something. */
	if (r != 0 && r != CONFIG_DONE && err[0] == '\0')
		abort();
	config_free(&cfg);
	free(copy);
	return 0;
}
