/*
 * src/dn.c: the DN sharding hash (which worker a DN goes to), "is below"
 * and the store's DN index key.
 */
#include <ldap.h>
#include <stdlib.h>
#include <string.h>

#include "ldapfeed.h"
#include "tap.h"
#include "fixtures.h"


int
main(void)
{
	int		 i;

	/* FNV-1a 64 reference vectors, and A-Z folding. */
	ok(shard_hash("", 0) == 0xcbf29ce484222325ULL, "fnv1a64 of empty");
	ok(shard_hash("a", 1) == 0xaf63dc4c8601ec8cULL, "fnv1a64 of 'a'");
	ok(shard_hash("foobar", 6) == 0x85944171f73967e8ULL,
	    "fnv1a64 of 'foobar'");
	ok(shard_hash("FOOBAR", 6) == 0x85944171f73967e8ULL,
	    "A-Z fold to a-z before hashing");
	ok(shard_hash("\xc3\x89", 2) != shard_hash("\xc3\xa9", 2),
	    "non-ASCII bytes are not folded");
	ok(shard_of(S("uid=a,dc=x"), 1) == 0, "one worker takes all");
	ok(shard_of(S("foobar"), 7) == 0x85944171f73967e8ULL % 7,
	    "shard is hash mod W");
	ok(shard_of(S("UID=Alice,DC=X"), 5) == shard_of(S("uid=alice,dc=x"), 5),
	    "same DN in other case, same worker");

	/* "is below", on DNs as the server writes them */
	ok(dn_is_below(S("uid=a,ou=p,dc=x"), S("ou=p,dc=x")) &&
	    !dn_is_below(S("ou=p,dc=x"), S("ou=p,dc=x")) &&
	    !dn_is_below(S("uid=a\\,ou=p,dc=x"), S("ou=p,dc=x")) &&
	    !dn_is_below(S("uid=aou=p,dc=x"), S("ou=p,dc=x")),
	    "dn_is_below: strict, comma-bounded, escape-aware");
	ok(dn_is_below(S("cn=a\\\\,ou=p,dc=x"), S("ou=p,dc=x")) &&
	    !dn_is_below(S("cn=a\\\\\\,ou=p,dc=x"), S("ou=p,dc=x")),
	    "dn_is_below: a value ending in an escaped backslash is below");

	/* one RDN up */
	{
		struct span	 up;

		ok(dn_parent(S("uid=a,ou=p,dc=x"), &up) && up.len == 9 &&
		    memcmp(up.p, "ou=p,dc=x", 9) == 0 &&
		    dn_parent(S("cn=a\\,b,ou=p"), &up) && up.len == 4 &&
		    memcmp(up.p, "ou=p", 4) == 0, "dn_parent: past the first "
		    "unescaped comma");
		ok(!dn_parent(S("dc=x"), &up) && !dn_parent(S("cn=a\\,b"),
		    &up), "dn_parent: none at a root (an escaped comma is no "
		    "separator)");
	}

	/* the DN index key */
	{
		struct buf	 deep = { 0 }, key = { 0 };

		for (i = 0; i < 300; i++)
			buf_add_str(&deep, "cn=a,");
		buf_add_str(&deep, "dc=x");
		dn_key(&key, (struct span){ deep.data, deep.len });
		ok(key.len >= 5 && memcmp(key.data, "dc=x\0cn=a\0", 10) == 0,
		    "dn_key of a DN of 301 RDNs starts at its root");
		dn_key(&key, S("cn=a\\\\,dc=x"));
		ok(key.len == 12 && memcmp(key.data, "dc=x\0cn=a\\\\\0", 12) ==
		    0, "dn_key: an escaped backslash before a comma");
		buf_free(&deep);
		buf_free(&key);
	}

	return tap_done();
}
