/*
 * ldapfeed --check (ldapfeed.8, OPTIONS; doc/safety.md, "The configuration
 * check"): every check of a start, one line each, and nothing changed
 * anywhere: no file or directory made, no lock kept, no stream created, no
 * event sent.  Like nginx -t, sshd -t and slaptest.
 */
#include <sys/file.h>
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ldap.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "ldapfeed.h"

#define SENTINEL	"ldapfeed.store"	/* supervisor.c's */

struct check {
	struct config	*cfg;
	int		 first;		/* the status of the first failure */
	LDAP		*ld;
	struct provider	 provider;
};

static void PRINTFLIKE(3, 4)
line(struct check *c, int code, const char *fmt, ...)
{
	va_list	 ap;

	printf("%-5s ", code == 0 ? "ok" : code < 0 ? "skip" : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (code > 0 && c->first == 0)
		c->first = code;
}

/* Held by a running ldapfeed?  The file is neither made nor locked. */
static void
check_pidfile(struct check *c)
{
	const char	*path = c->cfg->pidfile;
	char		 dir[PATH_MAX];
	int		 fd;

	if (path == NULL)
		return;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		snprintf(dir, sizeof(dir), "%s", path);
		if (errno == ENOENT && access(dirname(dir), W_OK) == 0)
			line(c, 0, "--pidfile %s: free", path);
		else
			line(c, EX_CONFIG, "--pidfile %s: %s", path,
			    strerror(errno == ENOENT ? EACCES : errno));
		return;
	}
	if (flock(fd, LOCK_SH | LOCK_NB) == -1)
		line(c, EX_CONFIG, "--pidfile %s is held by a running ldapfeed",
		    path);
	else
		line(c, 0, "--pidfile %s: free", path);
	close(fd);
}

static int
marker_present(const struct config *cfg)
{
	return access(cfg->marker, F_OK) == 0;
}

static void
check_marker(struct check *c)
{
	const char	*m = c->cfg->marker;
	char		 tmp[PATH_MAX];
	struct stat	 st;

	snprintf(tmp, sizeof(tmp), "%s", m);
	if (stat(dirname(tmp), &st) == -1 || !S_ISDIR(st.st_mode))
		line(c, EX_CONFIG, "--marker %s: its directory does not exist",
		    m);
	else if (stat(m, &st) == 0 && !S_ISREG(st.st_mode))
		line(c, EX_CONFIG, "--marker %s: not a regular file", m);
	else if (stat(m, &st) == 0)
		line(c, 0, "--marker %s: present (the last run ended cleanly)",
		    m);
	else
		line(c, 0, "--marker %s: absent: the next start wipes the store "
		    "and reloads fully", m);
}

/* What the store says of the next start, read without lock or write. */
static void
check_store(struct check *c)
{
	struct store_peek	 p;
	char			 path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/data.mdb", c->cfg->data_dir);
	if (access(path, F_OK) == -1 || !marker_present(c->cfg))
		return;
	if (store_peek(c->cfg->data_dir, &p) == -1) {
		line(c, EX_CONFIG, "store in %s: cannot be opened",
		    c->cfg->data_dir);
		return;
	}
	line(c, 0, "store in %s: %llu entries%s", c->cfg->data_dir,
	    (unsigned long long)p.entries, p.snapshot ? ", a full reload "
	    "that did not finish: the next start does it again" : "");
}

/* The data directory's rules (supervisor.c), checked without a change. */
static void
check_datadir(struct check *c)
{
	const char	*dir = c->cfg->data_dir;
	char		 path[PATH_MAX], mdir[PATH_MAX], *mbase;
	struct dirent	*de;
	struct stat	 st;
	DIR		*d;
	int		 sentinel = 0, lmdb = 0, fd;
	char		 foreign[256] = "";

	if (stat(dir, &st) == -1) {
		line(c, errno == ENOENT ? 0 : EX_CONFIG, "--data-dir %s: %s",
		    dir, errno == ENOENT ? "absent: the first start creates it"
		    : strerror(errno));
		return;
	}
	if (!S_ISDIR(st.st_mode) || (d = opendir(dir)) == NULL) {
		line(c, EX_CONFIG, "--data-dir %s: %s", dir, S_ISDIR(st.st_mode) ?
		    strerror(errno) : "not a directory");
		return;
	}
	snprintf(mdir, sizeof(mdir), "%s", c->cfg->marker);
	mbase = basename(mdir);
	snprintf(path, sizeof(path), "%s", c->cfg->marker);
	if (strcmp(dirname(path), dir) != 0)
		mbase = NULL;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (strcmp(de->d_name, SENTINEL) == 0)
			sentinel = 1;
		else if (strcmp(de->d_name, "data.mdb") == 0 ||
		    strcmp(de->d_name, "lock.mdb") == 0)
			lmdb = 1;
		else if ((mbase == NULL || strcmp(de->d_name, mbase) != 0) &&
		    foreign[0] == '\0')
			snprintf(foreign, sizeof(foreign), "%s", de->d_name);
	}
	closedir(d);
	if (foreign[0] != '\0' || (lmdb && !sentinel)) {
		line(c, EX_CONFIG, "--data-dir %s holds '%s', which ldapfeed did "
		    "not create", dir, foreign[0] ? foreign : "data.mdb");
		return;
	}
	snprintf(path, sizeof(path), "%s/%s", dir, SENTINEL);
	if (sentinel && (fd = open(path, O_RDONLY | O_CLOEXEC)) != -1) {
		if (flock(fd, LOCK_SH | LOCK_NB) == -1) {
			close(fd);
			line(c, EX_CONFIG, "--data-dir %s is in use by another "
			    "ldapfeed", dir);
			return;
		}
		close(fd);
	}
	line(c, 0, "--data-dir %s: %s", dir, sentinel ? "an ldapfeed store, "
	    "not in use" : "empty");
	check_store(c);
}

/* Can the bind identity read the entries' UUIDs (doc/subtrees.md)? */
static void
check_uuid(struct check *c)
{
	struct timeval	 tv = { 10, 0 };
	const char	*attr = provider_uuid_attr(c->provider.kind);
	char		*attrs[] = { (char *)(uintptr_t)attr, NULL };
	struct berval	**v = NULL;
	LDAPMessage	*res = NULL, *e;
	int		 rc;

	rc = ldap_search_ext_s(c->ld, c->cfg->base, LDAP_SCOPE_BASE,
	    "(objectClass=*)", attrs, 0, NULL, NULL, &tv, 1, &res);
	if (rc == LDAP_SUCCESS && (e = ldap_first_entry(c->ld, res)) != NULL)
		v = ldap_get_values_len(c->ld, e, attr);
	if (v != NULL && v[0] != NULL)
		line(c, 0, "%s: %s can read it", attr, c->cfg->bindname ?
		    c->cfg->bindname : c->cfg->saslmech ? "the SASL identity" :
		    "the anonymous identity");
	else
		line(c, EX_CONFIG, "%s: not readable on %s by %s (subtrees "
		    "that move cannot be followed without it)", attr,
		    c->cfg->base, c->cfg->bindname ? c->cfg->bindname :
		    "this identity");
	ldap_value_free_len(v);
	ldap_msgfree(res);
}

/*
 * The root DSE of a slapd that loads syncprov lists its control even for
 * a database without the overlay: a refreshOnly sync search of the base
 * entry alone tells (doc/syncrepl.md, "The Sync Request"), at the cost of
 * one entry.
 */
static void
check_sync(struct check *c)
{
	struct timeval	 tv = { 10, 0 };
	char		*noattrs[] = { LDAP_NO_ATTRS, NULL };
	struct buf	 value = { 0 };
	LDAPControl	 ctrl, *ctrls[2] = { &ctrl, NULL };
	LDAPMessage	*res = NULL;
	int		 rc;

	if (sync_request_encode(&value, SYNC_MODE_REFRESH_ONLY, NULL, 0) == -1) {
		buf_free(&value);
		return;
	}
	ctrl.ldctl_oid = LDAP_CONTROL_SYNC;
	ctrl.ldctl_value.bv_val = (char *)value.data;
	ctrl.ldctl_value.bv_len = value.len;
	ctrl.ldctl_iscritical = 1;
	rc = ldap_search_ext_s(c->ld, c->cfg->base, LDAP_SCOPE_BASE,
	    "(objectClass=*)", noattrs, 0, ctrls, NULL, &tv, 1, &res);
	ldap_msgfree(res);
	buf_free(&value);
	if (rc == LDAP_SUCCESS)
		line(c, 0, "syncrepl: the server offers %s on %s%s",
		    LDAP_CONTROL_SYNC, c->cfg->base, c->provider.kind ==
		    PROVIDER_389DS ? " (389 Directory Server)" : "");
	else
		line(c, EX_CONFIG, "syncrepl: a sync search of %s fails: %s "
		    "(%d): the database needs the syncprov overlay (or 389-ds's "
		    "Content Synchronization plugin)", c->cfg->base,
		    ldap_err2string(rc), rc);
}

static void
check_ldap(struct check *c)
{
	char	 err[512];
	int	 code;

	if ((code = conn_open(c->cfg, &c->ld, err, sizeof(err))) != 0) {
		line(c, code, "%s", err);
		line(c, -1, "search base, syncrepl, entryUUID: not checked");
		c->ld = NULL;
		return;
	}
	line(c, 0, "%s: connected%s, bound as %s", c->cfg->server_url,
	    c->cfg->starttls ? " with StartTLS" : "", c->cfg->bindname ?
	    c->cfg->bindname : c->cfg->saslmech ? "SASL EXTERNAL" :
	    "anonymous");
	if ((code = conn_check_search(c->cfg, c->ld, err, sizeof(err))) != 0)
		line(c, code, "%s", err);
	else
		line(c, 0, "search base %s: exists, filter %s accepted",
		    c->cfg->base, c->cfg->filter);
	conn_provider(c->ld, &c->provider);
	if (c->provider.sync_known && !c->provider.has_sync)
		line(c, EX_CONFIG, "syncrepl: the server does not offer %s",
		    LDAP_CONTROL_SYNC);
	else if (code == 0)
		check_sync(c);
	if (c->provider.kind == PROVIDER_389DS &&
	    conn_check_retro(c->ld, err, sizeof(err)) == 0)
		line(c, EX_CONFIG, "%s", err);
	if (code == 0)
		check_uuid(c);
	ldap_unbind_ext(c->ld, NULL, NULL);
	c->ld = NULL;
}

/* One connection and its handshake, then closed: nothing is sent. */
static void
check_consumer(struct check *c)
{
	struct proc_stats	 st;
	struct child_ctx	 ctx;
	struct output		*out;
	char			 why[512];
	int			 code;

	memset(&st, 0, sizeof(st));
	memset(&ctx, 0, sizeof(ctx));
	ctx.cfg = c->cfg;
	ctx.workers = (unsigned)c->cfg->workers;
	ctx.stats = &st;
	out = c->cfg->output_kind == OUTPUT_NATS ? out_nats_new(&ctx) :
	    out_listener_new(&ctx);
	if ((code = out->ops->open(out, why, sizeof(why))) != 0)
		line(c, code, "%s", why);
	else
		line(c, 0, "consumer %s: connected and authenticated (a start "
		    "opens %d connection%s)", c->cfg->output, c->cfg->workers,
		    c->cfg->workers == 1 ? "" : "s");
	out->ops->close(out);
}

/*
 * The checks in the order a start makes them, so that the first failure
 * is the one a start would report; the exit status is its status.
 */
int
check_run(struct config *cfg)
{
	struct check	 c;
	char		 limit[64];

	memset(&c, 0, sizeof(c));
	c.cfg = cfg;
	line(&c, 0, "flags and the LDAP URL (%d workers, --max-delete %s)",
	    cfg->workers, (guard_limit_text(cfg, limit, sizeof(limit)), limit));
	if (cfg->password_file)
		line(&c, 0, "--password-file %s: read", cfg->password_file);
	if (cfg->key_file)
		line(&c, 0, "--auth-key %s: read", cfg->key_file);
	check_pidfile(&c);
	check_marker(&c);
	check_datadir(&c);
	check_ldap(&c);
	check_consumer(&c);
	return c.first;
}
