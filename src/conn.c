/*
 * The reader's LDAP connection: connect, StartTLS, bind (anonymous, simple,
 * SASL EXTERNAL), and the check that the search is valid, each failure
 * sorted into its exit status (doc/processes.md, "Exit status"; ldapfeed.8,
 * EXIT STATUS).
 */
#include <ldap.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>

#include "ldapfeed.h"

#define NETWORK_TIMEOUT_SECS	10

/*
 * libldap's detail of the last failure on ld (a TLS library's certificate
 * verdict, a server's diagnostic text) as " (detail)" on one line, or "".
 */
static const char *
detail(LDAP *ld, char *buf, size_t len)
{
	char	*msg = NULL, *p;

	buf[0] = '\0';
	/* GnuTLS-built libldap says only this of a refused certificate */
	if (ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &msg) ==
	    LDAP_OPT_SUCCESS && msg != NULL && *msg != '\0' &&
	    strcmp(msg, "(unknown error code)") != 0) {
		snprintf(buf, len, " (%s)", msg);
		for (p = buf; *p; p++)
			if ((unsigned char)*p < ' ')
				*p = ' ';
	}
	ldap_memfree(msg);
	return buf;
}

/*
 * Connect, StartTLS if asked, bind.  Returns 0, or the sysexits code of the
 * failure with a one-line reason in err: 77 for refused credentials, 69 for
 * a server that cannot be reached or talked to.
 */
int
conn_open(const struct config *cfg, LDAP **ldp, char *err, size_t errlen)
{
	struct timeval	 tv = { NETWORK_TIMEOUT_SECS, 0 };
	struct berval	 cred = { 0, NULL };
	LDAP		*ld;
	const char	*dn = NULL, *mech = LDAP_SASL_SIMPLE;
	char		 why[256];
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
		snprintf(err, errlen, "%s: StartTLS failed: %s%s",
		    cfg->server_url, ldap_err2string(rc),
		    detail(ld, why, sizeof(why)));
		ldap_unbind_ext(ld, NULL, NULL);
		return EX_UNAVAILABLE;
	}
	if (cfg->bindname) {
		dn = cfg->bindname;
		cred.bv_val = (char *)cfg->password.data;
		cred.bv_len = cfg->password.len;
	} else if (cfg->saslmech) {
		/* EXTERNAL: empty credentials, not absent ones (absent gets
		 * saslBindInProgress and an empty challenge from slapd). */
		mech = cfg->saslmech;
		cred.bv_val = "";
	}
	rc = ldap_sasl_bind_s(ld, dn, mech, &cred, NULL, NULL, NULL);
	if (rc != LDAP_SUCCESS) {
		snprintf(err, errlen, "%s: bind%s%s failed: %s%s",
		    cfg->server_url, dn ? " as " : "", dn ? dn : "",
		    ldap_err2string(rc), detail(ld, why, sizeof(why)));
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
int
conn_check_search(const struct config *cfg, LDAP *ld, char *err, size_t errlen)
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
