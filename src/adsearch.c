/*
 * One search of the DirSync reader, run to its end: each message to the
 * caller as it comes, the process awake to signals (a stop abandons the
 * search), and a server that stays silent too long, or answers with
 * something no search gets, told apart from one that answered.
 */
#include <errno.h>
#include <ldap.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "ldapfeed.h"

#define SILENCE_MS	(120 * 1000)	/* no message this long: lost */

/* Result codes after which trying again cannot help (doc/providers.md). */
int
ad_permanent(int err)
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
	case LDAP_UNWILLING_TO_PERFORM:
		return 1;
	default:
		return 0;
	}
}

static int
lost(LDAP *ld, struct ad_search *s, int msgid, const char *why)
{
	int	 err = LDAP_SERVER_DOWN;

	if (why == NULL) {
		ldap_get_option(ld, LDAP_OPT_RESULT_CODE, &err);
		why = ldap_err2string(err);
	}
	snprintf(s->text, sizeof(s->text), "%s", why);
	if (msgid >= 0)
		ldap_abandon_ext(ld, msgid, NULL, NULL);
	return ADS_LOST;
}

/* The SearchResultDone: its code, its text into s->text, its controls. */
static int
done(LDAP *ld, struct ad_search *s, LDAPMessage *msg)
{
	char	*text = NULL;
	int	 err;

	if (ldap_parse_result(ld, msg, &err, NULL, &text, NULL, &s->done_ctrls,
	    0) != LDAP_SUCCESS) {
		snprintf(s->text, sizeof(s->text), "a malformed search result");
		return LDAP_PROTOCOL_ERROR;
	}
	snprintf(s->text, sizeof(s->text), "%s (%d)%s%s", ldap_err2string(err),
	    err, text && *text ? ": " : "", text ? text : "");
	ldap_memfree(text);
	return err;
}

int
ad_search_run(LDAP *ld, struct ad_search *s)
{
	struct timeval	 zero = { 0, 0 };
	struct pollfd	 pfd[2];
	LDAPMessage	*msg;
	char		 what[400];
	int64_t		 last;
	int		 fd = -1, msgid, rc, r;

	s->text[0] = '\0';
	s->done_ctrls = NULL;
	if (ldap_get_option(ld, LDAP_OPT_DESC, &fd) != LDAP_OPT_SUCCESS ||
	    fd < 0)
		return lost(ld, s, -1, "not connected");
	rc = ldap_search_ext(ld, s->base, s->scope, s->filter, s->attrs, 0,
	    s->ctrls, NULL, NULL, LDAP_NO_LIMIT, &msgid);
	if (rc == LDAP_FILTER_ERROR) {
		snprintf(s->text, sizeof(s->text), "bad filter %s", s->filter);
		return ADS_FAIL;
	}
	if (rc != LDAP_SUCCESS)
		return lost(ld, s, -1, ldap_err2string(rc));
	last = clock_ms();
	for (;;) {
		if (sig_term) {
			ldap_abandon_ext(ld, msgid, NULL, NULL);
			return ADS_STOP;
		}
		/* What libldap holds first: buffered data wakes no poll. */
		while ((rc = ldap_result(ld, msgid, LDAP_MSG_ONE, &zero,
		    &msg)) > 0) {
			last = clock_ms();
			switch (ldap_msgtype(msg)) {
			case LDAP_RES_SEARCH_ENTRY:
				r = s->entry(s->arg, msg);
				ldap_msgfree(msg);
				if (r == -1) {
					ldap_abandon_ext(ld, msgid, NULL, NULL);
					return ADS_FAIL;
				}
				break;
			case LDAP_RES_SEARCH_RESULT:
				r = done(ld, s, msg);
				ldap_msgfree(msg);
				return r;
			case LDAP_RES_SEARCH_REFERENCE:
			case LDAP_RES_INTERMEDIATE:
				ldap_msgfree(msg);
				break;
			default:
				/* the search is over for libldap: say what came */
				conn_describe_response(ld, msg, what, sizeof(what));
				snprintf(s->text, sizeof(s->text), "the server "
				    "answered the search with %s", what);
				ldap_msgfree(msg);
				return LDAP_PROTOCOL_ERROR;
			}
			if (sig_term)
				break;
		}
		if (rc == -1)
			return lost(ld, s, -1, NULL);
		if (sig_term)
			continue;
		if (clock_ms() - last >= SILENCE_MS)
			return lost(ld, s, msgid, "the server sent nothing "
			    "for 120 s");
		pfd[0].fd = fd;
		pfd[0].events = POLLIN;
		pfd[1].fd = signals_fd();
		pfd[1].events = POLLIN;
		if (poll(pfd, 2, (int)(SILENCE_MS - (clock_ms() - last)) + 1) ==
		    -1 && errno != EINTR) {
			log_warn("poll");
			ldap_abandon_ext(ld, msgid, NULL, NULL);
			return ADS_FAIL;
		}
		if (pfd[1].revents)
			signals_drain();
	}
}

/*
 * A search a page at a time (RFC 2696): AD ends an unpaged search at its
 * MaxPageSize (1000 entries).  s->ctrls is set here; between(s->arg)
 * runs between two pages.  Returns as ad_search_run, for the last page or
 * the first that failed.
 */
int
ad_search_paged(LDAP *ld, struct ad_search *s, int (*between)(void *))
{
	struct berval	 cookie = { 0, NULL }, value;
	LDAPControl	 c, *ctrls[2] = { &c, NULL }, *pc;
	ber_int_t	 estimate;
	int		 rc;

	for (;;) {
		rc = ldap_create_page_control_value(ld, AD_PAGE_SIZE, &cookie,
		    &value);
		ber_memfree(cookie.bv_val);
		cookie.bv_val = NULL;
		cookie.bv_len = 0;
		if (rc != LDAP_SUCCESS) {
			snprintf(s->text, sizeof(s->text), "paged results: %s",
			    ldap_err2string(rc));
			return ADS_FAIL;
		}
		c.ldctl_oid = LDAP_CONTROL_PAGEDRESULTS;
		c.ldctl_value = value;
		c.ldctl_iscritical = 0;
		s->ctrls = ctrls;
		rc = ad_search_run(ld, s);
		s->ctrls = NULL;
		ber_memfree(value.bv_val);
		if (rc != LDAP_SUCCESS) {
			ldap_controls_free(s->done_ctrls);
			s->done_ctrls = NULL;
			return rc;
		}
		/* a server that does not page sends all and no control */
		pc = ldap_control_find(LDAP_CONTROL_PAGEDRESULTS, s->done_ctrls,
		    NULL);
		if (pc != NULL && ldap_parse_pageresponse_control(ld, pc,
		    &estimate, &cookie) != LDAP_SUCCESS) {
			snprintf(s->text, sizeof(s->text), "a malformed paged "
			    "results control");
			rc = LDAP_PROTOCOL_ERROR;
		}
		ldap_controls_free(s->done_ctrls);
		s->done_ctrls = NULL;
		if (rc != LDAP_SUCCESS || pc == NULL || cookie.bv_len == 0) {
			ber_memfree(cookie.bv_val);
			return rc;
		}
		if (between != NULL && between(s->arg) == -1) {
			ber_memfree(cookie.bv_val);
			return ADS_FAIL;
		}
	}
}
