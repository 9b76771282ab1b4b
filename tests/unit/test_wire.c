/*
 * wire.c: frame headers, the HMAC responses and their checks against known
 * vectors, framing through socketpairs and pipes, and whole handshakes
 * against a listener written here independently of wire.c's HMAC code.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "ldapfeed.h"
#include "tap.h"

static char why[256];

#define S(lit)		span_of(lit, sizeof(lit) - 1)
#define BIG		(8U << 20)
#define CHILD_MS	10000

static struct span
span_of(const void *p, size_t len)
{
	struct span	 s;

	s.p = p;
	s.len = len;
	return s;
}

static int
buf_eq(const struct buf *b, const void *p, size_t len)
{
	return b->len == len && (len == 0 || memcmp(b->data, p, len) == 0);
}

static int64_t
ms_now(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static unsigned char
pattern(size_t i)
{
	return (unsigned char)(i ^ (i >> 8) ^ (i >> 16) ^ 0x5a);
}

static void
set_nonblock(int fd)
{
	int	 fl = fcntl(fd, F_GETFL);

	if (fl == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
		abort();
}

/* Runs fn(fd, arg) in a child on one end of a socketpair; *fd is ours. */
static pid_t
spawn(int (*fn)(int, const void *), const void *arg, int *fd)
{
	int	 sv[2];
	pid_t	 pid;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		abort();
	fflush(stdout);
	if ((pid = fork()) == -1)
		abort();
	if (pid == 0) {
		close(sv[0]);
		_exit(fn(sv[1], arg));
	}
	close(sv[1]);
	*fd = sv[0];
	return pid;
}

static int
reap(pid_t pid)
{
	int	 st;

	while (waitpid(pid, &st, 0) == -1)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void
test_headers(void)
{
	static const struct {
		uint64_t	 len;
		size_t		 n;
		const char	*hdr;
	} v[] = {
		/* struct.pack("!i", n), or "!i" -1 + "!Q" n from 0x7fffffff
		 * (doc/events.md, "The connection") */
		{ 0, 4, "\x00\x00\x00\x00" },
		{ 1, 4, "\x00\x00\x00\x01" },
		{ 0x7ffffffe, 4, "\x7f\xff\xff\xfe" },
		{ 0x7fffffff, 12,
		    "\xff\xff\xff\xff\x00\x00\x00\x00\x7f\xff\xff\xff" },
		{ 0x80000000, 12,
		    "\xff\xff\xff\xff\x00\x00\x00\x00\x80\x00\x00\x00" },
		{ 0x100000005ULL, 12,
		    "\xff\xff\xff\xff\x00\x00\x00\x01\x00\x00\x00\x05" },
	};
	unsigned char	 hdr[WIRE_MAX_HEADER];
	size_t		 i, n;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		memset(hdr, 0xaa, sizeof(hdr));
		n = wire_frame_header(hdr, v[i].len);
		ok(n == v[i].n && memcmp(hdr, v[i].hdr, n) == 0,
		    "frame header for %llu bytes", (unsigned long long)v[i].len);
	}
}

/* RFC 2202 section 2, the HMAC-MD5 test cases. */
static void
test_rfc2202(void)
{
	static unsigned char aa80[80], dd50[50], cd50[50];
	static const unsigned char k4[25] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
	    11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25 };
	const struct {
		struct span	 key, data;
		const char	*mac;
	} v[] = {
		{ S("\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b"
		    "\x0b\x0b"), S("Hi There"),
		  "\x92\x94\x72\x7a\x36\x38\xbb\x1c\x13\xf4\x8e\xf8\x15\x8b"
		  "\xfc\x9d" },
		{ S("Jefe"), S("what do ya want for nothing?"),
		  "\x75\x0c\x78\x3e\x6a\xb0\xb5\x03\xea\xa8\x6e\x31\x0a\x5d"
		  "\xb7\x38" },
		{ span_of(aa80, 16), span_of(dd50, 50),
		  "\x56\xbe\x34\x52\x1d\x14\x4c\x88\xdb\xb8\xc7\x33\xf0\xe8"
		  "\xb3\xf6" },
		{ span_of(k4, 25), span_of(cd50, 50),
		  "\x69\x7e\xaf\x0a\xca\x3a\x3a\xea\x3a\x75\x16\x47\x46\xff"
		  "\xaa\x79" },
		{ S("\x0c\x0c\x0c\x0c\x0c\x0c\x0c\x0c\x0c\x0c\x0c\x0c\x0c\x0c"
		    "\x0c\x0c"), S("Test With Truncation"),
		  "\x56\x46\x1e\xf2\x34\x2e\xdc\x00\xf9\xba\xb9\x95\x69\x0e"
		  "\xfd\x4c" },
		{ span_of(aa80, 80),
		  S("Test Using Larger Than Block-Size Key - Hash Key First"),
		  "\x6b\x1a\xb7\xfe\x4b\xd7\xbf\x8f\x0b\x62\xe6\xce\x61\xb9"
		  "\xd0\xcd" },
		{ span_of(aa80, 80),
		  S("Test Using Larger Than Block-Size Key and Larger Than One "
		    "Block-Size Data"),
		  "\x6f\x63\x0f\xad\x67\xcd\xa0\xee\x1f\xb1\xf5\x62\xdb\x3a"
		  "\xa5\x3e" },
	};
	struct buf	 b = { 0 };
	unsigned char	 md5p[5 + 16];
	size_t		 i;

	memset(aa80, 0xaa, sizeof(aa80));
	memset(dd50, 0xdd, sizeof(dd50));
	memset(cd50, 0xcd, sizeof(cd50));
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		ok(wire_verify(v[i].key, v[i].data, span_of(v[i].mac, 16))
		    == 0, "RFC 2202 HMAC-MD5 case %zu as a legacy response",
		    i + 1);
		memcpy(md5p, "{md5}", 5);
		memcpy(md5p + 5, v[i].mac, 16);
		ok(wire_verify(v[i].key, v[i].data, span_of(md5p, sizeof(md5p)))
		    == 0, "RFC 2202 HMAC-MD5 case %zu as a {md5} response",
		    i + 1);
	}
	/* Case 5's data is 20 bytes: a Python <= 3.11 challenge. */
	ok(wire_response(v[4].key, v[4].data, &b) == 0 &&
	    buf_eq(&b, v[4].mac, 16),
	    "RFC 2202 case 5 answered as a legacy 20-byte challenge");

	/* RFC 4231 test case 2, HMAC-SHA-256 and HMAC-SHA-384. */
	ok(wire_verify(S("Jefe"), S("what do ya want for nothing?"),
	    S("{sha256}\x5b\xdc\xc1\x46\xbf\x60\x75\x4e\x6a\x04\x24\x26\x08"
	    "\x95\x75\xc7\x5a\x00\x3f\x08\x9d\x27\x39\x83\x9d\xec\x58\xb9"
	    "\x64\xec\x38\x43")) == 0, "RFC 4231 case 2 as a {sha256} response");
	ok(wire_verify(S("Jefe"), S("what do ya want for nothing?"),
	    S("{sha384}\xaf\x45\xd2\xe3\x76\x48\x40\x31\x61\x7f\x78\xd2\xb5"
	    "\x8a\x6b\x1b\x9c\x7e\xf4\x64\xf5\xa0\x1b\x47\xe4\x2e\xc3\x73"
	    "\x63\x22\x44\x5e\x8e\x22\x40\xca\x5e\x69\xe2\xc7\x8b\x32\x39"
	    "\xec\xfa\xb2\x16\x49")) == 0,
	    "RFC 4231 case 2 as a {sha384} response");
	buf_free(&b);
}

/*
 * Expected values computed offline with Python 3.11:
 *   key = b'ldapfeed-test-key'; body = bytes(range(40))
 *   m = b'{%s}' % d.encode() + body
 *   hmac.new(key, m, d).digest()   for d in md5 sha256 sha384 sha3_*
 *   hmac.new(key, bytes(range(100, 116)), 'md5').digest()
 */
static const struct {
	const char	*name;
	const char	*mac;
	size_t		 maclen;
} known[] = {
	{ "md5", "\xe5\xa2\x67\xd8\x1f\xe0\x3a\x13\x45\xeb\x47\x17\x42\x8f"
	    "\x1b\x7e", 16 },
	{ "sha256", "\xb5\x7d\x36\x91\x18\x7e\xa3\x92\x9a\x5a\x66\x4d\xc4"
	    "\x30\xd4\x9f\x9c\x6f\x7b\x8c\x34\xdb\x23\x78\xe5\xd1\x19\x43\x59"
	    "\xeb\x8d\x1d", 32 },
	{ "sha384", "\x7d\xfa\x6c\x70\x9a\xb7\x3a\xdf\xb2\xdd\x1b\x1b\x96"
	    "\xd9\xbd\xd7\x35\x24\x63\x63\xaa\x14\x7c\x90\x3e\xb5\x7a\x49\xab"
	    "\x24\xf5\xbf\xfe\x91\xc3\x0c\x60\xe8\x3a\xb5\xad\x21\xb5\x2e\xfd"
	    "\x8e\x0e\x16", 48 },
	{ "sha3_256", "\x97\x9d\x75\x43\x85\x66\x71\x75\x35\xf4\xf7\x22\xc5"
	    "\xff\xde\x1f\xdb\x1f\x52\x4b\xf3\xd0\x0a\xe3\x21\x2b\x96\x05\xa0"
	    "\x28\xad\x64", 32 },
	{ "sha3_384", "\x77\xe8\x07\x2c\x2d\x3c\x49\xb2\x3c\x4a\xb6\xbf\xe6"
	    "\x75\x21\xf8\x50\x57\xa9\x63\x68\xf3\xf6\x5e\xf5\x68\xf2\xd8\x0d"
	    "\xa1\xe1\x3d\x3a\x09\x83\x56\x07\x2d\x74\x2a\xe4\x86\x14\xa3\xd5"
	    "\xdf\x99\x55", 48 },
};
static const char legacy16[] = "\x4d\x2d\x16\x71\xd2\x39\xe7\xe1\xd9\xf5"
    "\x16\x3f\x64\x5a\x61\x3f";

/* "{name}" + bytes(range(40)) */
static void
known_message(struct buf *m, const char *name)
{
	int	 i;

	buf_reset(m);
	buf_printf(m, "{%s}", name);
	for (i = 0; i < 40; i++)
		buf_add_u8(m, (uint8_t)i);
}

static void
test_response(void)
{
	struct span	 key = S("ldapfeed-test-key");
	struct buf	 m = { 0 }, r = { 0 }, want = { 0 };
	unsigned char	 m16[16];
	size_t		 i;
	int		 j;

	for (i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		known_message(&m, known[i].name);
		buf_reset(&want);
		buf_printf(&want, "{%s}", known[i].name);
		buf_add(&want, known[i].mac, known[i].maclen);
		ok(wire_response(key, span_of(m.data, m.len), &r) == 0 &&
		    buf_eq(&r, want.data, want.len),
		    "response to a {%s} challenge", known[i].name);
	}
	for (j = 0; j < 16; j++)
		m16[j] = (unsigned char)(100 + j);
	ok(wire_response(key, span_of(m16, 16), &r) == 0 &&
	    buf_eq(&r, legacy16, 16), "response to a 16-byte message is legacy");

	/* What Python 3.12 rejects too. */
	known_message(&m, "sha512");
	ok(wire_response(key, span_of(m.data, m.len), &r) == -1,
	    "no response to a {sha512} challenge");
	known_message(&m, "SHA256");
	ok(wire_response(key, span_of(m.data, m.len), &r) == -1,
	    "no response to {SHA256}: names are case-sensitive");
	known_message(&m, "");
	ok(wire_response(key, span_of(m.data, m.len), &r) == -1,
	    "no response to an empty {} name");
	known_message(&m, "sha256-with-a-long-name");
	ok(wire_response(key, span_of(m.data, m.len), &r) == -1,
	    "no response when } lies beyond the first 20 bytes");
	buf_reset(&m);
	buf_add_str(&m, "{sha256");
	for (j = 0; j < 40; j++)
		buf_add_u8(&m, 'x');
	ok(wire_response(key, span_of(m.data, m.len), &r) == -1,
	    "no response without a closing }");
	ok(wire_response(key, S("abcdefghijklmnopqrstuvwxyz0123456789"), &r)
	    == -1, "no response to an unprefixed 36-byte challenge");
	ok(wire_response(key, S("abcdefghijklmnopqrs"), &r) == -1,
	    "no response to an unprefixed 19-byte challenge");
	ok(wire_response(key, S("{sha256}"), &r) == 0 && r.len == 8 + 32,
	    "a bare {sha256} is still a well-formed challenge");
	buf_free(&m);
	buf_free(&r);
	buf_free(&want);
}

static void
test_verify(void)
{
	struct span	 key = S("ldapfeed-test-key");
	struct buf	 m = { 0 }, r = { 0 }, bad = { 0 };
	unsigned char	 m16[16];
	size_t		 i;
	int		 j;

	/* Our own challenges carry {sha256}; a client may answer any. */
	known_message(&m, "sha256");
	for (i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		unsigned char	 mac[EVP_MAX_MD_SIZE];
		unsigned int	 maclen;
		const EVP_MD	*md = EVP_get_digestbyname(
		    i == 0 ? "MD5" : i == 1 ? "SHA256" : i == 2 ? "SHA384" :
		    i == 3 ? "SHA3-256" : "SHA3-384");

		HMAC(md, key.p, (int)key.len, m.data, m.len, mac, &maclen);
		buf_reset(&r);
		buf_printf(&r, "{%s}", known[i].name);
		buf_add(&r, mac, maclen);
		ok(wire_verify(key, span_of(m.data, m.len),
		    span_of(r.data, r.len)) == 0,
		    "verify accepts a {%s} response", known[i].name);
		r.data[r.len - 1] ^= 1;
		ok(wire_verify(key, span_of(m.data, m.len),
		    span_of(r.data, r.len)) == -1,
		    "verify rejects a {%s} response with one bit flipped",
		    known[i].name);
	}

	known_message(&m, "sha256");
	buf_reset(&r);
	buf_add_str(&r, "{sha256}");
	buf_add(&r, known[1].mac, 32);
	ok(wire_verify(key, span_of(m.data, m.len), span_of(r.data, r.len))
	    == 0, "verify accepts the known {sha256} response");
	ok(wire_verify(S("ldapfeed-test-kez"), span_of(m.data, m.len),
	    span_of(r.data, r.len)) == -1, "verify rejects another key");
	ok(wire_verify(key, span_of(m.data, m.len - 1),
	    span_of(r.data, r.len)) == -1, "verify rejects another message");
	ok(wire_verify(key, span_of(m.data, m.len), span_of(r.data, r.len - 1))
	    == -1, "verify rejects a truncated {sha256} response");
	buf_add_u8(&r, 0);
	ok(wire_verify(key, span_of(m.data, m.len), span_of(r.data, r.len))
	    == -1, "verify rejects a {sha256} response one byte too long");
	ok(wire_verify(key, span_of(m.data, m.len), S("{sha256}")) == -1,
	    "verify rejects a bare {sha256}");
	ok(wire_verify(key, span_of(m.data, m.len), S("")) == -1,
	    "verify rejects an empty response");

	/* A {sha256} MAC under the wrong names. */
	buf_reset(&bad);
	buf_add_str(&bad, "{sha3_256}");
	buf_add(&bad, known[1].mac, 32);
	ok(wire_verify(key, span_of(m.data, m.len), span_of(bad.data, bad.len))
	    == -1, "verify rejects a {sha256} MAC labelled {sha3_256}");
	buf_reset(&bad);
	buf_add_str(&bad, "{sha512}");
	buf_add(&bad, known[1].mac, 32);
	buf_add(&bad, known[1].mac, 32);
	ok(wire_verify(key, span_of(m.data, m.len), span_of(bad.data, bad.len))
	    == -1, "verify rejects an unknown {sha512} digest");
	buf_reset(&bad);
	buf_add_str(&bad, "{sha256");
	for (j = 0; j < 13; j++)
		buf_add_u8(&bad, ' ');
	buf_add_str(&bad, "}");
	buf_add(&bad, known[1].mac, 32);
	ok(wire_verify(key, span_of(m.data, m.len), span_of(bad.data, bad.len))
	    == -1, "verify rejects a } beyond the first 20 bytes");
	buf_reset(&bad);
	buf_add(&bad, known[1].mac, 32);
	ok(wire_verify(key, span_of(m.data, m.len), span_of(bad.data, bad.len))
	    == -1, "verify rejects an unprefixed 32-byte response");

	/* A Python 3.11 listener answers our challenge with bare HMAC-MD5. */
	known_message(&m, "md5");
	ok(wire_verify(key, span_of(m.data, m.len),
	    span_of(known[0].mac, 16)) == 0,
	    "verify accepts a legacy 16-byte HMAC-MD5 response");
	ok(wire_verify(key, span_of(m.data, m.len),
	    span_of(known[0].mac, 15)) == -1,
	    "verify rejects a 15-byte response");
	buf_reset(&bad);
	buf_add(&bad, known[0].mac, 16);
	buf_add(&bad, "\0\0\0\0", 4);
	ok(wire_verify(key, span_of(m.data, m.len), span_of(bad.data, bad.len))
	    == -1, "verify rejects a 20-byte legacy-length response");
	bad.data[0] ^= 0x80;
	ok(wire_verify(key, span_of(m.data, m.len), span_of(bad.data, 16))
	    == -1, "verify rejects a wrong legacy response");
	for (j = 0; j < 16; j++)
		m16[j] = (unsigned char)(100 + j);
	ok(wire_verify(key, span_of(m16, 16), span_of(legacy16, 16)) == 0,
	    "verify accepts the known legacy response to a 16-byte message");
	buf_free(&m);
	buf_free(&r);
	buf_free(&bad);
}

static int
child_send_big(int fd, const void *arg)
{
	unsigned char	*p;
	size_t		 i;
	int		 r;

	(void)arg;
	set_nonblock(fd);
	p = xmalloc(BIG);
	for (i = 0; i < BIG; i++)
		p[i] = pattern(i);
	r = wire_send_frame(fd, p, BIG, CHILD_MS) == 0 &&
	    wire_send_frame(fd, "tail", 4, CHILD_MS) == 0 ? 0 : 1;
	free(p);
	return r;
}

static int
child_recv_big(int fd, const void *arg)
{
	struct buf	 b = { 0 };
	size_t		 i;
	int		 r = 0;

	(void)arg;
	if (wire_recv_frame(fd, &b, BIG, CHILD_MS) == -1 || b.len != BIG)
		r = 1;
	for (i = 0; r == 0 && i < b.len; i++)
		if (b.data[i] != pattern(i))
			r = 2;
	buf_free(&b);
	return r;
}

static int
big_ok(const struct buf *b)
{
	size_t	 i;

	if (b->len != BIG)
		return 0;
	for (i = 0; i < BIG; i++)
		if (b->data[i] != pattern(i))
			return 0;
	return 1;
}

static void
test_frames(void)
{
	struct buf	 b = { 0 };
	unsigned char	*p;
	int		 sv[2], pfd[2], fd, e;
	int64_t		 t0;
	size_t		 i;
	pid_t		 pid;

	/* Small frames both ways, empty included. */
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		abort();
	ok(wire_send_frame(sv[0], "hello", 5, 1000) == 0 &&
	    wire_send_frame(sv[0], "", 0, 1000) == 0 &&
	    wire_send_frame(sv[0], "x", 1, -1) == 0,
	    "three small frames sent");
	ok(wire_recv_frame(sv[1], &b, 256, 1000) == 0 &&
	    buf_eq(&b, "hello", 5), "first frame received");
	ok(wire_recv_frame(sv[1], &b, 256, 1000) == 0 && b.len == 0,
	    "an empty frame received");
	ok(wire_recv_frame(sv[1], &b, 1, 1000) == 0 && buf_eq(&b, "x", 1),
	    "a frame of exactly max bytes received");

	/* The -1 escape also carries small lengths, and Python reads them. */
	ok(write(sv[0], "\xff\xff\xff\xff\0\0\0\0\0\0\0\x03" "abc", 15) == 15 &&
	    wire_recv_frame(sv[1], &b, 256, 1000) == 0 &&
	    buf_eq(&b, "abc", 3), "an escaped 8-byte length is read");

	ok(wire_send_frame(sv[0], "0123456789", 10, 1000) == 0 &&
	    wire_recv_frame(sv[1], &b, 9, 1000) == -1 && errno == EMSGSIZE,
	    "a frame over max is EMSGSIZE");
	close(sv[0]);
	close(sv[1]);

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		abort();
	ok(write(sv[0], "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
	    12) == 12 && wire_recv_frame(sv[1], &b, 1U << 30, 1000) == -1 &&
	    errno == EMSGSIZE, "an escaped 2^64-1 length is EMSGSIZE");
	close(sv[0]);
	close(sv[1]);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		abort();
	ok(write(sv[0], "\x80\x00\x00\x05", 4) == 4 &&
	    wire_recv_frame(sv[1], &b, 256, 1000) == -1 && errno == EBADMSG,
	    "a negative length other than -1 is EBADMSG");
	close(sv[0]);
	close(sv[1]);

	/* EOF before a frame, in its header and in its payload. */
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		abort();
	close(sv[0]);
	ok(wire_recv_frame(sv[1], &b, 256, 1000) == -1 && errno == ECONNRESET,
	    "EOF before a frame is ECONNRESET");
	close(sv[1]);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		abort();
	ok(write(sv[0], "\0\0", 2) == 2, "half a header written");
	close(sv[0]);
	ok(wire_recv_frame(sv[1], &b, 256, 1000) == -1 && errno == ECONNRESET,
	    "EOF inside a header is ECONNRESET");
	close(sv[1]);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		abort();
	ok(write(sv[0], "\0\0\0\x0a" "abc", 7) == 7, "a short frame written");
	close(sv[0]);
	ok(wire_recv_frame(sv[1], &b, 256, 1000) == -1 && errno == ECONNRESET,
	    "EOF inside a payload is ECONNRESET");
	close(sv[1]);

	/* Timeouts: nothing at all, and a frame that stalls half-way. */
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		abort();
	t0 = ms_now();
	ok(wire_recv_frame(sv[1], &b, 256, 150) == -1 && errno == ETIMEDOUT,
	    "receiving nothing times out");
	ok(ms_now() - t0 >= 140 && ms_now() - t0 < 3000,
	    "after about 150 ms (%lld)", (long long)(ms_now() - t0));
	ok(write(sv[0], "\0\0\0\x0a" "abc", 7) == 7, "a partial frame written");
	t0 = ms_now();
	ok(wire_recv_frame(sv[1], &b, 256, 150) == -1 && errno == ETIMEDOUT,
	    "a stalled frame times out");
	ok(wire_recv_frame(sv[1], &b, 256, 0) == -1 && errno == ETIMEDOUT,
	    "timeout 0 polls once");

	/* A blocking socket nobody reads: the deadline still holds. */
	p = xcalloc(1, BIG);
	t0 = ms_now();
	ok(wire_send_frame(sv[1], p, BIG, 150) == -1 && errno == ETIMEDOUT,
	    "sending %u bytes nobody reads times out", BIG);
	ok(ms_now() - t0 >= 140 && ms_now() - t0 < 3000,
	    "after about 150 ms (%lld)", (long long)(ms_now() - t0));
	close(sv[0]);
	errno = 0;
	ok(wire_send_frame(sv[1], "x", 1, 1000) == -1 && errno == EPIPE,
	    "sending to a closed peer is EPIPE, not SIGPIPE");
	close(sv[1]);
	free(p);

	/* Several MiB each way: the child's end is non-blocking. */
	pid = spawn(child_send_big, NULL, &fd);
	ok(wire_recv_frame(fd, &b, BIG, CHILD_MS) == 0 && big_ok(&b),
	    "a %u-byte frame from a non-blocking sender", BIG);
	ok(wire_recv_frame(fd, &b, BIG, CHILD_MS) == 0 && buf_eq(&b, "tail", 4),
	    "and the frame after it");
	ok(reap(pid) == 0, "the sender child succeeded");
	close(fd);

	pid = spawn(child_recv_big, NULL, &fd);
	set_nonblock(fd);
	p = xmalloc(BIG);
	for (i = 0; i < BIG; i++)
		p[i] = pattern(i);
	ok(wire_send_frame(fd, p, BIG, CHILD_MS) == 0,
	    "a %u-byte frame sent on a non-blocking socket", BIG);
	ok((e = reap(pid)) == 0, "the child received it intact (%d)", e);
	close(fd);

	/* A pipe is no socket: the plain read/write path. */
	if (pipe(pfd) == -1)
		abort();
	fflush(stdout);
	if ((pid = fork()) == -1)
		abort();
	if (pid == 0) {
		close(pfd[0]);
		_exit(wire_send_frame(pfd[1], p, BIG, CHILD_MS) == 0 ? 0 : 1);
	}
	close(pfd[1]);
	ok(wire_recv_frame(pfd[0], &b, BIG, CHILD_MS) == 0 && big_ok(&b),
	    "a %u-byte frame through a pipe", BIG);
	ok(reap(pid) == 0, "the pipe writer succeeded");
	close(pfd[0]);
	free(p);
	buf_free(&b);
}

/*
 * The listener side, as Python writes it, with its own HMAC calls so that
 * a mistake shared by wire_response and wire_verify cannot hide.
 */
#define L_LEGACY	0x01	/* Python <= 3.11: 20 bytes, bare HMAC-MD5 */
#define L_NO_DELIVER	0x02	/* only answer the client's challenge */
#define L_READ_AFTER	0x04	/* then expect a frame "after" */

struct lconf {
	struct span	 key;
	int		 flags;
};

static void
lmac(const char *dig, struct span key, const void *m, size_t len,
    struct buf *out)
{
	unsigned char	 mac[EVP_MAX_MD_SIZE];
	unsigned int	 maclen;

	HMAC(EVP_get_digestbyname(dig), key.p, (int)key.len, m, len, mac,
	    &maclen);
	buf_add(out, mac, maclen);
}

static int
listener(int fd, const void *arg)
{
	const struct lconf	*c = arg;
	struct buf		 in = { 0 }, want = { 0 };
	unsigned char		 msg[8 + 40];
	size_t			 mlen;
	int			 r = 0;

	if (!(c->flags & L_NO_DELIVER)) {
		if (c->flags & L_LEGACY) {
			mlen = 20;
			RAND_bytes(msg, 20);
		} else {
			memcpy(msg, "{sha256}", 8);
			RAND_bytes(msg + 8, 40);
			mlen = 48;
		}
		buf_add_str(&want, "#CHALLENGE#");
		buf_add(&want, msg, mlen);
		if (wire_send_frame(fd, want.data, want.len, CHILD_MS) == -1 ||
		    wire_recv_frame(fd, &in, 256, CHILD_MS) == -1)
			return 2;
		buf_reset(&want);
		if (c->flags & L_LEGACY)
			lmac("MD5", c->key, msg, mlen, &want);
		else {
			buf_add_str(&want, "{sha256}");
			lmac("SHA256", c->key, msg, mlen, &want);
		}
		if (!buf_eq(&in, want.data, want.len)) {
			wire_send_frame(fd, "#FAILURE#", 9, CHILD_MS);
			r = 1;
			goto done;
		}
		if (wire_send_frame(fd, "#WELCOME#", 9, CHILD_MS) == -1)
			return 2;
	}
	if (wire_recv_frame(fd, &in, 256, CHILD_MS) == -1 || in.len < 11 ||
	    memcmp(in.data, "#CHALLENGE#", 11) != 0)
		return 2;
	buf_reset(&want);
	if (c->flags & L_LEGACY)
		lmac("MD5", c->key, in.data + 11, in.len - 11, &want);
	else {
		if (in.len < 19 || memcmp(in.data + 11, "{sha256}", 8) != 0)
			return 2;
		buf_add_str(&want, "{sha256}");
		lmac("SHA256", c->key, in.data + 11, in.len - 11, &want);
	}
	if (wire_send_frame(fd, want.data, want.len, CHILD_MS) == -1 ||
	    wire_recv_frame(fd, &in, 256, CHILD_MS) == -1)
		return 2;
	r = buf_eq(&in, "#WELCOME#", 9) ? 0 : 1;
	if (r == 0 && (c->flags & L_READ_AFTER) &&
	    (wire_recv_frame(fd, &in, 256, CHILD_MS) == -1 ||
	    !buf_eq(&in, "after", 5)))
		r = 3;
 done:
	buf_free(&in);
	buf_free(&want);
	return r;
}

/* A peer that sends raw bytes, then drains until EOF. */
struct rawconf {
	const char	*bytes;
	size_t		 len;
	int		 read_first;	/* read one frame before a second send */
	const char	*then;
	size_t		 thenlen;
};

static int
rawpeer(int fd, const void *arg)
{
	const struct rawconf	*c = arg;
	struct buf		 in = { 0 };
	char			 sink[512];

	if (c->len > 0 && write(fd, c->bytes, c->len) != (ssize_t)c->len)
		return 2;
	if (c->read_first) {
		if (wire_recv_frame(fd, &in, 256, CHILD_MS) == -1)
			return 2;
		buf_free(&in);
		if (c->thenlen == 0)
			return 0;	/* hang up */
		if (write(fd, c->then, c->thenlen) != (ssize_t)c->thenlen)
			return 2;
	}
	while (read(fd, sink, sizeof(sink)) > 0)
		;
	buf_free(&in);
	return 0;
}

static void
test_handshake(void)
{
	struct span	 key = S("a shared secret"), other = S("another secret");
	struct lconf	 lc;
	struct rawconf	 rc;
	struct buf	 b = { 0 };
	int		 fd, r1, r2, e;
	pid_t		 pid;

	lc.key = key;
	lc.flags = L_READ_AFTER;
	pid = spawn(listener, &lc, &fd);
	r1 = wire_answer_challenge(fd, key, CHILD_MS, why, sizeof(why));
	r2 = r1 == 0 ? wire_deliver_challenge(fd, key, CHILD_MS, why, sizeof(why)) : -9;
	ok(r1 == 0 && r2 == 0,
	    "3.12-style listener, right key: answer %d, deliver %d", r1, r2);
	ok(wire_send_frame(fd, "after", 5, CHILD_MS) == 0,
	    "a frame after the handshake");
	close(fd);
	ok((e = reap(pid)) == 0,
	    "the 3.12-style listener accepted us and got the frame (%d)", e);

	lc.flags = L_LEGACY;
	pid = spawn(listener, &lc, &fd);
	r1 = wire_answer_challenge(fd, key, CHILD_MS, why, sizeof(why));
	r2 = r1 == 0 ? wire_deliver_challenge(fd, key, CHILD_MS, why, sizeof(why)) : -9;
	ok(r1 == 0 && r2 == 0,
	    "3.11-style listener, right key: answer %d, deliver %d", r1, r2);
	close(fd);
	ok((e = reap(pid)) == 0, "the 3.11-style listener accepted us (%d)", e);

	/* The listener has another key: it refuses our answer. */
	lc.key = other;
	lc.flags = 0;
	pid = spawn(listener, &lc, &fd);
	ok((r1 = wire_answer_challenge(fd, key, CHILD_MS, why, sizeof(why))) == WIRE_REFUSED,
	    "3.12-style listener with another key refuses us (%d)", r1);
	close(fd);
	ok((e = reap(pid)) == 1, "and it saw a wrong digest (%d)", e);
	lc.flags = L_LEGACY;
	pid = spawn(listener, &lc, &fd);
	ok((r1 = wire_answer_challenge(fd, key, CHILD_MS, why, sizeof(why))) == WIRE_REFUSED,
	    "3.11-style listener with another key refuses us (%d)", r1);
	close(fd);
	ok((e = reap(pid)) == 1, "and it saw a wrong digest (%d)", e);

	/* Our own challenge, answered with another key: we refuse it. */
	lc.flags = L_NO_DELIVER;
	pid = spawn(listener, &lc, &fd);
	ok((r2 = wire_deliver_challenge(fd, key, CHILD_MS, why, sizeof(why))) == WIRE_REFUSED,
	    "a {sha256} answer with another key is refused (%d)", r2);
	close(fd);
	ok((e = reap(pid)) == 1, "and the listener got #FAILURE# (%d)", e);
	lc.flags = L_NO_DELIVER | L_LEGACY;
	pid = spawn(listener, &lc, &fd);
	ok((r2 = wire_deliver_challenge(fd, key, CHILD_MS, why, sizeof(why))) == WIRE_REFUSED,
	    "a bare HMAC-MD5 answer with another key is refused (%d)", r2);
	close(fd);
	ok((e = reap(pid)) == 1, "and the listener got #FAILURE# (%d)", e);
	lc.key = key;
	pid = spawn(listener, &lc, &fd);
	ok((r2 = wire_deliver_challenge(fd, key, CHILD_MS, why, sizeof(why))) == 0,
	    "a bare HMAC-MD5 answer with our key is accepted (%d)", r2);
	close(fd);
	ok((e = reap(pid)) == 0, "and the listener got #WELCOME# (%d)", e);

	/* Listeners that are not listeners. */
	memset(&rc, 0, sizeof(rc));
	rc.bytes = "\0\0\0\x0bHELLO WORLD";
	rc.len = 15;
	pid = spawn(rawpeer, &rc, &fd);
	ok(wire_answer_challenge(fd, key, CHILD_MS, why, sizeof(why)) == WIRE_REFUSED,
	    "a frame without #CHALLENGE# is refused");
	close(fd);
	reap(pid);

	buf_reset(&b);
	buf_add(&b, "\0\0\0\x3b#CHALLENGE#{sha512}", 23);
	buf_add(&b, "0123456789012345678901234567890123456789", 40);
	rc.bytes = (const char *)b.data;
	rc.len = b.len;
	pid = spawn(rawpeer, &rc, &fd);
	ok(wire_answer_challenge(fd, key, CHILD_MS, why, sizeof(why)) == WIRE_REFUSED,
	    "a {sha512} challenge is refused");
	close(fd);
	reap(pid);

	rc.bytes = "\0\0\0\x1e#CHALLENGE#0123456789012345678";
	rc.len = 4 + 11 + 19;
	pid = spawn(rawpeer, &rc, &fd);
	ok(wire_answer_challenge(fd, key, CHILD_MS, why, sizeof(why)) == WIRE_REFUSED,
	    "a 19-byte challenge is refused");
	close(fd);
	reap(pid);

	rc.bytes = "HTTP/1.1 400 Bad Request\r\n\r\n";
	rc.len = strlen(rc.bytes);
	pid = spawn(rawpeer, &rc, &fd);
	ok(wire_answer_challenge(fd, key, CHILD_MS, why, sizeof(why)) == WIRE_REFUSED,
	    "an unframed HTTP answer is refused");
	close(fd);
	reap(pid);

	rc.bytes = "\0\0\0\x1f#CHALLENGE#01234567890123456789";
	rc.len = 4 + 11 + 20;
	rc.read_first = 1;
	rc.then = "\0\0\0\x09#WELCOMEX";
	rc.thenlen = 13;
	pid = spawn(rawpeer, &rc, &fd);
	ok(wire_answer_challenge(fd, key, CHILD_MS, why, sizeof(why)) == WIRE_REFUSED,
	    "a verdict other than #WELCOME# is refused");
	close(fd);
	reap(pid);

	rc.then = NULL;
	rc.thenlen = 0;
	pid = spawn(rawpeer, &rc, &fd);
	ok(wire_answer_challenge(fd, key, CHILD_MS, why, sizeof(why)) == -1 &&
	    errno == ECONNRESET, "a listener that hangs up is ECONNRESET");
	close(fd);
	reap(pid);

	rc.bytes = "";
	rc.len = 0;
	rc.read_first = 0;
	pid = spawn(rawpeer, &rc, &fd);
	ok(wire_deliver_challenge(fd, key, 150, why, sizeof(why)) == -1 && errno == ETIMEDOUT,
	    "deliver times out when nobody answers");
	ok(wire_answer_challenge(fd, key, 150, why, sizeof(why)) == -1 && errno == ETIMEDOUT,
	    "answer times out when nobody challenges");
	close(fd);
	reap(pid);
	buf_free(&b);
}

int
main(void)
{
	log_init(1, 0, "test_wire");
	alarm(120);
	test_headers();
	test_rfc2202();
	test_response();
	test_verify();
	test_frames();
	test_handshake();
	return tap_done();
}
