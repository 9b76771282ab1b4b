/*
 * The LDAP reader when the server is Active Directory or Samba AD, which
 * have no RFC 4533: DirSync (MS-ADTS 3.1.1.3.4.1.3) from the stored cookie
 * on each change notification (1.2.840.113556.1.4.528) and on a timer,
 * the objects it names resolved against the search (resolve.c), events
 * through the same store, pipes and workers as the syncrepl reader's
 * (doc/providers.md, "Active Directory and Samba AD").
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
#include <unistd.h>

#include "ldapfeed.h"

#define BATCH_MESSAGES		2000	/* commit at least this often */
#define BATCH_BYTES		(32 << 20) /* and before a batch is this big */
#define BACKOFF_MAX_SECS	60
#define NETWORK_TIMEOUT_SECS	10
#define MATCHES_NOTHING		"(!(objectClass=*))"
#define DELETED_OBJECTS		"CN=Deleted Objects,"

enum outcome {
	GO_ON,
	STOP,		/* a shutdown was asked */
	LOST,		/* connection lost or transient error: reconnect */
	RELOAD,		/* the server does not take the cookie */
	GUARDED,	/* the mass-delete guard held deletes back: stop */
	FATAL		/* a permanent error */
};

struct dsreader {
	const struct child_ctx	*ctx;
	const struct config	*cfg;
	LDAP			*ld;
	struct store		*store;
	struct pipes		 pipes;
	struct events		 ev;
	struct resolver		 res;
	uint64_t		 committed_seq;
	uint64_t		 batch;
	char			*nc;		/* the naming context's root */
	char			*schema;	/* the schema's naming context */
	char			*base;		/* the search's, in LDAPv3 form */
	char		       **untracked;	/* attributes DirSync cannot follow */
	size_t			 nuntracked;
	char		       **attrs;		/* the search's, + objectGUID */
	int			 decode_flags;
	int			 notify;	/* the server offers notification */
	int			 notify_msgid;	/* its search, or -1 */
	int			 notify_off;	/* refused: poll only, until
						 * the next connection */
	int			 in_refresh;
	int			 refresh_done_sent;
	unsigned		 reconnects;
	uint64_t		 named;		/* objects DirSync named */
	uint64_t		 gen;
	int			 track;		/* mark what a full load sees */
	int64_t			 started;
	uint64_t		 counts_at_start[EV_REFRESH_DONE + 1];
	struct buf		 cookie;
	struct buf		 tombdn;	/* a tombstone's old DN */
	struct entry		 ent;		/* an entry DirSync sent */
};

/* ---- the store's side (as the syncrepl reader's, doc/store.md) ---- */

/* The search fingerprint, with the protocol: a DirSync cookie is no RFC
 * 4533 cookie, and a store of one is wiped for the other. */
static void
fingerprint(const struct config *cfg, struct buf *out)
{
	char	**a;

	buf_reset(out);
	buf_printf(out, "protocol=dirsync\nbase=%s\nscope=%d\nfilter=%s\n"
	    "attrs=", cfg->base, cfg->scope, cfg->filter);
	for (a = cfg->attrs; a && *a; a++)
		buf_printf(out, "%s%s", a == cfg->attrs ? "" : ",", *a);
	buf_printf(out, "\nbind=%s\nsasl=%s\n", cfg->bindname ?
	    cfg->bindname : "", cfg->saslmech ? cfg->saslmech : "");
}

/* The figures SIGUSR1 and the status file show (doc/safety.md). */
static void
publish(struct dsreader *r)
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
commit(struct dsreader *r)
{
	r->batch = 0;
	if (store_commit_seq(r->store, r->ev.seq, &r->committed_seq) == -1)
		return -1;
	publish(r);
	return 0;
}

/* Between the steps of long work: bounded transactions and queues. */
static int
checkpoint(void *arg)
{
	struct dsreader	*r = arg;

	if (++r->batch < BATCH_MESSAGES &&
	    pipes_pending(&r->pipes) <= PIPES_HIGH_WATER &&
	    store_txn_bytes(r->store) <= BATCH_BYTES)
		return 0;
	if (commit(r) == -1 || pipes_flush(&r->pipes, 0) == -1)
		return -1;
	return 0;
}

/* ---- startup checks ---- */

/*
 * DirSync searches a whole naming context from its root (MS-ADTS
 * 3.1.1.3.4.1.3): the deepest one the search base lies in.  The base is
 * compared in LDAPv3 form (libldap's normalisation: spaces and the like),
 * case-insensitively.
 */
static int
naming_context(struct dsreader *r, char *err, size_t errlen)
{
	struct timeval	 tv = { NETWORK_TIMEOUT_SECS, 0 };
	char		*attrs[] = { "namingContexts", "schemaNamingContext",
			    NULL }, *norm = NULL;
	struct berval	**v = NULL, **sv = NULL;
	LDAPMessage	*res = NULL, *e;
	struct span	 base, nc;
	size_t		 best = 0;
	int		 i;

	if (ldap_dn_normalize(r->cfg->base, LDAP_DN_FORMAT_LDAP, &norm,
	    LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS || norm == NULL) {
		snprintf(err, errlen, "--url: bad search base '%s'",
		    r->cfg->base);
		return EX_USAGE;
	}
	base.p = (const unsigned char *)norm;
	base.len = strlen(norm);
	if (ldap_search_ext_s(r->ld, "", LDAP_SCOPE_BASE, "(objectClass=*)",
	    attrs, 0, NULL, NULL, &tv, 1, &res) == LDAP_SUCCESS &&
	    (e = ldap_first_entry(r->ld, res)) != NULL) {
		v = ldap_get_values_len(r->ld, e, "namingContexts");
		sv = ldap_get_values_len(r->ld, e, "schemaNamingContext");
	}
	if (sv && sv[0]) {
		r->schema = xmalloc(sv[0]->bv_len + 1);
		memcpy(r->schema, sv[0]->bv_val, sv[0]->bv_len);
		r->schema[sv[0]->bv_len] = '\0';
	}
	ldap_value_free_len(sv);
	for (i = 0; v && v[i]; i++) {
		nc.p = (const unsigned char *)v[i]->bv_val;
		nc.len = v[i]->bv_len;
		if (nc.len > best && (dn_is_below(base, nc) ||
		    (nc.len == base.len && strncasecmp(v[i]->bv_val, norm,
		    nc.len) == 0))) {
			free(r->nc);
			r->nc = xmalloc(nc.len + 1);
			memcpy(r->nc, nc.p, nc.len);
			r->nc[nc.len] = '\0';
			best = nc.len;
		}
	}
	ldap_value_free_len(v);
	ldap_msgfree(res);
	r->base = xstrdup(norm);
	ldap_memfree(norm);
	if (r->nc == NULL) {
		snprintf(err, errlen, "--url: the search base '%s' is in none "
		    "of the naming contexts of %s (its root DSE's "
		    "namingContexts), and DirSync reads one from its root",
		    r->cfg->base, r->cfg->server_url);
		return EX_CONFIG;
	}
	return 0;
}

/* DirSync's control, critical (Samba refuses it otherwise). */
static void
dirsync_control(LDAPControl *c, struct buf *value, struct span cookie)
{
	dirsync_request_encode(value, 0, cookie);
	c->ldctl_oid = LDAP_CONTROL_X_DIRSYNC;
	c->ldctl_value.bv_val = (char *)value->data;
	c->ldctl_value.bv_len = value->len;
	c->ldctl_iscritical = 1;
}

static int
no_entry(void *arg, LDAPMessage *msg)
{
	(void)arg;
	(void)msg;
	return 0;
}

/*
 * Before anything changes: may this identity use DirSync on the naming
 * context?  A DirSync that matches nothing answers that and costs no
 * transfer.
 */
static int
probe(struct dsreader *r, char *err, size_t errlen)
{
	struct ad_search s;
	struct buf	 value = { 0 };
	LDAPControl	 c, *ctrls[2] = { &c, NULL };
	char		*attrs[] = { "objectGUID", NULL };
	int		 rc;

	dirsync_control(&c, &value, (struct span){ NULL, 0 });
	memset(&s, 0, sizeof(s));
	s.base = r->nc;
	s.scope = LDAP_SCOPE_SUBTREE;
	s.filter = MATCHES_NOTHING;
	s.attrs = attrs;
	s.ctrls = ctrls;
	s.entry = no_entry;
	rc = ad_search_run(r->ld, &s);
	ldap_controls_free(s.done_ctrls);
	buf_free(&value);
	switch (rc) {
	case LDAP_SUCCESS:
		return 0;
	case LDAP_INSUFFICIENT_ACCESS:
		snprintf(err, errlen, "%s may not use DirSync on %s: %s; grant "
		    "it Replicating Directory Changes there (ldapfeed.8, "
		    "PROVIDERS)", r->cfg->bindname ? r->cfg->bindname :
		    "the bind identity", r->nc, s.text);
		return EX_CONFIG;
	case ADS_LOST:
	case ADS_STOP:
		snprintf(err, errlen, "%s: DirSync on %s: %s",
		    r->cfg->server_url, r->nc, s.text);
		return EX_UNAVAILABLE;
	default:
		snprintf(err, errlen, "%s: DirSync on %s refused: %s",
		    r->cfg->server_url, r->nc, s.text[0] ? s.text :
		    "failed");
		return EX_CONFIG;
	}
}

/*
 * A delete comes as a tombstone under CN=Deleted Objects, which Samba
 * shows only to an identity that may list that container's children
 * (doc/providers.md, "Rights").  An identity that sees no tombstone there
 * either may not, or there is none yet: say so, at once.
 */
static void
check_deletes_visible(struct dsreader *r)
{
	struct timeval	 tv = { NETWORK_TIMEOUT_SECS, 0 };
	LDAPControl	 c, *ctrls[2] = { &c, NULL };
	char		*attrs[] = { "1.1", NULL }, *dn;
	const char	*who;
	LDAPMessage	*res = NULL;
	size_t		 len;
	int		 rc;

	len = strlen(DELETED_OBJECTS) + strlen(r->nc) + 1;
	dn = xmalloc(len);
	snprintf(dn, len, "%s%s", DELETED_OBJECTS, r->nc);
	memset(&c, 0, sizeof(c));
	c.ldctl_oid = LDAP_CONTROL_X_SHOW_DELETED;
	rc = ldap_search_ext_s(r->ld, dn, LDAP_SCOPE_ONELEVEL,
	    "(objectClass=*)", attrs, 0, ctrls, NULL, &tv, 1, &res);
	who = r->cfg->bindname ? r->cfg->bindname : "the bind identity";
	if ((rc == LDAP_SUCCESS || rc == LDAP_SIZELIMIT_EXCEEDED) &&
	    ldap_count_entries(r->ld, res) < 1)
		log_warnx("%s sees no deleted object in %s: if it may not list "
		    "them, deletes will not be seen and deleted entries stay in "
		    "the copy; grant it List Contents and Read Property there "
		    "(ldapfeed.8, PROVIDERS)", who, dn);
	else if (rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED)
		log_warnx("%s cannot read %s (%s): deletes will not be seen; "
		    "grant it List Contents and Read Property there "
		    "(ldapfeed.8, PROVIDERS)", who, dn, ldap_err2string(rc));
	ldap_msgfree(res);
	free(dn);
}

/*
 * The attributes DirSync cannot follow: those the directory does not
 * replicate (systemFlags FLAG_ATTR_NOT_REPLICATED, MS-ADTS 2.2.10), whose
 * changes (a logon count, a RID pool's next RID) come with no change
 * DirSync names.  Not the back links (odd linkID: memberOf...), which
 * ldapfeed follows from their forward links, nor what moves with every
 * change ldapfeed sees (doc/providers.md, "What DirSync cannot see"), nor
 * what the URL names: those are sent.
 */
static const char *const followed[] = {
	"distinguishedName", "objectGUID", "uSNChanged", "uSNCreated",
	"whenChanged"
};
/* when the schema cannot be read: the usual ones */
static const char *const not_replicated[] = {
	"badPasswordTime", "badPwdCount", "dSCorePropagationData", "lastLogoff",
	"lastLogon", "logonCount", "modifiedCount", "rIDNextRID",
	"rIDPreviousAllocationPool"
};

static int
name_cmp(const void *a, const void *b)
{
	return strcasecmp(*(char *const *)a, *(char *const *)b);
}

static void
untrack(struct dsreader *r, const char *name)
{
	size_t	 i;
	char	**a;

	for (i = 0; i < sizeof(followed) / sizeof(followed[0]); i++)
		if (strcasecmp(name, followed[i]) == 0)
			return;
	for (a = r->cfg->attrs; a && *a; a++)
		if (strcasecmp(*a, name) == 0)
			return;
	r->untracked = xrealloc(r->untracked, (r->nuntracked + 2) *
	    sizeof(char *));
	r->untracked[r->nuntracked++] = xstrdup(name);
	r->untracked[r->nuntracked] = NULL;
}

static void
find_untracked(struct dsreader *r)
{
	struct timeval	 tv = { NETWORK_TIMEOUT_SECS, 0 };
	char		*attrs[] = { "lDAPDisplayName", "linkID", NULL };
	struct berval	**name, **link;
	LDAPMessage	*res = NULL, *e;
	size_t		 i;
	int		 rc = -1;

	if (r->schema != NULL)
		rc = ldap_search_ext_s(r->ld, r->schema, LDAP_SCOPE_ONELEVEL,
		    "(&(objectClass=attributeSchema)"
		    "(systemFlags:1.2.840.113556.1.4.803:=1))", attrs, 0, NULL,
		    NULL, &tv, LDAP_NO_LIMIT, &res);
	if (rc == LDAP_SUCCESS) {
		for (e = ldap_first_entry(r->ld, res); e != NULL;
		    e = ldap_next_entry(r->ld, e)) {
			name = ldap_get_values_len(r->ld, e, "lDAPDisplayName");
			link = ldap_get_values_len(r->ld, e, "linkID");
			if (name && name[0] && !(link && link[0] &&
			    atoi(link[0]->bv_val) % 2 != 0))
				untrack(r, name[0]->bv_val);
			ldap_value_free_len(name);
			ldap_value_free_len(link);
		}
	} else {
		log_warnx("cannot read the schema's non-replicated attributes "
		    "(%s): leaving out the usual ones", rc == -1 ?
		    "no schemaNamingContext" : ldap_err2string(rc));
		for (i = 0; i < sizeof(not_replicated) /
		    sizeof(not_replicated[0]); i++)
			untrack(r, not_replicated[i]);
	}
	ldap_msgfree(res);
	if (r->nuntracked)
		qsort(r->untracked, r->nuntracked, sizeof(char *), name_cmp);
}

/* ---- DirSync ---- */

/* A search's result code as an outcome, said once. */
static enum outcome
verdict(const char *what, struct ad_search *s, int rc)
{
	switch (rc) {
	case LDAP_SUCCESS:
		return GO_ON;
	case ADS_STOP:
		return STOP;
	case ADS_FAIL:
		if (s->text[0])
			log_warnx("%s: %s", what, s->text);
		return FATAL;
	case ADS_LOST:
		log_warnx("%s: %s", what, s->text);
		return LOST;
	default:
		log_warnx("%s failed: %s", what, s->text);
		return ad_permanent(rc) ? FATAL : LOST;
	}
}

/*
 * One DirSync search from *cookie (empty: from the beginning), the new
 * cookie back in *cookie and whether the server holds more.  A cookie the
 * server cannot read (Samba: 12) means a full refresh against the store.
 */
static enum outcome
dirsync(struct dsreader *r, const char *filter, char **attrs,
    int (*entry)(void *, LDAPMessage *), struct buf *cookie, int *more)
{
	struct ad_search s;
	struct buf	 value = { 0 };
	LDAPControl	 c, *ctrls[2] = { &c, NULL }, *rc_ctrl;
	const char	*why;
	enum outcome	 out;
	int		 rc, had = cookie->len > 0;

	dirsync_control(&c, &value, buf_span(cookie));
	memset(&s, 0, sizeof(s));
	s.base = r->nc;
	s.scope = LDAP_SCOPE_SUBTREE;
	s.filter = filter;
	s.attrs = attrs;
	s.ctrls = ctrls;
	s.entry = entry;
	s.arg = r;
	rc = ad_search_run(r->ld, &s);
	buf_free(&value);
	if (had && (rc == LDAP_UNAVAILABLE_CRITICAL_EXTENSION ||
	    rc == LDAP_PROTOCOL_ERROR)) {
		log_warnx("DirSync from the stored cookie refused: %s: a full "
		    "refresh against the store", s.text);
		ldap_controls_free(s.done_ctrls);
		return RELOAD;
	}
	if (rc == LDAP_INSUFFICIENT_ACCESS)
		log_warnx("%s may not use DirSync on %s: grant it Replicating "
		    "Directory Changes (ldapfeed.8, PROVIDERS)",
		    r->cfg->bindname ? r->cfg->bindname : "the bind identity",
		    r->nc);
	if ((out = verdict("DirSync", &s, rc)) != GO_ON) {
		ldap_controls_free(s.done_ctrls);
		return out;
	}
	out = FATAL;
	if ((rc_ctrl = ldap_control_find(LDAP_CONTROL_X_DIRSYNC, s.done_ctrls,
	    NULL)) == NULL)
		log_warnx("protocol error: DirSync done without its control");
	else if (dirsync_response_decode((struct span){ (unsigned char *)
	    rc_ctrl->ldctl_value.bv_val, rc_ctrl->ldctl_value.bv_len }, more,
	    cookie, &why) == -1)
		log_warnx("protocol error: %s", why);
	else if (cookie->len == 0)
		log_warnx("protocol error: DirSync done without a cookie");
	else
		out = GO_ON;
	ldap_controls_free(s.done_ctrls);
	return out;
}

/* Was this attribute in the entry DirSync sent? */
static int
has_attr(struct span blob, const char *want)
{
	struct attrs_iter	 it;
	struct span		 name, v;
	uint32_t		 n, i;

	if (attrs_iter_init(&it, blob) == -1)
		return 0;
	while (attrs_next_attr(&it, &name, &n) == 1) {
		if (name.len == strlen(want) &&
		    strncasecmp((const char *)name.p, want, name.len) == 0)
			return 1;
		for (i = 0; i < n; i++)
			if (attrs_next_value(&it, &v) != 1)
				return 0;
	}
	return 0;
}

/* The first value of an attribute in a blob, or an empty span. */
static struct span
first_value(struct span blob, const char *want)
{
	struct attrs_iter	 it;
	struct span		 name, v, none = { NULL, 0 };
	uint32_t		 n, i;

	if (attrs_iter_init(&it, blob) == -1)
		return none;
	while (attrs_next_attr(&it, &name, &n) == 1)
		for (i = 0; i < n; i++) {
			if (attrs_next_value(&it, &v) != 1)
				return none;
			if (name.len == strlen(want) && strncasecmp(
			    (const char *)name.p, want, name.len) == 0)
				return v;
		}
	return none;
}

/*
 * A tombstone's DN before the delete (MS-ADTS 3.1.1.5.5.1.2): its RDN less
 * the "\0ADEL:guid" the delete appended, below its lastKnownParent (an
 * extended DN, "<GUID=...>;OU=x,DC=...").  Empty when either is missing.
 */
static void
tombstone_dn(struct span dn, struct span blob, struct buf *out)
{
	struct span		 parent = first_value(blob, "lastKnownParent");
	const unsigned char	*p, *del = NULL;
	size_t			 i, rdn;

	buf_reset(out);
	for (rdn = 0; rdn < dn.len; rdn++) {
		if (dn.p[rdn] == '\\') {
			if (del == NULL && dn.len - rdn >= 7 &&
			    memcmp(dn.p + rdn, "\\0ADEL:", 7) == 0)
				del = dn.p + rdn;
			rdn++;
		} else if (dn.p[rdn] == ',')
			break;
	}
	while (parent.len > 0 && parent.p[0] == '<' &&
	    (p = memchr(parent.p, ';', parent.len)) != NULL) {
		parent.len -= (size_t)(p + 1 - parent.p);
		parent.p = p + 1;
	}
	if (del == NULL || parent.len == 0 || parent.p[0] == '<')
		return;
	for (i = 0; dn.p + i < del; i++)
		buf_add_u8(out, dn.p[i]);
	buf_add_u8(out, ',');
	buf_add(out, parent.p, parent.len);
}

/*
 * An object DirSync names: it changed since the cookie, or is a
 * tombstone.  It becomes a task (resolve.c).  A move or a rename changes
 * its name (the RDN's value and parent travel with it, MS-ADTS 3.1.1.1.4);
 * DirSync sends whenCreated, which never changes, only for an object
 * created since the cookie, and isDeleted for a tombstone.  An object that
 * moved and is neither may have brought descendants into the search that
 * DirSync does not name (TASK_RESOLVE_OLD); a tombstone's task carries its
 * DN before the delete (TASK_RESOLVE_DELETED).
 */
static int
named(void *arg, LDAPMessage *msg)
{
	struct dsreader	*r = arg;
	BerElement	*ber = NULL;
	struct berval	 dn;
	int		 rc = -1;

	if (ldap_get_dn_ber(r->ld, msg, &ber, &dn) != LDAP_SUCCESS ||
	    entry_decode(ber, DECODE_GUID, "objectGUID", &r->ent) == -1)
		log_warnx("malformed entry from the server in DirSync");
	else if (!r->ent.has_uuid)
		log_warnx("DirSync sent %.*s without an objectGUID",
		    (int)dn.bv_len, dn.bv_val);
	else {
		r->named++;
		log_debug("changed: %.*s", (int)dn.bv_len, dn.bv_val);
		struct span	 a = buf_span(&r->ent.attrs), where = {
				    (unsigned char *)dn.bv_val, dn.bv_len };
		int		 kind = TASK_RESOLVE;

		if (has_attr(a, "isDeleted")) {
			tombstone_dn(where, a, &r->tombdn);
			where = buf_span(&r->tombdn);
			kind = TASK_RESOLVE_DELETED;
		} else if (has_attr(a, "name") && !has_attr(a, "whenCreated"))
			kind = TASK_RESOLVE_OLD;
		rc = store_task_add(r->store, kind, r->ent.uuid, where);
		if (rc == 0)
			rc = checkpoint(r);
	}
	if (ber)
		ber_free(ber, 0);
	return rc;
}

/* Pending tasks as an outcome. */
static enum outcome
run_tasks(struct dsreader *r)
{
	switch (resolve_pending(&r->res)) {
	case 0:
		return GO_ON;
	case ADS_STOP:
		return STOP;
	case ADS_LOST:
		return LOST;
	default:
		return FATAL;
	}
}

/*
 * The changes since the stored cookie: DirSync names the objects (each a
 * task, with the cookie in the same transaction: what the cookie covers
 * is in the store or waits in its tasks), then the tasks run.  While the
 * server says it holds more, again from the new cookie.
 */
static enum outcome
incremental(struct dsreader *r)
{
	char		*all[] = { "*", NULL };
	struct span	 stored;
	enum outcome	 out;
	int		 more = 0;

	if (store_get_meta(r->store, "cookie", &stored) != 1)
		return FATAL;
	buf_reset(&r->cookie);
	buf_add(&r->cookie, stored.p, stored.len);
	do {
		/* DirSync drops renames and deletes from a search that does
		 * not ask for name and isDeleted: all attributes, always */
		if ((out = dirsync(r, "(objectClass=*)", all, named, &r->cookie,
		    &more)) != GO_ON)
			return out;
		if (store_put_meta(r->store, "cookie", buf_span(&r->cookie)) ==
		    -1 || commit(r) == -1)
			return FATAL;
	} while (more && !sig_term);
	return run_tasks(r);
}

/* ---- the full load ---- */

static int
loaded(void *arg, LDAPMessage *msg)
{
	struct dsreader	*r = arg;
	int		 rc;

	if ((rc = resolve_entry(&r->res, msg, TASK_RESOLVE)) != 0)
		return rc == 1 ? 0 : -1;
	if (r->track && store_mark_seen(r->store, r->res.ent.uuid, r->gen) ==
	    -1)
		return -1;
	return 0;
}

/* Between two pages: the transaction and the queues stay bounded. */
static int
between_pages(void *arg)
{
	struct dsreader	*r = arg;

	return commit(r) == -1 || pipes_flush(&r->pipes, 0) == -1 ? -1 : 0;
}

/* The search itself, a page at a time. */
static enum outcome
paged_load(struct dsreader *r)
{
	struct ad_search s;

	memset(&s, 0, sizeof(s));
	s.base = r->cfg->base;
	s.scope = r->cfg->scope;
	s.filter = r->cfg->filter;
	s.attrs = r->attrs;
	s.entry = loaded;
	s.arg = r;
	return verdict("the search", &s, ad_search_paged(r->ld, &s,
	    between_pages));
}

/* Drop every pending task: a full load reads all they would ask. */
static int
drop_tasks(struct dsreader *r)
{
	struct buf	 dn = { 0 };
	unsigned char	 uuid[16];
	uint64_t	 id;
	int		 kind, rc;

	while ((rc = store_task_first(r->store, &id, &kind, uuid, &dn)) == 1)
		if ((rc = store_task_done(r->store, id)) == -1)
			break;
	buf_free(&dn);
	return rc;
}

/*
 * The mass-delete guard (doc/safety.md), before a full refresh deletes
 * anything: the sweep's deletes counted first.  Refused, none of them is
 * sent or stored, no cookie is written (the full refresh stays owed), and
 * the reader stops with GUARD_EXIT.
 */
static enum outcome
sweep_guard(struct dsreader *r)
{
	uint64_t	 n;

	if (!r->track)
		return GO_ON;
	if (store_sweep_count(r->store, r->gen, SWEEP_UNSEEN, &n) == -1)
		return FATAL;
	return guard_check(r->cfg, "this full refresh", n,
	    store_count(r->store)) == -1 ? GUARDED : GO_ON;
}

/*
 * A full reload from a wiped store (even one a lost connection made a
 * full refresh again), before its refresh_done: what the consumer will
 * drop then, weighed as the syncrepl reader weighs it.
 */
static enum outcome
reload_guard(struct dsreader *r)
{
	if (r->refresh_done_sent)
		return GO_ON;
	switch (guard_reload(r->cfg, r->store)) {
	case 0:
		return GO_ON;
	case 1:
		return GUARDED;
	default:
		return FATAL;
	}
}

/*
 * No cookie (a first start, or one the server refused): the cookie of
 * now first (a DirSync that matches nothing), then the search read whole,
 * as ldapsearch would.  What changes meanwhile, DirSync names from that
 * cookie.  Against a store that holds entries, whatever the search did
 * not return is swept (doc/syncrepl.md, "When to sweep").
 */
static enum outcome
full_refresh(struct dsreader *r)
{
	char		*guid[] = { "objectGUID", NULL };
	uint64_t	 swept = 0, unknown = 0;
	enum outcome	 out;
	int		 more = 1;

	r->track = store_count(r->store) > 0;
	log_info("dirsync started: %s", r->track ? "full refresh against the "
	    "store" : "full load");
	r->gen = store_get_u64(r->store, "gen", 0) + 1;
	if (store_put_u64(r->store, "gen", r->gen) == -1 ||
	    drop_tasks(r) == -1 || commit(r) == -1)
		return FATAL;
	buf_reset(&r->cookie);
	while (more)
		if ((out = dirsync(r, MATCHES_NOTHING, guid, no_entry,
		    &r->cookie, &more)) != GO_ON)
			return out == RELOAD ? FATAL : out;
	r->res.follow = 0;
	if ((out = paged_load(r)) != GO_ON || (out = sweep_guard(r)) != GO_ON)
		return out;
	if (r->track && events_sweep(&r->ev, r->gen, SWEEP_UNSEEN, &swept,
	    &unknown, 0) == -1)
		return FATAL;
	if ((out = reload_guard(r)) != GO_ON)
		return out;
	if (store_put_meta(r->store, "cookie", buf_span(&r->cookie)) == -1 ||
	    store_del_meta(r->store, "reload") == -1 || commit(r) == -1)
		return FATAL;
	if (swept)
		log_info("%llu entries the search no longer returns deleted",
		    (unsigned long long)swept);
	return GO_ON;
}

/* ---- following ---- */

static void
end_refresh(struct dsreader *r)
{
	uint64_t	*c = r->ev.counts, *c0 = r->counts_at_start;

	if (!r->in_refresh) {
		log_debug("dirsync: %llu objects named",
		    (unsigned long long)r->named);
		return;
	}
	r->in_refresh = 0;
	r->ctx->stats->phase = PHASE_PERSIST;
	log_info("refresh done in %.1f s: %llu adds, %llu modifies, %llu "
	    "renames, %llu deletes, %llu entries in the store",
	    seconds_since(r->started),
	    (unsigned long long)(c[EV_ADD] - c0[EV_ADD]),
	    (unsigned long long)(c[EV_MODIFY] - c0[EV_MODIFY]),
	    (unsigned long long)(c[EV_RENAME] - c0[EV_RENAME]),
	    (unsigned long long)(c[EV_DELETE] - c0[EV_DELETE]),
	    (unsigned long long)store_count(r->store));
	if (r->res.nameless)
		log_warnx("%llu entries left out: %s may not read their "
		    "objectGUID", (unsigned long long)r->res.nameless,
		    r->cfg->bindname ? r->cfg->bindname : "the bind identity");
	r->res.nameless = 0;
	if (!r->refresh_done_sent) {
		events_refresh_done(&r->ev);
		r->refresh_done_sent = 1;
		if (store_del_meta(r->store, "snapshot") == -1)
			log_warnx("cannot write the store");
	}
}

/* Notifications that came before a DirSync are covered by it. */
static enum outcome
drain_notifications(struct dsreader *r, int *woken)
{
	struct timeval	 zero = { 0, 0 };
	LDAPMessage	*msg;
	char		 what[400];
	int		 rc;

	if (r->notify_msgid < 0)
		return GO_ON;
	while ((rc = ldap_result(r->ld, r->notify_msgid, LDAP_MSG_ONE, &zero,
	    &msg)) > 0) {
		if (ldap_msgtype(msg) == LDAP_RES_SEARCH_ENTRY)
			*woken = 1;
		else if (ldap_msgtype(msg) != LDAP_RES_SEARCH_REFERENCE &&
		    ldap_msgtype(msg) != LDAP_RES_INTERMEDIATE) {
			conn_describe_response(r->ld, msg, what, sizeof(what));
			log_warnx("change notification ended by the server (%s):"
			    " polling every %d s", what, r->cfg->poll_interval);
			r->notify_msgid = -1;
			r->notify_off = 1;
		}
		ldap_msgfree(msg);
		if (r->notify_msgid < 0)
			break;
	}
	if (rc == -1) {
		log_warnx("LDAP connection lost");
		return LOST;
	}
	return GO_ON;
}

/*
 * The change notification search: a wake-up, never the source of truth
 * (notifications can be missed; the timer covers them).  Samba accepts
 * only (objectClass=*); deletes notify with the show-deleted control.
 */
static void
start_notifications(struct dsreader *r)
{
	LDAPControl	 n, d, *ctrls[3] = { &n, &d, NULL };
	char		*attrs[] = { "objectGUID", NULL };
	int		 rc;

	if (!r->notify || r->notify_off || r->notify_msgid >= 0)
		return;
	memset(&n, 0, sizeof(n));
	memset(&d, 0, sizeof(d));
	n.ldctl_oid = LDAP_CONTROL_X_SERVER_NOTIFICATION;
	n.ldctl_iscritical = 1;
	d.ldctl_oid = LDAP_CONTROL_X_SHOW_DELETED;
	rc = ldap_search_ext(r->ld, r->nc, LDAP_SCOPE_SUBTREE,
	    "(objectClass=*)", attrs, 0, ctrls, NULL, NULL, LDAP_NO_LIMIT,
	    &r->notify_msgid);
	if (rc != LDAP_SUCCESS) {
		log_warnx("change notification: %s: polling every %d s",
		    ldap_err2string(rc), r->cfg->poll_interval);
		r->notify_msgid = -1;
		r->notify_off = 1;
	}
}

/* Until a notification, the poll timer, or a stop. */
static enum outcome
wait_change(struct dsreader *r)
{
	struct pollfd	 pfd[2];
	enum outcome	 out;
	int64_t		 deadline;
	int		 fd = -1, woken = 0, left;

	start_notifications(r);
	deadline = clock_ms() + (int64_t)r->cfg->poll_interval * 1000;
	if (ldap_get_option(r->ld, LDAP_OPT_DESC, &fd) != LDAP_OPT_SUCCESS)
		fd = -1;
	for (;;) {
		if (sig_term)
			return STOP;
		if ((out = drain_notifications(r, &woken)) != GO_ON)
			return out;
		if (woken)
			return GO_ON;
		if ((left = (int)(deadline - clock_ms())) <= 0)
			return GO_ON;
		pfd[0].fd = r->notify_msgid >= 0 ? fd : -1;
		pfd[0].events = POLLIN;
		pfd[1].fd = signals_fd();
		pfd[1].events = POLLIN;
		if (poll(pfd, 2, left) == -1 && errno != EINTR) {
			log_warn("poll");
			return FATAL;
		}
		if (pfd[1].revents)
			signals_drain();
	}
}

/*
 * One cycle: the changes since the cookie (or a full refresh), the tasks,
 * and the events out to the workers.
 */
static enum outcome
cycle(struct dsreader *r)
{
	struct span	 stored;
	enum outcome	 out;
	int		 woken = 0, full;

	if ((out = drain_notifications(r, &woken)) != GO_ON)
		return out;
	r->named = 0;
	if (r->in_refresh) {
		r->started = clock_ms();
		memcpy(r->counts_at_start, r->ev.counts,
		    sizeof(r->counts_at_start));
	}
	full = store_get_meta(r->store, "reload", &stored) == 1 ||
	    store_get_meta(r->store, "cookie", &stored) != 1;
	if (!full && r->in_refresh)
		log_info("dirsync started: resuming from the stored cookie");
	out = full ? full_refresh(r) : incremental(r);
	if (out == GO_ON && full)
		out = run_tasks(r);
	if (commit(r) == -1)
		return FATAL;
	if (out == GO_ON)
		end_refresh(r);
	if (commit(r) == -1 || pipes_flush(&r->pipes, 1) == -1)
		return FATAL;
	return out;
}

static void
disconnect(struct dsreader *r)
{
	if (r->ld)
		ldap_unbind_ext(r->ld, NULL, NULL);
	r->ld = NULL;
	r->res.ld = NULL;
	r->notify_msgid = -1;
	r->notify_off = 0;
	r->ctx->stats->connected = 0;
}

/* Follow until stopped, done (refresh mode), or a permanent error. */
static int
run(struct dsreader *r)
{
	enum outcome	 out;
	char		 err[512];
	int		 backoff = 1, code;
	int64_t		 t0;

	r->in_refresh = 1;
	for (;;) {
		if (sig_term)
			return 0;
		t0 = clock_ms();
		out = GO_ON;
		if (r->ld == NULL) {
			if ((code = conn_open(r->cfg, &r->ld, err,
			    sizeof(err))) != 0) {
				log_warnx("%s", err);
				out = code == EX_UNAVAILABLE ? LOST : FATAL;
			} else {
				log_info("reconnected to %s", r->cfg->server_url);
				r->res.ld = r->ld;
			}
		}
		if (out == GO_ON && (out = cycle(r)) == GO_ON) {
			backoff = 1;
			if (r->cfg->mode == MODE_REFRESH)
				return 0;
			out = wait_change(r);
		}
		if (seconds_since(t0) >= BACKOFF_MAX_SECS)
			backoff = 1;
		if (out == LOST && sig_term)
			out = STOP;
		switch (out) {
		case GO_ON:
			break;
		case STOP:
			return 0;
		case GUARDED:
			/* A clean stop, without what the guard held back. */
			return GUARD_EXIT;
		case RELOAD:
			if (store_del_meta(r->store, "cookie") == -1 ||
			    store_put_meta(r->store, "reload", (struct span){
			    (const unsigned char *)"1", 1 }) == -1 ||
			    commit(r) == -1)
				return EX_SOFTWARE;
			break;
		case LOST:
			r->ctx->stats->phase = PHASE_RECONNECTING;
			if (pipes_flush(&r->pipes, 0) == -1)
				return EX_SOFTWARE;
			disconnect(r);
			r->reconnects++;
			r->in_refresh = 1;
			log_warnx("reconnecting in %d s", backoff);
			signals_pause(backoff);
			backoff = backoff * 2 > BACKOFF_MAX_SECS ?
			    BACKOFF_MAX_SECS : backoff * 2;
			break;
		default:
			return EX_SOFTWARE;
		}
	}
}

/* ---- the process ---- */

static int
asked_for(char **a, const char *name)
{
	for (; a && *a; a++)
		if (strcmp(*a, "*") == 0 || strcasecmp(*a, name) == 0)
			return 1;
	return 0;
}

/* The search's attributes, and objectGUID, which names every entry. */
static void
ask_attrs(struct dsreader *r)
{
	char	**a = r->cfg->attrs;
	size_t	 n, i;

	for (n = 0; a && a[n]; n++)
		;
	r->attrs = xcalloc(n + 2, sizeof(char *));
	if (a == NULL)
		r->attrs[0] = "*";	/* objectGUID is one of them */
	else {
		for (i = 0; i < n; i++)
			r->attrs[i] = a[i];
		if (!asked_for(a, "objectGUID")) {
			r->attrs[n] = "objectGUID";
			r->decode_flags |= DECODE_STRIP_UUID;
		}
	}
}

/* As the syncrepl reader decides (doc/store.md, "When the store is
 * trusted"): the reason it is not, or NULL. */
static const char *
distrust(const struct child_ctx *ctx, struct store *store,
    const struct buf *fp)
{
	struct span	 stored;

	if (!ctx->trusted)
		return "no clean-shutdown marker";
	if (store_get_meta(store, "search", &stored) == 1 &&
	    (stored.len != fp->len || memcmp(stored.p, fp->data,
	    fp->len) != 0))
		return "the search differs from the one the store was built "
		    "for";
	if (store_get_meta(store, "snapshot", &stored) == 1)
		return "the last full reload did not finish";
	return NULL;
}

int
dirsync_main(const struct child_ctx *ctx, LDAP *ld, const struct provider *p)
{
	struct dsreader	 r;
	struct event	 hello;
	struct buf	 fp = { 0 };
	const char	*why = "no clean-shutdown marker";
	char		 err[512];
	uint64_t	 previous = 0;
	size_t		 i;
	int		 code;

	memset(&r, 0, sizeof(r));
	r.ctx = ctx;
	r.cfg = ctx->cfg;
	r.ld = ld;
	r.notify_msgid = -1;
	events_init(&r.ev, r.cfg, NULL, &r.pipes);
	if (p->sync_known && !p->has_dirsync)
		child_startup_failed(ctx, EX_CONFIG, "%s does not offer DirSync "
		    "(%s) (ldapfeed.8, PROVIDERS)", r.cfg->server_url,
		    LDAP_CONTROL_X_DIRSYNC);
	if ((code = naming_context(&r, err, sizeof(err))) != 0 ||
	    (code = probe(&r, err, sizeof(err))) != 0)
		child_startup_failed(ctx, code, "%s", err);
	check_deletes_visible(&r);
	find_untracked(&r);
	r.notify = p->has_notify || !p->sync_known;
	log_info("following %s with DirSync from %s%s", r.cfg->base, r.nc,
	    r.notify ? ", woken by change notification" : "");
	fingerprint(r.cfg, &fp);
	if (ctx->trusted) {
		if (store_open(&r.store, r.cfg->data_dir, 0, 0) == -1)
			child_startup_failed(ctx, EX_CONFIG, "cannot open the "
			    "store in %s", r.cfg->data_dir);
		why = distrust(ctx, r.store, &fp);
		if (why != NULL)
			previous = guard_store_copy(r.store);
		store_abort(r.store);
	} else
		previous = guard_previous_copy(r.cfg->data_dir);
	if (barrier_wait(ctx->barrier, &sig_term, ctx->supervisor) == -1)
		exit(EX_SOFTWARE);

	if (why != NULL) {
		log_info("%s: wiping the store for a full reload", why);
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
	resolve_init(&r.res, r.cfg, &r.ev, r.attrs, r.decode_flags, r.nc);
	r.res.ld = r.ld;
	r.res.untracked = r.untracked;
	r.res.base = r.base;
	r.res.nuntracked = r.nuntracked;
	r.ev.seq = r.committed_seq = store_get_u64(r.store, "seq", 0);
	if (store_put_meta(r.store, "search", buf_span(&fp)) == -1)
		fatalx(EX_SOFTWARE, "cannot write the store");
	buf_free(&fp);

	memset(&hello, 0, sizeof(hello));
	hello.type = EV_HELLO;
	hello.reload = store_count(r.store) == 0;
	hello.seq = store_get_u64(r.store, "run", 0) + 1;
	if (store_epoch(r.store, hello.uuid) == -1 ||
	    store_put_u64(r.store, "run", hello.seq) == -1)
		fatalx(EX_SOFTWARE, "cannot write the store");
	if (hello.reload && store_put_meta(r.store, "snapshot",
	    (struct span){ (const unsigned char *)"1", 1 }) == -1)
		fatalx(EX_SOFTWARE, "cannot write the store");
	pipes_send_all(&r.pipes, &hello);
	ctx->stats->phase = PHASE_REFRESH;

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
	resolve_free(&r.res);
	buf_free(&r.cookie);
	buf_free(&r.tombdn);
	buf_free(&r.ent.attrs);
	free(r.attrs);
	free(r.nc);
	free(r.schema);
	free(r.base);
	for (i = 0; i < r.nuntracked; i++)
		free(r.untracked[i]);
	free(r.untracked);
	pipes_free(&r.pipes);
	return code;
}
