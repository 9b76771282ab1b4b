/*
 * What the server says of the objects DirSync named (doc/providers.md,
 * "Active Directory and Samba AD"): DirSync tells which objects of the
 * naming context changed, never whether they are in the search, nor what
 * changed with them.  Each named object is asked for with the search's
 * own base, scope and filter: the answer is the entry as the search sees
 * it, and no answer means it is not in the search.  An entry that came in
 * by a move brings what lies below it; a DN that went leaves the entries
 * below it and the stored values that named it to be asked for; a changed
 * link changes the linked entry's back link.  All of it waits in the
 * store's task table until done, so that a stop or a lost connection
 * takes it up again.
 */
#include <lber.h>
#include <ldap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ldapfeed.h"

#define GONE_BATCH	4096	/* DNs one scan of the store looks for */

void
resolve_init(struct resolver *r, const struct config *cfg, struct events *ev,
    char **attrs, int decode_flags, const char *root)
{
	memset(r, 0, sizeof(*r));
	r->cfg = cfg;
	r->ev = ev;
	r->attrs = attrs;
	r->decode_flags = decode_flags;
	r->root = root;
}

void
resolve_free(struct resolver *r)
{
	size_t	 i;

	for (i = 0; i < RESOLVE_BATCH; i++)
		buf_free(&r->batch_dn[i]);
	buf_free(&r->ent.attrs);
	buf_free(&r->filter);
	buf_free(&r->scratch);
	buf_free(&r->dn);
	buf_free(&r->vals);
	buf_free(&r->entdn);
	buf_free(&r->kept);
}

static unsigned char
fold(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static int
fold_cmp(struct span a, struct span b)
{
	size_t	 i, n = a.len < b.len ? a.len : b.len;

	for (i = 0; i < n; i++)
		if (fold(a.p[i]) != fold(b.p[i]))
			return fold(a.p[i]) < fold(b.p[i]) ? -1 : 1;
	return a.len < b.len ? -1 : a.len > b.len;
}

static int
bytes_cmp(const void *x, const void *y)
{
	const struct span *a = x, *b = y;
	size_t	 n = a->len < b->len ? a->len : b->len;
	int	 c = n ? memcmp(a->p, b->p, n) : 0;

	return c ? c : (a->len < b->len ? -1 : a->len > b->len);
}

/*
 * A value that may name an entry of the naming context: the DN part of an
 * extended DN ("<GUID=...>;<SID=...>;CN=x,DC=..."), when it is the root
 * or lies below it.  0 when the value names nothing there.
 */
static int
dn_part(const struct resolver *r, struct span v, struct span *dn)
{
	struct span	 root = { (const unsigned char *)r->root,
			    strlen(r->root) };

	while (v.len > 0 && v.p[0] == '<') {
		const unsigned char *semi = memchr(v.p, ';', v.len);

		if (semi == NULL)
			return 0;
		v.len -= (size_t)(semi + 1 - v.p);
		v.p = semi + 1;
	}
	if (!(dn_is_below(v, root) || (v.len == root.len &&
	    fold_cmp(v, root) == 0)))
		return 0;
	*dn = v;
	return 1;
}

static int
task(struct resolver *r, int kind, const unsigned char *uuid, struct span dn)
{
	return store_task_add(r->ev->store, kind, uuid, dn);
}

/* A value that names a stored entry: that entry is asked for again. */
static int
ask_named(struct resolver *r, struct span v)
{
	unsigned char	 uuid[16];
	struct span	 dn;
	int		 rc;

	if (!dn_part(r, v, &dn))
		return 0;
	if ((rc = store_find_dn(r->ev->store, dn, uuid)) != 1)
		return rc;
	return task(r, TASK_RESOLVE, uuid, dn);
}

/* Every value of a blob that names a stored entry (an add, a delete). */
static int
ask_all_named(struct resolver *r, struct span blob)
{
	struct attrs_iter	 it;
	struct span		 name, v;
	uint32_t		 n, i;

	if (attrs_iter_init(&it, blob) == -1)
		return -1;
	while (attrs_next_attr(&it, &name, &n) == 1)
		for (i = 0; i < n; i++) {
			if (attrs_next_value(&it, &v) != 1)
				return -1;
			if (ask_named(r, v) == -1)
				return -1;
		}
	return 0;
}

/* The values of attribute `name` in blob that may name an entry, copied
 * as spans into *out (n of them). */
static struct span *
dn_values(struct resolver *r, struct span blob, struct span name, size_t *n)
{
	struct attrs_iter	 it;
	struct span		 an, v, dn, *out = NULL;
	size_t			 cap = 0;
	uint32_t		 nv, i;

	*n = 0;
	if (attrs_iter_init(&it, blob) == -1)
		return NULL;
	while (attrs_next_attr(&it, &an, &nv) == 1)
		for (i = 0; i < nv; i++) {
			if (attrs_next_value(&it, &v) != 1)
				return out;
			if (fold_cmp(an, name) != 0 || !dn_part(r, v, &dn))
				continue;
			if (*n == cap) {
				cap = cap ? cap * 2 : 16;
				out = xrealloc(out, cap * sizeof(*out));
			}
			out[(*n)++] = v;
		}
	return out;
}

/*
 * A modify: the values that appeared in or went from a changed attribute
 * name entries whose back links changed with them (a group's member and
 * the user's memberOf): those entries are asked for again.  Only the
 * values that differ, so that one member added to a large group asks for
 * one user.
 */
static int
ask_changed_links(struct resolver *r, struct span old, struct span new,
    struct span changed)
{
	struct span	 name, *a, *b;
	size_t		 na, nb, i, j;
	int		 c, rc = 0;

	while (rc == 0 && names_iter(&changed, &name) == 1) {
		a = dn_values(r, old, name, &na);
		b = dn_values(r, new, name, &nb);
		if (na)
			qsort(a, na, sizeof(*a), bytes_cmp);
		if (nb)
			qsort(b, nb, sizeof(*b), bytes_cmp);
		for (i = j = 0; rc == 0 && (i < na || j < nb);) {
			c = i == na ? 1 : j == nb ? -1 : bytes_cmp(&a[i], &b[j]);
			if (c < 0)
				rc = ask_named(r, a[i++]);
			else if (c > 0)
				rc = ask_named(r, b[j++]);
			else
				i++, j++;
		}
		free(a);
		free(b);
	}
	return rc == -1 ? -1 : 0;
}

static int
ask_below_visit(void *arg, const unsigned char *uuid, struct span dn,
    struct span attrs)
{
	struct resolver	*r = arg;

	(void)attrs;
	return task(r, TASK_RESOLVE, uuid, dn);
}

/*
 * A DN went (a rename, a move, a delete): the entries stored below it are
 * asked for, and the stored values that name it or lie below it are
 * looked for (TASK_GONE).
 */
static int
dn_went(struct resolver *r, const unsigned char *uuid, struct span dn)
{
	if (store_foreach_below(r->ev->store, dn, ask_below_visit, r) != 0)
		return -1;
	return task(r, TASK_GONE, uuid, dn);
}

/*
 * One entry of a resolve or a below search: compared with the store, then
 * what follows from what it became (in a full load, nothing: every entry
 * comes).  kind TASK_RESOLVE_OLD: an object older than the cookie that
 * comes into the search came with what lies below it.
 */
static int
apply(struct resolver *r, struct span dn, int kind)
{
	struct events	*e = r->ev;
	int		 what;

	what = events_entry(e, r->ent.uuid, dn, buf_span(&r->ent.attrs),
	    (struct span){ NULL, 0 }, 0);
	if (what == -1)
		return -1;
	if (!r->follow || what == 0)
		return events_checkpoint(e);
	if ((what & ENTRY_ADDED) && kind == TASK_RESOLVE_OLD &&
	    task(r, TASK_BELOW, r->ent.uuid, dn) == -1)
		return -1;
	if (what & ENTRY_ADDED && ask_all_named(r, buf_span(&r->ent.attrs)) ==
	    -1)
		return -1;
	if (what & ENTRY_RENAMED) {
		/* the old DN is in e->old_dn until the next event */
		buf_reset(&r->dn);
		buf_add(&r->dn, e->old_dn.data, e->old_dn.len);
	}
	if ((what & ENTRY_MODIFIED) && ask_changed_links(r,
	    buf_span(&e->old_attrs), buf_span(&r->ent.attrs),
	    buf_span(&e->changed)) == -1)
		return -1;
	if ((what & ENTRY_RENAMED) && dn_went(r, r->ent.uuid,
	    buf_span(&r->dn)) == -1)
		return -1;
	return events_checkpoint(e);
}

/* A stored entry the search no longer has: a delete, and what follows. */
static int
gone(struct resolver *r, const unsigned char *uuid)
{
	struct events	*e = r->ev;
	struct span	 dn, attrs;
	int		 rc;

	if ((rc = store_get_entry(e->store, uuid, &dn, &attrs)) != 1)
		return rc;
	buf_reset(&r->dn);
	buf_add(&r->dn, dn.p, dn.len);
	if ((rc = events_delete(e, uuid, &r->scratch)) == -1)
		return -1;
	/* events_delete left the last attributes in e->old_attrs */
	if (r->follow && (ask_all_named(r, buf_span(&e->old_attrs)) == -1 ||
	    dn_went(r, uuid, buf_span(&r->dn)) == -1))
		return -1;
	return events_checkpoint(e);
}

static int
untracked_cmp(const void *key, const void *elem)
{
	const struct span	*k = key;
	const char		*name = *(char *const *)elem;

	return fold_cmp(*k, (struct span){ (const unsigned char *)name,
	    strlen(name) });
}

/* An attribute (options aside: member;range=...) DirSync cannot follow. */
static int
untracked(const struct resolver *r, struct span name)
{
	const unsigned char	*semi;

	if (r->nuntracked == 0)
		return 0;
	if ((semi = memchr(name.p, ';', name.len)) != NULL)
		name.len = (size_t)(semi - name.p);
	return bsearch(&name, r->untracked, r->nuntracked, sizeof(char *),
	    untracked_cmp) != NULL;
}

/*
 * Leave out the attributes DirSync cannot follow (doc/providers.md,
 * "What DirSync cannot see"): a value that changes without a change
 * DirSync names would only ever be stale in the copy.
 */
static int
keep_tracked(struct resolver *r)
{
	struct attrs_writer	 w;
	struct attrs_iter	 it;
	struct span		 name, v;
	struct buf		 tmp;
	uint32_t		 n, i;
	int			 any = 0;

	if (attrs_iter_init(&it, buf_span(&r->ent.attrs)) == -1)
		return -1;
	while (!any && attrs_next_attr(&it, &name, &n) == 1) {
		any = untracked(r, name);
		for (i = 0; i < n; i++)
			if (attrs_next_value(&it, &v) != 1)
				return -1;
	}
	if (!any)
		return 0;
	buf_reset(&r->kept);
	attrs_writer_init(&w, &r->kept);
	if (attrs_iter_init(&it, buf_span(&r->ent.attrs)) == -1)
		return -1;
	while (attrs_next_attr(&it, &name, &n) == 1) {
		int	 keep = !untracked(r, name);

		if (keep)
			attrs_writer_attr(&w, name.p, name.len);
		for (i = 0; i < n; i++) {
			if (attrs_next_value(&it, &v) != 1)
				return -1;
			if (keep)
				attrs_writer_value(&w, v.p, v.len);
		}
	}
	attrs_writer_finish(&w);
	tmp = r->ent.attrs;
	r->ent.attrs = r->kept;
	r->kept = tmp;
	return 0;
}

/*
 * An entry of a search the resolver asked, decoded: 0, or 1 for an entry
 * without a readable objectGUID, which cannot be named (ldapfeed never
 * invents a name) and is left out, or -1.
 */
static int
decode(struct resolver *r, LDAPMessage *msg, struct span *dn)
{
	BerElement	*ber = NULL;
	struct berval	 bv;

	if (ldap_get_dn_ber(r->ld, msg, &ber, &bv) != LDAP_SUCCESS ||
	    entry_decode(ber, r->decode_flags | DECODE_GUID, "objectGUID",
	    &r->ent) == -1 || keep_tracked(r) == -1) {
		if (ber)
			ber_free(ber, 0);
		log_warnx("malformed entry from the server");
		return -1;
	}
	buf_reset(&r->entdn);
	buf_add(&r->entdn, bv.bv_val, bv.bv_len);
	ber_free(ber, 0);
	*dn = buf_span(&r->entdn);
	if (!r->ent.has_uuid) {
		if (r->nameless++ < 3)
			log_warnx("%.*s came without a readable objectGUID: "
			    "left out (ldapfeed.8, PROVIDERS)", (int)dn->len,
			    (const char *)dn->p);
		return 1;
	}
	return 0;
}

/* An entry of a full load, or below an entry: 0, 1 left out, or -1. */
int
resolve_entry(struct resolver *r, LDAPMessage *msg, int kind)
{
	struct span	 dn;
	int		 rc;

	if ((rc = decode(r, msg, &dn)) != 0)
		return rc;
	return apply(r, dn, kind);
}

static int
batch_entry(void *arg, LDAPMessage *msg)
{
	struct resolver	*r = arg;
	struct span	 dn;
	size_t		 i;
	int		 kind = TASK_RESOLVE, rc;

	if ((rc = decode(r, msg, &dn)) != 0)
		return rc == 1 ? 0 : -1;
	for (i = 0; i < r->batch_n; i++)
		if (memcmp(r->batch[i], r->ent.uuid, 16) == 0) {
			r->batch_seen[i] = 1;
			if (r->batch_kind[i] == TASK_RESOLVE_OLD)
				kind = TASK_RESOLVE_OLD;
		}
	return apply(r, dn, kind);
}

static int
below_entry(void *arg, LDAPMessage *msg)
{
	return resolve_entry(arg, msg, TASK_RESOLVE) == -1 ? -1 : 0;
}

/* A search's failure, said once; the work stays pending. */
static int
failed(const char *what, struct ad_search *s, int rc)
{
	if (rc == ADS_STOP)
		return ADS_STOP;
	if (rc != ADS_FAIL || s->text[0])
		log_warnx("%s: %s", what, s->text);
	if (rc == ADS_FAIL)
		return ADS_FAIL;
	return rc >= 0 && ad_permanent(rc) ? ADS_FAIL : ADS_LOST;
}

/* Is dn the search's base or below it? */
static int
in_base(const struct resolver *r, struct span dn)
{
	struct span	 base = { (const unsigned char *)r->base,
			    strlen(r->base) };

	return dn_is_below(dn, base) || (dn.len == base.len &&
	    fold_cmp(dn, base) == 0);
}

/*
 * An object outside the search (not stored, not returned) still matters
 * to it when it moved or went (doc/providers.md, "Links"):
 *  - moved into the base without being in the search itself (the filter),
 *    it may have brought descendants that are: read below where DirSync
 *    saw it;
 *  - moved or renamed, the stored entries it links with hold its old DN
 *    (a group's member): read its links;
 *  - deleted, the stored entries that named it hold its last DN, which
 *    the tombstone tells: look for them.
 */
static int
outside(struct resolver *r, size_t i)
{
	struct span	 dn = buf_span(&r->batch_dn[i]), sdn, attrs;
	int		 rc, kind = r->batch_kind[i];

	if (kind == TASK_RESOLVE || dn.len == 0 || !r->follow)
		return 0;
	if ((rc = store_get_entry(r->ev->store, r->batch[i], &sdn, &attrs)) !=
	    0)
		return rc == -1 ? -1 : 0;
	if (kind == TASK_RESOLVE_DELETED)
		return task(r, TASK_GONE, r->batch[i], dn);
	if (r->cfg->scope == LDAP_SCOPE_SUBTREE && in_base(r, dn) &&
	    task(r, TASK_BELOW, r->batch[i], dn) == -1)
		return -1;
	return task(r, TASK_LINKS, r->batch[i], dn);
}

/*
 * Up to RESOLVE_BATCH pending objects, asked for in one search:
 * (&FILTER(|(objectGUID=...)...)) with the search's base and scope.  Those
 * that come are applied; those that do not are not in the search (any
 * more).  Returns 1 when it did some, 0 when none was pending, or ADS_*.
 */
static int
resolve_batch(struct resolver *r)
{
	struct store	*st = r->ev->store;
	struct ad_search s;
	unsigned char	 uuid[16];
	uint64_t	 id = 0;
	size_t		 i, j;
	int		 kind, rc;

	r->batch_n = 0;
	while (r->batch_n < RESOLVE_BATCH &&
	    (rc = store_task_next(st, id, &id, &kind, uuid, &r->scratch)) ==
	    1) {
		if (kind != TASK_RESOLVE && kind != TASK_RESOLVE_OLD &&
		    kind != TASK_RESOLVE_DELETED)
			continue;
		r->batch_id[r->batch_n] = id;
		r->batch_kind[r->batch_n] = kind;
		r->batch_seen[r->batch_n] = 0;
		buf_reset(&r->batch_dn[r->batch_n]);
		buf_add(&r->batch_dn[r->batch_n], r->scratch.data,
		    r->scratch.len);
		memcpy(r->batch[r->batch_n++], uuid, 16);
	}
	if (rc == -1)
		return ADS_FAIL;
	if (r->batch_n == 0)
		return 0;
	buf_reset(&r->filter);
	buf_printf(&r->filter, "(&%s(|", r->cfg->filter);
	for (i = 0; i < r->batch_n; i++) {
		for (j = 0; j < i; j++)
			if (memcmp(r->batch[j], r->batch[i], 16) == 0)
				break;
		if (j == i)
			guid_filter(&r->filter, r->batch[i]);
	}
	buf_add_str(&r->filter, "))");
	buf_add_u8(&r->filter, '\0');
	memset(&s, 0, sizeof(s));
	s.base = r->cfg->base;
	s.scope = r->cfg->scope;
	s.filter = (const char *)r->filter.data;
	s.attrs = r->attrs;
	s.entry = batch_entry;
	s.arg = r;
	rc = ad_search_run(r->ld, &s);
	ldap_controls_free(s.done_ctrls);
	if (rc != LDAP_SUCCESS)
		return failed("asking for changed objects", &s, rc);
	for (i = 0; i < r->batch_n; i++) {
		for (j = 0; j < r->batch_n && !r->batch_seen[i]; j++)
			if (r->batch_seen[j] && memcmp(r->batch[j],
			    r->batch[i], 16) == 0)
				r->batch_seen[i] = 1;
		if (!r->batch_seen[i] && (gone(r, r->batch[i]) == -1 ||
		    outside(r, i) == -1))
			return ADS_FAIL;
	}
	for (i = 0; i < r->batch_n; i++)
		if (store_task_done(st, r->batch_id[i]) == -1)
			return ADS_FAIL;
	return events_checkpoint(r->ev) == -1 ? ADS_FAIL : 1;
}

/*
 * An entry that came into the search from elsewhere (a move, a rename)
 * brought what lies below it, which DirSync does not name: read it, with
 * the search's filter.  Only a subtree search has anything below an entry.
 */
static int
below_one(struct resolver *r)
{
	struct store	*st = r->ev->store;
	struct ad_search s;
	struct span	 dn, attrs;
	unsigned char	 uuid[16];
	uint64_t	 id = 0;
	int		 kind, rc;

	while ((rc = store_task_next(st, id, &id, &kind, uuid, &r->scratch)) ==
	    1 && kind != TASK_BELOW)
		;
	if (rc != 1)
		return rc == 0 ? 0 : ADS_FAIL;
	if (r->cfg->scope == LDAP_SCOPE_SUBTREE &&
	    (rc = store_get_entry(st, uuid, &dn, &attrs)) != -1) {
		/* where it is stored, else where DirSync saw it */
		if (rc == 0)
			dn = buf_span(&r->scratch);
		buf_reset(&r->dn);
		buf_add(&r->dn, dn.p, dn.len);
		buf_add_u8(&r->dn, '\0');
		memset(&s, 0, sizeof(s));
		s.base = (const char *)r->dn.data;
		s.scope = LDAP_SCOPE_SUBTREE;
		s.filter = r->cfg->filter;
		s.attrs = r->attrs;
		s.entry = below_entry;
		s.arg = r;
		rc = ad_search_paged(r->ld, &s, NULL);
		/* gone meanwhile: its own change is on its way */
		if (rc != LDAP_SUCCESS && rc != LDAP_NO_SUCH_OBJECT)
			return failed("reading below an entry that came in",
			    &s, rc);
	} else if (rc == -1)
		return ADS_FAIL;
	if (store_task_done(st, id) == -1)
		return ADS_FAIL;
	return events_checkpoint(r->ev) == -1 ? ADS_FAIL : 1;
}

static int
links_entry(void *arg, LDAPMessage *msg)
{
	struct resolver	*r = arg;
	BerElement	*ber = NULL;
	struct berval	 bv;
	int		 rc = -1;

	if (ldap_get_dn_ber(r->ld, msg, &ber, &bv) == LDAP_SUCCESS &&
	    entry_decode(ber, DECODE_GUID, "objectGUID", &r->ent) == 0)
		rc = ask_all_named(r, buf_span(&r->ent.attrs));
	else
		log_warnx("malformed entry from the server");
	if (ber)
		ber_free(ber, 0);
	return rc;
}

/*
 * An object outside the search that moved (a rename, or a move): the
 * stored entries that link with it, or with anything below it, hold DNs
 * that moved with it (both ends of a link name each other: a user's
 * memberOf, the group's member).  Everything at and below where DirSync
 * saw it is read, and whatever its values name in the store is asked for.
 */
static int
links_one(struct resolver *r)
{
	struct store	*st = r->ev->store;
	struct ad_search s;
	unsigned char	 uuid[16];
	char		*all[] = { "*", NULL };
	uint64_t	 id = 0;
	int		 kind, rc;

	while ((rc = store_task_next(st, id, &id, &kind, uuid, &r->scratch)) ==
	    1 && kind != TASK_LINKS)
		;
	if (rc != 1)
		return rc == 0 ? 0 : ADS_FAIL;
	buf_reset(&r->dn);
	buf_add(&r->dn, r->scratch.data, r->scratch.len);
	buf_add_u8(&r->dn, '\0');
	memset(&s, 0, sizeof(s));
	s.base = (const char *)r->dn.data;
	s.scope = LDAP_SCOPE_SUBTREE;
	s.filter = "(objectClass=*)";
	s.attrs = all;
	s.entry = links_entry;
	s.arg = r;
	rc = ad_search_paged(r->ld, &s, NULL);
	/* gone meanwhile: its own change is on its way */
	if (rc != LDAP_SUCCESS && rc != LDAP_NO_SUCH_OBJECT)
		return failed("reading the links of a moved object", &s, rc);
	if (store_task_done(st, id) == -1)
		return ADS_FAIL;
	return events_checkpoint(r->ev) == -1 ? ADS_FAIL : 1;
}

/* The DNs one scan looks for, sorted A-Z folded, as spans into r->vals. */
struct gone_set {
	struct resolver	*r;
	struct span	*dns;
	size_t		 n;
};

static int
span_fold_cmp(const void *a, const void *b)
{
	return fold_cmp(*(const struct span *)a, *(const struct span *)b);
}

/* Does v, or an entry above it, name a DN of the set? */
static int
names_gone(const struct gone_set *g, struct span v)
{
	size_t	 i, k;

	for (;;) {
		if (bsearch(&v, g->dns, g->n, sizeof(*g->dns),
		    span_fold_cmp) != NULL)
			return 1;
		/* up one RDN: past the first comma that an even run of
		 * backslashes (none included) precedes */
		for (i = 0; i < v.len; i++) {
			if (v.p[i] != ',')
				continue;
			for (k = i; k > 0 && v.p[k - 1] == '\\'; k--)
				;
			if ((i - k) % 2 == 0)
				break;
		}
		if (i >= v.len)
			return 0;
		v.p += i + 1;
		v.len -= i + 1;
	}
}

static int
gone_visit(void *arg, const unsigned char *uuid, struct span dn,
    struct span attrs)
{
	struct gone_set		*g = arg;
	struct attrs_iter	 it;
	struct span		 name, v, vdn;
	uint32_t		 n, i;

	(void)dn;
	if (attrs_iter_init(&it, attrs) == -1)
		return -1;
	while (attrs_next_attr(&it, &name, &n) == 1)
		for (i = 0; i < n; i++) {
			if (attrs_next_value(&it, &v) != 1)
				return -1;
			if (dn_part(g->r, v, &vdn) && names_gone(g, vdn))
				return task(g->r, TASK_RESOLVE, uuid, dn);
		}
	return 0;
}

/*
 * A rename or a delete changes the values that name the entry, or an
 * entry below it, in other entries (a group's member), and DirSync does
 * not name those entries: the store is searched for stored values that
 * name a DN that went, and their entries are asked for again.  One scan
 * of the store for up to GONE_BATCH such DNs.
 */
static int
gone_scan(struct resolver *r)
{
	struct store	*st = r->ev->store;
	struct gone_set	 g;
	unsigned char	 uuid[16];
	uint64_t	 id = 0, *ids;
	size_t		 n = 0, i, off;
	int		 kind, rc;

	buf_reset(&r->vals);
	ids = xcalloc(GONE_BATCH, sizeof(*ids));
	while (n < GONE_BATCH && (rc = store_task_next(st, id, &id, &kind,
	    uuid, &r->scratch)) == 1) {
		if (kind != TASK_GONE)
			continue;
		ids[n++] = id;
		buf_add_u32(&r->vals, (uint32_t)r->scratch.len);
		buf_add(&r->vals, r->scratch.data, r->scratch.len);
	}
	if (rc == -1 || n == 0) {
		free(ids);
		return rc == -1 ? ADS_FAIL : 0;
	}
	g.r = r;
	g.n = n;
	g.dns = xcalloc(n, sizeof(*g.dns));
	for (i = 0, off = 0; i < n; i++) {
		g.dns[i].len = get_u32(r->vals.data + off);
		g.dns[i].p = r->vals.data + off + 4;
		off += 4 + g.dns[i].len;
	}
	qsort(g.dns, n, sizeof(*g.dns), span_fold_cmp);
	rc = store_foreach_below(st, (struct span){ NULL, 0 }, gone_visit, &g);
	for (i = 0; rc == 0 && i < n; i++)
		rc = store_task_done(st, ids[i]);
	free(g.dns);
	free(ids);
	if (rc != 0)
		return ADS_FAIL;
	return events_checkpoint(r->ev) == -1 ? ADS_FAIL : 1;
}

/*
 * Run every pending task, asking for objects first (which may make more
 * of every kind), then reading below entries that came in, then looking
 * for the values that name DNs that went, until none is left.  Returns 0,
 * or ADS_LOST (the server failed: try again after a reconnect), ADS_STOP,
 * ADS_FAIL.
 */
int
resolve_pending(struct resolver *r)
{
	int	 rc;

	r->follow = 1;
	for (;;) {
		if (sig_term)
			return ADS_STOP;
		if ((rc = resolve_batch(r)) != 0 || (rc = below_one(r)) != 0 ||
		    (rc = links_one(r)) != 0 || (rc = gone_scan(r)) != 0) {
			if (rc < 0)
				return rc;
			continue;
		}
		return 0;
	}
}
