/*
 * A minimal test protocol for the unit tests: each check prints "ok N - what"
 * or "not ok N - what"; tests/run sums the lines of every program.
 */
#ifndef TAP_H
#define TAP_H

#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

#define ok(cond, ...) do {						\
	int tap_c = (cond) ? 1 : 0;					\
	printf("%sok %d - ", tap_c ? "" : "not ", ++tap_n);		\
	printf(__VA_ARGS__);						\
	printf("\n");							\
	if (!tap_c) {							\
		tap_failed++;						\
		printf("#   failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
	}								\
	fflush(stdout);							\
} while (0)

#define tap_done()	(tap_failed ? 1 : 0)

#endif
