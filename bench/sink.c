/*
 * sink: a minimal consumer for benchmarks.  The listener side of
 * doc/events.md, "The connection" (wire.c's challenge, both ways), for W
 * connections; it counts messages, tells when every connection has sent
 * refresh_done, and can log each event's arrival time (CLOCK_MONOTONIC) and
 * DN for latency figures.
 *
 *   sink -a ADDRESS -k KEYFILE -w W [-l LOGFILE]
 *
 * ADDRESS is a unix socket path or HOST:PORT.  Lines on stdout, each with a
 * CLOCK_MONOTONIC time in seconds (the clock of Python's time.monotonic()):
 *   ready
 *   connected W T
 *   refresh_done T MSGS DATA BYTES      once every connection sent one
 *   reached N T                          after "mark N" on stdin, when the
 *                                        data messages (add, modify, rename,
 *                                        delete) number N
 *   stats T MSGS DATA BYTES ADD MOD REN DEL   after "stats" on stdin
 *   closed T MSGS DATA BYTES ADD MOD REN DEL  every connection ended
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "ldapfeed.h"

#define HANDSHAKE_MS	10000
#define READ_CHUNK	(1 << 20)

enum kind { K_OTHER, K_HELLO, K_ADD, K_MODIFY, K_RENAME, K_DELETE, K_DONE };

struct conn {
	int		 fd;
	unsigned char	*buf;
	size_t		 cap, len;
	int		 done;		/* refresh_done seen */
	int		 eof;
};

static uint64_t	 msgs, data, bytes, kinds[K_DONE + 1];
static FILE	*logfp;

static double
now(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
listen_on(const char *addr)
{
	struct sockaddr_un	 sun;
	struct addrinfo		 hints, *res;
	char			*host, *port;
	int			 fd, on = 1;

	if (addr[0] == '/' || strchr(addr, ':') == NULL) {
		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		if (strlen(addr) >= sizeof(sun.sun_path))
			fatalx(EX_USAGE, "%s: path too long", addr);
		strcpy(sun.sun_path, addr);
		unlink(addr);
		if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) == -1 ||
		    bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1)
			fatal(EX_OSERR, "%s", addr);
	} else {
		host = xstrdup(addr);
		port = strrchr(host, ':');
		*port++ = '\0';
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE;
		if (getaddrinfo(host, port, &hints, &res) != 0)
			fatalx(EX_USAGE, "%s: bad address", addr);
		if ((fd = socket(res->ai_family, SOCK_STREAM, 0)) == -1)
			fatal(EX_OSERR, "socket");
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
		if (bind(fd, res->ai_addr, res->ai_addrlen) == -1)
			fatal(EX_OSERR, "%s", addr);
		freeaddrinfo(res);
		free(host);
	}
	if (listen(fd, 64) == -1)
		fatal(EX_OSERR, "listen");
	return fd;
}

static enum kind
classify(const unsigned char *p, size_t n, const unsigned char **tp,
    size_t *tl)
{
	static const struct { const char *s; enum kind k; } names[] = {
		{ "hello", K_HELLO }, { "add", K_ADD }, { "modify", K_MODIFY },
		{ "rename", K_RENAME }, { "delete", K_DELETE },
		{ "refresh_done", K_DONE },
	};
	const unsigned char	*t = NULL;
	size_t			 len = 0, i;

	/* pickle: PROTO 3, }, (, X "type", X <len> <value> */
	if (n >= 18 && p[0] == 0x80 && p[4] == 'X' && p[13] == 'X') {
		len = get_u32(p + 14);
		t = p + 18;
		if (len > n - 18)
			return K_OTHER;
	} else if (n >= 10 && memcmp(p, "{\"type\":\"", 9) == 0) {
		t = p + 9;
		while (len < n - 9 && t[len] != '"')
			len++;
	} else
		return K_OTHER;
	*tp = t;
	*tl = len;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i].s) == len && memcmp(names[i].s, t, len) == 0)
			return names[i].k;
	return K_OTHER;
}

/* The "dn" field of an event, for the arrival log. */
static void
find_dn(const unsigned char *p, size_t n, const unsigned char **dp,
    size_t *dl)
{
	static const unsigned char pk[] = "X\x02\0\0\0dnX";
	const unsigned char	*q, *e;
	size_t			 lim = n < 256 ? n : 256;

	*dp = (const unsigned char *)"-";
	*dl = 1;
	if (p[0] == 0x80) {
		q = memmem(p, lim, pk, sizeof(pk) - 1);
		if (q && q + 12 <= p + n) {
			*dl = get_u32(q + 8);
			*dp = q + 12;
			if (*dl > (size_t)(p + n - *dp))
				*dl = 0;
		}
	} else if ((q = memmem(p, lim, ",\"dn\":\"", 7)) != NULL) {
		q += 7;
		e = memchr(q, '"', p + n - q);
		*dp = q;
		*dl = e ? (size_t)(e - q) : 0;
	}
}

static int
take_frames(struct conn *c, double t)
{
	const unsigned char	*tp, *dp;
	size_t			 off = 0, hlen, tl, dl;
	uint64_t		 plen;
	uint32_t		 u;
	enum kind		 k;

	for (;;) {
		if (c->len - off < 4)
			break;
		u = (uint32_t)c->buf[off] << 24 | (uint32_t)c->buf[off + 1] << 16 |
		    (uint32_t)c->buf[off + 2] << 8 | c->buf[off + 3];
		hlen = 4;
		plen = u;
		if (u == 0xffffffff) {
			if (c->len - off < 12)
				break;
			plen = 0;
			for (hlen = 4; hlen < 12; hlen++)
				plen = plen << 8 | c->buf[off + hlen];
		} else if (u & 0x80000000)
			fatalx(EX_PROTOCOL, "bad frame length");
		if (c->len - off - hlen < plen) {
			if (hlen + plen > c->cap) {
				c->cap = hlen + plen + READ_CHUNK;
				if (off > 0) {
					memmove(c->buf, c->buf + off, c->len - off);
					c->len -= off;
					off = 0;
				}
				c->buf = xrealloc(c->buf, c->cap);
			}
			break;
		}
		k = classify(c->buf + off + hlen, plen, &tp, &tl);
		msgs++;
		bytes += plen;
		kinds[k]++;
		if (k >= K_ADD && k <= K_DELETE) {
			data++;
			if (logfp) {
				find_dn(c->buf + off + hlen, plen, &dp, &dl);
				fprintf(logfp, "%.9f %.*s %.*s\n", t, (int)tl,
				    (const char *)tp, (int)dl, (const char *)dp);
			}
		} else if (k == K_DONE)
			c->done = 1;
		off += hlen + plen;
	}
	if (off > 0) {
		memmove(c->buf, c->buf + off, c->len - off);
		c->len -= off;
	}
	return 0;
}

static void
report(const char *what, double t)
{
	printf("%s %.9f %llu %llu %llu %llu %llu %llu %llu\n", what, t,
	    (unsigned long long)msgs, (unsigned long long)data,
	    (unsigned long long)bytes, (unsigned long long)kinds[K_ADD],
	    (unsigned long long)kinds[K_MODIFY],
	    (unsigned long long)kinds[K_RENAME],
	    (unsigned long long)kinds[K_DELETE]);
	fflush(stdout);
}

static void
usage(void)
{
	fprintf(stderr, "usage: sink -a ADDRESS -k KEYFILE -w W [-l LOGFILE]\n");
	exit(EX_USAGE);
}

int
main(int argc, char **argv)
{
	struct conn	*conns;
	struct pollfd	*pfd;
	struct buf	 key = { 0 };
	struct span	 k;
	char		 why[256], line[128], *addr = NULL, *keyfile = NULL;
	char		*logfile = NULL;
	unsigned char	 tmp[4096];
	uint64_t	 mark = 0;
	double		 t;
	ssize_t		 n;
	size_t		 linelen = 0;
	int		 ch, lfd, w = 1, i, open_conns, all_done = 0, marked = 0;
	int		 stdin_open = 1;
	FILE		*kf;

	log_init(1, 0, "sink");
	while ((ch = getopt(argc, argv, "a:k:w:l:")) != -1) {
		switch (ch) {
		case 'a':
			addr = optarg;
			break;
		case 'k':
			keyfile = optarg;
			break;
		case 'w':
			w = atoi(optarg);
			break;
		case 'l':
			logfile = optarg;
			break;
		default:
			usage();
		}
	}
	if (addr == NULL || keyfile == NULL || w < 1)
		usage();
	if ((kf = fopen(keyfile, "rb")) == NULL)
		fatal(EX_NOINPUT, "%s", keyfile);
	while ((n = fread(tmp, 1, sizeof(tmp), kf)) > 0)
		buf_add(&key, tmp, n);
	fclose(kf);
	k.p = key.data;
	k.len = key.len;
	if (logfile) {
		if ((logfp = fopen(logfile, "w")) == NULL)
			fatal(EX_CANTCREAT, "%s", logfile);
		setvbuf(logfp, NULL, _IOFBF, 1 << 20);
	}

	lfd = listen_on(addr);
	printf("ready\n");
	fflush(stdout);
	conns = xcalloc(w, sizeof(*conns));
	pfd = xcalloc(w + 1, sizeof(*pfd));
	for (i = 0; i < w; i++) {
		if ((conns[i].fd = accept(lfd, NULL, NULL)) == -1)
			fatal(EX_OSERR, "accept");
		if (wire_deliver_challenge(conns[i].fd, k, HANDSHAKE_MS, why,
		    sizeof(why)) != 0 || wire_answer_challenge(conns[i].fd, k,
		    HANDSHAKE_MS, why, sizeof(why)) != 0)
			fatalx(EX_NOPERM, "handshake: %s", why);
		conns[i].cap = READ_CHUNK;
		conns[i].buf = xmalloc(conns[i].cap);
	}
	close(lfd);
	printf("connected %d %.9f\n", w, now());
	fflush(stdout);

	for (open_conns = w; open_conns > 0; ) {
		for (i = 0; i < w; i++) {
			pfd[i].fd = conns[i].eof ? -1 : conns[i].fd;
			pfd[i].events = POLLIN;
		}
		pfd[w].fd = stdin_open ? 0 : -1;
		pfd[w].events = POLLIN;
		if (poll(pfd, w + 1, -1) == -1) {
			if (errno == EINTR)
				continue;
			fatal(EX_OSERR, "poll");
		}
		for (i = 0; i < w; i++) {
			struct conn	*c = &conns[i];

			if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			if (c->cap - c->len < READ_CHUNK / 4) {
				c->cap += READ_CHUNK;
				c->buf = xrealloc(c->buf, c->cap);
			}
			n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
			if (n <= 0) {
				if (n == -1 && errno == EINTR)
					continue;
				c->eof = 1;
				open_conns--;
				close(c->fd);
				continue;
			}
			t = now();
			c->len += n;
			take_frames(c, t);
		}
		if (!all_done) {
			for (i = 0; i < w && conns[i].done; i++)
				;
			if (i == w) {
				all_done = 1;
				if (logfp)
					fflush(logfp);
				report("refresh_done", now());
			}
		}
		if (marked && data >= mark) {
			marked = 0;
			if (logfp)
				fflush(logfp);
			printf("reached %llu %.9f\n", (unsigned long long)mark,
			    now());
			fflush(stdout);
		}
		if (pfd[w].revents & (POLLIN | POLLHUP)) {
			n = read(0, line + linelen, sizeof(line) - 1 - linelen);
			if (n <= 0) {
				stdin_open = 0;
				continue;
			}
			linelen += n;
			line[linelen] = '\0';
			while (strchr(line, '\n')) {
				char	*nl = strchr(line, '\n');

				*nl = '\0';
				if (strncmp(line, "mark ", 5) == 0) {
					mark = strtoull(line + 5, NULL, 10);
					marked = 1;
					if (data >= mark) {
						marked = 0;
						printf("reached %llu %.9f\n",
						    (unsigned long long)mark,
						    now());
						fflush(stdout);
					}
				} else if (strcmp(line, "stats") == 0)
					report("stats", now());
				else if (strcmp(line, "flush") == 0 && logfp)
					fflush(logfp);
				linelen -= nl + 1 - line;
				memmove(line, nl + 1, linelen + 1);
			}
		}
	}
	if (logfp)
		fclose(logfp);
	report("closed", now());
	for (i = 0; i < w; i++)
		free(conns[i].buf);
	free(conns);
	free(pfd);
	buf_free(&key);
	return 0;
}
