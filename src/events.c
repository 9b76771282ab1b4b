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

void
events_init(struct events *e, const struct config *cfg, struct store *store,
    struct pipes *pipes)
{
	memset(e, 0, sizeof(*e));
	e->cfg = cfg;
	e->store = store;
	e->pipes = pipes;
}

/* Between steps of a long cascade: let the reader commit and flush. */
int
events_checkpoint(struct events *e)
{
	return e->checkpoint ? e->checkpoint(e->checkpoint_arg) : 0;
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

/*
 * One attribute that differs: its name (as new spells it, or old when it
 * went), its values on both sides, and the indices of those that appeared
 * (into nv) and went (into ov).
 */
struct change {
	struct span	 name;
	struct span	*ov, *nv;
	uint32_t	 on, nn;
	uint32_t	*added, *removed;
	uint32_t	 nadded, nremoved;
};

static int
change_cmp(const void *a, const void *b)
{
	return bytecmp(((const struct change *)a)->name,
	    ((const struct change *)b)->name);
}

static int
same_span(struct span a, struct span b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static uint64_t
value_hash(struct span v)
{
	uint64_t	 h = 0xcbf29ce484222325ULL;
	size_t		 i;

	for (i = 0; i < v.len; i++)
		h = (h ^ v.p[i]) * 0x100000001b3ULL;
	return h;
}

/*
 * Between ov[lo..oh) and nv[lo..nh), which values appeared and which
 * went: through a hash table of the old ones, so that it stays linear.
 */
static void
middle_diff(struct change *c, uint32_t lo, uint32_t oh, uint32_t nh)
{
	uint32_t	*slot, i, j, k;
	size_t		 size = 16, mask;
	char		*seen;

	while (size < 2 * (size_t)(oh - lo))
		size *= 2;
	mask = size - 1;
	slot = xcalloc(size, sizeof(*slot));
	seen = xcalloc(oh - lo + 1, 1);
	for (i = lo; i < oh; i++) {
		for (k = value_hash(c->ov[i]) & mask; slot[k]; k = (k + 1) & mask)
			;
		slot[k] = i + 1;
	}
	for (j = lo; j < nh; j++) {
		for (k = value_hash(c->nv[j]) & mask; slot[k]; k = (k + 1) & mask)
			if (!seen[slot[k] - 1 - lo] &&
			    same_span(c->ov[slot[k] - 1], c->nv[j]))
				break;
		if (slot[k])
			seen[slot[k] - 1 - lo] = 1;
		else
			c->added[c->nadded++] = j;
	}
	for (i = lo; i < oh; i++)
		if (!seen[i - lo])
			c->removed[c->nremoved++] = i;
	free(slot);
	free(seen);
}

/*
 * The values of one attribute before and after, as sets of bytes: returns
 * whether they differ, with what appeared and what went in c.  A value
 * added to or removed from a 100,000-member group leaves the rest in the
 * server's order, so the common head and tail are skipped first and only
 * what lies between goes through a hash table: linear in the values,
 * whatever their number (README.md, "Performance", big groups).
 */
static int
value_diff(struct change *c)
{
	uint32_t	 lo = 0, oh = c->on, nh = c->nn, i;

	c->added = xcalloc(c->nn + 1, sizeof(*c->added));
	c->removed = xcalloc(c->on + 1, sizeof(*c->removed));
	c->nadded = c->nremoved = 0;
	while (lo < oh && lo < nh && same_span(c->ov[lo], c->nv[lo]))
		lo++;
	while (oh > lo && nh > lo && same_span(c->ov[oh - 1], c->nv[nh - 1])) {
		oh--;
		nh--;
	}
	if (oh == lo)
		for (i = lo; i < nh; i++)
			c->added[c->nadded++] = i;
	else if (nh == lo)
		for (i = lo; i < oh; i++)
			c->removed[c->nremoved++] = i;
	else
		middle_diff(c, lo, oh, nh);
	return c->nadded > 0 || c->nremoved > 0;
}

static void
change_free(struct change *c)
{
	free(c->ov);
	free(c->nv);
	free(c->added);
	free(c->removed);
}

/* The names sorted by bytes (what Python's sorted() gives a consumer), and
 * per name the values that appeared and those that went. */
static void
write_changes(struct change *c, size_t n, struct buf *changed,
    struct buf *added, struct buf *removed)
{
	struct attrs_writer	 wa, wr;
	size_t			 i;
	uint32_t		 k;

	qsort(c, n, sizeof(*c), change_cmp);
	if (added)
		attrs_writer_init(&wa, added);
	if (removed)
		attrs_writer_init(&wr, removed);
	for (i = 0; i < n; i++) {
		buf_add_u32(changed, (uint32_t)c[i].name.len);
		buf_add(changed, c[i].name.p, c[i].name.len);
		if (added) {
			attrs_writer_attr(&wa, c[i].name.p, c[i].name.len);
			for (k = 0; k < c[i].nadded; k++)
				attrs_writer_value(&wa, c[i].nv[c[i].added[k]].p,
				    c[i].nv[c[i].added[k]].len);
		}
		if (removed) {
			attrs_writer_attr(&wr, c[i].name.p, c[i].name.len);
			for (k = 0; k < c[i].nremoved; k++)
				attrs_writer_value(&wr,
				    c[i].ov[c[i].removed[k]].p,
				    c[i].ov[c[i].removed[k]].len);
		}
	}
	if (added)
		attrs_writer_finish(&wa);
	if (removed)
		attrs_writer_finish(&wr);
}

/*
 * Compare two attribute blobs as sets of values per attribute description
 * (names case-insensitive).  The names that differ go to changed, sorted
 * by bytes; per such name, the values that appeared go to added and those
 * that went to removed (attribute blobs; either may be NULL).  Returns the
 * number of names.  Linear in the values, whatever their number.
 */
size_t
events_diff(struct span old, struct span new, struct buf *changed,
    struct buf *added, struct buf *removed)
{
	struct attr_ref	*a, *b;
	struct change	*c;
	size_t		 na, nb, i = 0, j = 0, n = 0, k;
	int		 cmp;

	buf_reset(changed);
	if (added)
		buf_reset(added);
	if (removed)
		buf_reset(removed);
	a = index_attrs(old, &na);
	b = index_attrs(new, &nb);
	c = xcalloc(na + nb + 1, sizeof(*c));
	while (i < na || j < nb) {
		if (i == na)
			cmp = 1;
		else if (j == nb)
			cmp = -1;
		else
			cmp = attr_ref_cmp(&a[i], &b[j]);
		memset(&c[n], 0, sizeof(c[n]));
		if (cmp <= 0) {
			c[n].name = a[i].name;
			c[n].ov = values_of(&a[i]);
			c[n].on = a[i++].nvals;
		}
		if (cmp >= 0) {
			c[n].name = b[j].name;	/* as new spells it */
			c[n].nv = values_of(&b[j]);
			c[n].nn = b[j++].nvals;
		}
		if (value_diff(&c[n]))
			n++;
		else
			change_free(&c[n]);
	}
	write_changes(c, n, changed, added, removed);
	for (k = 0; k < n; k++)
		change_free(&c[k]);
	free(c);
	free(a);
	free(b);
	return n;
}

/* ---- events ---- */

static void
emit(struct events *e, struct event *ev)
{
	ev->seq = ++e->seq;
	e->counts[ev->type]++;
	pipes_send(e->pipes, e->cfg->route == ROUTE_UUID ?
	    shard_of_uuid(ev->uuid, e->pipes->n) : shard_of(ev->dn, e->pipes->n),
	    ev);
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

/*
 * Is this version of the entry (its entryCSN) older than the one applied
 * last?  A task's answer can run ahead of the messages still on their way
 * (doc/subtrees.md, "Versions"); with same_is_old, the same version again
 * counts as old too.  0 when either CSN is unknown.
 */
static int
stale(struct events *e, const unsigned char *uuid, struct span csn,
    int same_is_old)
{
	struct span	 stored;
	int		 c;

	if (csn.len == 0 || store_get_csn(e->store, uuid, &stored) != 1)
		return 0;
	c = bytecmp(csn, stored);
	return c < 0 || (c == 0 && same_is_old);
}

/*
 * An entry as the server sends it, against the store: an add, a rename, a
 * modify, or nothing.  The entry alone: what became of its descendants is
 * the server's to say (doc/subtrees.md).  csn is the version's entryCSN,
 * or empty.  Returns the ENTRY_* of what happened, or -1.
 */
int
events_entry(struct events *e, const unsigned char *uuid, struct span dn,
    struct span attrs, struct span csn, int same_is_old)
{
	struct span	 odn, oattrs;
	struct event	 ev;
	int		 found, what = 0;

	if (stale(e, uuid, csn, same_is_old))
		return 0;
	if (store_put_csn(e->store, uuid, csn) == -1)
		return -1;
	if ((found = store_get_entry(e->store, uuid, &odn, &oattrs)) == -1)
		return -1;
	memset(&ev, 0, sizeof(ev));
	memcpy(ev.uuid, uuid, 16);
	if (!found) {
		ev.type = EV_ADD;
		ev.dn = dn;
		ev.new_attrs = attrs;
		ev.csn = csn;
		emit(e, &ev);
		if (store_put_entry(e->store, uuid, dn, attrs, NULL) == -1)
			return -1;
		return ENTRY_ADDED;
	}
	/* Copies: the store's pointers die with the next write. */
	buf_reset(&e->old_dn);
	buf_add(&e->old_dn, odn.p, odn.len);
	buf_reset(&e->old_attrs);
	buf_add(&e->old_attrs, oattrs.p, oattrs.len);
	odn = buf_span(&e->old_dn);
	oattrs = buf_span(&e->old_attrs);

	if (bytecmp(odn, dn) != 0) {
		what |= ENTRY_RENAMED;
		ev.type = EV_RENAME;
		ev.dn = dn;
		ev.old_dn = odn;
		ev.csn = csn;
		emit(e, &ev);
	}
	if (events_diff(oattrs, attrs, &e->changed, &e->added,
	    &e->removed) > 0) {
		what |= ENTRY_MODIFIED;
		memset(&ev, 0, sizeof(ev));
		memcpy(ev.uuid, uuid, 16);
		ev.type = EV_MODIFY;
		ev.dn = dn;
		ev.old_attrs = oattrs;
		ev.new_attrs = attrs;
		ev.changed = buf_span(&e->changed);
		ev.added = buf_span(&e->added);
		ev.removed = buf_span(&e->removed);
		ev.csn = csn;
		emit(e, &ev);
	}
	if (what && store_put_entry(e->store, uuid, dn, attrs, &odn) == -1)
		return -1;
	return what;
}

/*
 * A delete names the stored DN (the server's may be the post-move one, or
 * absent) and deletes the stored entry alone.  (A delete older than a
 * version a task applied needs no guard: an entry that came back after it
 * has a message of its own, an add, on its way.)  When entries are stored
 * below it, nothing is inferred from their DNs: the root's DN is copied to
 * *below and 2 returned, for the caller to ask the server about them
 * (doc/subtrees.md, "Tasks").  Returns 1 (deleted), 2 (deleted, with
 * descendants to resolve), 0 (unknown), -1.
 */
int
events_delete(struct events *e, const unsigned char *uuid, struct buf *below)
{
	struct span	 dn, attrs;
	struct buf	 root = { 0 };
	int		 found, r = 1;

	if ((found = store_get_entry(e->store, uuid, &dn, &attrs)) != 1)
		return found;	/* unknown: nothing to say */
	buf_add(&root, dn.p, dn.len);
	buf_reset(&e->old_attrs);
	buf_add(&e->old_attrs, attrs.p, attrs.len);
	if (delete_one(e, uuid, buf_span(&root), buf_span(&e->old_attrs)) == -1)
		r = -1;
	else if ((found = store_has_below(e->store, buf_span(&root))) == -1)
		r = -1;
	else if (found) {
		buf_reset(below);
		buf_add(below, root.data, root.len);
		r = 2;
	}
	buf_free(&root);
	return r;
}

struct sweep {
	struct events	*e;
	int		 resolve;
};

/* A swept entry; with resolve, its stored descendants become a task. */
static int
sweep_visit(void *arg, const unsigned char *uuid, struct span dn,
    struct span attrs)
{
	struct sweep	*sw = arg;
	struct events	*e = sw->e;
	int		 below;

	buf_reset(&e->dn2);
	buf_add(&e->dn2, dn.p, dn.len);
	if (delete_one(e, uuid, dn, attrs) == -1)
		return -1;
	if (sw->resolve) {
		if ((below = store_has_below(e->store, buf_span(&e->dn2))) == -1 ||
		    (below && store_task_add(e->store, TASK_RECONCILE, uuid,
		    buf_span(&e->dn2)) == -1))
			return -1;
	}
	return events_checkpoint(e);
}

/*
 * After a present phase or a reload (SWEEP_UNSEEN): whatever was not seen
 * is gone; at the end of a refresh whose deletes were held back
 * (SWEEP_DOOMED, doc/safety.md): those deletes.  Also counts, in
 * *unknown, the UUIDs listed present that the store lacks.  With resolve,
 * the stored descendants of a deleted entry are left to a reconcile task
 * (doc/subtrees.md), which the caller runs.
 */
int
events_sweep(struct events *e, uint64_t gen, enum sweep_mode mode,
    uint64_t *count, uint64_t *unknown, int resolve)
{
	struct sweep	 sw = { e, resolve };
	uint64_t	 before = e->counts[EV_DELETE];
	int		 r;

	r = store_sweep(e->store, gen, mode, sweep_visit, &sw, unknown);
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
	buf_free(&e->added);
	buf_free(&e->removed);
	buf_free(&e->dn2);
}
