/* An LDAP entry's attributes, read in place: tags, lengths, and the
 * decoder that notes entryUUID and hasSubordinates. */
#include <lber.h>
#include <string.h>

#include "ldapfeed.h"
#include "tap.h"

static struct span
B(const char *p, size_t n)
{
	return (struct span){ (const unsigned char *)p, n };
}

/* An attribute list as libldap hands it over, from ber_printf. */
static BerElement *
attr_list(struct berval *flat)
{
	BerElement	*ber = ber_alloc_t(LBER_USE_DER);

	ber_printf(ber, "{s[ss]}", "cn", "a", "b");
	ber_printf(ber, "{s[s]}", "entryUUID",
	    "3906f8c4-7c8b-1041-92e1-057ae57b83af");
	ber_printf(ber, "{s[s]}", "hasSubordinates", "TRUE");
	ber_flatten2(ber, flat, 1);
	ber_free(ber, 1);
	return ber_init(flat);
}

static void
decoder(void)
{
	static const unsigned char uuid[16] = { 0x39, 0x06, 0xf8, 0xc4, 0x7c,
	    0x8b, 0x10, 0x41, 0x92, 0xe1, 0x05, 0x7a, 0xe5, 0x7b, 0x83, 0xaf };
	struct entry	 e;
	struct berval	 flat;
	struct span	 name;
	struct attrs_iter it;
	BerElement	*ber;
	uint32_t	 nvals;
	int		 n = 0;

	memset(&e, 0, sizeof(e));

	ber = attr_list(&flat);
	ok(entry_decode(ber, 0, "entryUUID", &e) == 0 && e.has_uuid && e.has_subs &&
	    e.subs_known && memcmp(e.uuid, uuid, 16) == 0, "decode: entryUUID "
	    "and hasSubordinates noted");
	attrs_iter_init(&it, (struct span){ e.attrs.data, e.attrs.len });
	while (attrs_next_attr(&it, &name, &nvals) == 1) {
		struct span	 v;

		n++;
		while (nvals-- > 0)
			attrs_next_value(&it, &v);
	}
	ok(n == 3, "decode: without flags, all three kept: %d", n);
	ber_free(ber, 1);
	ber_memfree(flat.bv_val);

	ber = attr_list(&flat);
	ok(entry_decode(ber, DECODE_STRIP_SUBS | DECODE_STRIP_UUID,
	    "entryUUID", &e) == 0 &&
	    e.has_uuid && e.has_subs, "decode: stripped, still noted");
	attrs_iter_init(&it, (struct span){ e.attrs.data, e.attrs.len });
	ok(attrs_next_attr(&it, &name, &nvals) == 1 && name.len == 2 &&
	    nvals == 2 && it.attrs_left == 0, "decode: only cn left");
	ber_free(ber, 1);
	ber_memfree(flat.bv_val);

	ber = ber_alloc_t(LBER_USE_DER);
	ber_printf(ber, "{s[s]}", "entryUUID", "not-a-uuid");
	ber_flatten2(ber, &flat, 1);
	ber_free(ber, 1);
	ber = ber_init(&flat);
	ok(entry_decode(ber, 0, "entryUUID", &e) == 0 && !e.has_uuid && !e.has_subs,
	    "decode: a malformed entryUUID is no entryUUID");
	/* Without hasSubordinates the server did not say: ask below it. */
	ok(!e.subs_known && entry_may_have_children(&e),
	    "decode: no hasSubordinates, maybe children");
	ber_free(ber, 1);
	ber_memfree(flat.bv_val);

	ber = ber_alloc_t(LBER_USE_DER);
	ber_printf(ber, "{s[s]}", "hasSubordinates", "FALSE");
	ber_flatten2(ber, &flat, 1);
	ber_free(ber, 1);
	ber = ber_init(&flat);
	ok(entry_decode(ber, 0, "entryUUID", &e) == 0 && e.subs_known &&
	    !e.has_subs && !entry_may_have_children(&e),
	    "decode: hasSubordinates FALSE, a leaf");
	ber_free(ber, 1);
	ber_memfree(flat.bv_val);

	ber = ber_alloc_t(LBER_USE_DER);
	ber_printf(ber, "{s}", "cn");
	ber_flatten2(ber, &flat, 1);
	ber_free(ber, 1);
	ber = ber_init(&flat);
	ok(entry_decode(ber, 0, "entryUUID", &e) == -1, "decode: an attribute without its "
	    "SET refused");
	ber_free(ber, 1);
	ber_memfree(flat.bv_val);
	buf_free(&e.attrs);
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
	decoder();
	return tap_done();
}
