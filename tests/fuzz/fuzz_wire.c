/*
 * libFuzzer harness for the consumer handshake: a hostile listener.  The
 * input is what the listener sends (its challenge, its verdict, its answer
 * to ours), written into one end of a socketpair; the worker's side runs
 * answer + deliver on the other.  Also the frame reader alone.  The outcome
 * must be 0, -1 or WIRE_REFUSED with a reason, never a crash or a hang.
 * `make fuzz` builds and runs it.
 */
#include <sys/socket.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ldapfeed.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	static const unsigned char keybytes[] = "fuzz-key";
	struct span	 key = { keybytes, sizeof(keybytes) - 1 };
	struct buf	 frame = { 0 };
	char		 why[256];
	int		 sv[2], r;

	/* Small enough to sit in the socket buffer: no writer thread needed. */
	if (len > 60000 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		return 0;
	if (write(sv[1], data, len) != (ssize_t)len)
		abort();
	shutdown(sv[1], SHUT_WR);
	why[0] = '\0';
	r = wire_answer_challenge(sv[0], key, 50, why, sizeof(why));
	if (r == 0)
		r = wire_deliver_challenge(sv[0], key, 50, why, sizeof(why));
	if (r != 0 && r != -1 && r != WIRE_REFUSED)
		abort();
	if (r == WIRE_REFUSED && why[0] == '\0')
		abort();
	close(sv[0]);
	close(sv[1]);

	/* The frame reader on the raw bytes. */
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		return 0;
	if (write(sv[1], data, len) != (ssize_t)len)
		abort();
	shutdown(sv[1], SHUT_WR);
	while (wire_recv_frame(sv[0], &frame, 1 << 16, 50) == 0)
		;
	buf_free(&frame);
	close(sv[0]);
	close(sv[1]);
	return 0;
}
