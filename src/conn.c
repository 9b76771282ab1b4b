/*
 * The reader's LDAP connection: connect, StartTLS, bind (anonymous, simple,
 * SASL EXTERNAL), and the check that the search is valid, each failure
 * sorted into its exit status (doc/processes.md, "Exit status"; ldapfeed.8,
 * EXIT STATUS).
 */
#include <ldap.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sysexits.h>

#include "ldapfeed.h"

#define NETWORK_TIMEOUT_SECS	10
#define RETRO_PLUGIN_DN		"cn=Retro Changelog Plugin,cn=plugins,cn=config"
#define RETRO_UNIQUE_ID		"nsuniqueid:targetUniqueId"

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

static int
is_oid(const struct berval *v, const char *oid)
{
	return v->bv_len == strlen(oid) && memcmp(v->bv_val, oid,
	    v->bv_len) == 0;
}

/*
 * What the server says it is, from its root DSE (RFC 4512, section 5.1):
 * 389-ds has rules of its own, and Active Directory (DirSync offered) a
 * reader of its own (doc/providers.md).  A root DSE the bind
 * identity may not read says nothing: the OpenLDAP rules apply.
 */
void
conn_provider(LDAP *ld, struct provider *p)
{
	struct timeval	 tv = { NETWORK_TIMEOUT_SECS, 0 };
	char		*attrs[] = { "vendorName", "supportedControl", NULL };
	struct berval	**v;
	LDAPMessage	*res = NULL, *e;
	int		 i;

	memset(p, 0, sizeof(*p));
	p->sync_known = 0;
	if (ldap_search_ext_s(ld, "", LDAP_SCOPE_BASE, "(objectClass=*)",
	    attrs, 0, NULL, NULL, &tv, 1, &res) != LDAP_SUCCESS ||
	    (e = ldap_first_entry(ld, res)) == NULL) {
		ldap_msgfree(res);
		return;
	}
	if ((v = ldap_get_values_len(ld, e, "vendorName")) != NULL) {
		for (i = 0; v[i]; i++)
			if (memmem(v[i]->bv_val, v[i]->bv_len, "389", 3))
				p->kind = PROVIDER_389DS;
		ldap_value_free_len(v);
	}
	if ((v = ldap_get_values_len(ld, e, "supportedControl")) != NULL) {
		p->sync_known = 1;
		for (i = 0; v[i]; i++) {
			p->has_sync |= is_oid(v[i], LDAP_CONTROL_SYNC);
			p->has_dirsync |= is_oid(v[i], LDAP_CONTROL_X_DIRSYNC);
			p->has_notify |= is_oid(v[i],
			    LDAP_CONTROL_X_SERVER_NOTIFICATION);
		}
		ldap_value_free_len(v);
	}
	if (p->has_dirsync)
		p->kind = PROVIDER_AD;
	ldap_msgfree(res);
}

/*
 * The protocol to follow the search with (doc/providers.md): forced by
 * --protocol, else RFC 4533 where the root DSE offers it (or says
 * nothing), else DirSync where it offers that; PROTOCOL_AUTO when it
 * offers neither.
 */
enum protocol
conn_protocol(const struct config *cfg, const struct provider *p)
{
	if (cfg->protocol != PROTOCOL_AUTO)
		return cfg->protocol;
	if (!p->sync_known || p->has_sync)
		return PROTOCOL_SYNCREPL;
	return p->has_dirsync ? PROTOCOL_DIRSYNC : PROTOCOL_AUTO;
}

/*
 * 389-ds: the Content Synchronization plugin matches the Retro Changelog's
 * records to entries by targetUniqueId; a changelog that does not record
 * it makes refreshes from a cookie silently miss changes.  Returns 1 (it
 * does), 0 (it does not: the fix in err), -1 (the bind identity may not
 * read the plugin's settings: nothing known).
 */
int
conn_check_retro(LDAP *ld, char *err, size_t errlen)
{
	struct timeval	 tv = { NETWORK_TIMEOUT_SECS, 0 };
	char		*attrs[] = { "nsslapd-attribute", NULL };
	struct berval	**v;
	LDAPMessage	*res = NULL, *e;
	int		 i, found = 0;

	if (ldap_search_ext_s(ld, RETRO_PLUGIN_DN, LDAP_SCOPE_BASE,
	    "(objectClass=*)", attrs, 0, NULL, NULL, &tv, 1, &res) !=
	    LDAP_SUCCESS || (e = ldap_first_entry(ld, res)) == NULL) {
		ldap_msgfree(res);
		return -1;
	}
	if ((v = ldap_get_values_len(ld, e, "nsslapd-attribute")) != NULL) {
		for (i = 0; v[i]; i++)
			if (v[i]->bv_len == strlen(RETRO_UNIQUE_ID) &&
			    strncasecmp(v[i]->bv_val, RETRO_UNIQUE_ID,
			    v[i]->bv_len) == 0)
				found = 1;
		ldap_value_free_len(v);
	}
	ldap_msgfree(res);
	if (!found)
		snprintf(err, errlen, "the Retro Changelog does not record "
		    "targetUniqueId, so refreshes from a cookie would miss "
		    "changes: add 'nsslapd-attribute: %s' to %s and restart "
		    "the server", RETRO_UNIQUE_ID, RETRO_PLUGIN_DN);
	return found;
}

/* What kind of response a message is, for a log line. */
static const char *
response_name(ber_tag_t type)
{
	switch (type) {
	case LDAP_RES_BIND:
		return "a bind response";
	case LDAP_RES_MODIFY:
		return "a modify response";
	case LDAP_RES_ADD:
		return "an add response";
	case LDAP_RES_DELETE:
		return "a delete response";
	case LDAP_RES_MODDN:
		return "a modify DN response";
	case LDAP_RES_COMPARE:
		return "a compare response";
	case LDAP_RES_EXTENDED:
		return "an extended response";
	default:
		return "a response of an unknown type";
	}
}

/*
 * A response a search never gets (RFC 4511, section 4.5.2: entries,
 * references and one SearchResultDone), said in one line with the
 * server's result code and text: Samba answers a search whose critical
 * control it does not know with an ExtendedResponse, result 12, and then
 * never ends the search.  Returns the result code, or -1 when the
 * response says none.
 */
int
conn_describe_response(struct ldap *ld, struct ldapmsg *msg, char *out,
    size_t outlen)
{
	char	*text = NULL, *p;
	int	 err = -1;

	if (ldap_parse_result(ld, msg, &err, NULL, &text, NULL, NULL, 0) !=
	    LDAP_SUCCESS) {
		snprintf(out, outlen, "%s (tag 0x%lx) without a result",
		    response_name(ldap_msgtype(msg)),
		    (unsigned long)ldap_msgtype(msg));
		return -1;
	}
	snprintf(out, outlen, "%s, result %d (%s)%s%s",
	    response_name(ldap_msgtype(msg)), err, ldap_err2string(err),
	    text && *text ? ": " : "", text ? text : "");
	for (p = out; *p; p++)
		if ((unsigned char)*p < ' ')
			*p = ' ';
	ldap_memfree(text);
	return err;
}
