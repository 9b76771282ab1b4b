/*
 * src/attrs.c: the attribute blob.  What attrs_writer writes (an empty
 * value, a binary one) is a blob that attrs_valid accepts.
 */
#include <string.h>

#include "ldapfeed.h"
#include "tap.h"

int
main(void)
{
	struct buf	 attrs = { 0 };
	struct attrs_writer w;

	attrs_writer_init(&w, &attrs);
	attrs_writer_attr(&w, "cn", 2);
	attrs_writer_value(&w, "Alice", 5);
	attrs_writer_value(&w, "", 0);
	attrs_writer_attr(&w, "jpegPhoto", 9);
	attrs_writer_value(&w, "\0\xff\x01", 3);
	attrs_writer_finish(&w);
	ok(attrs_valid((struct span){ attrs.data, attrs.len }),
	    "attrs blob valid");
	buf_free(&attrs);
	return tap_done();
}
