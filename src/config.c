/*
 * The command line (ldapfeed.8, OPTIONS): flags, the LDAP URL, the
 * consumer's address, the secret files and the process budget, checked
 * once, up front.  The exit status of a refusal: ldapfeed.8, EXIT STATUS,
 * and doc/processes.md, "Exit status".
 */
#include <sys/stat.h>
#include <sys/un.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <ldap.h>
#include <netdb.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sysexits.h>
#include <unistd.h>

#include "ldapfeed.h"

enum {
	OPT_MODE = 256,
	OPT_FORMAT,
	OPT_STATUS_FILE,
	OPT_NATS_STREAM,
	OPT_NATS_SUBJECT,
	OPT_NATS_CA,
	OPT_NATS_REPLICAS,
	OPT_MAX_DELETE,
	OPT_CHECK,
	OPT_PROTOCOL,
	OPT_POLL_INTERVAL
};

static const struct option long_options[] = {
	{ "url",		required_argument,	NULL, 'H' },
	{ "password-file",	required_argument,	NULL, 'y' },
	{ "data-dir",		required_argument,	NULL, 'D' },
	{ "marker",		required_argument,	NULL, 'm' },
	{ "output",		required_argument,	NULL, 'o' },
	{ "output-type",	required_argument,	NULL, 't' },
	{ "auth-key",		required_argument,	NULL, 'k' },
	{ "processes",		required_argument,	NULL, 'p' },
	{ "mode",		required_argument,	NULL, OPT_MODE },
	{ "format",		required_argument,	NULL, OPT_FORMAT },
	{ "protocol",		required_argument,	NULL, OPT_PROTOCOL },
	{ "poll-interval",	required_argument,	NULL, OPT_POLL_INTERVAL },
	{ "starttls",		no_argument,		NULL, 'Z' },
	{ "foreground",		no_argument,		NULL, 'f' },
	{ "pidfile",		required_argument,	NULL, 'P' },
	{ "status-file",	required_argument,	NULL, OPT_STATUS_FILE },
	{ "nats-stream",	required_argument,	NULL, OPT_NATS_STREAM },
	{ "nats-subject",	required_argument,	NULL, OPT_NATS_SUBJECT },
	{ "nats-ca",		required_argument,	NULL, OPT_NATS_CA },
	{ "nats-replicas",	required_argument,	NULL, OPT_NATS_REPLICAS },
	{ "max-delete",		required_argument,	NULL, OPT_MAX_DELETE },
	{ "check",		no_argument,		NULL, OPT_CHECK },
	{ "verbose",		no_argument,		NULL, 'v' },
	{ "quiet",		no_argument,		NULL, 'q' },
	{ "version",		no_argument,		NULL, 'V' },
	{ "help",		no_argument,		NULL, 'h' },
	{ NULL,			0,			NULL, 0 }
};

void
config_usage(FILE *fp)
{
	fprintf(fp,
	    "usage: ldapfeed -H URL -D DATADIR -m MARKER -o ADDRESS [-k KEYFILE] [options]\n"
	    "  -H, --url URL            LDAP URL of the search (RFC 4516)\n"
	    "  -y, --password-file FILE simple-bind password (URL extension bindname=DN)\n"
	    "  -D, --data-dir DIR       the store's directory\n"
	    "  -m, --marker FILE        the clean-shutdown marker\n"
	    "  -o, --output ADDRESS     consumer: socket path, @abstract, HOST:PORT, [V6]:PORT,\n"
	    "                           or nats://HOST:PORT[,nats://...] (tls:// for TLS)\n"
	    "  -t, --output-type TYPE   unix, inet or nats (default: inferred from ADDRESS)\n"
	    "  -k, --auth-key FILE      shared authentication key (whole file); with nats:\n"
	    "                           a token file (first line) or a .creds file\n"
	    "  -p, --processes N        process budget (default 0: one per CPU)\n"
	    "      --mode MODE          persist (default) or refresh\n"
	    "      --format FORMAT      pickle (default) or json\n"
	    "      --protocol PROTOCOL  syncrepl or dirsync (default: from the server)\n"
	    "      --poll-interval SECS DirSync: poll at least this often (default 5)\n"
	    "  -Z, --starttls           StartTLS before binding\n"
	    "  -f, --foreground         stay in the foreground, log to stderr\n"
	    "  -P, --pidfile FILE       write the supervisor's pid\n"
	    "      --status-file FILE   Prometheus text status, rewritten periodically\n"
	    "      --max-delete N|P%%    refuse a refresh or reconcile deleting more\n"
	    "                           (default 50%%, never 100 or fewer; 100%% is off)\n"
	    "      --nats-stream NAME   JetStream stream (default LDAPFEED)\n"
	    "      --nats-subject PREFIX  subjects PREFIX.<type> (default ldapfeed)\n"
	    "      --nats-ca FILE       CA certificates for tls:// servers\n"
	    "      --nats-replicas N    replicas of a stream ldapfeed creates (default 1)\n"
	    "      --check              check everything a start needs, change nothing\n"
	    "  -v, --verbose / -q, --quiet\n"
	    "  -V, --version / -h, --help\n");
}

static int
fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return code;
}

int
config_cpus(void)
{
	cpu_set_t	 set;
	long		 n;

	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set);
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}

/* P from N, then W = max(1, P - 2): doc/processes.md, "The process budget". */
int
config_budget(int n, int cpus, int *workers, char *err, size_t errlen)
{
	long	 p;

	if (n == 1 || n == 2)
		return fail(err, errlen, EX_USAGE, "--processes %d: the "
		    "supervisor and the reader need two of the processes, so "
		    "use 0, a negative number, or at least 3", n);
	if (n == 0)
		p = cpus;
	else if (n < 0)
		p = (long)cpus + n;
	else
		p = n;
	*workers = p - 2 < 1 ? 1 : (int)(p - 2);
	return 0;
}

static int
parse_int(const char *s, int *out)
{
	char	*end;
	long	 v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || errno == ERANGE ||
	    v < -100000 || v > 100000)
		return -1;
	*out = (int)v;
	return 0;
}

/*
 * --max-delete N or P% (doc/safety.md, "The mass-delete guard"): a count,
 * or a share of the stored entries from 0 to 100.
 */
static int
parse_max_delete(const char *s, struct config *cfg)
{
	unsigned long long	 v;
	char			*end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -1;
	if (*end == '%' && end[1] == '\0' && v <= 100) {
		cfg->max_delete_pct = (int)v;
		cfg->max_delete = 0;
		return 0;
	}
	if (*end != '\0' || v > INT64_MAX)
		return -1;
	cfg->max_delete_pct = -1;
	cfg->max_delete = v;
	return 0;
}

/* Read a whole secret file; 66 if it cannot be read. */
static int
read_secret(const char *flag, const char *path, struct buf *out, char *err,
    size_t errlen)
{
	unsigned char	 chunk[4096];
	struct stat	 st;
	ssize_t		 n;
	int		 fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) == -1)
		return fail(err, errlen, EX_NOINPUT, "%s %s: %s", flag, path,
		    strerror(errno));
	if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
		close(fd);
		return fail(err, errlen, EX_NOINPUT, "%s %s: not a regular "
		    "file", flag, path);
	}
	/* All the room at once: a buffer that grows leaves copies behind. */
	buf_reserve(out, st.st_size > 0 ? (size_t)st.st_size + 1 : 64);
	for (;;) {
		n = read(fd, chunk, sizeof(chunk));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			close(fd);
			explicit_bzero(chunk, sizeof(chunk));
			return fail(err, errlen, EX_NOINPUT, "%s %s: %s", flag,
			    path, strerror(errno));
		}
		if (n == 0)
			break;
		buf_add(out, chunk, (size_t)n);
	}
	explicit_bzero(chunk, sizeof(chunk));
	close(fd);
	if (st.st_mode & (S_IRWXG | S_IRWXO))
		fprintf(stderr, "ldapfeed: warning: %s %s is readable by group "
		    "or others\n", flag, path);
	return 0;
}

/* The consumer's address: a unix path, @abstract, HOST:PORT or [V6]:PORT. */
int
config_parse_address(const char *addr, const char *type,
    struct sockaddr_storage *ss, socklen_t *sslen, char *err, size_t errlen)
{
	struct addrinfo	 hints, *res;
	struct sockaddr_un *sun;
	const char	*colon, *port, *p;
	char		 host[256];
	size_t		 hostlen, len;
	int		 inet, r;

	if (*addr == '\0')
		return fail(err, errlen, EX_USAGE, "--output: empty address");
	colon = strrchr(addr, ':');
	if (type == NULL) {
		inet = 0;
		if (*addr == '[')
			inet = 1;
		else if (*addr != '@' && strchr(addr, '/') == NULL &&
		    colon != NULL && colon != addr && colon[1] != '\0') {
			for (inet = 1, p = colon + 1; *p; p++)
				if (!isdigit((unsigned char)*p))
					inet = 0;
		}
	} else if (strcasecmp(type, "unix") == 0 ||
	    strcasecmp(type, "AF_UNIX") == 0)
		inet = 0;
	else if (strcasecmp(type, "inet") == 0 ||
	    strcasecmp(type, "AF_INET") == 0 ||
	    strcasecmp(type, "inet6") == 0 ||
	    strcasecmp(type, "AF_INET6") == 0)
		inet = 1;
	else
		return fail(err, errlen, EX_USAGE, "--output-type '%s': want "
		    "unix or inet", type);

	memset(ss, 0, sizeof(*ss));
	if (!inet) {
		sun = (struct sockaddr_un *)ss;
		sun->sun_family = AF_UNIX;
		len = strlen(addr);
		if (len >= sizeof(sun->sun_path))
			return fail(err, errlen, EX_USAGE, "--output '%s': "
			    "socket path longer than %zu bytes", addr,
			    sizeof(sun->sun_path) - 1);
		memcpy(sun->sun_path, addr, len);
		if (*addr == '@') {	/* Linux abstract namespace */
			if (len == 1)
				return fail(err, errlen, EX_USAGE, "--output "
				    "'@': empty abstract socket name");
			sun->sun_path[0] = '\0';
			*sslen = offsetof(struct sockaddr_un, sun_path) + len;
		} else
			*sslen = sizeof(*sun);
		return 0;
	}

	if (*addr == '[') {
		p = strchr(addr, ']');
		if (p == NULL || p[1] != ':')
			return fail(err, errlen, EX_USAGE, "--output '%s': want "
			    "[IPV6]:PORT", addr);
		hostlen = (size_t)(p - addr - 1);
		memcpy(host, addr + 1, hostlen < sizeof(host) ? hostlen : 0);
		port = p + 2;
	} else {
		if (colon == NULL)
			return fail(err, errlen, EX_USAGE, "--output '%s': want "
			    "HOST:PORT", addr);
		hostlen = (size_t)(colon - addr);
		memcpy(host, addr, hostlen < sizeof(host) ? hostlen : 0);
		port = colon + 1;
	}
	if (hostlen == 0 || hostlen >= sizeof(host))
		return fail(err, errlen, EX_USAGE, "--output '%s': bad host",
		    addr);
	host[hostlen] = '\0';
	for (p = port; *p; p++)
		if (!isdigit((unsigned char)*p))
			break;
	if (*port == '\0' || *p != '\0' || atol(port) < 1 ||
	    atol(port) > 65535 || strlen(port) > 5)
		return fail(err, errlen, EX_USAGE, "--output '%s': bad port "
		    "'%s'", addr, port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if ((r = getaddrinfo(host, port, &hints, &res)) != 0)
		return fail(err, errlen, EX_USAGE, "--output '%s': %s", addr,
		    gai_strerror(r));
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sslen = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* Has the URL a non-empty scope field?  libldap defaults it to base. */
static int
url_has_scope(const char *url)
{
	const char	*p;
	int		 field = 0;

	if ((p = strstr(url, "://")) == NULL || (p = strchr(p + 3, '/')) == NULL)
		return 0;
	for (; *p; p++) {
		if (*p == '?') {
			field++;
			if (field == 2)
				return p[1] != '\0' && p[1] != '?';
		}
	}
	return 0;
}

static int
parse_url(struct config *cfg, char *err, size_t errlen)
{
	LDAPURLDesc	*lud;
	char		*dn, **attrs, *filter, **exts, **e;
	const char	*val;
	int		 r, scope, i, n;

	if ((r = ldap_url_parse(cfg->url, &lud)) != LDAP_URL_SUCCESS)
		return fail(err, errlen, EX_USAGE, "--url '%s': not an LDAP "
		    "URL (%s)", cfg->url, r == LDAP_URL_ERR_BADSCHEME ?
		    "scheme must be ldap, ldaps or ldapi" :
		    r == LDAP_URL_ERR_BADSCOPE ? "bad scope" :
		    r == LDAP_URL_ERR_BADFILTER ? "bad filter" :
		    r == LDAP_URL_ERR_BADEXTS ? "bad extension" :
		    "malformed");
	if (lud->lud_port < 0 || lud->lud_port > 65535) {
		r = fail(err, errlen, EX_USAGE, "--url '%s': bad port %d",
		    cfg->url, lud->lud_port);
		goto out;
	}
	cfg->base = xstrdup(lud->lud_dn ? lud->lud_dn : "");
	cfg->scope = url_has_scope(cfg->url) ? lud->lud_scope :
	    LDAP_SCOPE_SUBTREE;
	cfg->filter = xstrdup(lud->lud_filter && *lud->lud_filter ?
	    lud->lud_filter : "(objectClass=*)");
	if (lud->lud_attrs != NULL && lud->lud_attrs[0] != NULL) {
		for (n = 0; lud->lud_attrs[n]; n++)
			;
		cfg->attrs = xcalloc((size_t)n + 1, sizeof(char *));
		for (i = 0; i < n; i++)
			cfg->attrs[i] = xstrdup(lud->lud_attrs[i]);
	}
	for (e = lud->lud_exts; e && *e; e++) {
		const char	*ext = **e == '!' ? *e + 1 : *e;
		char	       **slot;

		if (strncasecmp(ext, "bindname=", 9) == 0) {
			slot = &cfg->bindname;
			val = ext + 9;
		} else if (strncasecmp(ext, "x-saslmech=", 11) == 0) {
			slot = &cfg->saslmech;
			val = ext + 11;
		} else if (**e == '!') {
			r = fail(err, errlen, EX_USAGE, "--url: unsupported "
			    "critical extension '%s'", ext);
			goto out;
		} else
			continue;	/* RFC 4516: ignore non-critical ones */
		free(*slot);
		*slot = xstrdup(val);
	}
	if (cfg->saslmech && strcasecmp(cfg->saslmech, "EXTERNAL") != 0) {
		r = fail(err, errlen, EX_USAGE, "--url: SASL mechanism '%s' is "
		    "not supported (only EXTERNAL)", cfg->saslmech);
		goto out;
	}
	if (cfg->saslmech && cfg->bindname) {
		r = fail(err, errlen, EX_USAGE, "--url: bindname= and "
		    "x-saslmech= exclude each other");
		goto out;
	}

	/* The server part alone, for ldap_initialize. */
	dn = lud->lud_dn;
	attrs = lud->lud_attrs;
	filter = lud->lud_filter;
	exts = lud->lud_exts;
	scope = lud->lud_scope;
	lud->lud_dn = NULL;
	lud->lud_attrs = NULL;
	lud->lud_filter = NULL;
	lud->lud_exts = NULL;
	lud->lud_scope = -1;
	cfg->server_url = ldap_url_desc2str(lud);
	lud->lud_dn = dn;
	lud->lud_attrs = attrs;
	lud->lud_filter = filter;
	lud->lud_exts = exts;
	lud->lud_scope = scope;
	if (cfg->server_url == NULL) {
		r = fail(err, errlen, EX_USAGE, "--url '%s': bad server part",
		    cfg->url);
		goto out;
	}
	r = 0;
out:
	ldap_free_urldesc(lud);
	return r;
}

/* A daemon runs in /: every path it keeps must not depend on the cwd. */
static void
absolute(char **path)
{
	char	 cwd[4096], *abs;
	size_t	 len;

	if (*path == NULL || **path == '/' || getcwd(cwd, sizeof(cwd)) == NULL)
		return;
	len = strlen(cwd) + 1 + strlen(*path) + 1;
	abs = xmalloc(len);
	snprintf(abs, len, "%s/%s", cwd, *path);
	free(*path);
	*path = abs;
}

/* Is s a nats:// or tls:// URL (the -o of the NATS output)? */
static int
is_nats_url(const char *s)
{
	return strncasecmp(s, "nats://", 7) == 0 ||
	    strncasecmp(s, "tls://", 6) == 0;
}

/*
 * -o nats://HOST:PORT[,nats://HOST2:PORT2...]: libnats takes a list with
 * natsOptions_SetServers, one string per server.
 */
static int
parse_nats_urls(struct config *cfg, char *err, size_t errlen)
{
	char	*list, *tok, *save = NULL;
	int	 n = 0;

	list = xstrdup(cfg->output);
	cfg->nats_urls = xcalloc(strlen(list) / 2 + 2, sizeof(char *));
	for (tok = strtok_r(list, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ')
			tok++;
		if (!is_nats_url(tok) || strchr(tok, ' ') != NULL ||
		    strchr(tok, '/') - tok + 2 == (long)strlen(tok)) {
			free(list);
			return fail(err, errlen, EX_USAGE, "--output '%s': want "
			    "nats://HOST:PORT or tls://HOST:PORT, comma-separated",
			    cfg->output);
		}
		cfg->nats_urls[n++] = xstrdup(tok);
	}
	free(list);
	if (n == 0)
		return fail(err, errlen, EX_USAGE, "--output '%s': no server",
		    cfg->output);
	cfg->nats_nurls = n;
	return 0;
}

/* A stream name: no wildcard, dot, space or path separator (NATS rules). */
static int
check_nats_names(const struct config *cfg, char *err, size_t errlen)
{
	const char	*p;
	int		 dot = 1;

	if (*cfg->nats_stream == '\0' ||
	    strpbrk(cfg->nats_stream, ".*> \t/\\") != NULL)
		return fail(err, errlen, EX_USAGE, "--nats-stream '%s': not a "
		    "stream name", cfg->nats_stream);
	/* PREFIX: dot-separated tokens, none empty, no wildcard. */
	for (p = cfg->nats_subject; *p; p++) {
		if (*p == '.' && dot)
			break;
		if (*p == '*' || *p == '>' || *p == ' ' || *p == '\t')
			break;
		dot = *p == '.';
	}
	if (*p != '\0' || dot)
		return fail(err, errlen, EX_USAGE, "--nats-subject '%s': want "
		    "dot-separated tokens without wildcards", cfg->nats_subject);
	return 0;
}

/*
 * The NATS credential (ldapfeed.8, OPTIONS): a .creds file holds a user
 * JWT and an NKey seed, each between "-----BEGIN" and "------END" lines;
 * anything else is a token, its first line.
 */
static int
nats_credential(struct config *cfg, char *err, size_t errlen)
{
	size_t	 i;

	if (memmem(cfg->key.data, cfg->key.len, "BEGIN NATS USER JWT", 19) !=
	    NULL) {
		if (memmem(cfg->key.data, cfg->key.len, "NKEY SEED", 9) == NULL)
			return fail(err, errlen, EX_USAGE, "--auth-key %s: a "
			    ".creds file without its NKey seed", cfg->key_file);
		cfg->nats_cred = NATS_CRED_CREDS;
		return 0;
	}
	for (i = 0; i < cfg->key.len; i++)
		if (cfg->key.data[i] == '\n')
			break;
	if (i > 0 && cfg->key.data[i - 1] == '\r')
		i--;
	explicit_bzero(cfg->key.data + i, cfg->key.len - i);
	cfg->key.len = i;
	if (i == 0 || memchr(cfg->key.data, '\0', i) != NULL)
		return fail(err, errlen, EX_USAGE, "--auth-key %s: an empty "
		    "token", cfg->key_file);
	buf_reserve(&cfg->key, 1);
	cfg->key.data[cfg->key.len] = '\0';	/* libnats takes a C string */
	cfg->nats_cred = NATS_CRED_TOKEN;
	return 0;
}

int
config_parse(struct config *cfg, int argc, char **argv, char *err,
    size_t errlen)
{
	const char	*type = NULL, *mode = "persist", *format = NULL,
			*protocol = NULL;
	int		 ch, r;
	size_t		 i;

	memset(cfg, 0, sizeof(*cfg));
	cfg->foreground = 0;
	cfg->max_delete_pct = GUARD_DEFAULT_PCT;
	optind = 0;	/* glibc: a full reset, for repeated parses (tests) */
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":H:y:D:m:o:t:k:p:ZfP:vqVh",
	    long_options, NULL)) != -1) {
		switch (ch) {
		case 'H':
			free(cfg->url);
			cfg->url = xstrdup(optarg);
			break;
		case 'y':
			free(cfg->password_file);
			cfg->password_file = xstrdup(optarg);
			break;
		case 'D':
			free(cfg->data_dir);
			cfg->data_dir = xstrdup(optarg);
			break;
		case 'm':
			free(cfg->marker);
			cfg->marker = xstrdup(optarg);
			break;
		case 'o':
			free(cfg->output);
			cfg->output = xstrdup(optarg);
			break;
		case 't':
			type = optarg;
			break;
		case 'k':
			free(cfg->key_file);
			cfg->key_file = xstrdup(optarg);
			break;
		case 'p':
			if (parse_int(optarg, &cfg->processes) == -1)
				return fail(err, errlen, EX_USAGE, "--processes "
				    "'%s': not a number", optarg);
			break;
		case OPT_MODE:
			mode = optarg;
			break;
		case OPT_FORMAT:
			format = optarg;
			break;
		case OPT_PROTOCOL:
			protocol = optarg;
			break;
		case OPT_POLL_INTERVAL:
			if (parse_int(optarg, &cfg->poll_interval) == -1 ||
			    cfg->poll_interval < 1 || cfg->poll_interval > 86400)
				return fail(err, errlen, EX_USAGE,
				    "--poll-interval '%s': want 1 to 86400 "
				    "seconds", optarg);
			break;
		case OPT_STATUS_FILE:
			free(cfg->status_file);
			cfg->status_file = xstrdup(optarg);
			break;
		case OPT_NATS_STREAM:
			free(cfg->nats_stream);
			cfg->nats_stream = xstrdup(optarg);
			break;
		case OPT_NATS_SUBJECT:
			free(cfg->nats_subject);
			cfg->nats_subject = xstrdup(optarg);
			break;
		case OPT_NATS_CA:
			free(cfg->nats_ca);
			cfg->nats_ca = xstrdup(optarg);
			break;
		case OPT_NATS_REPLICAS:
			if (parse_int(optarg, &cfg->nats_replicas) == -1 ||
			    cfg->nats_replicas < 1 || cfg->nats_replicas > 5)
				return fail(err, errlen, EX_USAGE,
				    "--nats-replicas '%s': want 1 to 5", optarg);
			break;
		case OPT_CHECK:
			cfg->check = 1;
			break;
		case OPT_MAX_DELETE:
			if (parse_max_delete(optarg, cfg) == -1)
				return fail(err, errlen, EX_USAGE, "--max-delete "
				    "'%s': want a number of entries, or a "
				    "percentage from 0%% to 100%%", optarg);
			break;
		case 'Z':
			cfg->starttls = 1;
			break;
		case 'f':
			cfg->foreground = 1;
			break;
		case 'P':
			free(cfg->pidfile);
			cfg->pidfile = xstrdup(optarg);
			break;
		case 'v':
			cfg->verbosity++;
			break;
		case 'q':
			cfg->verbosity = -1;
			break;
		case 'V':
			printf("ldapfeed %s\n", LDAPFEED_VERSION);
			return CONFIG_DONE;
		case 'h':
			config_usage(stdout);
			return CONFIG_DONE;
		case ':':
			return fail(err, errlen, EX_USAGE, "option %s needs a "
			    "value", argv[optind - 1]);
		default:
			return fail(err, errlen, EX_USAGE, "unknown option "
			    "'%s' (try --help)", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return fail(err, errlen, EX_USAGE, "unexpected argument '%s'",
		    argv[optind]);

	if (cfg->url == NULL)
		return fail(err, errlen, EX_USAGE, "missing -H/--url");
	if (cfg->data_dir == NULL || *cfg->data_dir == '\0')
		return fail(err, errlen, EX_USAGE, "missing -D/--data-dir");
	if (cfg->marker == NULL || *cfg->marker == '\0')
		return fail(err, errlen, EX_USAGE, "missing -m/--marker");
	if (cfg->output == NULL)
		return fail(err, errlen, EX_USAGE, "missing -o/--output");
	if ((type != NULL && strcasecmp(type, "nats") == 0) ||
	    (type == NULL && is_nats_url(cfg->output)))
		cfg->output_kind = OUTPUT_NATS;
	if (cfg->output_kind != OUTPUT_NATS && cfg->key_file == NULL)
		return fail(err, errlen, EX_USAGE, "missing -k/--auth-key");
	if (cfg->output_kind != OUTPUT_NATS && (cfg->nats_stream ||
	    cfg->nats_subject || cfg->nats_ca || cfg->nats_replicas))
		return fail(err, errlen, EX_USAGE, "--nats-* options need a "
		    "nats:// or tls:// output");

	if (strcmp(mode, "persist") == 0)
		cfg->mode = MODE_PERSIST;
	else if (strcmp(mode, "refresh") == 0)
		cfg->mode = MODE_REFRESH;
	else
		return fail(err, errlen, EX_USAGE, "--mode '%s': want persist "
		    "or refresh", mode);
	if (protocol == NULL)
		cfg->protocol = PROTOCOL_AUTO;
	else if (strcmp(protocol, "syncrepl") == 0)
		cfg->protocol = PROTOCOL_SYNCREPL;
	else if (strcmp(protocol, "dirsync") == 0)
		cfg->protocol = PROTOCOL_DIRSYNC;
	else
		return fail(err, errlen, EX_USAGE, "--protocol '%s': want "
		    "syncrepl or dirsync", protocol);
	if (cfg->poll_interval == 0)
		cfg->poll_interval = 5;
	/* JSON by default into a stream: any language reads it. */
	if (format == NULL)
		format = cfg->output_kind == OUTPUT_NATS ? "json" : "pickle";
	if (strcmp(format, "pickle") == 0)
		cfg->format = FORMAT_PICKLE;
	else if (strcmp(format, "json") == 0)
		cfg->format = FORMAT_JSON;
	else
		return fail(err, errlen, EX_USAGE, "--format '%s': want pickle "
		    "or json", format);

	if ((r = config_budget(cfg->processes, config_cpus(), &cfg->workers,
	    err, errlen)) != 0)
		return r;
	if ((r = parse_url(cfg, err, errlen)) != 0)
		return r;
	if (cfg->bindname && cfg->password_file == NULL)
		return fail(err, errlen, EX_USAGE, "--url has bindname= but no "
		    "-y/--password-file was given");
	if (cfg->password_file && cfg->bindname == NULL)
		return fail(err, errlen, EX_USAGE, "-y/--password-file given but "
		    "--url has no bindname= extension");
	absolute(&cfg->data_dir);
	absolute(&cfg->marker);
	absolute(&cfg->pidfile);
	absolute(&cfg->status_file);
	if (cfg->output_kind == OUTPUT_NATS) {
		cfg->route = ROUTE_UUID;
		if (cfg->nats_stream == NULL)
			cfg->nats_stream = xstrdup("LDAPFEED");
		if (cfg->nats_subject == NULL)
			cfg->nats_subject = xstrdup("ldapfeed");
		if (cfg->nats_replicas == 0)
			cfg->nats_replicas = 1;
		absolute(&cfg->nats_ca);
		if ((r = parse_nats_urls(cfg, err, errlen)) != 0 ||
		    (r = check_nats_names(cfg, err, errlen)) != 0)
			return r;
		if (cfg->nats_ca && access(cfg->nats_ca, R_OK) == -1)
			return fail(err, errlen, EX_NOINPUT, "--nats-ca %s: %s",
			    cfg->nats_ca, strerror(errno));
	} else {
		if (*cfg->output != '@' && strchr(cfg->output, ':') == NULL &&
		    (type == NULL || strcasecmp(type, "unix") == 0 ||
		    strcasecmp(type, "AF_UNIX") == 0))
			absolute(&cfg->output);
		if ((r = config_parse_address(cfg->output, type, &cfg->addr,
		    &cfg->addrlen, err, errlen)) != 0)
			return r;
	}

	if (cfg->key_file != NULL) {
		if ((r = read_secret("--auth-key", cfg->key_file, &cfg->key,
		    err, errlen)) != 0)
			return r;
		if (cfg->key.len == 0)
			return fail(err, errlen, EX_USAGE, "--auth-key %s: the "
			    "file is empty", cfg->key_file);
		if (cfg->output_kind == OUTPUT_NATS &&
		    (r = nats_credential(cfg, err, errlen)) != 0)
			return r;
	}
	if (cfg->password_file) {
		if ((r = read_secret("--password-file", cfg->password_file,
		    &cfg->password, err, errlen)) != 0)
			return r;
		/* The first line, its newline dropped. */
		for (i = 0; i < cfg->password.len; i++)
			if (cfg->password.data[i] == '\n')
				break;
		if (i > 0 && i <= cfg->password.len &&
		    cfg->password.data[i - 1] == '\r')
			i--;
		explicit_bzero(cfg->password.data + i, cfg->password.len - i);
		cfg->password.len = i;
	}
	return 0;
}

static void
wipe(struct buf *b)
{
	if (b->data)
		explicit_bzero(b->data, b->cap);
	buf_free(b);
}

/*
 * Wipe the secrets a process does not need (OpenSMTPD's purge_config() is
 * the model; ldapfeed.8, ENVIRONMENT): the reader keeps the password, a worker
 * the key until its handshake is done, the supervisor neither once its
 * children are forked.
 */
void
config_purge(struct config *cfg, int what)
{
	if (what & PURGE_PASSWORD)
		wipe(&cfg->password);
	if (what & PURGE_KEY)
		wipe(&cfg->key);
}

void
config_free(struct config *cfg)
{
	char	**a;

	free(cfg->url);
	ldap_memfree(cfg->server_url);
	free(cfg->base);
	free(cfg->filter);
	for (a = cfg->attrs; a && *a; a++)
		free(*a);
	free(cfg->attrs);
	free(cfg->bindname);
	free(cfg->saslmech);
	free(cfg->password_file);
	wipe(&cfg->password);
	free(cfg->data_dir);
	free(cfg->marker);
	free(cfg->output);
	free(cfg->key_file);
	wipe(&cfg->key);
	free(cfg->pidfile);
	free(cfg->status_file);
	for (a = cfg->nats_urls; a && *a; a++)
		free(*a);
	free(cfg->nats_urls);
	free(cfg->nats_stream);
	free(cfg->nats_subject);
	free(cfg->nats_ca);
	memset(cfg, 0, sizeof(*cfg));
}
