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
#include <sysexits.h>
#include <unistd.h>

#include "ldapfeed.h"

#define NETWORK_TIMEOUT_SECS	10

struct reader {
	const struct child_ctx	*ctx;
	const struct config	*cfg;
	LDAP			*ld;
	struct store		*store;
	struct pipes		 pipes;
};

/*
 * Connect, StartTLS if asked, bind.  Returns 0, or the sysexits code of the
 * failure with a one-line reason in err: 77 for refused credentials, 69 for
 * a server that cannot be reached or talked to.
 */
static int
ldap_open(const struct config *cfg, LDAP **ldp, char *err, size_t errlen)
{
	struct timeval	 tv = { NETWORK_TIMEOUT_SECS, 0 };
	struct berval	 cred = { 0, NULL };
	LDAP		*ld;
	const char	*dn = NULL, *mech = LDAP_SASL_SIMPLE;
	int		 rc, v3 = LDAP_VERSION3, on = 1, idle = 60, probes = 3,
			 intvl = 10;

	if ((rc = ldap_initialize(&ld, cfg->server_url)) != LDAP_SUCCESS) {
		snprintf(err, errlen, "%s: %s", cfg->server_url,
		    ldap_err2string(rc));
		return EX_USAGE;
	}
	ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
	ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
	ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
	ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
	ldap_set_option(ld, LDAP_OPT_RESTART, &on);
	/* An idle persist search carries no traffic: keepalive finds a dead peer. */
	ldap_set_option(ld, LDAP_OPT_X_KEEPALIVE_IDLE, &idle);
	ldap_set_option(ld, LDAP_OPT_X_KEEPALIVE_PROBES, &probes);
	ldap_set_option(ld, LDAP_OPT_X_KEEPALIVE_INTERVAL, &intvl);

	if (cfg->starttls &&
	    (rc = ldap_start_tls_s(ld, NULL, NULL)) != LDAP_SUCCESS) {
		snprintf(err, errlen, "%s: StartTLS failed: %s",
		    cfg->server_url, ldap_err2string(rc));
		ldap_unbind_ext(ld, NULL, NULL);
		return rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR ||
		    rc == LDAP_TIMEOUT ? EX_UNAVAILABLE : EX_UNAVAILABLE;
	}
	if (cfg->bindname) {
		dn = cfg->bindname;
		cred.bv_val = (char *)cfg->password.data;
		cred.bv_len = cfg->password.len;
	} else if (cfg->saslmech)
		mech = cfg->saslmech;
	rc = ldap_sasl_bind_s(ld, dn, mech, &cred, NULL, NULL, NULL);
	if (rc != LDAP_SUCCESS) {
		snprintf(err, errlen, "%s: bind%s%s failed: %s",
		    cfg->server_url, dn ? " as " : "", dn ? dn : "",
		    ldap_err2string(rc));
		ldap_unbind_ext(ld, NULL, NULL);
		switch (rc) {
		case LDAP_INVALID_CREDENTIALS:
		case LDAP_INAPPROPRIATE_AUTH:
		case LDAP_INSUFFICIENT_ACCESS:
		case LDAP_STRONG_AUTH_REQUIRED:
		case LDAP_UNWILLING_TO_PERFORM:
		case LDAP_AUTH_METHOD_NOT_SUPPORTED:
			return EX_NOPERM;
		default:
			return EX_UNAVAILABLE;
		}
	}
	*ldp = ld;
	return 0;
}

/*
 * Check the search before anything is changed: a base that does not exist
 * or a filter libldap cannot encode is a configuration error.
 */
static int
check_search(const struct config *cfg, LDAP *ld, char *err, size_t errlen)
{
	struct timeval	 tv = { NETWORK_TIMEOUT_SECS, 0 };
	char		*noattrs[] = { LDAP_NO_ATTRS, NULL };
	LDAPMessage	*res = NULL;
	int		 rc;

	rc = ldap_search_ext_s(ld, cfg->base, LDAP_SCOPE_BASE, cfg->filter,
	    noattrs, 0, NULL, NULL, &tv, 1, &res);
	if (res)
		ldap_msgfree(res);
	switch (rc) {
	case LDAP_SUCCESS:
	case LDAP_SIZELIMIT_EXCEEDED:
		return 0;
	case LDAP_FILTER_ERROR:
		snprintf(err, errlen, "--url: bad filter '%s'", cfg->filter);
		return EX_USAGE;
	case LDAP_NO_SUCH_OBJECT:
		snprintf(err, errlen, "--url: search base '%s' does not exist",
		    cfg->base);
		return EX_CONFIG;
	case LDAP_INVALID_DN_SYNTAX:
		snprintf(err, errlen, "--url: bad search base '%s'", cfg->base);
		return EX_USAGE;
	default:
		snprintf(err, errlen, "%s: search of '%s' failed: %s",
		    cfg->server_url, cfg->base, ldap_err2string(rc));
		return rc < 0 ? EX_UNAVAILABLE : EX_CONFIG;
	}
}

static int
wait_for_stop(struct reader *r)
{
	struct pollfd	 pfd;

	while (!sig_term) {
		pfd.fd = signals_fd();
		pfd.events = POLLIN;
		if (poll(&pfd, 1, -1) == -1 && errno != EINTR)
			return -1;
		signals_drain();
	}
	child_ask_shutdown(r->ctx);
	return 0;
}

int
reader_main(const struct child_ctx *ctx)
{
	struct reader	 r;
	struct event	 hello;
	struct span	 cookie;
	char		 err[512];
	int		 code;

	memset(&r, 0, sizeof(r));
	r.ctx = ctx;
	r.cfg = ctx->cfg;
	if ((code = ldap_open(r.cfg, &r.ld, err, sizeof(err))) != 0 ||
	    (code = check_search(r.cfg, r.ld, err, sizeof(err))) != 0)
		child_startup_failed(ctx, code, "%s", err);
	/* An untrusted store is wiped, but only once startup has succeeded. */
	if (ctx->trusted && store_open(&r.store, r.cfg->data_dir, 0) == -1)
		child_startup_failed(ctx, EX_CONFIG, "cannot open the store in "
		    "%s", r.cfg->data_dir);
	if (barrier_wait(ctx->barrier, &sig_term, ctx->supervisor) == -1)
		exit(EX_SOFTWARE);
	if (!ctx->trusted && store_open(&r.store, r.cfg->data_dir, 1) == -1)
		fatalx(EX_SOFTWARE, "cannot create the store in %s",
		    r.cfg->data_dir);

	pipes_init(&r.pipes, ctx->pipes, ctx->workers);
	memset(&hello, 0, sizeof(hello));
	hello.type = EV_HELLO;
	hello.reload = store_get_meta(r.store, "cookie", &cookie) != 1;
	store_commit(r.store);
	pipes_send_all(&r.pipes, &hello);
	code = 0;
	if (pipes_flush(&r.pipes, 1) == -1 || wait_for_stop(&r) == -1)
		code = EX_SOFTWARE;
	if (store_commit(r.store) == -1 || store_sync(r.store) == -1)
		code = EX_SOFTWARE;
	store_close(r.store);
	pipes_free(&r.pipes);
	ldap_unbind_ext(r.ld, NULL, NULL);
	return code;
}
