/*
 * Signal handlers: they only set a flag and poke a self-pipe, so that every
 * process's event loop (sigsuspend or poll) wakes up and does the work.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "ldapfeed.h"

volatile sig_atomic_t	 sig_term, sig_chld, sig_hup, sig_usr1, sig_usr2,
			 sig_alrm, sig_stopreq;
static int		 self_pipe[2] = { -1, -1 };

static void
handler(int sig)
{
	int	 saved = errno;

	switch (sig) {
	case SIGTERM:
	case SIGINT:
		sig_term = 1;
		break;
	case SIGCHLD:
		sig_chld = 1;
		break;
	case SIGHUP:
		sig_hup = 1;
		break;
	case SIGUSR1:
		sig_usr1 = 1;
		break;
	case SIGUSR2:
		sig_usr2 = 1;
		break;
	case SIGALRM:
		sig_alrm = 1;
		break;
	default:
		if (sig == SIGSTOPREQ)
			sig_stopreq = 1;
		break;
	}
	if (self_pipe[1] != -1)
		(void)write(self_pipe[1], "", 1);
	errno = saved;
}

#define NHANDLED	8

/* The signals ldapfeed handles (ldapfeed.8, SIGNALS).  (SIGRTMIN is no
 * constant in glibc, hence a function.) */
static void
handled(int sigs[NHANDLED])
{
	sigs[0] = SIGTERM;
	sigs[1] = SIGINT;
	sigs[2] = SIGCHLD;
	sigs[3] = SIGHUP;
	sigs[4] = SIGUSR1;
	sigs[5] = SIGUSR2;
	sigs[6] = SIGALRM;
	sigs[7] = SIGSTOPREQ;
}

/* The set of them, to block until a process can take them. */
void
signals_handled(sigset_t *set)
{
	int	 sigs[NHANDLED];
	size_t	 i;

	handled(sigs);
	sigemptyset(set);
	for (i = 0; i < NHANDLED; i++)
		sigaddset(set, sigs[i]);
}

/* Install the handlers and a fresh self-pipe (call again after fork). */
int
signals_init(void)
{
	struct sigaction	 sa;
	int			 sigs[NHANDLED];
	size_t			 i;

	if (self_pipe[0] != -1) {
		close(self_pipe[0]);
		close(self_pipe[1]);
	}
	if (pipe2(self_pipe, O_CLOEXEC | O_NONBLOCK) == -1)
		return -1;
	sig_term = sig_chld = sig_hup = sig_usr1 = sig_usr2 = sig_alrm = 0;
	sig_stopreq = 0;
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = handler;
	handled(sigs);
	for (i = 0; i < NHANDLED; i++)
		if (sigaction(sigs[i], &sa, NULL) == -1)
			return -1;
	sa.sa_handler = SIG_IGN;
	if (sigaction(SIGPIPE, &sa, NULL) == -1)
		return -1;
	return 0;
}

int
signals_fd(void)
{
	return self_pipe[0];
}

void
signals_drain(void)
{
	char	 junk[64];

	while (read(self_pipe[0], junk, sizeof(junk)) > 0)
		;
}

/* Sleep up to secs, but wake for a stop (sig_term). */
void
signals_pause(int secs)
{
	struct pollfd	 pfd;
	int64_t		 t0;
	double		 left;

	t0 = clock_ms();
	while (!sig_term && (left = secs - seconds_since(t0)) > 0) {
		pfd.fd = signals_fd();
		pfd.events = POLLIN;
		if (poll(&pfd, 1, (int)(left * 1000) + 1) > 0)
			signals_drain();
	}
}
