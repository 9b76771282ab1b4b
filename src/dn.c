/*
 * The DN rules, in one place: which worker a DN goes to, the store's DN
 * index key, and "is below", for DNs as one server writes them.
 * ldapfeed never decides from a DN whether an entry is in the search, or
 * where a descendant went: the server does (doc/subtrees.md, "Names").
 */
#include <string.h>

#include "ldapfeed.h"

static unsigned char
fold(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* FNV-1a, 64 bits, over the DN with A-Z folded: the worker's shard. */
uint64_t
shard_hash(const void *p, size_t len)
{
	const unsigned char	*s = p;
	uint64_t		 h = 0xcbf29ce484222325ULL;
	size_t			 i;

	for (i = 0; i < len; i++) {
		h ^= fold(s[i]);
		h *= 0x100000001b3ULL;
	}
	return h;
}

unsigned
shard_of(struct span dn, unsigned workers)
{
	return workers ? (unsigned)(shard_hash(dn.p, dn.len) % workers) : 0;
}

/* With -t nats an entry keeps its worker when renamed (doc/outputs.md). */
unsigned
shard_of_uuid(const unsigned char *uuid, unsigned workers)
{
	return workers ? (unsigned)(shard_hash(uuid, 16) % workers) : 0;
}

/* Is the byte at i a separator, not escaped by an odd run of backslashes? */
static int
unescaped(struct span dn, size_t i)
{
	size_t	 n = 0;

	while (n < i && dn.p[i - 1 - n] == '\\')
		n++;
	return n % 2 == 0;
}

/*
 * The DN index key: the RDNs from the root down, ASCII-lowercased, each
 * ended by a NUL, so that a subtree is one key range.  RDNs are found from
 * the right, so however deep the DN, its key starts at the root.  A key is
 * cut at DNKEY_MAX: the range then holds extra candidates, which callers
 * check against the DN itself.
 */
void
dn_key(struct buf *out, struct span dn)
{
	size_t	 end = dn.len, i, k;

	buf_reset(out);
	while (end > 0 && out->len < DNKEY_MAX) {
		for (i = end; i > 0; i--)
			if (dn.p[i - 1] == ',' && unescaped(dn, i - 1))
				break;
		/* the RDN is dn[i, end) */
		for (k = i; k < end && out->len < DNKEY_MAX; k++)
			buf_add_u8(out, fold(dn.p[k]));
		if (out->len < DNKEY_MAX)
			buf_add_u8(out, 0);
		end = i > 0 ? i - 1 : 0;
	}
	if (out->len > DNKEY_MAX)
		out->len = DNKEY_MAX;
}

/*
 * Is dn strictly below root?  A case-insensitive ",root" suffix test on DNs
 * as one server writes them: its DNs of one subtree share the root's bytes.
 */
int
dn_is_below(struct span dn, struct span root)
{
	size_t	 i, at;

	if (root.len == 0)
		return dn.len > 0;
	if (dn.len <= root.len + 1)
		return 0;
	at = dn.len - root.len - 1;
	if (dn.p[at] != ',' || !unescaped(dn, at))
		return 0;
	for (i = 0; i < root.len; i++)
		if (fold(dn.p[at + 1 + i]) != fold(root.p[i]))
			return 0;
	return 1;
}

/* The DN one RDN up (after the first unescaped comma): 1, or 0 at a root. */
int
dn_parent(struct span dn, struct span *parent)
{
	size_t	 i;

	for (i = 0; i < dn.len; i++)
		if (dn.p[i] == ',' && unescaped(dn, i)) {
			parent->p = dn.p + i + 1;
			parent->len = dn.len - i - 1;
			return 1;
		}
	return 0;
}
