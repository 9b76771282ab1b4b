/*
 * The startup barrier, with real processes: it opens when every party has
 * arrived, and a party that fails, dies or loses its parent breaks it for
 * all, without anyone hanging.
 */
#include <sys/wait.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ldapfeed.h"
#include "tap.h"

static double
now(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A party that waits and exits 10 if released, 20 if broken. */
static pid_t
party(struct barrier *b, pid_t parent)
{
	pid_t	 pid;

	if ((pid = fork()) == 0) {
		alarm(20);	/* a hang fails the test instead of blocking it */
		_exit(barrier_wait(b, NULL, parent) == 0 ? 10 : 20);
	}
	return pid;
}

static int
status_of(pid_t pid)
{
	int	 st;

	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

static int	 calls;

static int
marker_ok(void *arg, char *err, size_t len)
{
	(void)arg;
	(void)err;
	(void)len;
	calls++;
	return 0;
}

static int
marker_fails(void *arg, char *err, size_t len)
{
	(void)arg;
	snprintf(err, len, "removing the marker: Permission denied");
	return 78;
}

static void
handler(int sig)
{
	(void)sig;
	sig_term = 1;
}

int
main(void)
{
	struct barrier	*b;
	pid_t		 p1, p2, p3, mid;
	char		 msg[128];
	double		 t0;
	int		 st, pp[2];

	/* All three arrive: all released. */
	b = barrier_create(3);
	ok(b != NULL, "barrier created in shared memory");
	p1 = party(b, 0);
	p2 = party(b, 0);
	ok(barrier_state(b) == BARRIER_OPEN, "open while parties are missing");
	ok(barrier_arrive(b) != BARRIER_BROKEN, "the supervisor arrives");
	ok(status_of(p1) == 10 && status_of(p2) == 10, "every party released");
	ok(barrier_state(b) == BARRIER_RELEASED, "state released");
	ok(barrier_break(b, 69, "late") == 0 &&
	    barrier_state(b) == BARRIER_RELEASED,
	    "breaking after release changes nothing");
	barrier_destroy(b);

	/* The supervisor completes it, last, after its own step. */
	b = barrier_create(3);
	p1 = party(b, 0);
	ok(barrier_complete(b, marker_ok, NULL) == BARRIER_OPEN && calls == 0,
	    "not complete while a party is missing: the step waits");
	p2 = party(b, 0);
	t0 = now();
	while (barrier_complete(b, marker_ok, NULL) == BARRIER_OPEN &&
	    now() - t0 < 10)
		usleep(1000);
	ok(calls == 1 && barrier_state(b) == BARRIER_RELEASED,
	    "completed once all others arrived, the step run once");
	ok(status_of(p1) == 10 && status_of(p2) == 10,
	    "parties released only by the completion");
	barrier_destroy(b);

	b = barrier_create(2);
	p1 = party(b, 0);
	t0 = now();
	while (barrier_complete(b, marker_fails, NULL) == BARRIER_OPEN &&
	    now() - t0 < 10)
		usleep(1000);
	ok(barrier_state(b) == BARRIER_BROKEN &&
	    barrier_fail_code(b, msg, sizeof(msg)) == 78 &&
	    strstr(msg, "marker"), "a failed step breaks it with its code");
	ok(status_of(p1) == 20, "and the waiting party sees it broken");
	barrier_destroy(b);

	/* A party dies before arriving: the supervisor breaks it. */
	b = barrier_create(3);
	p1 = party(b, 0);
	if ((p2 = fork()) == 0)
		_exit(3);	/* dies in its preparation */
	t0 = now();
	waitpid(p2, &st, 0);
	ok(barrier_break(b, 70, "reader exited during startup") == 1,
	    "first breaker is told so");
	ok(status_of(p1) == 20, "waiting party sees it broken");
	ok(now() - t0 < 2, "no hang: %.2fs", now() - t0);
	ok(barrier_fail_code(b, msg, sizeof(msg)) == 70 &&
	    strcmp(msg, "reader exited during startup") == 0,
	    "code and reason kept");
	ok(barrier_break(b, 69, "second") == 0 &&
	    barrier_fail_code(b, NULL, 0) == 70, "second breaker does not win");
	ok(barrier_wait(b, NULL, 0) == -1, "arriving at a broken barrier fails");
	barrier_destroy(b);

	/* A party fails its preparation and breaks it itself. */
	b = barrier_create(4);
	p1 = party(b, 0);
	p2 = party(b, 0);
	if ((p3 = fork()) == 0) {
		barrier_break(b, 77, "consumer refused the key");
		_exit(77);
	}
	ok(status_of(p1) == 20 && status_of(p2) == 20,
	    "every waiter released as broken");
	ok(status_of(p3) == 77 && barrier_fail_code(b, NULL, 0) == 77,
	    "failing party's code is the barrier's");
	barrier_destroy(b);

	/* The supervisor dies: a waiting child notices on its own. */
	b = barrier_create(3);
	if (pipe(pp) == -1)
		return 1;
	t0 = now();
	if ((mid = fork()) == 0) {
		pid_t	 me = getpid(), child;

		if ((child = fork()) == 0) {
			int	 r;

			alarm(20);
			r = barrier_wait(b, NULL, me);
			write(pp[1], r == -1 ? "B" : "R", 1);
			_exit(0);
		}
		_exit(0);	/* the "supervisor" dies at once */
	}
	waitpid(mid, &st, 0);
	{
		char	 c = 0;

		read(pp[0], &c, 1);
		ok(c == 'B', "orphaned party breaks the barrier");
	}
	ok(now() - t0 < 2, "within a second or two: %.2fs", now() - t0);
	ok(barrier_state(b) == BARRIER_BROKEN, "and it stays broken");
	barrier_destroy(b);

	/* SIGTERM while waiting (stop flag set by a handler). */
	b = barrier_create(2);
	signal(SIGTERM, handler);	/* inherited: no window without it */
	if ((p1 = fork()) == 0) {
		alarm(20);
		_exit(barrier_wait(b, &sig_term, 0) == -1 ? 20 : 10);
	}
	t0 = now();
	while (barrier_state(b) == BARRIER_OPEN && now() - t0 < 10) {
		kill(p1, SIGTERM);
		usleep(20000);
	}
	ok(status_of(p1) == 20, "a stop request breaks the wait");
	barrier_destroy(b);
	return tap_done();
}
