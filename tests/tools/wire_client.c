/*
 * wire_client ADDRESS KEYFILE [MESSAGE...]: connect to a Python
 * multiprocessing.connection Listener as a worker does, authenticate both
 * ways with wire.c and send each MESSAGE as one frame.  A test tool.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "ldapfeed.h"

#define TIMEOUT_MS	10000

/* "@name": Linux abstract; "[v6]:port" or "host:port": TCP; else a path. */
static int
dial(const char *addr)
{
	struct sockaddr_un	 sun;
	struct addrinfo		 hints, *res, *ai;
	socklen_t		 len;
	char			*host, *port;
	size_t			 n;
	int			 fd, e;

	if (addr[0] != '[' && (strchr(addr, '/') != NULL ||
	    strchr(addr, ':') == NULL)) {
		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		n = strlen(addr);
		if (n >= sizeof(sun.sun_path)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		memcpy(sun.sun_path, addr, n);
		if (addr[0] == '@')
			sun.sun_path[0] = '\0';
		len = offsetof(struct sockaddr_un, sun_path) + n +
		    (addr[0] == '@' ? 0 : 1);
		if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) == -1)
			return -1;
		if (connect(fd, (struct sockaddr *)&sun, len) == -1) {
			e = errno;
			close(fd);
			errno = e;
			return -1;
		}
		return fd;
	}
	host = xstrdup(addr[0] == '[' ? addr + 1 : addr);
	if ((port = strrchr(host, ':')) == NULL) {
		free(host);
		errno = EINVAL;
		return -1;
	}
	*port++ = '\0';
	if (addr[0] == '[') {
		if ((n = strlen(host)) == 0 || host[n - 1] != ']') {
			free(host);
			errno = EINVAL;
			return -1;
		}
		host[n - 1] = '\0';
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((e = getaddrinfo(host, port, &hints, &res)) != 0) {
		fprintf(stderr, "wire_client: %s: %s\n", addr, gai_strerror(e));
		free(host);
		errno = EHOSTUNREACH;
		return -1;
	}
	free(host);
	fd = -1;
	e = ECONNREFUSED;
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if ((fd = socket(ai->ai_family, ai->ai_socktype,
		    ai->ai_protocol)) == -1) {
			e = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		e = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	errno = e;
	return fd;
}

static void
read_key(const char *path, struct buf *key)
{
	char	 chunk[4096];
	ssize_t	 n;
	int	 fd;

	if ((fd = open(path, O_RDONLY)) == -1)
		fatal(EX_NOINPUT, "%s", path);
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n == -1) {
			if (errno == EINTR)
				continue;
			fatal(EX_NOINPUT, "%s", path);
		}
		buf_add(key, chunk, (size_t)n);
	}
	close(fd);
	explicit_bzero(chunk, sizeof(chunk));
	if (key->len == 0)
		fatalx(EX_NOINPUT, "%s: the key is empty", path);
}

static char	 why[256];

static int
verdict(int r, const char *what)
{
	if (r == WIRE_REFUSED)
		fatalx(EX_NOPERM, "%s: authentication refused: %s", what, why);
	if (r == -1)
		fatal(EX_IOERR, "%s", what);
	return r;
}

int
main(int argc, char *argv[])
{
	struct buf	 key = { 0 };
	struct span	 k;
	int		 fd, i;

	log_init(1, 0, "wire_client");
	if (argc < 3) {
		fprintf(stderr, "usage: wire_client ADDRESS KEYFILE "
		    "[MESSAGE...]\n");
		return EX_USAGE;
	}
	read_key(argv[2], &key);
	if ((fd = dial(argv[1])) == -1)
		fatal(EX_UNAVAILABLE, "connect %s", argv[1]);
	k.p = key.data;
	k.len = key.len;
	verdict(wire_answer_challenge(fd, k, TIMEOUT_MS, why, sizeof(why)),
	    "answering the listener's challenge");
	verdict(wire_deliver_challenge(fd, k, TIMEOUT_MS, why, sizeof(why)),
	    "challenging the listener");
	explicit_bzero(key.data, key.cap);
	buf_free(&key);
	for (i = 3; i < argc; i++)
		if (wire_send_frame(fd, argv[i], strlen(argv[i]),
		    TIMEOUT_MS) == -1)
			fatal(EX_IOERR, "sending message %d", i - 2);
	close(fd);
	return 0;
}
