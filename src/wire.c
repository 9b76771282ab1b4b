/*
 * The consumer's wire: Python multiprocessing.connection framing and its
 * HMAC challenge handshake, as the Client side of Python 3.8 through 3.12+.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "ldapfeed.h"

#define CHALLENGE	"#CHALLENGE#"
#define WELCOME		"#WELCOME#"
#define FAILURE		"#FAILURE#"
#define AUTH_MAX	256	/* Python's recv_bytes(256) */
#define MD5ONLY_LEN	20	/* a Python <= 3.11 challenge */
#define MD5_LEN		16	/* a legacy, unprefixed response */
#define MAX_NAME_LEN	8	/* the longest allowed digest name */
#define NONCE_LEN	32
#define IO_CHUNK	(1U << 30)	/* keep each syscall under SSIZE_MAX */

/* Python 3.12's _ALLOWED_DIGESTS. */
static const struct digest {
	const char	*name;
	const EVP_MD	*(*md)(void);
} digests[] = {
	{ "md5",	EVP_md5 },
	{ "sha256",	EVP_sha256 },
	{ "sha384",	EVP_sha384 },
	{ "sha3_256",	EVP_sha3_256 },
	{ "sha3_384",	EVP_sha3_384 },
};

static const struct digest *const digest_md5 = &digests[0];
static const struct digest *const digest_sha256 = &digests[1];


/* An absolute deadline, -1 for none. */
static int64_t
deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : clock_ms() + timeout_ms;
}

static int
wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd	 pfd;
	int64_t		 left;
	int		 n;

	for (;;) {
		left = -1;
		if (deadline >= 0) {
			left = deadline - clock_ms();
			if (left < 0)
				left = 0;
			if (left > INT_MAX)
				left = INT_MAX;
		}
		pfd.fd = fd;
		pfd.events = events;
		pfd.revents = 0;
		n = poll(&pfd, 1, (int)left);
		if (n > 0)
			return 0;
		if (n == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		if (errno != EINTR)
			return -1;
	}
}

/*
 * MSG_DONTWAIT makes a blocking socket honour the deadline too, and
 * MSG_NOSIGNAL turns a closed peer into EPIPE rather than SIGPIPE.
 * Anything that is not a socket (a pipe in a test) falls back to writev.
 */
static int
write_all(int fd, struct iovec *iov, int iovcnt, int64_t deadline)
{
	struct msghdr	 msg;
	struct iovec	 cur[2];
	ssize_t		 n;
	size_t		 done;
	int		 i;

	while (iovcnt > 0) {
		if (iov->iov_len == 0) {
			iov++;
			iovcnt--;
			continue;
		}
		for (i = 0; i < iovcnt && i < 2; i++) {
			cur[i] = iov[i];
			if (cur[i].iov_len > IO_CHUNK)
				cur[i].iov_len = IO_CHUNK;
		}
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = cur;
		msg.msg_iovlen = i;
		n = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n == -1 && errno == ENOTSOCK) {
			if (wait_fd(fd, POLLOUT, deadline) == -1)
				return -1;
			n = writev(fd, cur, i);
		}
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -1;
			if (wait_fd(fd, POLLOUT, deadline) == -1)
				return -1;
			continue;
		}
		for (done = (size_t)n; done > 0 && iovcnt > 0; ) {
			if (done < iov->iov_len) {
				iov->iov_base = (char *)iov->iov_base + done;
				iov->iov_len -= done;
				break;
			}
			done -= iov->iov_len;
			iov++;
			iovcnt--;
		}
	}
	return 0;
}

/* Up to len bytes, at least one; EOF is ECONNRESET. */
static ssize_t
read_some(int fd, void *p, size_t len, int64_t deadline)
{
	ssize_t	 n;

	if (len > IO_CHUNK)
		len = IO_CHUNK;
	for (;;) {
		n = recv(fd, p, len, MSG_DONTWAIT);
		if (n == -1 && errno == ENOTSOCK) {
			if (wait_fd(fd, POLLIN, deadline) == -1)
				return -1;
			n = read(fd, p, len);
		}
		if (n > 0)
			return n;
		if (n == 0) {
			errno = ECONNRESET;
			return -1;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -1;
		if (wait_fd(fd, POLLIN, deadline) == -1)
			return -1;
	}
}

static int
read_full(int fd, unsigned char *p, size_t len, int64_t deadline)
{
	ssize_t	 n;

	while (len > 0) {
		if ((n = read_some(fd, p, len, deadline)) == -1)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

size_t
wire_frame_header(unsigned char *hdr, uint64_t len)
{
	int	 i;

	/*
	 * 2^31 - 1 bytes or more take the long form (doc/events.md, "The
	 * connection").  (Python itself escapes only above 2^31 - 1; its
	 * reader takes either form.)
	 */
	if (len < 0x7fffffff) {
		for (i = 0; i < 4; i++)
			hdr[i] = (len >> (8 * (3 - i))) & 0xff;
		return 4;
	}
	memset(hdr, 0xff, 4);
	for (i = 0; i < 8; i++)
		hdr[4 + i] = (len >> (8 * (7 - i))) & 0xff;
	return 12;
}

static int
send_frame(int fd, const void *p, size_t len, int64_t deadline)
{
	unsigned char	 hdr[WIRE_MAX_HEADER];
	struct iovec	 iov[2];

	iov[0].iov_base = hdr;
	iov[0].iov_len = wire_frame_header(hdr, len);
	iov[1].iov_base = (void *)(uintptr_t)p;
	iov[1].iov_len = len;
	return write_all(fd, iov, 2, deadline);
}

int
wire_send_frame(int fd, const void *p, size_t len, int timeout_ms)
{
	return send_frame(fd, p, len, deadline_of(timeout_ms));
}

static int
recv_frame(int fd, struct buf *out, size_t max, int64_t deadline)
{
	unsigned char	 hdr[8];
	uint64_t	 len;
	uint32_t	 u;
	size_t		 want;
	ssize_t		 n;

	buf_reset(out);
	if (read_full(fd, hdr, 4, deadline) == -1)
		return -1;
	u = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
	    (uint32_t)hdr[2] << 8 | hdr[3];
	if (u == 0xffffffff) {
		if (read_full(fd, hdr, 8, deadline) == -1)
			return -1;
		len = 0;
		for (n = 0; n < 8; n++)
			len = len << 8 | hdr[n];
	} else if (u & 0x80000000) {
		errno = EBADMSG;
		return -1;
	} else
		len = u;
	if (len > max) {
		errno = EMSGSIZE;
		return -1;
	}
	/* Grow with what arrives: a length alone does not buy memory. */
	while (out->len < len) {
		want = (size_t)len - out->len;
		buf_reserve(out, want < 65536 ? want : 65536);
		if (want > out->cap - out->len)
			want = out->cap - out->len;
		if ((n = read_some(fd, out->data + out->len, want,
		    deadline)) == -1)
			return -1;
		out->len += (size_t)n;
	}
	return 0;
}

int
wire_recv_frame(int fd, struct buf *out, size_t max, int timeout_ms)
{
	return recv_frame(fd, out, max, deadline_of(timeout_ms));
}

/*
 * Python 3.12's _get_digest_name_and_payload, minus the legacy lengths:
 * "{name}" with the first '}' among bytes 1 to MAX_NAME_LEN + 1 and the
 * name allowed.  Sets *prefix to the length of "{name}".
 */
static const struct digest *
parse_prefix(struct span m, size_t *prefix)
{
	size_t	 i, end, n;

	if (m.len < 2 || m.p[0] != '{')
		return NULL;
	end = m.len < MAX_NAME_LEN + 2 ? m.len : MAX_NAME_LEN + 2;
	for (i = 1; i < end && m.p[i] != '}'; i++)
		;
	if (i == end)
		return NULL;
	for (n = 0; n < sizeof(digests) / sizeof(digests[0]); n++)
		if (strlen(digests[n].name) == i - 1 &&
		    memcmp(digests[n].name, m.p + 1, i - 1) == 0) {
			*prefix = i + 1;
			return &digests[n];
		}
	return NULL;
}

static int
hmac(const struct digest *d, struct span key, struct span msg,
    unsigned char *mac, unsigned int *maclen)
{
	static const unsigned char	 nokey[1];

	if (key.len > INT_MAX)
		return -1;
	/* OpenSSL reads a NULL key as "reuse the last one". */
	if (HMAC(d->md(), key.len ? key.p : nokey, (int)key.len, msg.p,
	    msg.len, mac, maclen) == NULL)
		return -1;
	return 0;
}

int
wire_response(struct span key, struct span message, struct buf *out)
{
	const struct digest	*d;
	unsigned char		 mac[EVP_MAX_MD_SIZE];
	unsigned int		 maclen;
	size_t			 prefix;

	buf_reset(out);
	if (message.len == MD5ONLY_LEN || message.len == MD5_LEN) {
		d = digest_md5;
		prefix = 0;
	} else if ((d = parse_prefix(message, &prefix)) == NULL)
		return -1;
	if (hmac(d, key, message, mac, &maclen) == -1)
		return -1;
	/* The MAC covers the whole message, "{name}" included. */
	buf_add(out, message.p, prefix);
	buf_add(out, mac, maclen);
	explicit_bzero(mac, sizeof(mac));
	return 0;
}

int
wire_verify(struct span key, struct span message, struct span response)
{
	const struct digest	*d;
	unsigned char		 mac[EVP_MAX_MD_SIZE];
	unsigned int		 maclen;
	size_t			 prefix;
	int			 r;

	/* Python 3.11 answers any challenge with a bare HMAC-MD5. */
	if (response.len == MD5ONLY_LEN || response.len == MD5_LEN) {
		d = digest_md5;
		prefix = 0;
	} else if ((d = parse_prefix(response, &prefix)) == NULL)
		return -1;
	if (hmac(d, key, message, mac, &maclen) == -1)
		return -1;
	r = response.len - prefix == maclen &&
	    CRYPTO_memcmp(mac, response.p + prefix, maclen) == 0 ? 0 : -1;
	explicit_bzero(mac, sizeof(mac));
	return r;
}

/* The first bytes of a peer's frame, printable, for a log line. */
static const char *
shown(struct span s, char *dst, size_t dstlen)
{
	size_t	 i, o;

	for (i = o = 0; i < s.len && i < 16 && o + 5 < dstlen; i++) {
		if (s.p[i] >= 0x20 && s.p[i] < 0x7f && s.p[i] != '\\' &&
		    s.p[i] != '"')
			dst[o++] = s.p[i];
		else
			o += snprintf(dst + o, dstlen - o, "\\x%02x", s.p[i]);
	}
	if (i < s.len && o + 4 <= dstlen) {
		memcpy(dst + o, "...", 3);
		o += 3;
	}
	dst[o] = '\0';
	return dst;
}

/* A handshake frame: a bad length means the peer is not a Listener. */
static int
recv_auth(int fd, struct buf *b, int64_t deadline, const char *what,
    char *why, size_t whylen)
{
	if (recv_frame(fd, b, AUTH_MAX, deadline) == 0)
		return 0;
	if (errno == EMSGSIZE || errno == EBADMSG) {
		snprintf(why, whylen, "consumer sent a frame of bad length as its %s: "
		    "not a multiprocessing.connection Listener?", what);
		return WIRE_REFUSED;
	}
	return -1;
}

static int
buf_is(const struct buf *b, const char *s)
{
	return b->len == strlen(s) && memcmp(b->data, s, b->len) == 0;
}

int
wire_answer_challenge(int fd, struct span key, int timeout_ms, char *why,
    size_t whylen)
{
	struct buf	 in = { 0 }, resp = { 0 };
	struct span	 msg;
	int64_t		 deadline = deadline_of(timeout_ms);
	size_t		 prefix;
	char		 show[80];
	int		 r;

	if ((r = recv_auth(fd, &in, deadline, "challenge", why,
	    whylen)) != 0)
		goto done;
	r = WIRE_REFUSED;
	msg.p = in.data;
	msg.len = in.len;
	if (in.len < strlen(CHALLENGE) ||
	    memcmp(in.data, CHALLENGE, strlen(CHALLENGE)) != 0) {
		snprintf(why, whylen, "consumer sent no #CHALLENGE# but \"%s\" "
		    "(%zu bytes)", shown(msg, show, sizeof(show)), in.len);
		goto done;
	}
	msg.p += strlen(CHALLENGE);
	msg.len -= strlen(CHALLENGE);
	if (msg.len < MD5ONLY_LEN) {
		snprintf(why, whylen, "consumer's challenge is too short: %zu bytes",
		    msg.len);
		goto done;
	}
	if (msg.len != MD5ONLY_LEN && parse_prefix(msg, &prefix) == NULL) {
		snprintf(why, whylen, "consumer's challenge \"%s\" has no supported "
		    "{digest} prefix (md5, sha256, sha384, sha3_256, sha3_384)",
		    shown(msg, show, sizeof(show)));
		goto done;
	}
	if (wire_response(key, msg, &resp) == -1) {
		snprintf(why, whylen, "cannot compute the HMAC the consumer asks for: "
		    "digest disabled in this OpenSSL?");
		goto done;
	}
	if (send_frame(fd, resp.data, resp.len, deadline) == -1) {
		r = -1;
		goto done;
	}
	if ((r = recv_auth(fd, &in, deadline, "verdict", why,
	    whylen)) != 0)
		goto done;
	if (buf_is(&in, WELCOME))
		r = 0;
	else {
		r = WIRE_REFUSED;
		if (buf_is(&in, FAILURE))
			snprintf(why, whylen, "consumer refused our key");
		else {
			msg.p = in.data;
			msg.len = in.len;
			snprintf(why, whylen, "consumer answered our response with \"%s\", "
			    "not #WELCOME#", shown(msg, show, sizeof(show)));
		}
	}
 done:
	if (resp.data != NULL)
		explicit_bzero(resp.data, resp.cap);
	buf_free(&resp);
	buf_free(&in);
	return r;
}

int
wire_deliver_challenge(int fd, struct span key, int timeout_ms, char *why,
    size_t whylen)
{
	unsigned char	 chal[sizeof(CHALLENGE) - 1 + sizeof("{sha256}") - 1 +
			     NONCE_LEN];
	struct buf	 in = { 0 };
	struct span	 msg, resp;
	int64_t		 deadline = deadline_of(timeout_ms);
	size_t		 off;
	int		 r;

	off = strlen(CHALLENGE);
	memcpy(chal, CHALLENGE, off);
	chal[off++] = '{';
	memcpy(chal + off, digest_sha256->name, strlen(digest_sha256->name));
	off += strlen(digest_sha256->name);
	chal[off++] = '}';
	if (RAND_bytes(chal + off, NONCE_LEN) != 1) {
		snprintf(why, whylen, "RAND_bytes failed: cannot challenge the consumer");
		errno = EIO;
		return -1;
	}
	if (send_frame(fd, chal, sizeof(chal), deadline) == -1)
		return -1;
	if ((r = recv_auth(fd, &in, deadline, "response", why,
	    whylen)) != 0)
		goto done;
	msg.p = chal + strlen(CHALLENGE);
	msg.len = sizeof(chal) - strlen(CHALLENGE);
	resp.p = in.data;
	resp.len = in.len;
	if (wire_verify(key, msg, resp) == 0)
		r = send_frame(fd, WELCOME, strlen(WELCOME), deadline);
	else {
		snprintf(why, whylen, "consumer failed our challenge: it has another key");
		/* Best effort: the verdict stands even if it cannot be told. */
		(void)send_frame(fd, FAILURE, strlen(FAILURE), deadline);
		r = WIRE_REFUSED;
	}
 done:
	buf_free(&in);
	return r;
}
