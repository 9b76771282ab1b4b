/*
 * Events from entries: an entry the server sends is compared with the
 * store, and becomes an add, a rename (with its descendants), a modify,
 * or nothing; a delete or a sweep names the stored DN.  Every event gets
 * the next seq and goes to the worker its DN hashes to.
 */
#include <ldap.h>
#include <stdlib.h>
#include <string.h>

#include "ldapfeed.h"

static int
casecmp(struct span a, struct span b)
{
	size_t	 i, n = a.len < b.len ? a.len : b.len;

	for (i = 0; i < n; i++) {
		unsigned char x = a.p[i], y = b.p[i];

		if (x >= 'A' && x <= 'Z')
			x += 'a' - 'A';
		if (y >= 'A' && y <= 'Z')
			y += 'a' - 'A';
		if (x != y)
			return x < y ? -1 : 1;
	}
	return a.len < b.len ? -1 : a.len > b.len;
}

static int
bytecmp(struct span a, struct span b)
{
	size_t	 n = a.len < b.len ? a.len : b.len;
	int	 r = n ? memcmp(a.p, b.p, n) : 0;

	return r ? r : (a.len < b.len ? -1 : a.len > b.len);
}

/* Is dn inside the search's base and scope? */
int
events_in_scope(const struct config *cfg, struct span dn)
{
	struct span	 base = { (const unsigned char *)cfg->base,
			    strlen(cfg->base) };
	size_t		 i, rdnlen;

	if (casecmp(dn, base) == 0)
		return cfg->scope == LDAP_SCOPE_BASE ||
		    cfg->scope == LDAP_SCOPE_SUBTREE;
	if (cfg->scope == LDAP_SCOPE_BASE || !store_dn_is_below(dn, base))
		return 0;
	if (cfg->scope != LDAP_SCOPE_ONELEVEL)
		return 1;
	/* One level: no unescaped comma left in the RDN part. */
	rdnlen = base.len ? dn.len - base.len - 1 : dn.len;
	for (i = 0; i < rdnlen; i++) {
		if (dn.p[i] == '\\')
			i++;
		else if (dn.p[i] == ',')
			return 0;
	}
	return 1;
}

/* ---- attribute comparison ---- */

struct attr_ref {
	struct span	 name;
	struct span	 blob;		/* from its values to the blob's end */
	uint32_t	 nvals;
};

static int
attr_ref_cmp(const void *a, const void *b)
{
	return casecmp(((const struct attr_ref *)a)->name,
	    ((const struct attr_ref *)b)->name);
}

static int
span_cmp(const void *a, const void *b)
{
	return bytecmp(*(const struct span *)a, *(const struct span *)b);
}

/* An attribute's values as an array of spans. */
static struct span *
values_of(const struct attr_ref *r)
{
	struct attrs_iter	 it;
	struct span		*v;
	uint32_t		 i;

	v = xcalloc(r->nvals ? r->nvals : 1, sizeof(*v));
	it.p = r->blob.p;
	it.end = r->blob.p + r->blob.len;
	it.attrs_left = 0;
	it.vals_left = r->nvals;
	for (i = 0; i < r->nvals; i++)
		if (attrs_next_value(&it, &v[i]) != 1)
			break;
	return v;
}

/* Same set of values?  In order first (the usual case), else sorted. */
static int
same_values(const struct attr_ref *a, const struct attr_ref *b)
{
	struct span	*va, *vb;
	uint32_t	 i;
	int		 same = 1;

	if (a->nvals != b->nvals)
		return 0;
	va = values_of(a);
	vb = values_of(b);
	for (i = 0; i < a->nvals; i++)
		if (bytecmp(va[i], vb[i]) != 0)
			break;
	if (i < a->nvals) {
		qsort(va, a->nvals, sizeof(*va), span_cmp);
		qsort(vb, b->nvals, sizeof(*vb), span_cmp);
		for (i = 0; i < a->nvals && same; i++)
			same = bytecmp(va[i], vb[i]) == 0;
	}
	free(va);
	free(vb);
	return same;
}

static struct attr_ref *
index_attrs(struct span blob, size_t *n)
{
	struct attrs_iter	 it;
	struct attr_ref		*v = NULL;
	struct span		 name, skip;
	size_t			 cap = 0;
	uint32_t		 nvals, i;

	*n = 0;
	if (attrs_iter_init(&it, blob) == -1)
		return NULL;
	while (attrs_next_attr(&it, &name, &nvals) == 1) {
		if (*n == cap) {
			cap = cap ? cap * 2 : 16;
			v = xrealloc(v, cap * sizeof(*v));
		}
		v[*n].name = name;
		v[*n].nvals = nvals;
		v[*n].blob.p = it.p;
		v[*n].blob.len = (size_t)(it.end - it.p);
		(*n)++;
		for (i = 0; i < nvals; i++)
			attrs_next_value(&it, &skip);
	}
	qsort(v, *n, sizeof(*v), attr_ref_cmp);
	return v;
}

static void
add_name(struct buf *changed, struct span name)
{
	buf_add_u32(changed, (uint32_t)name.len);
	buf_add(changed, name.p, name.len);
}

/*
 * Compare two attribute blobs as sets of values per attribute description
 * (names case-insensitive).  The names that differ go to changed, sorted;
 * returns their count.  O(n log n) in the values, whatever their number.
 */
size_t
events_diff(struct span old, struct span new, struct buf *changed)
{
	struct attr_ref	*a, *b;
	size_t		 na, nb, i = 0, j = 0, count = 0;
	int		 c;

	buf_reset(changed);
	a = index_attrs(old, &na);
	b = index_attrs(new, &nb);
	while (i < na || j < nb) {
		if (i == na)
			c = 1;
		else if (j == nb)
			c = -1;
		else
			c = attr_ref_cmp(&a[i], &b[j]);
		if (c < 0) {
			add_name(changed, a[i++].name);
			count++;
		} else if (c > 0) {
			add_name(changed, b[j++].name);
			count++;
		} else {
			if (!same_values(&a[i], &b[j])) {
				add_name(changed, b[j].name);
				count++;
			}
			i++;
			j++;
		}
	}
	free(a);
	free(b);
	return count;
}

/* ---- events ---- */

static void
emit(struct events *e, struct event *ev)
{
	ev->seq = ++e->seq;
	e->counts[ev->type]++;
	pipes_send(e->pipes, shard_of(ev->dn, e->pipes->n), ev);
}

static struct span
span_of(const struct buf *b)
{
	return (struct span){ b->data, b->len };
}

struct cascade {
	struct events	*e;
	struct span	 old_root;
	struct span	 new_root;
};

/* A descendant of a renamed entry: same suffix swap, one rename each. */
static int
rename_below(void *arg, const unsigned char *uuid, struct span dn,
    struct span attrs)
{
	struct cascade	*c = arg;
	struct events	*e = c->e;
	struct event	 ev;
	size_t		 keep = dn.len - c->old_root.len;

	(void)attrs;
	buf_reset(&e->dn2);
	buf_add(&e->dn2, dn.p, keep);
	buf_add(&e->dn2, c->new_root.p, c->new_root.len);
	buf_reset(&e->old_dn2);
	buf_add(&e->old_dn2, dn.p, dn.len);
	memset(&ev, 0, sizeof(ev));
	ev.type = EV_RENAME;
	memcpy(ev.uuid, uuid, 16);
	ev.dn = span_of(&e->dn2);
	ev.old_dn = span_of(&e->old_dn2);
	emit(e, &ev);
	/* attrs point into the map: put_entry copies them before it writes */
	buf_reset(&e->attrs2);
	buf_add(&e->attrs2, attrs.p, attrs.len);
	return store_put_entry(e->store, uuid, span_of(&e->dn2),
	    span_of(&e->attrs2), &ev.old_dn) == -1 ? -1 : 0;
}

static int
delete_one(struct events *e, const unsigned char *uuid, struct span dn,
    struct span attrs)
{
	struct event	 ev;

	memset(&ev, 0, sizeof(ev));
	ev.type = EV_DELETE;
	memcpy(ev.uuid, uuid, 16);
	ev.dn = dn;
	ev.old_attrs = attrs;
	emit(e, &ev);	/* encoded (copied) before the store changes */
	return store_del_entry(e->store, uuid) == -1 ? -1 : 0;
}

static int
delete_visit(void *arg, const unsigned char *uuid, struct span dn,
    struct span attrs)
{
	return delete_one(arg, uuid, dn, attrs);
}

int
events_entry(struct events *e, const unsigned char *uuid, struct span dn,
    struct span attrs)
{
	struct span	 odn, oattrs;
	struct event	 ev;
	struct cascade	 c;
	int		 found, renamed;

	if ((found = store_get_entry(e->store, uuid, &odn, &oattrs)) == -1)
		return -1;
	memset(&ev, 0, sizeof(ev));
	memcpy(ev.uuid, uuid, 16);
	if (!found) {
		ev.type = EV_ADD;
		ev.dn = dn;
		ev.new_attrs = attrs;
		emit(e, &ev);
		return store_put_entry(e->store, uuid, dn, attrs, NULL);
	}
	/* Copies: the store's pointers die with the next write. */
	buf_reset(&e->old_dn);
	buf_add(&e->old_dn, odn.p, odn.len);
	buf_reset(&e->old_attrs);
	buf_add(&e->old_attrs, oattrs.p, oattrs.len);
	odn = span_of(&e->old_dn);
	oattrs = span_of(&e->old_attrs);

	renamed = bytecmp(odn, dn) != 0;
	if (renamed) {
		ev.type = EV_RENAME;
		ev.dn = dn;
		ev.old_dn = odn;
		emit(e, &ev);
		c.e = e;
		c.old_root = odn;
		c.new_root = dn;
		if (store_foreach_below(e->store, odn, rename_below, &c) == -1)
			return -1;
	}
	if (events_diff(oattrs, attrs, &e->changed) > 0) {
		memset(&ev, 0, sizeof(ev));
		memcpy(ev.uuid, uuid, 16);
		ev.type = EV_MODIFY;
		ev.dn = dn;
		ev.old_attrs = oattrs;
		ev.new_attrs = attrs;
		ev.changed = span_of(&e->changed);
		emit(e, &ev);
	} else if (!renamed)
		return 0;	/* the server resent what we have: nothing */
	return store_put_entry(e->store, uuid, dn, attrs, &odn);
}

/*
 * A delete names the stored DN (the server's may be the post-move one, or
 * absent).  When the server's DN lies outside the search, a subtree moved
 * out: its stored descendants go too.
 */
int
events_delete(struct events *e, const unsigned char *uuid, struct span msg_dn,
    int cascade)
{
	struct span	 dn, attrs;
	int		 found;

	if ((found = store_get_entry(e->store, uuid, &dn, &attrs)) != 1)
		return found;	/* unknown: nothing to say */
	buf_reset(&e->old_dn);
	buf_add(&e->old_dn, dn.p, dn.len);
	buf_reset(&e->old_attrs);
	buf_add(&e->old_attrs, attrs.p, attrs.len);
	if (delete_one(e, uuid, span_of(&e->old_dn), span_of(&e->old_attrs)) ==
	    -1)
		return -1;
	if (cascade && msg_dn.len > 0 && !events_in_scope(e->cfg, msg_dn)) {
		/* old_dn is reused by delete_one: keep the root elsewhere */
		struct buf	 root = { 0 };
		int		 r;

		buf_add(&root, e->old_dn.data, e->old_dn.len);
		r = store_foreach_below(e->store, span_of(&root), delete_visit,
		    e);
		buf_free(&root);
		if (r == -1)
			return -1;
	}
	return 1;
}

/*
 * After a present phase or a reload: whatever was not seen is gone.  Also
 * counts, in *unknown, the UUIDs listed present that the store lacks.
 */
int
events_sweep(struct events *e, uint64_t gen, uint64_t *count,
    uint64_t *unknown)
{
	uint64_t	 before = e->counts[EV_DELETE];
	int		 r;

	r = store_sweep(e->store, gen, delete_visit, e, unknown);
	*count = e->counts[EV_DELETE] - before;
	return r;
}

void
events_refresh_done(struct events *e)
{
	struct event	 ev;
	unsigned	 i;

	memset(&ev, 0, sizeof(ev));
	ev.type = EV_REFRESH_DONE;
	/* One seq for all: it marks one moment of the whole directory. */
	ev.seq = ++e->seq;
	for (i = 0; i < e->pipes->n; i++)
		pipes_send(e->pipes, i, &ev);
	e->counts[EV_REFRESH_DONE]++;
}

void
events_free(struct events *e)
{
	buf_free(&e->old_dn);
	buf_free(&e->old_attrs);
	buf_free(&e->changed);
	buf_free(&e->dn2);
	buf_free(&e->old_dn2);
	buf_free(&e->attrs2);
}
