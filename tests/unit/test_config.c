/* Flag parsing, the process budget and the consumer address. */
#include <sys/stat.h>
#include <fcntl.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include <ldap.h>

#include "ldapfeed.h"
#include "tap.h"

static char	 keyfile[64], emptyfile[64], pwfile[64];

/* Parse a space-separated command line; returns the code, err filled. */
static int
parse(struct config *cfg, const char *line, char *err, size_t errlen)
{
	char	*copy = strdup(line), *argv[64], *tok;
	int	 argc = 0, r;

	argv[argc++] = "ldapfeed";
	for (tok = strtok(copy, " "); tok && argc < 63; tok = strtok(NULL, " "))
		argv[argc++] = tok;
	argv[argc] = NULL;
	err[0] = '\0';
	r = config_parse(cfg, argc, argv, err, errlen);
	free(copy);
	return r;
}

static int
code_of(const char *extra, char *err, size_t errlen)
{
	struct config	 cfg;
	char		 line[1024];
	int		 r;

	snprintf(line, sizeof(line), "-H ldap://127.0.0.1:389/dc=x -D /tmp/d "
	    "-m /tmp/m -o /tmp/s -k %s %s", keyfile, extra);
	r = parse(&cfg, line, err, errlen);
	config_free(&cfg);
	return r;
}

static int
nats_line(struct config *cfg, const char *extra, char *err, size_t errlen)
{
	char	 line[1024];

	snprintf(line, sizeof(line), "-H ldap://127.0.0.1:389/dc=x -D /tmp/d "
	    "-m /tmp/m %s", extra);
	return parse(cfg, line, err, errlen);
}

/* The NATS output's flags and credential (ldapfeed.8, OPTIONS). */
static void
test_nats(char *err, size_t errlen)
{
	static const char *const all[] = { "ldapfeed.>" };
	static const char *const some[] = { "ldapfeed.add", "ldapfeed.*" };
	static const char *const few[] = { "ldapfeed.add", "ldapfeed.hello" };
	struct config	 cfg;
	struct event	 ev;
	char		 creds[64], id[NATS_MSGID_MAX], line[256];
	unsigned char	 epoch[16];
	int		 fd, i;

	ok(nats_line(&cfg, "-o nats://127.0.0.1:4222", err, errlen) == 0 &&
	    cfg.output_kind == OUTPUT_NATS && cfg.route == ROUTE_UUID &&
	    cfg.format == FORMAT_JSON && cfg.nats_nurls == 1 &&
	    strcmp(cfg.nats_stream, "LDAPFEED") == 0 &&
	    strcmp(cfg.nats_subject, "ldapfeed") == 0 &&
	    cfg.nats_cred == NATS_CRED_NONE && cfg.nats_replicas == 1,
	    "nats:// inferred: JSON, uuid routing, defaults, no -k needed");
	config_free(&cfg);
	ok(nats_line(&cfg, "-o nats://127.0.0.1:1,tls://127.0.0.1:2 -t nats "
	    "--format pickle --nats-stream FEED --nats-subject a.b "
	    "--nats-replicas 3", err, errlen) == 0 && cfg.nats_nurls == 2 &&
	    strcmp(cfg.nats_urls[1], "tls://127.0.0.1:2") == 0 &&
	    cfg.format == FORMAT_PICKLE && cfg.nats_replicas == 3,
	    "a server list, pickle on request");
	config_free(&cfg);
	ok(nats_line(&cfg, "-o /tmp/s -t nats", err, errlen) == EX_USAGE,
	    "-t nats with a socket path: %s", err);
	config_free(&cfg);
	ok(nats_line(&cfg, "-o nats:// ", err, errlen) == EX_USAGE,
	    "no host: %s", err);
	config_free(&cfg);
	ok(nats_line(&cfg, "-o nats://h:1 --nats-subject a.>", err, errlen) ==
	    EX_USAGE, "a wildcard prefix: %s", err);
	config_free(&cfg);
	ok(nats_line(&cfg, "-o nats://h:1 --nats-stream a.b", err, errlen) ==
	    EX_USAGE, "a dotted stream name: %s", err);
	config_free(&cfg);
	snprintf(line, sizeof(line), "-o /tmp/s -k %s --nats-stream X",
	    keyfile);
	ok(nats_line(&cfg, line, err, errlen) == EX_USAGE,
	    "--nats-* without a NATS output: %s", err);
	config_free(&cfg);
	snprintf(line, sizeof(line), "-o nats://h:1 -k %s", keyfile);
	ok(nats_line(&cfg, line, err, errlen) == 0 &&
	    cfg.nats_cred == NATS_CRED_TOKEN && cfg.key.len == 6 &&
	    strcmp((char *)cfg.key.data, "s3cret") == 0,
	    "a token file: its first line");
	config_free(&cfg);
	snprintf(creds, sizeof(creds), "/tmp/lf-creds-%d", (int)getpid());
	fd = open(creds, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	dprintf(fd, "-----BEGIN NATS USER JWT-----\neyJ0.eyJ1.sig\n"
	    "------END NATS USER JWT------\n\n"
	    "-----BEGIN USER NKEY SEED-----\nSUAXXX\n"
	    "------END USER NKEY SEED------\n");
	close(fd);
	snprintf(line, sizeof(line), "-o nats://h:1 -k %s", creds);
	ok(nats_line(&cfg, line, err, errlen) == 0 &&
	    cfg.nats_cred == NATS_CRED_CREDS, "a .creds file is told by its "
	    "JWT block");
	config_free(&cfg);
	unlink(creds);

	ok(nats_subject_match("a.>", "a.b.c") && !nats_subject_match("a.>",
	    "a") && nats_subject_match("a.*", "a.b") &&
	    !nats_subject_match("a.*", "a.b.c") && nats_subject_match(">",
	    "x") && !nats_subject_match("a.b", "a.bc"), "subject matching");
	ok(nats_subjects_cover(all, 1, "ldapfeed") &&
	    nats_subjects_cover(some, 2, "ldapfeed") &&
	    !nats_subjects_cover(few, 2, "ldapfeed") &&
	    !nats_subjects_cover(all, 1, "other"), "a stream covers PREFIX");
	for (i = 0; i < 16; i++)
		epoch[i] = (unsigned char)i;
	memset(&ev, 0, sizeof(ev));
	ev.type = EV_ADD;
	ev.seq = 42;
	nats_msg_id(id, sizeof(id), epoch, &ev, 3);
	ok(strcmp(id, "000102030405060708090a0b0c0d0e0f-42") == 0,
	    "entry event: EPOCH-SEQ (%s)", id);
	ev.type = EV_REFRESH_DONE;
	nats_msg_id(id, sizeof(id), epoch, &ev, 3);
	ok(strcmp(id, "000102030405060708090a0b0c0d0e0f-42-w3") == 0,
	    "refresh_done: EPOCH-SEQ-wN (%s)", id);
	ev.type = EV_HELLO;
	ev.seq = 7;
	nats_msg_id(id, sizeof(id), epoch, &ev, 0);
	ok(strcmp(id, "000102030405060708090a0b0c0d0e0f-r7-w0") == 0,
	    "hello: EPOCH-rRUN-wN (%s)", id);
}

/* --max-delete and the guard's arithmetic (doc/safety.md). */
static void
test_max_delete(char *err, size_t errlen)
{
	struct config	 cfg;
	char		 line[512];

	snprintf(line, sizeof(line), "-H ldap://127.0.0.1:389/dc=x -D /tmp/d "
	    "-m /tmp/m -o /tmp/s -k %s", keyfile);
	ok(parse(&cfg, line, err, errlen) == 0 && cfg.max_delete_pct == 50,
	    "--max-delete: 50%% by default");
	ok(guard_allows(&cfg, 100, 101) && guard_allows(&cfg, 150, 300) &&
	    !guard_allows(&cfg, 151, 300) && guard_allows(&cfg, 5, 6),
	    "50%%: more than half and more than 100 refused");
	config_free(&cfg);
	ok(code_of("--max-delete 10", err, errlen) == 0, "--max-delete 10");
	snprintf(line, sizeof(line), "-H ldap://127.0.0.1:389/dc=x -D /tmp/d "
	    "-m /tmp/m -o /tmp/s -k %s --max-delete 10", keyfile);
	ok(parse(&cfg, line, err, errlen) == 0 && cfg.max_delete_pct == -1 &&
	    guard_allows(&cfg, 10, 11) && !guard_allows(&cfg, 11, 1000000),
	    "a count: more than it refused, whatever the store holds");
	config_free(&cfg);
	snprintf(line, sizeof(line), "-H ldap://127.0.0.1:389/dc=x -D /tmp/d "
	    "-m /tmp/m -o /tmp/s -k %s --max-delete 100%%", keyfile);
	ok(parse(&cfg, line, err, errlen) == 0 &&
	    guard_allows(&cfg, 1000, 1000), "100%%: never refuses");
	config_free(&cfg);
	ok(code_of("--max-delete 101%", err, errlen) == EX_USAGE &&
	    code_of("--max-delete -1", err, errlen) == EX_USAGE &&
	    code_of("--max-delete 5x", err, errlen) == EX_USAGE &&
	    code_of("--max-delete %", err, errlen) == EX_USAGE,
	    "--max-delete: bad values refused (%s)", err);
}

int
main(void)
{
	struct config	 cfg;
	struct sockaddr_storage ss;
	socklen_t	 sslen;
	char		 err[512], line[1024];
	int		 w, fd;

	snprintf(keyfile, sizeof(keyfile), "/tmp/lf-key-%d", (int)getpid());
	snprintf(emptyfile, sizeof(emptyfile), "/tmp/lf-empty-%d", (int)getpid());
	snprintf(pwfile, sizeof(pwfile), "/tmp/lf-pw-%d", (int)getpid());
	fd = open(keyfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	write(fd, "s3cret\n\0bytes", 13);
	close(fd);
	close(open(emptyfile, O_WRONLY | O_CREAT | O_TRUNC, 0600));
	fd = open(pwfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	write(fd, "pw line\nsecond line\n", 20);
	close(fd);

	/* The process budget: doc/processes.md, "The process budget". */
	ok(config_budget(0, 8, &w, err, sizeof(err)) == 0 && w == 6,
	    "0 -> one per CPU: P=8, W=6");
	ok(config_budget(0, 2, &w, err, sizeof(err)) == 0 && w == 1,
	    "0 on 2 CPUs: W=1");
	ok(config_budget(-1, 8, &w, err, sizeof(err)) == 0 && w == 5,
	    "-1 on 8 CPUs: W=5");
	ok(config_budget(-20, 8, &w, err, sizeof(err)) == 0 && w == 1,
	    "negative beyond the CPU count: W=1");
	ok(config_budget(3, 8, &w, err, sizeof(err)) == 0 && w == 1,
	    "3 -> W=1");
	ok(config_budget(7, 2, &w, err, sizeof(err)) == 0 && w == 5,
	    "7 -> exactly 7, W=5, whatever the CPUs");
	ok(config_budget(1, 8, &w, err, sizeof(err)) == EX_USAGE &&
	    strstr(err, "--processes 1"), "1 is a usage error: %s", err);
	ok(config_budget(2, 8, &w, err, sizeof(err)) == EX_USAGE,
	    "2 is a usage error");
	ok(config_cpus() >= 1, "cpus >= 1");

	/* A full good command line. */
	snprintf(line, sizeof(line), "-H ldap://127.0.0.1:3890/ou=people,dc=x"
	    "?cn,uid?one?(uid=a*)?bindname=cn=admin%%2cdc=x -y %s -D /tmp/d "
	    "-m /tmp/m -o 127.0.0.1:6000 -k %s -p 5 --mode refresh "
	    "--format json -Z -f -v", pwfile, keyfile);
	ok(parse(&cfg, line, err, sizeof(err)) == 0, "good line parses: %s",
	    err);
	ok(strcmp(cfg.base, "ou=people,dc=x") == 0, "base");
	ok(cfg.scope == LDAP_SCOPE_ONELEVEL, "scope one");
	ok(strcmp(cfg.filter, "(uid=a*)") == 0, "filter");
	ok(cfg.attrs && strcmp(cfg.attrs[0], "cn") == 0 &&
	    strcmp(cfg.attrs[1], "uid") == 0 && cfg.attrs[2] == NULL, "attrs");
	ok(cfg.bindname && strcmp(cfg.bindname, "cn=admin,dc=x") == 0,
	    "bindname extension, percent-decoded");
	ok(cfg.password.len == 7 && memcmp(cfg.password.data, "pw line", 7) ==
	    0, "password: first line, newline dropped");
	ok(cfg.key.len == 13 && memcmp(cfg.key.data, "s3cret\n\0bytes", 13) ==
	    0, "key: the whole file, as bytes");
	ok(cfg.workers == 3 && cfg.mode == MODE_REFRESH &&
	    cfg.format == FORMAT_JSON && cfg.starttls && cfg.foreground &&
	    cfg.verbosity == 1, "workers, mode, format, flags");
	ok(cfg.addr.ss_family == AF_INET, "HOST:PORT is inet");
	ok(strcmp(cfg.server_url, "ldap://127.0.0.1:3890") == 0,
	    "server part: %s", cfg.server_url);
	config_free(&cfg);

	snprintf(line, sizeof(line), "--url ldap://h/dc=x --data-dir /tmp/d "
	    "--marker /tmp/m --output /tmp/s --auth-key %s", keyfile);
	ok(parse(&cfg, line, err, sizeof(err)) == 0 &&
	    cfg.scope == LDAP_SCOPE_SUBTREE &&
	    strcmp(cfg.filter, "(objectClass=*)") == 0 && cfg.attrs == NULL &&
	    cfg.mode == MODE_PERSIST && cfg.format == FORMAT_PICKLE &&
	    cfg.addr.ss_family == AF_UNIX && !cfg.foreground,
	    "long flags and defaults: sub, (objectClass=*), all attrs, persist,"
	    " pickle");
	config_free(&cfg);

	/* Every bad flag: one line naming the culprit, and its code. */
	ok(code_of("-p 1", err, sizeof(err)) == EX_USAGE, "-p 1: %s", err);
	ok(code_of("-p 2", err, sizeof(err)) == EX_USAGE, "-p 2: %s", err);
	ok(code_of("-p x", err, sizeof(err)) == EX_USAGE &&
	    strstr(err, "'x'"), "-p x: %s", err);
	ok(code_of("-p -99", err, sizeof(err)) == 0, "-p -99 still runs");
	ok(code_of("--mode sometimes", err, sizeof(err)) == EX_USAGE &&
	    strstr(err, "sometimes"), "bad mode: %s", err);
	ok(code_of("--format xml", err, sizeof(err)) == EX_USAGE &&
	    strstr(err, "xml"), "bad format: %s", err);
	ok(code_of("--bogus", err, sizeof(err)) == EX_USAGE &&
	    strstr(err, "--bogus"), "unknown flag: %s", err);
	ok(code_of("-o", err, sizeof(err)) == EX_USAGE, "flag without value: "
	    "%s", err);
	ok(code_of("extra", err, sizeof(err)) == EX_USAGE &&
	    strstr(err, "extra"), "stray argument: %s", err);
	ok(code_of("-k /nonexistent/key", err, sizeof(err)) == EX_NOINPUT &&
	    strstr(err, "/nonexistent/key"), "missing key file: %s", err);
	snprintf(line, sizeof(line), "-k %s", emptyfile);
	ok(code_of(line, err, sizeof(err)) == EX_USAGE && strstr(err, "empty"),
	    "empty key: %s", err);
	ok(code_of("-t carrier-pigeon", err, sizeof(err)) == EX_USAGE &&
	    strstr(err, "carrier-pigeon"), "bad output type: %s", err);

	ok(parse(&cfg, "-D /tmp/d -m /tmp/m -o /tmp/s -k /tmp/k", err,
	    sizeof(err)) == EX_USAGE && strstr(err, "--url"), "missing -H: %s",
	    err);
	config_free(&cfg);
	ok(parse(&cfg, "-H ldap://h/ -m /tmp/m -o /tmp/s -k /tmp/k", err,
	    sizeof(err)) == EX_USAGE && strstr(err, "--data-dir"),
	    "missing -D: %s", err);
	config_free(&cfg);
	ok(parse(&cfg, "-H ldap://h/ -D /tmp/d -o /tmp/s -k /tmp/k", err,
	    sizeof(err)) == EX_USAGE && strstr(err, "--marker"),
	    "missing -m: %s", err);
	config_free(&cfg);
	ok(parse(&cfg, "-H ldap://h/ -D /tmp/d -m /tmp/m -k /tmp/k", err,
	    sizeof(err)) == EX_USAGE && strstr(err, "--output"),
	    "missing -o: %s", err);
	config_free(&cfg);
	ok(parse(&cfg, "-H ldap://h/ -D /tmp/d -m /tmp/m -o /tmp/s", err,
	    sizeof(err)) == EX_USAGE && strstr(err, "--auth-key"),
	    "missing -k: %s", err);
	config_free(&cfg);

	/* LDAP URLs. */
#define URL_CODE(u) (snprintf(line, sizeof(line), "-H %s -D /tmp/d -m /tmp/m " \
	"-o /tmp/s -k %s", (u), keyfile), w = parse(&cfg, line, err, \
	sizeof(err)), config_free(&cfg), w)
	ok(URL_CODE("http://h/dc=x") == EX_USAGE && strstr(err, "http://h"),
	    "bad scheme: %s", err);
	ok(URL_CODE("ldap://h/dc=x?cn?galaxy") == EX_USAGE, "bad scope: %s",
	    err);
	ok(URL_CODE("ldap://h:99999/dc=x") == EX_USAGE, "bad port: %s", err);
	ok(URL_CODE("ldap://h/dc=x???\?!x-unknown=1") == EX_USAGE &&
	    strstr(err, "x-unknown"), "unknown critical extension: %s", err);
	ok(URL_CODE("ldap://h/dc=x????x-unknown=1") == 0,
	    "unknown non-critical extension ignored");
	ok(URL_CODE("ldap://h/dc=x????bindname=cn=a") == EX_USAGE &&
	    strstr(err, "password-file"), "bindname without password: %s", err);
	ok(URL_CODE("ldap://h/dc=x????x-saslmech=GSSAPI") == EX_USAGE &&
	    strstr(err, "GSSAPI"), "unsupported SASL mech: %s", err);
	ok(URL_CODE("ldapi://%2Ftmp%2Fs/dc=x????x-saslmech=EXTERNAL") == 0,
	    "ldapi + EXTERNAL: %s", err);

	/* Consumer addresses. */
	ok(config_parse_address("/run/feed.sock", NULL, &ss, &sslen, err,
	    sizeof(err)) == 0 && ss.ss_family == AF_UNIX, "path is unix");
	ok(config_parse_address("feed.sock", NULL, &ss, &sslen, err,
	    sizeof(err)) == 0 && ss.ss_family == AF_UNIX, "relative path is unix");
	ok(config_parse_address("@feed", NULL, &ss, &sslen, err,
	    sizeof(err)) == 0 && ss.ss_family == AF_UNIX &&
	    ((struct sockaddr_un *)&ss)->sun_path[0] == '\0' &&
	    sslen == offsetof(struct sockaddr_un, sun_path) + 5,
	    "@name is abstract, length exact");
	ok(config_parse_address("127.0.0.1:6000", NULL, &ss, &sslen, err,
	    sizeof(err)) == 0 && ss.ss_family == AF_INET &&
	    ntohs(((struct sockaddr_in *)&ss)->sin_port) == 6000, "v4:port");
	ok(config_parse_address("[::1]:6000", NULL, &ss, &sslen, err,
	    sizeof(err)) == 0 && ss.ss_family == AF_INET6, "[v6]:port");
	ok(config_parse_address("localhost:6000", "inet", &ss, &sslen, err,
	    sizeof(err)) == 0, "hostname resolved");
	ok(config_parse_address("127.0.0.1:0", NULL, &ss, &sslen, err,
	    sizeof(err)) == EX_USAGE, "port 0 refused: %s", err);
	ok(config_parse_address("127.0.0.1:70000", NULL, &ss, &sslen, err,
	    sizeof(err)) == EX_USAGE, "port 70000 refused: %s", err);
	ok(config_parse_address("[::1:6000", NULL, &ss, &sslen, err,
	    sizeof(err)) == EX_USAGE, "unclosed bracket: %s", err);
	ok(config_parse_address("nohost", "inet", &ss, &sslen, err,
	    sizeof(err)) == EX_USAGE, "inet without a port: %s", err);
	ok(config_parse_address("no.such.host.invalid:80", NULL, &ss, &sslen,
	    err, sizeof(err)) == EX_USAGE, "unresolvable host: %s", err);
	memset(line, 'a', 200);
	line[0] = '/';
	line[200] = '\0';
	ok(config_parse_address(line, NULL, &ss, &sslen, err, sizeof(err)) ==
	    EX_USAGE && strstr(err, "longer"), "path too long");
	ok(config_parse_address("127.0.0.1:6000", "unix", &ss, &sslen, err,
	    sizeof(err)) == 0 && ss.ss_family == AF_UNIX,
	    "-t unix overrides the inference");

	test_nats(err, sizeof(err));
	test_max_delete(err, sizeof(err));

	unlink(keyfile);
	unlink(emptyfile);
	unlink(pwfile);
	return tap_done();
}
