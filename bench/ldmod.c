/*
 * ldmod: LDAP modifies for benchmarks, timed with CLOCK_MONOTONIC (the
 * clock of sink and of Python's time.monotonic()).  Modify i (0 <= i < n)
 * goes to DN sprintf(DNFMT, start + i * step) and does OP on ATTR with the
 * value sprintf(VALFMT, vbase + i).  C connections (threads) share the
 * modifies round-robin; each waits for every answer before the next.
 *
 *   ldmod -H URL -D BINDDN -w PW -F DNFMT -A ATTR -V VALFMT [-O OP]
 *         [-n N] [-s START] [-k STEP] [-v VBASE] [-c C] [-g GAP_US] [-l LOG]
 *
 * The log gets "T_REQUEST T_RESPONSE DN" per modify.  On stdout, last:
 *   done T_FIRST_REQUEST T_LAST_RESPONSE N ERRORS
 */
#include <errno.h>
#include <ldap.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct job {
	int		 id;
	LDAP		*ld;
	double		*treq, *tresp;
	int		 errors;
};

static const char *url, *binddn, *pw, *dnfmt, *attr, *valfmt;
static int	 op = LDAP_MOD_REPLACE, conns = 1;
static long	 n = 1, start, step = 1, vbase, gap_us;

static double
now(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
dn_of(long i, char *buf, size_t len)
{
	snprintf(buf, len, dnfmt, start + i * step);
}

static void *
run(void *arg)
{
	struct job	*j = arg;
	char		 dn[512], val[512], *vals[2];
	LDAPMod		 mod, *mods[2];
	long		 i;
	int		 rc;

	for (i = j->id; i < n; i += conns) {
		dn_of(i, dn, sizeof(dn));
		snprintf(val, sizeof(val), valfmt, vbase + i);
		vals[0] = val;
		vals[1] = NULL;
		mod.mod_op = op;
		mod.mod_type = (char *)attr;
		mod.mod_values = vals;
		mods[0] = &mod;
		mods[1] = NULL;
		j->treq[i] = now();
		rc = ldap_modify_ext_s(j->ld, dn, mods, NULL, NULL);
		j->tresp[i] = now();
		if (rc != LDAP_SUCCESS) {
			if (j->errors++ < 5)
				fprintf(stderr, "ldmod: %s: %s\n", dn,
				    ldap_err2string(rc));
		}
		if (gap_us)
			usleep(gap_us);
	}
	return NULL;
}

int
main(int argc, char **argv)
{
	struct berval	 cred;
	struct job	*jobs;
	pthread_t	*th;
	double		*treq, *tresp, first = 0, last = 0;
	const char	*logfile = NULL;
	char		 dn[512];
	FILE		*fp;
	long		 i;
	int		 ch, c, v3 = LDAP_VERSION3, errors = 0;

	while ((ch = getopt(argc, argv, "H:D:w:F:A:V:O:n:s:k:v:c:g:l:")) != -1) {
		switch (ch) {
		case 'H': url = optarg; break;
		case 'D': binddn = optarg; break;
		case 'w': pw = optarg; break;
		case 'F': dnfmt = optarg; break;
		case 'A': attr = optarg; break;
		case 'V': valfmt = optarg; break;
		case 'O':
			op = strcmp(optarg, "add") == 0 ? LDAP_MOD_ADD :
			    strcmp(optarg, "delete") == 0 ? LDAP_MOD_DELETE :
			    LDAP_MOD_REPLACE;
			break;
		case 'n': n = atol(optarg); break;
		case 's': start = atol(optarg); break;
		case 'k': step = atol(optarg); break;
		case 'v': vbase = atol(optarg); break;
		case 'c': conns = atoi(optarg); break;
		case 'g': gap_us = atol(optarg); break;
		case 'l': logfile = optarg; break;
		default:
			fprintf(stderr, "usage: see the comment in ldmod.c\n");
			return 64;
		}
	}
	if (!url || !dnfmt || !attr || !valfmt || n < 1 || conns < 1)
		return 64;
	treq = calloc(n, sizeof(double));
	tresp = calloc(n, sizeof(double));
	jobs = calloc(conns, sizeof(*jobs));
	th = calloc(conns, sizeof(*th));
	for (c = 0; c < conns; c++) {
		jobs[c].id = c;
		jobs[c].treq = treq;
		jobs[c].tresp = tresp;
		if (ldap_initialize(&jobs[c].ld, url) != LDAP_SUCCESS)
			return 69;
		ldap_set_option(jobs[c].ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
		cred.bv_val = (char *)(pw ? pw : "");
		cred.bv_len = strlen(cred.bv_val);
		if (ldap_sasl_bind_s(jobs[c].ld, binddn, LDAP_SASL_SIMPLE, &cred,
		    NULL, NULL, NULL) != LDAP_SUCCESS) {
			fprintf(stderr, "ldmod: bind failed\n");
			return 77;
		}
	}
	for (c = 0; c < conns; c++)
		pthread_create(&th[c], NULL, run, &jobs[c]);
	for (c = 0; c < conns; c++) {
		pthread_join(th[c], NULL);
		errors += jobs[c].errors;
		ldap_unbind_ext(jobs[c].ld, NULL, NULL);
	}
	for (i = 0; i < n; i++) {
		if (first == 0 || treq[i] < first)
			first = treq[i];
		if (tresp[i] > last)
			last = tresp[i];
	}
	if (logfile) {
		if ((fp = fopen(logfile, "w")) == NULL)
			return 73;
		for (i = 0; i < n; i++) {
			dn_of(i, dn, sizeof(dn));
			fprintf(fp, "%.9f %.9f %s\n", treq[i], tresp[i], dn);
		}
		fclose(fp);
	}
	printf("done %.9f %.9f %ld %d\n", first, last, n, errors);
	return errors ? 1 : 0;
}
