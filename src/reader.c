/*
 * The LDAP reader: connects and binds, opens the store, meets the workers at
 * the barrier, then follows the search with syncrepl and hands the events to
 * the workers' pipes.
 */
#include <errno.h>
#include <lber.h>
#include <ldap.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "ldapfeed.h"

#define BATCH_MESSAGES		2000	/* commit at least this often */
#define BATCH_BYTES		(32 << 20) /* and before a batch is this big */
#define REFRESH_WRITE_MIN	65536	/* pipe writes in the refresh */
#define SERVER_PAUSE_MS		2	/* then write what is queued */
#define BACKOFF_MAX_SECS	60
#define CANCEL_WAIT_SECS	5
#define EVERYTHING		"(objectClass=*)"

/* What ended a search. */
enum outcome {
	GO_ON,		/* (per message) keep reading */
	DONE,		/* refreshOnly finished: shut down cleanly */
	STOP,		/* a shutdown was asked */
	LOST,		/* connection lost or transient error: reconnect */
	RELOAD,		/* the cookie is no good: search again without it */
	GUARDED,	/* the mass-delete guard held deletes back: stop */
	FATAL		/* a permanent error */
};

struct reader {
	const struct child_ctx	*ctx;
	const struct config	*cfg;
	LDAP			*ld;
	int			 msgid;		/* the sync search, or -1 */
	struct store		*store;
	struct pipes		 pipes;
	struct events		 ev;
	uint64_t		 committed_seq;
	uint64_t		 batch;		/* messages in the open txn */
	/* this search */
	int			 in_refresh;
	int			 had_cookie;
	int			 present;	/* a present phase happened */
	int			 listed;	/* some entry was listed present */
	int			 track;		/* mark entries seen */
	uint64_t		 gen;
	uint64_t		 present_unknown;
	unsigned		 refresh_required;	/* 4096s in a row */
	uint64_t		 with_children;	/* entries of this refresh */
	uint64_t		 doomed;	/* deletes held back till its end */
	int			 has_cand;
	struct buf		 cand;		/* cookie for the refresh's end */
	int			 has_from_cn;	/* 389-ds: the change number of */
	uint64_t		 from_cn;	/* the cookie searched from */
	int64_t			 started;	/* clock_ms() */
	uint64_t		 counts_at_start[EV_REFRESH_DONE + 1];
	/* this run */
	int			 refresh_done_sent;
	unsigned		 reconnects;
	struct buf		 cookie;
	struct buf		 resume;	/* a 4096's cookie, to search with */
	int			 has_resume;
	struct entry		 ent;		/* the entry just read */
	char		       **attrs_asked;	/* the search's, + hasSubordinates */
	int			 decode_flags;	/* what we asked for ourselves */
	struct subtree		 sub;		/* the server's answers on subtrees */
	int			 lookup;	/* messages name entries to ask for */
	int			 unfiltered;	/* ... and the search has no filter */
	unsigned		 lookups;	/* lookups waiting, in a refresh */
	struct provider		 provider;	/* what the server says it is */
	struct buf		 below;		/* a deleted entry's DN */
	struct sync_state	 st;
	struct sync_done	 done;
	struct sync_info	 info;
};

/* ---- the store's side ---- */

/* What the store records about the search (doc/store.md, "The search
 * fingerprint"): a cookie is only valid for the search that produced it. */
static void
fingerprint(const struct config *cfg, struct buf *out)
{
	char	**a;

	buf_reset(out);
	buf_printf(out, "base=%s\nscope=%d\nfilter=%s\nattrs=", cfg->base,
	    cfg->scope, cfg->filter);
	for (a = cfg->attrs; a && *a; a++)
		buf_printf(out, "%s%s", a == cfg->attrs ? "" : ",", *a);
	buf_printf(out, "\nbind=%s\nsasl=%s\n", cfg->bindname ?
	    cfg->bindname : "", cfg->saslmech ? cfg->saslmech : "");
}

/* The figures SIGUSR1 and the status file show. */
static void
publish(struct reader *r)
{
	struct proc_stats	*st = r->ctx->stats;

	memcpy(st->events, r->ev.counts, sizeof(st->events));
	st->queue = pipes_pending(&r->pipes);
	st->reconnects = r->reconnects;
	st->entries = store_count(r->store);
	st->connected = r->ld != NULL;
	store_figures(r->store, st);
}

static int
commit(struct reader *r)
{
	r->batch = 0;
	if (store_commit_seq(r->store, r->ev.seq, &r->committed_seq) == -1)
		return -1;
	publish(r);
	return 0;
}

/*
 * Persist a cookie.  OpenLDAP's are merged by server ID, and one without a
 * CSN never replaces a stored one; another server's is kept as it came
 * (doc/syncrepl.md, "Cookies").
 */
static int
save_cookie(struct reader *r, struct span received)
{
	struct span	 stored = { NULL, 0 };

	if (received.len == 0)
		return 0;
	if (!cookie_is_openldap(received))
		return store_put_meta(r->store, "cookie", received);
	if (store_get_meta(r->store, "cookie", &stored) == -1)
		return -1;
	cookie_merge(&r->cookie, stored, received);
	if (!cookie_has_csn(buf_span(&r->cookie))) {
		log_debug("cookie without a CSN ignored");
		return 0;
	}
	return store_put_meta(r->store, "cookie",
	    buf_span(&r->cookie));
}

static void
set_cand(struct reader *r, const struct buf *cookie)
{
	buf_reset(&r->cand);
	buf_add(&r->cand, cookie->data, cookie->len);
	r->has_cand = 1;
}

/* A cookie that came with a message: a resume point only in persist. */
static int
take_cookie(struct reader *r, int has, const struct buf *cookie)
{
	if (!has)
		return 0;
	if (r->in_refresh) {
		set_cand(r, cookie);
		return 0;
	}
	return save_cookie(r, buf_span(cookie));
}

/* What a subtree task's result means for the search. */
static enum outcome
task_outcome(int rc)
{
	if (rc == 0)
		return GO_ON;
	if (rc == SUBTREE_GUARDED)
		return GUARDED;
	return rc > 0 ? LOST : FATAL;
}

/*
 * Run the pending subtree tasks (doc/subtrees.md, "Tasks"): a failure of
 * the server's is a lost connection, and the task stays pending until a
 * later search can run it.
 */
static enum outcome
tasks_as(struct reader *r, int whole)
{
	int	 rc;

	r->sub.mark_gen = r->in_refresh && r->track ? r->gen : 0;
	r->sub.whole = whole;
	rc = subtree_run_pending(&r->sub);
	r->doomed += r->sub.doomed;
	r->sub.doomed = 0;
	r->lookups = 0;
	return task_outcome(rc);
}

static enum outcome
run_tasks(struct reader *r)
{
	return tasks_as(r, r->in_refresh && !r->had_cookie);
}

/*
 * A 389-ds refresh cannot be taken as it came (doc/providers.md): from a
 * cookie it judges each change by the DNs the Retro Changelog recorded
 * then, so an entry moved within the search under a parent that left it
 * later comes neither as an entry nor as a delete; and no refresh is a
 * snapshot, so a subtree renamed while it is read comes partly under the
 * old DN, its root under the new one, and the root's own message then
 * changes nothing.  So the search is listed whole, UUIDs and DNs alone:
 * what the store holds otherwise is looked up, and what the listing does
 * not name is swept with the refresh's other deletes.
 */
static enum outcome
list_search(struct reader *r)
{
	int	 rc;

	if ((rc = subtree_list(&r->sub, r->gen)) == 0)
		r->present = 1;
	else if (rc != SUBTREE_UNLISTED)
		return task_outcome(rc);
	/* What the listing found otherwise was read at another moment than
	 * what lies below it: its renames bring their tasks. */
	return tasks_as(r, 0);
}

/*
 * The end of a 389-ds refresh (doc/providers.md): what changed since its
 * cookie is looked up (subtree_catch_up: in persist, what changed while
 * the server registered the persist session); then, unless nothing at all
 * changed since the cookie searched from (or since the full load began),
 * the search is listed.  With no change anywhere in between, the refresh
 * could not miss one, and it read a directory that stood still: a
 * snapshot, with nothing to repair.
 */
static enum outcome
settle_389(struct reader *r, const struct buf *cookie)
{
	uint64_t	 end_cn, now_cn;
	int		 rc, still = 0;
	enum outcome	 out;

	if (cookie != NULL) {
		if ((rc = subtree_catch_up(&r->sub, r->unfiltered ?
		    EVERYTHING : r->cfg->filter, buf_span(cookie))) != 0)
			return task_outcome(rc);
		if ((out = tasks_as(r, 0)) != GO_ON)
			return out;
		still = cookie_changenumber(buf_span(cookie), &end_cn) &&
		    r->sub.done.has_cookie && cookie_changenumber(
		    buf_span(&r->sub.done.cookie), &now_cn) &&
		    now_cn == end_cn && (!r->had_cookie || (r->has_from_cn &&
		    r->from_cn == end_cn));
	}
	if (still) {
		log_debug("nothing changed since change number %llu: no "
		    "listing", (unsigned long long)end_cn);
		return GO_ON;
	}
	return list_search(r);
}

/*
 * The refresh's deletes, all at once at its end: whatever the present
 * phase did not list (SWEEP_UNSEEN), or the deletes held back
 * (SWEEP_DOOMED).  They are counted first, and the mass-delete guard may
 * refuse them all before one is applied (doc/safety.md).  After a refresh
 * from a cookie, a deleted entry with stored descendants may have been
 * renamed as it left the filter, its children listed present under their
 * old DNs: the server is asked about them (doc/subtrees.md).
 */
static enum outcome
refresh_deletes(struct reader *r, enum sweep_mode mode, uint64_t *swept)
{
	uint64_t	 n, before = r->ev.counts[EV_DELETE];

	if (store_sweep_count(r->store, r->gen, mode, &n) == -1)
		return FATAL;
	if (guard_check(r->cfg, "this refresh", n, store_count(r->store)) ==
	    -1)
		return GUARDED;
	if (events_sweep(&r->ev, r->gen, mode, swept, &r->present_unknown,
	    r->had_cookie) == -1)
		return FATAL;
	if (mode == SWEEP_DOOMED)
		*swept = 0;	/* the server named them: not swept */
	log_debug("%llu deletes at the end of the refresh",
	    (unsigned long long)(r->ev.counts[EV_DELETE] - before));
	r->sub.mark_gen = 0;
	return task_outcome(subtree_run_pending(&r->sub));
}

/* A full reload from a wiped store, weighed before its refresh_done. */
static enum outcome
reload_guard(struct reader *r)
{
	switch (guard_reload(r->cfg, r->store)) {
	case 0:
		return GO_ON;
	case 1:
		return GUARDED;
	default:
		return FATAL;
	}
}

/* The refresh is complete: sweep if due, keep the cookie, tell everyone. */
static enum outcome
end_refresh(struct reader *r, int has, const struct buf *cookie)
{
	uint64_t	 swept = 0, *c = r->ev.counts, *c0 = r->counts_at_start;
	enum outcome	 out;

	if (!r->in_refresh) {
		log_warnx("the server sent a second refreshDone in one search");
		return FATAL;
	}
	if (r->lookups && (out = run_tasks(r)) != GO_ON)
		return out;
	if (r->lookup && (out = settle_389(r, has ? cookie : r->has_cand ?
	    &r->cand : NULL)) != GO_ON)
		return out;
	/* (Without tracking, every stored entry came in this search.) */
	if ((r->present || !r->had_cookie) && r->track)
		out = refresh_deletes(r, SWEEP_UNSEEN, &swept);
	else if (r->doomed)
		out = refresh_deletes(r, SWEEP_DOOMED, &swept);
	else
		out = GO_ON;
	if (out == GO_ON && !r->refresh_done_sent)
		out = reload_guard(r);
	if (out != GO_ON)
		return out;
	if (has)
		set_cand(r, cookie);
	if (r->has_cand && save_cookie(r, buf_span(&r->cand)) == -1)
		return FATAL;
	if (store_del_meta(r->store, "reload") == -1)
		return FATAL;
	r->in_refresh = 0;
	r->refresh_required = 0;
	r->ctx->stats->phase = PHASE_PERSIST;
	if (!r->had_cookie && store_count(r->store) == 1)
		log_warnx("the search of %s returned one entry alone%s: if "
		    "there is more below it, %s may not read it (access "
		    "controls, limits)", r->cfg->base, r->with_children ?
		    ", which has children" : "", r->cfg->bindname ?
		    r->cfg->bindname : "the bind identity");
	if (r->present_unknown)
		log_warnx("%llu entries the server lists as present are not in "
		    "the store (a subtree moved into the search?): delete the "
		    "marker to force a full reload", (unsigned long long)
		    r->present_unknown);
	log_info("refresh done in %.1f s: %llu adds, %llu modifies, %llu "
	    "renames, %llu deletes (%llu swept), %llu entries in the store",
	    seconds_since(r->started),
	    (unsigned long long)(c[EV_ADD] - c0[EV_ADD]),
	    (unsigned long long)(c[EV_MODIFY] - c0[EV_MODIFY]),
	    (unsigned long long)(c[EV_RENAME] - c0[EV_RENAME]),
	    (unsigned long long)(c[EV_DELETE] - c0[EV_DELETE]),
	    (unsigned long long)swept,
	    (unsigned long long)store_count(r->store));
	if (!r->refresh_done_sent) {
		/* Once per run: a consumer may treat it as "snapshot complete". */
		events_refresh_done(&r->ev);
		r->refresh_done_sent = 1;
		if (store_del_meta(r->store, "snapshot") == -1)
			return FATAL;
	}
	return GO_ON;
}

/* ---- messages ---- */

/*
 * Listed present: marked, without a look at the store (a present phase
 * lists every entry); the sweep deletes what was not, and counts what it
 * marked but does not have.
 */
static int
mark_present(struct reader *r, const unsigned char *uuid)
{
	r->listed = 1;
	return r->track ? store_mark_seen(r->store, uuid, r->gen) : 0;
}

/*
 * The refresh ends saying "present phase" (refreshDeletes FALSE, or a
 * refreshPresent message).  389-ds says so after a refresh from a cookie
 * in which it listed nothing: its deletes came as syncIdSets, and there
 * was no present phase to sweep after (doc/providers.md).
 */
static void
present_phase(struct reader *r)
{
	if (r->provider.kind == PROVIDER_389DS && r->had_cookie && !r->listed)
		return;
	r->present = 1;
}

/*
 * A lookup of an entry a message named (389-ds, doc/providers.md): run at
 * once in persist; in a refresh, once a batch of them waits, or at its
 * end.
 */
static enum outcome
look_up(struct reader *r, const unsigned char *uuid, struct span dn)
{
	if (store_task_add(r->store, TASK_LOOKUP, uuid, dn) == -1)
		return FATAL;
	if (r->in_refresh && ++r->lookups < SUBTREE_BATCH)
		return GO_ON;
	return run_tasks(r);
}

/* Record one task and run it. */
static enum outcome
subtree(struct reader *r, int kind, const unsigned char *uuid,
    struct span dn)
{
	if (store_task_add(r->store, kind, uuid, dn) == -1)
		return FATAL;
	return run_tasks(r);
}

/*
 * A delete: the stored entry alone.  When entries are stored below it, a
 * subtree left the search, or an entry with children left the filter
 * (renamed on its way out, maybe): the server is asked about each of them
 * (doc/subtrees.md, "The cases").  In a refresh the delete is held back
 * until the refresh ends, so that the guard can count all of them first
 * (doc/safety.md, "Counting before deleting"); an entry sent later in the
 * same refresh marks itself seen again and stays.
 */
static enum outcome
delete(struct reader *r, const unsigned char *uuid)
{
	struct span	 dn, attrs;
	int		 rc;

	/*
	 * On 389-ds a delete, too, can be older than what a task applied: an
	 * entry moved out, then back in below a parent whose own message
	 * finds that parent stored already.  So it is asked about.
	 */
	if (r->lookup)
		return look_up(r, uuid, (struct span){ NULL, 0 });
	if (r->in_refresh && r->track) {
		if ((rc = store_get_entry(r->store, uuid, &dn, &attrs)) == 1) {
			r->doomed++;
			rc = store_mark_seen(r->store, uuid, r->gen |
			    SEEN_DOOMED);
		}
		return rc == -1 ? FATAL : GO_ON;
	}
	if ((rc = events_delete(&r->ev, uuid, &r->below)) == -1)
		return FATAL;
	if (rc == 2)
		return subtree(r, TASK_RECONCILE, uuid, buf_span(&r->below));
	return GO_ON;
}

/*
 * An entry added or changed.  When it has children (or the server did not
 * say) and was renamed or moved, or came into the search from outside, its
 * descendants' DNs changed with no message of their own: the server is
 * asked what lies below it now, and about whatever is still stored below
 * its old DN.
 * Never inferred from the stored DNs, which a refresh (entries in ID
 * order, not in the order of the operations) and a task's search (no
 * snapshot, and ahead of the messages) can leave behind or ahead of the
 * server's (doc/subtrees.md).  (In a full load everything comes anyway.)
 */
static enum outcome
on_change(struct reader *r, struct span dn)
{
	int	 what, tasks = 0, below = 0;

	/*
	 * 389-ds (doc/providers.md): the message only names an entry that
	 * changed, whose present state the server is asked for.  In a full
	 * refresh every entry comes, and is taken as it comes, unless the
	 * filter is the server's to apply.  In a refresh the lookups wait for
	 * a batch, or for the refresh's end.
	 */
	if (r->lookup && (r->unfiltered || !r->in_refresh || r->had_cookie))
		return look_up(r, r->st.uuid, dn);
	/* In a full refresh every entry comes: none is older than the store. */
	what = events_entry(&r->ev, r->st.uuid, dn, buf_span(&r->ent.attrs),
	    r->ent.csn, !r->in_refresh || r->had_cookie);
	r->with_children += r->ent.has_subs;
	if (what == -1)
		return FATAL;
	if (r->in_refresh && r->track &&
	    store_mark_seen(r->store, r->st.uuid, r->gen) == -1)
		return FATAL;
	if (r->in_refresh && !r->had_cookie)
		return GO_ON;
	if (what & ENTRY_RENAMED) {
		buf_reset(&r->below);
		buf_add(&r->below, r->ev.old_dn.data, r->ev.old_dn.len);
		if ((below = store_has_below(r->store, buf_span(&r->below))) ==
		    -1)
			return FATAL;
	}
	if (entry_may_have_children(&r->ent) &&
	    (what & (ENTRY_ADDED | ENTRY_RENAMED))) {
		if (store_task_add(r->store, TASK_FETCH, r->st.uuid, dn) == -1)
			return FATAL;
		tasks++;
	}
	if (below) {
		if (store_task_add(r->store, TASK_RECONCILE, r->st.uuid,
		    buf_span(&r->below)) == -1)
			return FATAL;
		tasks++;
	}
	return tasks ? run_tasks(r) : GO_ON;
}

static enum outcome
on_entry(struct reader *r, LDAPMessage *msg)
{
	LDAPControl	**ctrls = NULL, *c, **next = NULL;
	BerElement	*ber = NULL;
	struct berval	 dnbv;
	struct span	 dn;
	const char	*why;
	enum outcome	 out = FATAL;
	int		 rc;

	if (ldap_get_entry_controls(r->ld, msg, &ctrls) != LDAP_SUCCESS ||
	    (c = ldap_control_find(LDAP_CONTROL_SYNC_STATE, ctrls, &next)) ==
	    NULL || ldap_control_find(LDAP_CONTROL_SYNC_STATE, next, NULL)) {
		log_warnx("protocol error: an entry without exactly one Sync "
		    "State control");
		goto out;
	}
	if (sync_state_decode((struct span){ (unsigned char *)
	    c->ldctl_value.bv_val, c->ldctl_value.bv_len }, &r->st, &why) ==
	    -1) {
		log_warnx("protocol error: %s", why);
		goto out;
	}
	if ((rc = ldap_get_dn_ber(r->ld, msg, &ber, &dnbv)) != LDAP_SUCCESS) {
		log_warnx("malformed entry from the server: %s",
		    ldap_err2string(rc));
		goto out;
	}
	dn.p = (unsigned char *)dnbv.bv_val;
	dn.len = dnbv.bv_len;
	switch (r->st.state) {
	case SYNC_PRESENT:
		out = mark_present(r, r->st.uuid) == -1 ? FATAL : GO_ON;
		break;
	case SYNC_ADD:
	case SYNC_MODIFY:
		if (entry_decode(ber, r->decode_flags, r->sub.uuid_attr,
		    &r->ent) == -1) {
			log_warnx("malformed entry from the server: a bad "
			    "attribute list");
			goto out;
		}
		log_debug("%s %.*s", r->st.state == SYNC_ADD ? "add" : "modify",
		    (int)dn.len, (const char *)dn.p);
		out = on_change(r, dn);
		break;
	default:
		log_debug("delete %.*s", (int)dn.len, (const char *)dn.p);
		out = delete(r, r->st.uuid);
		break;
	}
	/* The message's cookie only once all it says has been applied. */
	if (out == GO_ON &&
	    take_cookie(r, r->st.has_cookie, &r->st.cookie) == -1)
		out = FATAL;
out:
	if (ber)
		ber_free(ber, 0);
	ldap_controls_free(ctrls);
	return out;
}

/*
 * A syncIdSet of deletes in the persist stage is one batch: the entries
 * it would delete are counted before any is (in a refresh they are held
 * back to its end instead).
 */
static enum outcome
id_set_guard(struct reader *r)
{
	struct span	 dn, attrs;
	uint64_t	 n = 0;
	size_t		 i;
	int		 rc;

	for (i = 0; i + 16 <= r->info.uuids.len; i += 16) {
		if ((rc = store_get_entry(r->store, r->info.uuids.data + i, &dn,
		    &attrs)) == -1)
			return FATAL;
		n += rc;
	}
	if (guard_check(r->cfg, "a syncIdSet of deletes", n,
	    store_count(r->store)) == -1)
		return GUARDED;
	return GO_ON;
}

static enum outcome
on_intermediate(struct reader *r, LDAPMessage *msg)
{
	struct berval	*data = NULL;
	char		*oid = NULL;
	const char	*why;
	enum outcome	 out = FATAL;
	size_t		 i;
	int		 rc = 0;

	if (ldap_parse_intermediate(r->ld, msg, &oid, &data, NULL, 0) !=
	    LDAP_SUCCESS) {
		log_warnx("protocol error: a malformed intermediate response");
		goto out;
	}
	if (oid == NULL || strcmp(oid, LDAP_SYNC_INFO) != 0 || data == NULL) {
		log_debug("intermediate response %s ignored", oid ? oid : "-");
		out = GO_ON;
		goto out;
	}
	if (sync_info_decode((struct span){ (unsigned char *)data->bv_val,
	    data->bv_len }, &r->info, &why) == -1) {
		log_warnx("protocol error: %s", why);
		goto out;
	}
	switch (r->info.type) {
	case SYNC_INFO_NEW_COOKIE:
		rc = take_cookie(r, 1, &r->info.cookie);
		break;
	case SYNC_INFO_REFRESH_PRESENT:
	case SYNC_INFO_REFRESH_DELETE:
		if (!r->in_refresh) {
			log_warnx("protocol error: a refresh message after the "
			    "refresh");
			goto out;
		}
		if (r->info.type == SYNC_INFO_REFRESH_PRESENT)
			present_phase(r);
		if (r->info.refresh_done) {
			if ((out = end_refresh(r, r->info.has_cookie,
			    &r->info.cookie)) != GO_ON)
				goto out;
		} else {
			/* A present phase ends, a delete phase follows: the
			 * sweep waits for the end, with the held-back deletes. */
			if (r->info.has_cookie)
				set_cand(r, &r->info.cookie);
		}
		break;
	case SYNC_INFO_ID_SET:
		if (r->info.refresh_deletes && !r->in_refresh &&
		    (out = id_set_guard(r)) != GO_ON)
			goto out;
		for (i = 0; i + 16 <= r->info.uuids.len && rc == 0; i += 16) {
			if (r->info.refresh_deletes) {
				/* No DN: nothing tells where it went. */
				enum outcome	 step;

				if ((step = delete(r, r->info.uuids.data + i)) !=
				    GO_ON) {
					out = step;
					goto out;
				}
			} else {
				r->present = r->present || r->in_refresh;
				rc = mark_present(r, r->info.uuids.data + i);
			}
		}
		if (rc == 0)
			rc = take_cookie(r, r->info.has_cookie, &r->info.cookie);
		break;
	}
	out = rc == 0 ? GO_ON : FATAL;
out:
	ldap_memfree(oid);
	ber_bvfree(data);
	return out;
}

/* What to do about a server without the sync control (doc/providers.md). */
static const char *
no_sync_remedy(const struct provider *p)
{
	return p->kind == PROVIDER_389DS ? "enable the Content Synchronization "
	    "and Retro Changelog plugins (dsconf INSTANCE plugin contentsync "
	    "enable; dsconf INSTANCE plugin retro-changelog enable)" :
	    "add the syncprov overlay to the database (overlay syncprov)";
}

/* A server limit that ended the search: which setting lifts it. */
static const char *
limit_remedy(const struct reader *r, int err)
{
	if (err != LDAP_SIZELIMIT_EXCEEDED && err != LDAP_ADMINLIMIT_EXCEEDED &&
	    err != LDAP_TIMELIMIT_EXCEEDED)
		return "";
	if (r->provider.kind == PROVIDER_389DS)
		return " (389-ds: set nsSizeLimit, nsLookThroughLimit and "
		    "nsTimeLimit to -1 on the bind identity's entry)";
	return " (slapd: limits dn.exact=\"BIND-DN\" size=unlimited "
	    "time=unlimited)";
}

/* Result codes after which trying again cannot help. */
static int
permanent(int err)
{
	switch (err) {
	case LDAP_PROTOCOL_ERROR:
	case LDAP_TIMELIMIT_EXCEEDED:
	case LDAP_SIZELIMIT_EXCEEDED:
	case LDAP_UNAVAILABLE_CRITICAL_EXTENSION:
	case LDAP_ADMINLIMIT_EXCEEDED:
	case LDAP_NO_SUCH_OBJECT:
	case LDAP_INVALID_DN_SYNTAX:
	case LDAP_INAPPROPRIATE_AUTH:
	case LDAP_INVALID_CREDENTIALS:
	case LDAP_INSUFFICIENT_ACCESS:
	case LDAP_INAPPROPRIATE_MATCHING:
	case LDAP_UNDEFINED_TYPE:
	case LDAP_FILTER_ERROR:
		return 1;
	default:
		return 0;
	}
}

/* The Sync Done control of a SearchResultDone into r->done, or -1. */
static int
read_done(struct reader *r, LDAPControl **ctrls, int required)
{
	const char	*why;

	r->done.has_cookie = 0;
	r->done.refresh_deletes = 0;
	switch (sync_done_find(ctrls, &r->done, &why)) {
	case 1:
		return 1;
	case 0:
		if (required)
			log_warnx("protocol error: search done without a Sync "
			    "Done control");
		return required ? -1 : 0;
	default:
		log_warnx("protocol error: %s", why);
		return -1;
	}
}

/*
 * The search ended with success.  refreshOnly: the refresh is complete
 * (or was, at a refreshDone intermediate: then only the cookie is news).
 * refreshAndPersist: the server ended it; when that came with a Sync Done
 * during the refresh, the refresh is complete and its cookie kept, as
 * slapd's own consumer does, and the search starts again from it.
 */
static enum outcome
on_search_done(struct reader *r, LDAPControl **ctrls)
{
	enum outcome	 out;
	int		 has;

	if ((has = read_done(r, ctrls, r->cfg->mode == MODE_REFRESH &&
	    r->in_refresh)) == -1)
		return FATAL;
	if (has && r->in_refresh) {
		if (!r->done.refresh_deletes)
			present_phase(r);
		if ((out = end_refresh(r, r->done.has_cookie,
		    &r->done.cookie)) != GO_ON)
			return out;
	} else if (has && r->done.has_cookie &&
	    save_cookie(r, buf_span(&r->done.cookie)) == -1)
		return FATAL;
	if (r->cfg->mode == MODE_REFRESH)
		return DONE;
	log_warnx("the server ended the search; searching again");
	return LOST;
}

/*
 * e-syncRefreshRequired.  With a cookie in its Sync Done, the server wants
 * an incremental refresh from that cookie (RFC 4533 section 3.8);
 * without, a full refresh against the store.
 */
static enum outcome
on_refresh_required(struct reader *r, LDAPControl **ctrls, const char *text)
{
	if (read_done(r, ctrls, 0) == -1)
		return FATAL;
	r->has_resume = r->done.has_cookie;
	if (r->has_resume) {
		buf_reset(&r->resume);
		buf_add(&r->resume, r->done.cookie.data, r->done.cookie.len);
	}
	log_info("the server asks for a%s refresh (%s)", r->has_resume ?
	    "n incremental" : " full", text ? text : "e-syncRefreshRequired");
	return RELOAD;
}

static enum outcome
on_result(struct reader *r, LDAPMessage *msg)
{
	LDAPControl	**ctrls = NULL;
	char		*text = NULL;
	enum outcome	 out = FATAL;
	int		 err = 0;

	if (ldap_parse_result(r->ld, msg, &err, NULL, &text, NULL, &ctrls, 0) !=
	    LDAP_SUCCESS) {
		log_warnx("protocol error: a malformed search result");
		goto out;
	}
	r->msgid = -1;
	switch (err) {
	case LDAP_SUCCESS:
		out = on_search_done(r, ctrls);
		break;
	case LDAP_SYNC_REFRESH_REQUIRED:
		out = on_refresh_required(r, ctrls, text);
		break;
	case LDAP_CANCELLED:
		/* Ours is read by cancel(): this one nobody asked for. */
		log_warnx("the server cancelled the search; searching again");
		out = LOST;
		break;
	case LDAP_UNWILLING_TO_PERFORM:
		/* slapd: a wiped provider has no state: reload; a provider
		 * behind our cookie catches up: try again later. */
		log_warnx("search refused: %s (%s)", ldap_err2string(err),
		    text ? text : "");
		out = text && strstr(text, "provider doesn't") ? RELOAD : LOST;
		break;
	case LDAP_UNAVAILABLE_CRITICAL_EXTENSION:
		log_warnx("search failed: %s (%d): the server does not offer "
		    "RFC 4533's sync on %s: %s", ldap_err2string(err), err,
		    r->cfg->base, no_sync_remedy(&r->provider));
		out = FATAL;
		break;
	default:
		log_warnx("search failed: %s (%d)%s%s%s", ldap_err2string(err),
		    err, text && *text ? ": " : "", text ? text : "",
		    limit_remedy(r, err));
		out = permanent(err) ? FATAL : LOST;
		break;
	}
out:
	ldap_memfree(text);
	ldap_controls_free(ctrls);
	return out;
}

/*
 * Anything else ends the search for libldap (an ExtendedResponse does:
 * Samba's answer to the Sync Request control), and the server will send
 * nothing more for it: a protocol error that names what the server said,
 * never a wait for ever.
 */
static enum outcome
on_unexpected(struct reader *r, LDAPMessage *msg)
{
	char	 what[512];

	r->msgid = -1;
	if (conn_describe_response(r->ld, msg, what, sizeof(what)) ==
	    LDAP_UNAVAILABLE_CRITICAL_EXTENSION)
		log_warnx("protocol error: the server answered the sync search "
		    "with %s: it does not offer RFC 4533's sync on %s: %s",
		    what, r->cfg->base, no_sync_remedy(&r->provider));
	else
		log_warnx("protocol error: the server answered the sync search "
		    "with %s", what);
	return FATAL;
}

static enum outcome
on_message(struct reader *r, LDAPMessage *msg)
{
	switch (ldap_msgtype(msg)) {
	case LDAP_RES_SEARCH_ENTRY:
		return on_entry(r, msg);
	case LDAP_RES_INTERMEDIATE:
		return on_intermediate(r, msg);
	case LDAP_RES_SEARCH_RESULT:
		return on_result(r, msg);
	case LDAP_RES_SEARCH_REFERENCE:
		log_debug("search reference ignored");
		return GO_ON;
	default:
		return on_unexpected(r, msg);
	}
}

/* ---- the search ---- */

static int
start_search(struct reader *r)
{
	struct span	 stored;
	struct buf	 value = { 0 };
	LDAPControl	 ctrl, *ctrls[2];
	int		 has, rc, reload;

	if (store_begin(r->store) == -1)
		return -1;
	r->gen = store_get_u64(r->store, "gen", 0) + 1;
	if (store_put_u64(r->store, "gen", r->gen) == -1)
		return -1;
	reload = store_get_meta(r->store, "reload", &stored) == 1;
	has = !reload && store_get_meta(r->store, "cookie", &stored) == 1;
	/* reloadHint TRUE with every cookie (doc/syncrepl.md, "The Sync
	 * Request"). */
	if (sync_request_encode(&value, r->cfg->mode == MODE_PERSIST ?
	    SYNC_MODE_REFRESH_AND_PERSIST : SYNC_MODE_REFRESH_ONLY,
	    has ? &stored : NULL, has) == -1) {
		buf_free(&value);
		return -1;
	}
	r->had_cookie = has;
	r->has_from_cn = has && cookie_changenumber(stored, &r->from_cn);
	/* Marks matter only for a sweep: none when the store starts empty
	 * and the search is a full load (everything comes in it). */
	r->track = has || store_count(r->store) > 0;
	r->in_refresh = 1;
	r->ctx->stats->phase = PHASE_REFRESH;
	r->present = 0;
	r->listed = 0;
	r->present_unknown = 0;
	r->with_children = 0;
	r->doomed = 0;
	r->lookups = 0;
	r->has_cand = 0;
	r->started = clock_ms();
	memcpy(r->counts_at_start, r->ev.counts, sizeof(r->counts_at_start));
	if (commit(r) == -1) {
		buf_free(&value);
		return -1;
	}
	ctrl.ldctl_oid = LDAP_CONTROL_SYNC;
	ctrl.ldctl_value.bv_val = (char *)value.data;
	ctrl.ldctl_value.bv_len = value.len;
	ctrl.ldctl_iscritical = 1;	/* no syncprov: fail, not a plain search */
	ctrls[0] = &ctrl;
	ctrls[1] = NULL;
	rc = ldap_search_ext(r->ld, r->cfg->base, r->cfg->scope, r->unfiltered ?
	    EVERYTHING : r->cfg->filter, r->attrs_asked, 0, ctrls, NULL, NULL,
	    LDAP_NO_LIMIT, &r->msgid);
	buf_free(&value);
	if (rc != LDAP_SUCCESS) {
		log_warnx("search: %s", ldap_err2string(rc));
		r->msgid = -1;
		return -1;
	}
	log_info("sync search started: %s", has ? "resuming from the stored "
	    "cookie" : reload ? "full refresh against the store" :
	    "full load");
	return 0;
}

/*
 * Between the steps of one message's long work (a sweep, a cascade, a
 * subtree task): commit and hand the events on, so that memory and the
 * open transaction stay bounded whatever one message does.  No cookie is
 * written here: only a message's end moves it (doc/subtrees.md).
 */
static int
checkpoint(void *arg)
{
	struct reader	*r = arg;

	if (++r->batch < BATCH_MESSAGES &&
	    pipes_pending(&r->pipes) <= PIPES_HIGH_WATER &&
	    store_txn_bytes(r->store) <= BATCH_BYTES)
		return 0;
	if (commit(r) == -1 || pipes_flush(&r->pipes, 0) == -1)
		return -1;
	return 0;
}

/*
 * Read and apply messages until the search ends or something interrupts
 * it.  Events queue up per worker; the store commits at least once per
 * burst.  In persist the pipes are written whenever they take data (every
 * event goes out at once).  In the refresh a worker's pipe is written
 * once its queue holds REFRESH_WRITE_MIN bytes, or when the server pauses
 * for SERVER_PAUSE_MS: waking W workers for every burst of a few entries
 * lets them preempt the reader, the pipeline's bottleneck, and made a full
 * load with W = 4 on two CPUs 1.2-1.5x slower than with W = 1
 * (bench/PROFILE.md, finding 9).
 */
static enum outcome
follow(struct reader *r)
{
	struct timeval	 zero = { 0, 0 };
	struct pollfd	*pfd;
	LDAPMessage	*msg;
	enum outcome	 out = GO_ON;
	unsigned	 i;
	size_t		 len;
	int		 fd = -1, rc, n, timeout, paused = 0;

	if (ldap_get_option(r->ld, LDAP_OPT_DESC, &fd) != LDAP_OPT_SUCCESS ||
	    fd < 0)
		return LOST;
	pfd = xcalloc(2 + r->pipes.n, sizeof(*pfd));
	while (out == GO_ON) {
		if (sig_term) {
			out = STOP;
			break;
		}
		pfd[0].fd = fd;
		pfd[0].events = POLLIN;
		pfd[1].fd = signals_fd();
		pfd[1].events = POLLIN;
		r->ctx->stats->queue = pipes_pending(&r->pipes);
		r->pipes.write_min = r->in_refresh && !paused ?
		    REFRESH_WRITE_MIN : 0;
		timeout = -1;
		for (i = 0; i < r->pipes.n; i++) {
			len = queue_len(&r->pipes.q[i]);
			pfd[2 + i].fd = len && len >= r->pipes.write_min ?
			    r->pipes.fd[i] : -1;
			pfd[2 + i].events = POLLOUT;
			if (len && len < r->pipes.write_min)
				timeout = SERVER_PAUSE_MS;
		}
		n = poll(pfd, 2 + r->pipes.n, timeout);
		if (n == -1 && errno != EINTR) {
			log_warn("poll");
			out = FATAL;
			break;
		}
		if (pfd[1].revents)
			signals_drain();
		if (n == 0) {	/* the server paused: write all that is queued */
			paused = 1;
			continue;
		}
		/* Drain what libldap has, buffered or on the socket. */
		while (out == GO_ON && (rc = ldap_result(r->ld, r->msgid,
		    LDAP_MSG_ONE, &zero, &msg)) > 0) {
			out = on_message(r, msg);
			ldap_msgfree(msg);
			paused = 0;
			if (out == GO_ON && checkpoint(r) == -1)
				out = FATAL;
			if (sig_term && out == GO_ON)
				out = STOP;
		}
		if (out == GO_ON && rc == -1) {
			int	 err = LDAP_SERVER_DOWN;

			ldap_get_option(r->ld, LDAP_OPT_RESULT_CODE, &err);
			log_warnx("LDAP connection lost: %s",
			    ldap_err2string(err));
			out = LOST;
		}
		if (commit(r) == -1 || pipes_flush(&r->pipes, 0) == -1)
			out = FATAL;
	}
	/* Nothing waits in a queue through a reconnect's backoff. */
	r->pipes.write_min = 0;
	if (out != FATAL && pipes_flush(&r->pipes, 0) == -1)
		out = FATAL;
	free(pfd);
	return out;
}

/*
 * RFC 3909: ask the server to end the search, and wait a little for it.
 * A server that refuses the Cancel (389-ds answers protocolError and goes
 * on) gets an abandon instead, at once (doc/syncrepl.md, "Cancel at
 * shutdown").
 */
static void
cancel(struct reader *r)
{
	int64_t		 t0;
	struct timeval	 tv;
	LDAPMessage	*msg;
	int		 cid, got_done = 0, got_ext = 0, rc, err;

	if (r->msgid < 0 || ldap_cancel(r->ld, r->msgid, NULL, NULL, &cid) !=
	    LDAP_SUCCESS)
		return;
	t0 = clock_ms();
	while (!(got_done && got_ext) && seconds_since(t0) < CANCEL_WAIT_SECS) {
		tv.tv_sec = 0;
		tv.tv_usec = 200000;
		rc = ldap_result(r->ld, LDAP_RES_ANY, LDAP_MSG_ONE, &tv, &msg);
		if (rc == -1)
			break;
		if (rc == 0)
			continue;
		/* Entries after the cancel are not applied: the cookie
		 * does not cover them, so the server sends them again. */
		if (ldap_msgid(msg) == r->msgid &&
		    ldap_msgtype(msg) == LDAP_RES_SEARCH_RESULT)
			got_done = 1;
		if (ldap_msgid(msg) == cid) {
			got_ext = 1;
			if (ldap_parse_result(r->ld, msg, &err, NULL, NULL,
			    NULL, NULL, 0) == LDAP_SUCCESS && err !=
			    LDAP_SUCCESS && !got_done) {
				log_debug("cancel refused (%s): abandoning the "
				    "search", ldap_err2string(err));
				ldap_abandon_ext(r->ld, r->msgid, NULL, NULL);
				got_done = 1;
			}
		}
		ldap_msgfree(msg);
	}
	r->msgid = -1;
}

static void
disconnect(struct reader *r)
{
	struct timeval	 zero = { 0, 0 };
	LDAPMessage	*msg;

	/* A Notice of Disconnection waits as an unsolicited message. */
	while (r->ld && ldap_result(r->ld, LDAP_RES_UNSOLICITED, LDAP_MSG_ALL,
	    &zero, &msg) > 0)
		ldap_msgfree(msg);
	if (r->ld)
		ldap_unbind_ext(r->ld, NULL, NULL);
	r->ld = NULL;
	r->msgid = -1;
	r->ctx->stats->connected = 0;
	subtree_close(&r->sub);
}

/*
 * After a 4096: search again, from the cookie the server gave, or without
 * one for a full refresh against the store.  A server that asks again and
 * again goes through the backoff, not a tight loop.
 */
static int
refresh_required(struct reader *r, int *backoff)
{
	int	 rc;

	if (r->has_resume)
		rc = save_cookie(r, buf_span(&r->resume));
	else
		rc = store_del_meta(r->store, "cookie") == -1 ? -1 :
		    store_put_meta(r->store, "reload", (struct span){
		    (const unsigned char *)"1", 1 });
	r->has_resume = 0;
	if (rc == -1 || commit(r) == -1)
		return -1;
	if (r->refresh_required++ > 0) {
		log_warnx("the server asked for a refresh again; next search "
		    "in %d s", *backoff);
		signals_pause(*backoff);
		*backoff = *backoff * 2 > BACKOFF_MAX_SECS ? BACKOFF_MAX_SECS :
		    *backoff * 2;
	}
	return 0;
}

/*
 * Connect when not connected, finish the subtree tasks a lost connection
 * or a stop interrupted, and start the search.
 */
static enum outcome
search_again(struct reader *r)
{
	char	 err[512];
	int	 code, rc;

	if (r->ld == NULL) {
		if ((code = conn_open(r->cfg, &r->ld, err, sizeof(err))) != 0) {
			if (code != EX_UNAVAILABLE) {
				log_warnx("%s", err);
				return FATAL;
			}
			log_warnx("%s", err);
			return LOST;
		}
		log_info("reconnected to %s", r->cfg->server_url);
		r->ctx->stats->connected = 1;
	}
	r->sub.mark_gen = 0;
	r->sub.whole = 0;
	if ((rc = subtree_run_pending(&r->sub)) != 0)
		return task_outcome(rc);
	if (commit(r) == -1)
		return FATAL;
	return start_search(r) == -1 ? LOST : GO_ON;
}

/* Follow the search until done, stopped, or a permanent error. */
static int
run(struct reader *r)
{
	enum outcome	 out;
	int		 backoff = 1;

	for (;;) {
		if (sig_term)
			return 0;
		r->started = clock_ms();
		if ((out = search_again(r)) == GO_ON)
			out = follow(r);
		/* A search that lived a while resets the backoff; one that a
		 * server drops at once, refresh done or not, does not. */
		if (seconds_since(r->started) >= BACKOFF_MAX_SECS)
			backoff = 1;
		if (out == LOST && sig_term)
			out = STOP;	/* a task stopped for it: no reconnect */
		switch (out) {
		case DONE:
			return 0;
		case STOP:
			cancel(r);
			return 0;
		case GUARDED:
			/* A clean stop, without what the guard held back. */
			cancel(r);
			return GUARD_EXIT;
		case RELOAD:
			if (refresh_required(r, &backoff) == -1)
				return EX_SOFTWARE;
			break;
		case LOST:
			r->ctx->stats->phase = PHASE_RECONNECTING;
			/* Nothing waits in a queue through the backoff. */
			r->pipes.write_min = 0;
			if (pipes_flush(&r->pipes, 0) == -1)
				return EX_SOFTWARE;
			disconnect(r);
			r->reconnects++;
			log_warnx("reconnecting in %d s", backoff);
			signals_pause(backoff);
			backoff = backoff * 2 > BACKOFF_MAX_SECS ?
			    BACKOFF_MAX_SECS : backoff * 2;
			break;
		default:
			cancel(r);	/* the server need not keep it going */
			return EX_SOFTWARE;
		}
	}
}


/* Did the user ask for this operational attribute, by name or with all
 * of them? */
static int
asked_for(char **a, const char *name)
{
	for (; a && *a; a++)
		if (strcmp(*a, "+") == 0 || strcasecmp(*a, name) == 0)
			return 1;
	return 0;
}

/*
 * The attributes to ask for: the search's, plus hasSubordinates, which
 * tells an entry with children, and entryCSN, which tells a version of an
 * entry from an older one (doc/subtrees.md).  What the user did not ask
 * for is left out of what is stored and sent.
 */
static void
ask_attrs(struct reader *r)
{
	char	**a = r->cfg->attrs;
	size_t	 n = 0, i;

	for (n = 0; a && a[n]; n++)
		;
	r->attrs_asked = xcalloc(n + 4, sizeof(char *));
	if (a == NULL)
		r->attrs_asked[n++] = "*";
	else
		for (i = 0; i < n; i++)
			r->attrs_asked[i] = a[i];
	if (!asked_for(a, "hasSubordinates")) {
		r->attrs_asked[n++] = "hasSubordinates";
		r->decode_flags |= DECODE_STRIP_SUBS;
	}
	if (!asked_for(a, "entryCSN")) {
		r->attrs_asked[n++] = "entryCSN";
		r->decode_flags |= DECODE_STRIP_CSN;
	}
}

/* Why the store cannot be trusted, if it cannot (doc/store.md). */
enum distrust {
	TRUSTED,
	NO_MARKER,		/* no clean shutdown since it was written */
	OTHER_SEARCH,		/* built for another search */
	UNFINISHED_SNAPSHOT	/* a full reload that was stopped */
};

static const char *
distrust_reason(enum distrust d)
{
	switch (d) {
	case OTHER_SEARCH:
		return "the search differs from the one the store was built "
		    "for";
	case UNFINISHED_SNAPSHOT:
		return "the last full reload did not finish";
	default:
		return "no clean-shutdown marker";
	}
}

/*
 * Can the store be trusted?  Only looked at before the barrier (a read,
 * aborted): an untrusted store is wiped once startup succeeded.
 */
static enum distrust
store_verdict(const struct child_ctx *ctx, struct store *store,
    const struct buf *fp)
{
	struct span	 stored;

	if (!ctx->trusted)
		return NO_MARKER;
	if (store_get_meta(store, "search", &stored) == 1 &&
	    (stored.len != fp->len || memcmp(stored.p, fp->data,
	    fp->len) != 0))
		return OTHER_SEARCH;
	if (store_get_meta(store, "snapshot", &stored) == 1)
		return UNFINISHED_SNAPSHOT;
	return TRUSTED;
}

int
reader_main(const struct child_ctx *ctx)
{
	struct reader	 r;
	struct event	 hello;
	struct span	 stored;
	struct buf	 fp = { 0 };
	char		 err[512];
	enum distrust	 distrust = NO_MARKER;
	uint64_t	 previous = 0;
	int		 code;

	memset(&r, 0, sizeof(r));
	r.ctx = ctx;
	r.cfg = ctx->cfg;
	r.msgid = -1;
	events_init(&r.ev, r.cfg, NULL, &r.pipes);
	if ((code = conn_open(r.cfg, &r.ld, err, sizeof(err))) != 0 ||
	    (code = conn_check_search(r.cfg, r.ld, err, sizeof(err))) != 0)
		child_startup_failed(ctx, code, "%s", err);
	conn_provider(r.ld, &r.provider);
	switch (conn_protocol(r.cfg, &r.provider)) {
	case PROTOCOL_DIRSYNC:
		events_free(&r.ev);
		return dirsync_main(ctx, r.ld, &r.provider);
	case PROTOCOL_AUTO:
		child_startup_failed(ctx, EX_CONFIG, "%s does not offer the "
		    "Content Synchronization control (RFC 4533), nor DirSync: "
		    "%s", r.cfg->server_url, no_sync_remedy(&r.provider));
	default:
		break;
	}
	/*
	 * 389-ds has no entryCSN to tell a message older than what a subtree
	 * task applied, and follows a filter only part of the way: it sends
	 * nothing for an entry that a rename takes out of it, nor, refreshing
	 * from a cookie, for one that left it.  So its messages only name
	 * entries, each asked for with the search's filter, and a search with
	 * a filter runs without it (doc/providers.md).
	 */
	r.lookup = r.provider.kind == PROVIDER_389DS;
	r.unfiltered = r.lookup && strcasecmp(r.cfg->filter, EVERYTHING) != 0;
	if (r.provider.kind == PROVIDER_389DS &&
	    (code = conn_check_retro(r.ld, err, sizeof(err))) != 1) {
		if (code == 0)
			child_startup_failed(ctx, EX_CONFIG, "%s", err);
		log_warnx("cannot read the Retro Changelog's settings to check "
		    "that it records targetUniqueId (ldapfeed.8, PROVIDERS)");
	}
	fingerprint(r.cfg, &fp);
	if (ctx->trusted) {
		if (store_open(&r.store, r.cfg->data_dir, 0, 0) == -1)
			child_startup_failed(ctx, EX_CONFIG, "cannot open the "
			    "store in %s", r.cfg->data_dir);
		distrust = store_verdict(ctx, r.store, &fp);
		if (distrust != TRUSTED)
			previous = guard_store_copy(r.store);
		store_abort(r.store);
	} else
		previous = guard_previous_copy(r.cfg->data_dir);
	if (barrier_wait(ctx->barrier, &sig_term, ctx->supervisor) == -1)
		exit(EX_SOFTWARE);

	if (distrust != TRUSTED) {
		log_info("%s: wiping the store for a full reload",
		    distrust_reason(distrust));
		store_close(r.store);
		r.store = NULL;
		if (store_open(&r.store, r.cfg->data_dir, 1, 0) == -1)
			fatalx(EX_SOFTWARE, "cannot create the store in %s",
			    r.cfg->data_dir);
		/* What the consumer may drop at refresh_done: guarded. */
		if (previous > 0 && store_put_u64(r.store, "previous",
		    previous) == -1)
			fatalx(EX_SOFTWARE, "cannot write the store");
	}
	ask_attrs(&r);
	pipes_init(&r.pipes, ctx->pipes, ctx->workers);
	r.ev.store = r.store;
	r.ev.checkpoint = checkpoint;
	r.ev.checkpoint_arg = &r;
	if (r.provider.kind == PROVIDER_389DS && !asked_for(r.cfg->attrs, "aci"))
		r.decode_flags |= DECODE_STRIP_ACI;
	subtree_init(&r.sub, r.cfg, &r.ev, r.attrs_asked, r.decode_flags |
	    (asked_for(r.cfg->attrs, provider_uuid_attr(r.provider.kind)) ? 0 :
	    DECODE_STRIP_UUID), r.provider.kind);
	r.sub.adopt = r.lookup;
	r.ev.seq = r.committed_seq = store_get_u64(r.store, "seq", 0);
	ctx->stats->connected = 1;
	/* What earlier runs delivered: up to the stored cookie's CSN. */
	if (store_get_meta(r.store, "cookie", &stored) == 1)
		ctx->stats->last_csn_us = cookie_time_us(stored);
	if (store_put_meta(r.store, "search", buf_span(&fp)) == -1)
		fatalx(EX_SOFTWARE, "cannot write the store");
	buf_free(&fp);

	/*
	 * From an empty store, a full snapshot follows.  Until its
	 * refresh_done is out, the store says so: a run stopped before that
	 * starts the snapshot over, for the consumer may drop what a snapshot
	 * did not send.
	 */
	memset(&hello, 0, sizeof(hello));
	hello.type = EV_HELLO;
	hello.reload = store_count(r.store) == 0;
	/* The hello names the store's epoch and this run (doc/store.md). */
	hello.seq = store_get_u64(r.store, "run", 0) + 1;
	if (store_epoch(r.store, hello.uuid) == -1 ||
	    store_put_u64(r.store, "run", hello.seq) == -1)
		fatalx(EX_SOFTWARE, "cannot write the store");
	if (hello.reload && store_put_meta(r.store, "snapshot",
	    (struct span){ (const unsigned char *)"1", 1 }) == -1)
		fatalx(EX_SOFTWARE, "cannot write the store");
	pipes_send_all(&r.pipes, &hello);

	code = run(&r);
	ctx->stats->phase = PHASE_STOPPING;
	if (sig_term)
		child_ask_shutdown(ctx);
	if (commit(&r) == -1 || store_sync(r.store) == -1)
		code = EX_SOFTWARE;
	/* Everything applied must reach the workers before a clean exit. */
	if ((code == 0 || code == GUARD_EXIT) && pipes_flush(&r.pipes, 1) ==
	    -1)
		code = EX_SOFTWARE;
	log_info("reader done: %llu adds, %llu modifies, %llu renames, %llu "
	    "deletes, %u reconnects",
	    (unsigned long long)r.ev.counts[EV_ADD],
	    (unsigned long long)r.ev.counts[EV_MODIFY],
	    (unsigned long long)r.ev.counts[EV_RENAME],
	    (unsigned long long)r.ev.counts[EV_DELETE], r.reconnects);
	store_close(r.store);
	disconnect(&r);
	events_free(&r.ev);
	sync_state_free(&r.st);
	sync_done_free(&r.done);
	sync_info_free(&r.info);
	buf_free(&r.cand);
	buf_free(&r.cookie);
	buf_free(&r.resume);
	buf_free(&r.below);
	buf_free(&r.ent.attrs);
	subtree_free(&r.sub);
	free(r.attrs_asked);
	pipes_free(&r.pipes);
	return code;
}
