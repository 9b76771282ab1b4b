/*
 * Small builders the unit tests share: a span of a C string, a made-up
 * UUID numbered n, and an attributes blob from "name=v1|v2;name2=v".
 */
#ifndef FIXTURES_H
#define FIXTURES_H

#include <stdlib.h>
#include <string.h>

#include "ldapfeed.h"

static inline struct span
S(const char *s)
{
	return (struct span){ (const unsigned char *)s, strlen(s) };
}

static inline void
uuid_of(unsigned char *u, unsigned n)
{
	memset(u, 0, 16);
	u[0] = 0xee;
	u[12] = n >> 24;
	u[13] = n >> 16;
	u[14] = n >> 8;
	u[15] = n;
}

static inline struct span
A(struct buf *b, const char *spec)
{
	struct attrs_writer	 w;
	char			*copy = strdup(spec), *attr, *save, *v, *vs;

	buf_reset(b);
	attrs_writer_init(&w, b);
	for (attr = strtok_r(copy, ";", &save); attr;
	    attr = strtok_r(NULL, ";", &save)) {
		char *eq = strchr(attr, '=');

		*eq = '\0';
		attrs_writer_attr(&w, attr, strlen(attr));
		for (v = strtok_r(eq + 1, "|", &vs); v; v = strtok_r(NULL, "|",
		    &vs))
			attrs_writer_value(&w, v, strlen(v));
	}
	attrs_writer_finish(&w);
	free(copy);
	return (struct span){ b->data, b->len };
}

#endif
