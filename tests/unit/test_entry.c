/* One PartialAttribute of an LDAP entry, read in place: tags, lengths. */
#include <string.h>

#include "ldapfeed.h"
#include "tap.h"

static struct span
B(const char *p, size_t n)
{
	return (struct span){ (const unsigned char *)p, n };
}

int
main(void)
{
	struct span	 type, vals, v, cut;
	char		 big[300 + 16];
	size_t		 i;
	int		 r, bad;

	/* cn: "a", "" (the contents of the SEQUENCE) */
	static const char cn[] = "\x04\x02" "cn" "\x31\x05" "\x04\x01" "a"
	    "\x04\x00";
	ok(entry_attr_parse(B(cn, sizeof(cn) - 1), &type, &vals) == 0 &&
	    type.len == 2 && memcmp(type.p, "cn", 2) == 0, "type read");
	ok(entry_next_value(&vals, &v) == 1 && v.len == 1 && *v.p == 'a',
	    "first value");
	ok(entry_next_value(&vals, &v) == 1 && v.len == 0, "empty value");
	ok(entry_next_value(&vals, &v) == 0, "end of the set");

	/* An empty set of values is legal (attrsOnly, or ACLs). */
	ok(entry_attr_parse(B("\x04\x01x\x31\x00", 5), &type, &vals) == 0 &&
	    entry_next_value(&vals, &v) == 0, "no values");

	/* Long-form lengths: a 300-byte value (0x82 0x01 0x2c). */
	memcpy(big, "\x04\x01j\x31\x82\x01\x30\x04\x82\x01\x2c", 11);
	memset(big + 11, 'z', 300);
	ok(entry_attr_parse(B(big, 311), &type, &vals) == 0 &&
	    entry_next_value(&vals, &v) == 1 && v.len == 300 && v.p[299] ==
	    'z', "long-form lengths");

	/* Hostile forms. */
	ok(entry_attr_parse(B("\x05\x02" "cn\x31\x00", 6), &type, &vals) ==
	    -1, "type not an OCTET STRING");
	ok(entry_attr_parse(B("\x04\x02" "cn\x30\x00", 6), &type, &vals) ==
	    -1, "values not a SET");
	ok(entry_attr_parse(B("\x04\x02" "cn\x31\x00\x00", 7), &type,
	    &vals) == -1, "trailing bytes");
	ok(entry_attr_parse(B("\x04\x80" "cn\x31\x00", 6), &type, &vals) ==
	    -1, "indefinite length");
	ok(entry_attr_parse(B("\x04\x85\x00\x00\x00\x00\x02" "cn\x31\x00",
	    11), &type, &vals) == -1, "length of five octets");
	ok(entry_attr_parse(B("\x04\x84\x7f\xff\xff\xff" "cn\x31\x00", 10),
	    &type, &vals) == -1, "length past the end");
	ok(entry_attr_parse(B("\x04\x02" "cn\x31\x03\x05\x01" "a", 9), &type,
	    &vals) == 0 && entry_next_value(&vals, &v) == -1,
	    "a value that is not an OCTET STRING");
	ok(entry_attr_parse(B("", 0), &type, &vals) == -1, "nothing at all");

	/* No prefix of a valid attribute parses as a complete one. */
	for (i = 0, bad = 0; i < sizeof(cn) - 1; i++) {
		cut = B(cn, i);
		if (entry_attr_parse(cut, &type, &vals) == 0) {
			while ((r = entry_next_value(&vals, &v)) == 1)
				;
			if (r == 0)
				bad++;
		}
	}
	ok(bad == 0, "every truncation is refused somewhere");
	return tap_done();
}
