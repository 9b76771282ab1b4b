/*
 * What only the server can answer about a subtree (doc/subtrees.md): what
 * lies at and below an entry with children that was renamed, moved, or
 * came into the search (a fetch, the entry found by its UUID), and which
 * of the entries stored below a DN are still in the search, and under
 * which DN (a reconcile, by UUID).  Each is a task kept in the store until
 * it completed, run on a connection of its own so that the sync search
 * waits on the server, not in our memory.
 */
#include <ldap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ldapfeed.h"

#define SUBTREE_WAIT_SECS	60	/* silence that ends a task's search */
#define PASSES_MAX		5	/* a task runs until a pass is quiet */

/*
 * A task's outcomes: done, the server failed it (try again later), or the
 * mass-delete guard held it back (it stays pending, the run stops).
 */
#define TASK_OK		0
#define TASK_AGAIN	1
#define TASK_GUARDED	SUBTREE_GUARDED

/*
 * The attribute that holds, as text, the UUID the Sync State control
 * carries: entryUUID (RFC 4530) on OpenLDAP, nsUniqueId on 389-ds
 * (doc/providers.md).
 */
const char *
provider_uuid_attr(enum provider_kind kind)
{
	return kind == PROVIDER_389DS ? "nsUniqueId" : "entryUUID";
}

void
subtree_init(struct subtree *t, const struct config *cfg, struct events *ev,
    char **asked, int decode_flags, enum provider_kind kind)
{
	size_t	 n;

	memset(t, 0, sizeof(*t));
	t->cfg = cfg;
	t->ev = ev;
	t->decode_flags = decode_flags;
	t->uuid_attr = provider_uuid_attr(kind);
	for (n = 0; asked[n]; n++)
		;
	t->attrs = xcalloc(n + 2, sizeof(char *));
	memcpy(t->attrs, asked, n * sizeof(char *));
	t->attrs[n] = (char *)(uintptr_t)t->uuid_attr;
}

void
subtree_close(struct subtree *t)
{
	if (t->ld)
		ldap_unbind_ext(t->ld, NULL, NULL);
	t->ld = NULL;
}

void
subtree_free(struct subtree *t)
{
	subtree_close(t);
	free(t->attrs);
	buf_free(&t->ent.attrs);
	buf_free(&t->scratch);
	buf_free(&t->filter);
	buf_free(&t->where);
	sync_done_free(&t->done);
}

static int
connected(struct subtree *t)
{
	char	 err[512];

	if (t->ld == NULL && conn_open(t->cfg, &t->ld, err, sizeof(err)) != 0) {
		log_warnx("%s", err);
		t->ld = NULL;
		return 0;
	}
	return 1;
}

/* The server failed a task's search: a lost connection, in effect. */
static int
again(struct subtree *t, const char *what, const char *dn, int rc)
{
	log_warnx("%s %s: %s; trying again after a reconnect", what, dn,
	    ldap_err2string(rc));
	subtree_close(t);
	return TASK_AGAIN;
}

/*
 * A sync search's entry carries its UUID in its Sync State control (RFC
 * 4533): 389-ds leaves nsUniqueId out of the entries of a refresh from a
 * cookie, asked for or not.
 */
static void
state_uuid(struct subtree *t, LDAPMessage *msg)
{
	LDAPControl	**ctrls = NULL, *c;
	struct sync_state st;
	const char	*why;

	memset(&st, 0, sizeof(st));
	if (ldap_get_entry_controls(t->ld, msg, &ctrls) == LDAP_SUCCESS &&
	    (c = ldap_control_find(LDAP_CONTROL_SYNC_STATE, ctrls, NULL)) !=
	    NULL && sync_state_decode((struct span){ (unsigned char *)
	    c->ldctl_value.bv_val, c->ldctl_value.bv_len }, &st, &why) == 0) {
		memcpy(t->ent.uuid, st.uuid, 16);
		t->ent.has_uuid = 1;
	}
	sync_state_free(&st);
	ldap_controls_free(ctrls);
}

/* A sync search's Sync Done control, its cookie above all, into t->done. */
static void
sync_done(struct subtree *t, LDAPControl **ctrls)
{
	const char	*why;

	if (sync_done_find(ctrls, &t->done, &why) == -1)
		log_warnx("protocol error: %s", why);
}

/*
 * Start a search on the task connection, with ctrls (or none), and hand
 * each entry to fn; other messages (a sync search's intermediates) are
 * passed over.  Returns TASK_OK, TASK_AGAIN (the server failed it:
 * nothing may be concluded from what did not come) or -1 (our own
 * failure).
 */
static int
search_ctrls(struct subtree *t, const char *what, const char *base,
    int scope, const char *filter, char **attrs, LDAPControl **ctrls,
    int (*fn)(struct subtree *, struct span), int *count)
{
	struct timeval	 tv = { SUBTREE_WAIT_SECS, 0 };
	LDAPControl	**done_ctrls;
	LDAPMessage	*msg;
	BerElement	*ber;
	struct berval	 dnbv;
	int		 rc, msgid, err = LDAP_SUCCESS, done = 0, r = TASK_OK;

	if (!connected(t))
		return TASK_AGAIN;
	t->no_such = 0;
	rc = ldap_search_ext(t->ld, base, scope, filter, attrs ? attrs :
	    t->attrs, 0, ctrls, NULL, NULL, LDAP_NO_LIMIT, &msgid);
	if (rc != LDAP_SUCCESS)
		return again(t, what, base, rc);
	while (!done && r == TASK_OK) {
		if (sig_term) {
			/* A stop: the task stays pending for the next start. */
			ldap_abandon_ext(t->ld, msgid, NULL, NULL);
			log_info("%s %s: stopping; it stays pending", what,
			    base);
			return TASK_AGAIN;
		}
		if ((rc = ldap_result(t->ld, msgid, LDAP_MSG_ONE, &tv, &msg)) <=
		    0)
			return again(t, what, base, rc == 0 ? LDAP_TIMEOUT :
			    LDAP_SERVER_DOWN);
		switch (ldap_msgtype(msg)) {
		case LDAP_RES_SEARCH_RESULT:
			done_ctrls = NULL;
			if (ldap_parse_result(t->ld, msg, &err, NULL, NULL,
			    NULL, ctrls ? &done_ctrls : NULL, 0) !=
			    LDAP_SUCCESS)
				err = LDAP_PROTOCOL_ERROR;
			else if (ctrls)
				sync_done(t, done_ctrls);
			ldap_controls_free(done_ctrls);
			done = 1;
			break;
		case LDAP_RES_SEARCH_ENTRY:
			ber = NULL;
			if (ldap_get_dn_ber(t->ld, msg, &ber, &dnbv) !=
			    LDAP_SUCCESS || entry_decode(ber, attrs ? 0 :
			    t->decode_flags, t->uuid_attr, &t->ent) == -1)
				err = LDAP_DECODING_ERROR;
			else {
				if (ctrls)
					state_uuid(t, msg);
				(*count)++;
				r = fn(t, (struct span){ (unsigned char *)
				    dnbv.bv_val, dnbv.bv_len });
			}
			if (ber)
				ber_free(ber, 0);
			if (err != LDAP_SUCCESS)
				done = 1;
			break;
		}
		ldap_msgfree(msg);
	}
	if (r == TASK_OK && done && err == LDAP_NO_SUCH_OBJECT)
		t->no_such = 1;
	else if (r == TASK_OK && done && err != LDAP_SUCCESS)
		return again(t, what, base, err);
	if (!done)
		ldap_abandon_ext(t->ld, msgid, NULL, NULL);
	return r;
}

static int
search(struct subtree *t, const char *what, const char *base, int scope,
    const char *filter, char **attrs, int (*fn)(struct subtree *,
    struct span), int *count)
{
	return search_ctrls(t, what, base, scope, filter, attrs, NULL, fn,
	    count);
}

/*
 * An entry the server sent without a readable entryUUID cannot be named:
 * it is never added under an invented one.  The task then fails, and is
 * tried again, once the bind identity may read entryUUID.
 */
static int
nameless(struct subtree *t, struct span dn)
{
	log_warnx("%.*s came without a readable %s: skipped (the bind "
	    "identity needs read access to %s)", (int)dn.len,
	    (const char *)dn.p, t->uuid_attr, t->uuid_attr);
	t->nameless++;
	return TASK_OK;
}

/* What a task's answer changed, for -v (doc/subtrees.md). */
static void
trace(const char *task, int what, struct span dn)
{
	if (what > 0)
		log_debug("%s: %s %.*s", task, (what & ENTRY_ADDED) ? "added" :
		    (what & ENTRY_RENAMED) ? "renamed to" : "modified",
		    (int)dn.len, (const char *)dn.p);
}

/*
 * An answer filed an entry under a parent DN the store does not hold: the
 * parent's record lags behind a name it had meanwhile, and its own later
 * rename, reconciled below the DN the store has for it, would miss the
 * entry.  So the parent is to be read at that DN (TASK_ADOPT, after the
 * task at hand).  389-ds only (no snapshots, no versions:
 * doc/providers.md).
 */
static int
adopt_later(struct subtree *t, int what, const unsigned char *uuid,
    struct span dn)
{
	struct span	 parent;
	unsigned char	 u[16];
	int		 rc;

	if (!t->adopt || what <= 0 || !(what & (ENTRY_ADDED | ENTRY_RENAMED)) ||
	    !dn_parent(dn, &parent))
		return TASK_OK;
	if ((rc = store_find_dn(t->ev->store, parent, u)) != 0)
		return rc == -1 ? -1 : TASK_OK;
	return store_task_add(t->ev->store, TASK_ADOPT, uuid, parent) == -1 ?
	    -1 : TASK_OK;
}

/*
 * The entry just applied was renamed: what the store holds below its old
 * DN is to be asked about by UUID (TASK_RECONCILE, after the task at
 * hand).
 */
static int
reconcile_later(struct subtree *t)
{
	struct events	*e = t->ev;
	int		 below;

	buf_reset(&t->scratch);
	buf_add(&t->scratch, e->old_dn.data, e->old_dn.len);
	if ((below = store_has_below(e->store, buf_span(&t->scratch))) == -1)
		return -1;
	return below && store_task_add(e->store, TASK_RECONCILE, t->ent.uuid,
	    buf_span(&t->scratch)) == -1 ? -1 : 0;
}

static int
fetched(struct subtree *t, struct span dn)
{
	struct events	*e = t->ev;
	int		 what;

	if (!t->ent.has_uuid)
		return nameless(t, dn);
	if ((what = events_entry(e, t->ent.uuid, dn, buf_span(&t->ent.attrs),
	    t->ent.csn, 0)) == -1)
		return -1;
	trace("fetch", what, dn);
	if (t->mark_gen && store_mark_seen(e->store, t->ent.uuid,
	    t->mark_gen) == -1)
		return -1;
	if (adopt_later(t, what, t->ent.uuid, dn) == -1)
		return -1;
	/*
	 * Renamed, with entries stored below its old DN: the search brings
	 * those still below it, but not one that moved away meanwhile (out
	 * of the search, say): they are asked about afterwards, as after a
	 * rename a lookup finds.
	 */
	if (!t->whole && (what & ENTRY_RENAMED) && reconcile_later(t) == -1)
		return -1;
	return events_checkpoint(e) == -1 ? -1 : TASK_OK;
}

/*
 * The UUID as the server writes it in uuid_attr: RFC 4122's 8-4-4-4-12
 * for entryUUID, four groups of 8 for 389-ds's nsUniqueId.
 */
static void
uuid_text(const struct subtree *t, char *out, const unsigned char *u)
{
	static const int rfc[] = { 4, 6, 8, 10 }, ns[] = { 4, 8, 12, 16 };
	const int	*dash = strcmp(t->uuid_attr, "entryUUID") == 0 ? rfc : ns;
	int		 i, k = 0, n = 0;

	for (i = 0; i < 16; i++) {
		if (k < 4 && i == dash[k]) {
			out[n++] = '-';
			k++;
		}
		n += snprintf(out + n, 3, "%02x", u[i]);
	}
	out[n] = '\0';
}

/* A stored entry a task's answer left out, deleted: for -v. */
static void
trace_gone(const struct subtree *t, const char *task,
    const unsigned char *uuid, int rc)
{
	char	 text[37];

	if (rc > 0) {
		uuid_text(t, text, uuid);
		log_debug("%s: %s no longer in the search%s", task, text,
		    rc == 2 ? ", entries stored below it" : "");
	}
}

static int
located(struct subtree *t, struct span dn)
{
	buf_reset(&t->where);
	buf_add(&t->where, dn.p, dn.len);
	buf_add_u8(&t->where, 0);
	return TASK_OK;
}

/*
 * The entry at the DN a message gave: is it still the one we look for?
 * Without a readable UUID nobody can tell: the fetch goes on there, to
 * name every entry it cannot name, and fails.
 */
static int
at_hint(struct subtree *t, struct span dn)
{
	if (!t->ent.has_uuid) {
		nameless(t, dn);
		return located(t, dn);
	}
	if (memcmp(t->ent.uuid, t->want, 16) == 0)
		return located(t, dn);
	return TASK_OK;
}

/*
 * Everything below an entry that the search selects, from the server:
 * unknown entries are adds, known ones take the server's DN and
 * attributes.  The entry is found by its UUID first (the DN the task was
 * given may have changed since); an entry no longer in the search's base
 * has nothing below it in the search.  The scope is subtree, not RFC
 * 4512's subordinate, which not every server has (389-ds refuses it): the
 * entry itself comes too, and is compared like the rest.
 */
static int
fetch(struct subtree *t, const unsigned char *uuid, const char *hint)
{
	static char	*noattrs[] = { LDAP_NO_ATTRS, NULL };
	char		*uuid_only[] = { (char *)(uintptr_t)t->uuid_attr, NULL };
	char		 text[37];
	int		 n = 0, r;

	if (t->cfg->scope != LDAP_SCOPE_SUBTREE &&
	    t->cfg->scope != LDAP_SCOPE_SUBORDINATE)
		return TASK_OK;
	uuid_text(t, text, uuid);
	buf_reset(&t->filter);
	buf_printf(&t->filter, "(%s=%s)", t->uuid_attr, text);
	buf_add_u8(&t->filter, 0);
	/*
	 * Where the message said first (the usual case), else anywhere: an
	 * entry whose UUID cannot be read is a failed task, never a guess.
	 */
	buf_reset(&t->where);
	memcpy(t->want, uuid, 16);
	t->nameless = 0;
	if ((r = search(t, "finding the entry at", hint, LDAP_SCOPE_BASE,
	    "(objectClass=*)", uuid_only, at_hint, &n)) != TASK_OK)
		return r;
	if (t->where.len == 0 && (r = search(t, "finding the entry once at",
	    t->cfg->base, t->cfg->scope, (const char *)t->filter.data, noattrs,
	    located, &n)) != TASK_OK)
		return r;
	if (t->where.len == 0) {
		log_debug("%s: no longer in the search", hint);
		return TASK_OK;
	}
	n = 0;
	r = search(t, "fetching the entries below", (const char *)t->where.data,
	    LDAP_SCOPE_SUBTREE, t->cfg->filter, NULL, fetched, &n);
	if (r == TASK_OK && t->no_such)
		t->unsettled = 1;	/* it moved again meanwhile */
	if (r == TASK_OK && t->nameless) {
		log_warnx("fetching the entries below %s: %d without an "
		    "%s; trying again after a reconnect", t->where.data,
		    t->nameless, t->uuid_attr);
		subtree_close(t);
		return TASK_AGAIN;
	}
	if (r == TASK_OK)
		log_info("%d entries at and below %s fetched", n,
		    (const char *)t->where.data);
	return r;
}

/*
 * Whether the entry answered is one of the batch asked about (then seen,
 * at every place it holds there: an entry asked about twice and answered
 * once must not count as gone).
 */
static int
in_batch(struct subtree *t)
{
	size_t	 i;
	int	 found = 0;

	for (i = 0; i < t->batch_n; i++)
		if (memcmp(t->batch[i], t->ent.uuid, 16) == 0) {
			t->batch_seen[i] = 1;
			found = 1;
		}
	return found;
}

/* ---- reconcile: stored descendants asked about by UUID ---- */

static int
answered(struct subtree *t, struct span dn)
{
	int	 what;

	if (!t->ent.has_uuid)
		return nameless(t, dn);
	if (!in_batch(t))
		return TASK_OK;		/* not asked about: not ours */
	if (t->dry)
		return TASK_OK;
	if ((what = events_entry(t->ev, t->ent.uuid, dn,
	    buf_span(&t->ent.attrs), t->ent.csn, 0)) == -1)
		return -1;
	trace("reconcile", what, dn);
	/* In a refresh, the server's answer says it is in the search: the
	 * sweep at the end must not take it, listed or not. */
	if (t->mark_gen && store_mark_seen(t->ev->store, t->ent.uuid,
	    t->mark_gen) == -1)
		return -1;
	if (adopt_later(t, what, t->ent.uuid, dn) == -1)
		return -1;
	/*
	 * An entry with children that the answer renames: its own message,
	 * when it comes, finds it renamed and asks nothing, so the server
	 * is asked about its descendants now, as for a message (on_change).
	 */
	if ((what & ENTRY_RENAMED) && entry_may_have_children(&t->ent)) {
		buf_reset(&t->scratch);
		buf_add(&t->scratch, t->ev->old_dn.data, t->ev->old_dn.len);
		if (store_task_add(t->ev->store, TASK_FETCH, t->ent.uuid, dn) ==
		    -1 || store_task_add(t->ev->store, TASK_RECONCILE,
		    t->ent.uuid, buf_span(&t->scratch)) == -1)
			return -1;
	}
	return events_checkpoint(t->ev) == -1 ? -1 : TASK_OK;
}

/*
 * The search's filter ANDed with one of the batch's UUIDs (in the
 * provider's UUID attribute), into t->filter; no entry of the batch seen
 * yet.
 */
static void
batch_filter(struct subtree *t)
{
	const char	*f = t->cfg->filter;
	char		 text[37];
	size_t		 i;

	buf_reset(&t->filter);
	buf_printf(&t->filter, f[0] == '(' ? "(&%s(|" : "(&(%s)(|", f);
	for (i = 0; i < t->batch_n; i++) {
		uuid_text(t, text, t->batch[i]);
		buf_printf(&t->filter, "(%s=%s)", t->uuid_attr, text);
	}
	buf_add_str(&t->filter, "))");
	buf_add_u8(&t->filter, 0);
	memset(t->batch_seen, 0, sizeof(t->batch_seen));
	t->nameless = 0;
}

/*
 * The batch asked for with the search's base, scope and filter, each
 * answer to fn; TASK_AGAIN (after a reconnect) when an answer had no UUID.
 */
static int
search_batch(struct subtree *t, const char *what,
    int (*fn)(struct subtree *, struct span), int *n)
{
	int	 r;

	batch_filter(t);
	r = search(t, what, t->cfg->base, t->cfg->scope,
	    (const char *)t->filter.data, NULL, fn, n);
	if (r == TASK_OK && t->nameless) {
		subtree_close(t);
		return TASK_AGAIN;
	}
	return r;
}

/*
 * Ask the server which of the batch are still in the search: those it
 * returns are updated, the others deleted.  Only a complete answer lets
 * anything be deleted.
 */
static int
ask(struct subtree *t)
{
	size_t		 i;
	int		 n = 0, r, rc;

	r = search_batch(t, "asking the server about the entries below",
	    answered, &n);
	for (i = 0; i < t->batch_n && r == TASK_OK; i++) {
		if (t->batch_seen[i])
			continue;
		if (t->dry)
			t->would_delete++;
		else if ((rc = events_delete(t->ev, t->batch[i], &t->scratch)) ==
		    -1 || events_checkpoint(t->ev) == -1)
			r = -1;
		else {
			trace_gone(t, "reconcile", t->batch[i], rc);
			t->deleted++;
		}
	}
	t->batch_n = 0;
	return r;
}

static int
candidate(void *arg, const unsigned char *uuid, struct span dn,
    struct span attrs)
{
	struct subtree	*t = arg;

	(void)dn;
	(void)attrs;
	memcpy(t->batch[t->batch_n++], uuid, 16);
	return t->batch_n == SUBTREE_BATCH ? ask(t) : TASK_OK;
}

/*
 * The stored entries below root (a deleted entry's DN), each asked about
 * by UUID within the search: a subtree that left the search goes whole, a
 * parent that left the filter keeps its children, a parent renamed on its
 * way out has them renamed.
 */
static int
reconcile(struct subtree *t, const char *root)
{
	int	 r;

	t->batch_n = 0;
	t->deleted = 0;
	r = store_foreach_below(t->ev->store, (struct span){ (const unsigned
	    char *)root, strlen(root) }, candidate, t);
	if (r == TASK_OK && t->batch_n > 0)
		r = ask(t);
	if (r == TASK_OK && !t->dry)
		log_info("entries stored below %s, which left the search: "
		    "%d no longer in it", root, t->deleted);
	return r;
}

/*
 * Before a reconcile deletes anything: could it delete more than the
 * guard allows?  Not when fewer entries are stored below root than it
 * allows; else the server is asked first, changing nothing, and the
 * entries it no longer has in the search are counted (doc/safety.md,
 * "Counting before deleting").  TASK_GUARDED when they are too many.
 */
static int
reconcile_guard(struct subtree *t, const char *root)
{
	struct span	 below = { (const unsigned char *)root, strlen(root) };
	uint64_t	 stored = store_count(t->ev->store);
	char		 what[512];
	int		 r;

	if (guard_allows(t->cfg, store_count_below(t->ev->store, below),
	    stored))
		return TASK_OK;
	t->dry = 1;
	t->would_delete = 0;
	r = reconcile(t, root);
	t->dry = 0;
	if (r != TASK_OK)
		return r;
	snprintf(what, sizeof(what), "the reconcile of the entries stored "
	    "below %s, which left the search,", root);
	return guard_check(t->cfg, what, t->would_delete, stored) == -1 ?
	    TASK_GUARDED : TASK_OK;
}

/* ---- lookup: an entry the sync search named, asked for with the filter */

/*
 * The server's answer for one entry of the batch: the entry as the search
 * sees it, compared with the store like a sync message (on_change in
 * reader.c), with the same consequences for what lies below it.
 */
static int
looked_up(struct subtree *t, struct span dn)
{
	struct events	*e = t->ev;
	int		 what;

	if (!t->ent.has_uuid)
		return nameless(t, dn);
	if (!in_batch(t))
		return TASK_OK;		/* not asked about: not ours */
	if ((what = events_entry(e, t->ent.uuid, dn, buf_span(&t->ent.attrs),
	    t->ent.csn, 0)) == -1)
		return -1;
	trace("lookup", what, dn);
	if (adopt_later(t, what, t->ent.uuid, dn) == -1)
		return -1;
	if (t->mark_gen && store_mark_seen(e->store, t->ent.uuid,
	    t->mark_gen) == -1)
		return -1;
	if (!t->whole && (what & ENTRY_RENAMED) && reconcile_later(t) == -1)
		return -1;
	if (!t->whole && (what & (ENTRY_ADDED | ENTRY_RENAMED)) &&
	    entry_may_have_children(&t->ent) && store_task_add(e->store,
	    TASK_FETCH, t->ent.uuid, dn) == -1)
		return -1;
	return events_checkpoint(e) == -1 ? -1 : TASK_OK;
}

/*
 * Entries the sync search named, asked for with the search's own base,
 * scope and filter: each one that comes is applied, each one that does
 * not has left the search (deleted, and its stored descendants asked
 * about).  389-ds cannot be trusted with the filter: it sends nothing for
 * an entry a rename takes out of it, nor, in a refresh from a cookie, for
 * one that left it (doc/providers.md).  Only a complete answer deletes.
 */
static int
lookup(struct subtree *t)
{
	struct span	 dn, attrs;
	size_t		 i;
	int		 n = 0, r, rc;

	r = search_batch(t, "looking up the entries named in", looked_up, &n);
	for (i = 0; i < t->batch_n && r == TASK_OK; i++) {
		if (t->batch_seen[i])
			continue;
		if (t->mark_gen) {
			/* In a refresh: held back to its end, as its deletes
			 * are (reader.c, delete()), for the guard to count. */
			if ((rc = store_get_entry(t->ev->store, t->batch[i],
			    &dn, &attrs)) == 1) {
				t->doomed++;
				rc = store_mark_seen(t->ev->store, t->batch[i],
				    t->mark_gen | SEEN_DOOMED);
			}
			if (rc == -1)
				r = -1;
		} else if ((rc = events_delete(t->ev, t->batch[i],
		    &t->scratch)) == -1 || (rc == 2 && store_task_add(
		    t->ev->store, TASK_RECONCILE, t->batch[i],
		    buf_span(&t->scratch)) == -1) ||
		    events_checkpoint(t->ev) == -1)
			r = -1;
		else
			trace_gone(t, "lookup", t->batch[i], rc);
	}
	return r;
}

/*
 * The lookups pending from id on, up to a batch of them in a row: one
 * search asks for all, and each is done once it answered.
 */
static int
run_lookups(struct subtree *t, uint64_t id, const unsigned char *uuid)
{
	uint64_t	 ids[SUBTREE_BATCH], next;
	struct buf	 dn = { 0 };
	unsigned char	 u[16];
	size_t		 i;
	int		 kind, rc, r;

	t->batch_n = 0;
	ids[t->batch_n] = id;
	memcpy(t->batch[t->batch_n++], uuid, 16);
	while (t->batch_n < SUBTREE_BATCH && (rc = store_task_next(t->ev->store,
	    ids[t->batch_n - 1], &next, &kind, u, &dn)) == 1 &&
	    kind == TASK_LOOKUP) {
		/* The same entry may come twice (two messages, a listing
		 * and an adoption): in_batch sees to both places. */
		ids[t->batch_n] = next;
		memcpy(t->batch[t->batch_n++], u, 16);
	}
	buf_free(&dn);
	if (rc == -1)
		return -1;
	r = lookup(t);
	for (i = 0; i < t->batch_n && r == TASK_OK; i++)
		if (store_task_done(t->ev->store, ids[i]) == -1)
			r = -1;
	t->batch_n = 0;
	return r;
}

/* ---- the listing: what is in the search now, by UUID and DN */

/*
 * One entry of the listing: marked seen, and looked up when the store
 * does not have it, or has it under another DN.
 */
static int
listed(struct subtree *t, struct span dn)
{
	struct span	 sdn, attrs;
	int		 rc;

	if (!t->ent.has_uuid) {
		t->nameless++;		/* said once, by subtree_list */
		return TASK_OK;
	}
	if (store_mark_seen(t->ev->store, t->ent.uuid, t->mark_gen) == -1 ||
	    (rc = store_get_entry(t->ev->store, t->ent.uuid, &sdn, &attrs)) ==
	    -1)
		return -1;
	if (rc == 1 && sdn.len == dn.len && memcmp(sdn.p, dn.p, dn.len) == 0)
		return TASK_OK;
	t->listed_odd++;
	return store_task_add(t->ev->store, TASK_LOOKUP, t->ent.uuid, dn) ==
	    -1 ? -1 : TASK_OK;
}

/*
 * Every entry in the search, by UUID and DN alone, marked seen with gen,
 * so that the sweep at the refresh's end deletes what is stored and no
 * longer in it; an entry the store does not have, or has under another
 * DN, gets a lookup.  For a server whose refreshes cannot be taken as
 * they came (doc/providers.md, 389-ds).  Returns TASK_OK, or
 * SUBTREE_UNLISTED when some entry came without a readable UUID: then the
 * listing is incomplete, and nothing may be swept by it.
 */
int
subtree_list(struct subtree *t, uint64_t gen)
{
	char	*uuid_only[] = { (char *)(uintptr_t)t->uuid_attr, NULL };
	int	 n = 0, r;

	t->mark_gen = gen;
	t->nameless = 0;
	t->listed_odd = 0;
	r = search(t, "listing the entries of", t->cfg->base, t->cfg->scope,
	    t->cfg->filter, uuid_only, listed, &n);
	if (r != TASK_OK)
		return r;
	log_info("%d entries in the search, %d of them to look up", n,
	    t->listed_odd);
	if (t->nameless == 0)
		return TASK_OK;
	log_warnx("%d entries in the search came without a readable %s: "
	    "what left the search may stay (the bind identity needs read "
	    "access to %s)", t->nameless, t->uuid_attr, t->uuid_attr);
	return SUBTREE_UNLISTED;
}

/* ---- catch-up: the changes a 389-ds persist session began without */

/* One entry changed since the refresh's cookie: looked up. */
static int
changed_since(struct subtree *t, struct span dn)
{
	if (!t->ent.has_uuid)
		return nameless(t, dn);
	return store_task_add(t->ev->store, TASK_LOOKUP, t->ent.uuid, dn) ==
	    -1 ? -1 : TASK_OK;
}

/*
 * 389-ds takes the cookie a refresh ends with before it registers the
 * persist session that is to send what changes next: a change committed
 * in between comes neither in the refresh nor after it (doc/providers.md,
 * "The registration gap").  So, once the refresh is over, the session is
 * surely registered: a refreshOnly sync search from that cookie, with
 * the sync search's own filter (389-ds's cookies name it), names what
 * changed since, and each of those is looked up (the persist messages
 * may name some of them again; a lookup applies the present state, so
 * twice does no harm).  Its deletes come as a syncIdSet, passed over: if
 * anything changed, the listing after it sweeps what left the search.
 * The cookie of its Sync Done control (t->done) says whether anything
 * changed at all since the refresh's cookie.
 */
int
subtree_catch_up(struct subtree *t, const char *filter, struct span cookie)
{
	char		*uuid_only[] = { (char *)(uintptr_t)t->uuid_attr, NULL };
	struct buf	 value = { 0 };
	LDAPControl	 ctrl, *ctrls[2];
	int		 n = 0, r;

	if (sync_request_encode(&value, SYNC_MODE_REFRESH_ONLY, &cookie, 1) ==
	    -1) {
		buf_free(&value);
		return -1;
	}
	ctrl.ldctl_oid = LDAP_CONTROL_SYNC;
	ctrl.ldctl_value.bv_val = (char *)value.data;
	ctrl.ldctl_value.bv_len = value.len;
	ctrl.ldctl_iscritical = 1;
	ctrls[0] = &ctrl;
	ctrls[1] = NULL;
	t->nameless = 0;
	t->done.has_cookie = 0;
	r = search_ctrls(t, "asking what changed since the refresh's cookie "
	    "below", t->cfg->base, t->cfg->scope, filter, uuid_only, ctrls,
	    changed_since, &n);
	buf_free(&value);
	if (r == TASK_OK && t->nameless) {
		subtree_close(t);
		return TASK_AGAIN;
	}
	if (r == TASK_OK && n > 0)
		log_info("%d entr%s changed as the persist phase began: "
		    "looked up", n, n == 1 ? "y" : "ies");
	return r;
}

/* ---- adopt: the parent an entry was filed under */

static int
parent_read(struct subtree *t, struct span dn)
{
	(void)dn;
	if (t->ent.has_uuid) {
		memcpy(t->parent, t->ent.uuid, 16);
		t->parent_found = 1;
	}
	return TASK_OK;
}

/*
 * The entry at a parent DN the store does not hold (adopt_later), read
 * with the search's filter: if it is in the search, it is looked up by its
 * UUID, which files it there, with the tasks a rename brings.  When
 * nothing is there any more, the child it was for moved on with it: the
 * child is looked up again.  When it is there but outside the search (a
 * filter that leaves out the OUs between), the entry whose record lags may
 * be further up: its parent is tried the same way, up to the first DN the
 * store holds, or the search's base (but in a full refresh).
 */
static int
adopt(struct subtree *t, const unsigned char *child, const char *parent)
{
	char		*uuid_only[] = { (char *)(uintptr_t)t->uuid_attr, NULL };
	struct span	 base = { (const unsigned char *)t->cfg->base,
			    strlen(t->cfg->base) }, at, up;
	unsigned char	 u[16];
	int		 n = 0, r, rc;

	buf_reset(&t->where);
	buf_add(&t->where, parent, strlen(parent));
	for (;;) {
		buf_add_u8(&t->where, '\0');
		at = (struct span){ t->where.data, t->where.len - 1 };
		t->parent_found = 0;
		if ((r = search(t, "reading the parent", (const char *)at.p,
		    LDAP_SCOPE_BASE, t->cfg->filter, uuid_only, parent_read,
		    &n)) != TASK_OK)
			return r;
		if (t->parent_found)
			return store_task_add(t->ev->store, TASK_LOOKUP,
			    t->parent, at) == -1 ? -1 : TASK_OK;
		if (t->no_such)
			return store_task_add(t->ev->store, TASK_LOOKUP, child,
			    (struct span){ NULL, 0 }) == -1 ? -1 : TASK_OK;
		/* In a full refresh every entry comes anyway, and the listing
		 * at its end repairs what moved while it ran: one level is
		 * enough there, and a search per level and per entry of a
		 * filtered load would cost the most. */
		if (t->whole || !dn_parent(at, &up) || !dn_is_below(up, base))
			return TASK_OK;
		if ((rc = store_find_dn(t->ev->store, up, u)) != 0)
			return rc == -1 ? -1 : TASK_OK;
		memmove(t->where.data, up.p, up.len);
		t->where.len = up.len;
	}
}

/*
 * One task, pass after pass until a pass changes nothing.  A search is no
 * snapshot: a subtree renamed while it runs can come back with some
 * descendants under the old DN and the renamed entry under the new one,
 * and the rename's own message, when it comes, then changes nothing.  A
 * pass that finds the store already equal to the server ends it
 * (doc/subtrees.md, "Tasks").
 */
static int
run_task(struct subtree *t, int kind, const unsigned char *uuid,
    const char *dn)
{
	uint64_t	 before;
	int		 pass, r = TASK_OK;

	if (kind == TASK_RECONCILE && (r = reconcile_guard(t, dn)) != TASK_OK)
		return r;
	for (pass = 0; pass < PASSES_MAX && r == TASK_OK; pass++) {
		before = t->ev->seq;
		t->unsettled = 0;
		if (kind == TASK_FETCH)
			r = fetch(t, uuid, dn);
		else if (kind == TASK_RECONCILE)
			r = reconcile(t, dn);
		else if (kind == TASK_ADOPT) {
			r = adopt(t, uuid, dn);
			break;
		}
		else {
			log_warnx("store: a task of unknown kind %d dropped",
			    kind);
			break;
		}
		if (t->ev->seq == before && !t->unsettled)
			break;
	}
	return r;
}

/*
 * Run the pending tasks, oldest first.  TASK_OK once none is left,
 * TASK_AGAIN when the server failed one, TASK_GUARDED when the guard held
 * one back (either stays pending), -1 on our own failure.
 */
int
subtree_run_pending(struct subtree *t)
{
	struct buf	 dn = { 0 };
	unsigned char	 uuid[16];
	uint64_t	 id;
	int		 kind, rc, r = TASK_OK;

	while (r == TASK_OK && (rc = store_task_first(t->ev->store, &id, &kind,
	    uuid, &dn)) == 1) {
		if (kind == TASK_LOOKUP) {
			r = run_lookups(t, id, uuid);
			continue;
		}
		buf_add_u8(&dn, 0);
		r = run_task(t, kind, uuid, (const char *)dn.data);
		if (r == TASK_OK && store_task_done(t->ev->store, id) == -1)
			r = -1;
	}
	if (r == TASK_OK && rc == -1)
		r = -1;
	buf_free(&dn);
	return r;
}

/* Record a task, so that it survives a reconnect or a stop, and run it. */
int
subtree_task(struct subtree *t, int kind, const unsigned char *uuid,
    struct span dn)
{
	if (store_task_add(t->ev->store, kind, uuid, dn) == -1)
		return -1;
	return subtree_run_pending(t);
}
