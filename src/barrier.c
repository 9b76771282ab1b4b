/*
 * The startup barrier: 1 + 1 + W processes meet here before anything is
 * changed.  It lives in shared memory and can be broken: a party that fails,
 * dies, or sees its supervisor die wakes everyone, and nobody hangs.  The
 * supervisor is always the last party: told when the others are in, it
 * does what must precede the release (the marker) under the barrier's lock,
 * so no party can break it halfway.
 */
#include <sys/mman.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ldapfeed.h"

/* How often a waiter looks up from the condition to check for a stop. */
#define BARRIER_CHECK_MS	100

struct barrier {
	pthread_mutex_t		 mutex;
	pthread_cond_t		 cond;
	unsigned		 parties;
	unsigned		 arrived;
	enum barrier_state	 state;
	pid_t			 notify;	/* told with SIGUSR2: all but it in */
	int			 fail_code;
	char			 fail_msg[512];
};

struct barrier *
barrier_create(unsigned parties)
{
	pthread_mutexattr_t	 ma;
	pthread_condattr_t	 ca;
	struct barrier		*b;

	b = mmap(NULL, sizeof(*b), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (b == MAP_FAILED)
		return NULL;
	memset(b, 0, sizeof(*b));
	if (pthread_mutexattr_init(&ma) != 0 ||
	    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED) != 0 ||
	    pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST) != 0 ||
	    pthread_mutex_init(&b->mutex, &ma) != 0 ||
	    pthread_condattr_init(&ca) != 0 ||
	    pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED) != 0 ||
	    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
	    pthread_cond_init(&b->cond, &ca) != 0) {
		munmap(b, sizeof(*b));
		return NULL;
	}
	pthread_mutexattr_destroy(&ma);
	pthread_condattr_destroy(&ca);
	b->parties = parties;
	b->state = BARRIER_OPEN;
	return b;
}

void
barrier_destroy(struct barrier *b)
{
	if (b != NULL)
		munmap(b, sizeof(*b));
}

/* Lock; a party that died holding the lock breaks the barrier. */
static void
lock(struct barrier *b)
{
	if (pthread_mutex_lock(&b->mutex) == EOWNERDEAD) {
		pthread_mutex_consistent(&b->mutex);
		if (b->state == BARRIER_OPEN) {
			b->state = BARRIER_BROKEN;
			b->fail_code = 70;
			snprintf(b->fail_msg, sizeof(b->fail_msg),
			    "a process died during startup");
			pthread_cond_broadcast(&b->cond);
		}
	}
}

static void
unlock(struct barrier *b)
{
	pthread_mutex_unlock(&b->mutex);
}

/* Count one arrival; the last one releases everybody. */
static enum barrier_state
arrive_locked(struct barrier *b)
{
	if (b->state != BARRIER_OPEN)
		return b->state;
	if (++b->arrived == b->parties) {
		b->state = BARRIER_RELEASED;
		pthread_cond_broadcast(&b->cond);
	} else if (b->arrived == b->parties - 1 && b->notify != 0 &&
	    b->notify != getpid())
		kill(b->notify, SIGUSR2);	/* only the last one missing */
	return b->state;
}

/*
 * The last party: once all the others are in, run fn (it may still fail:
 * then the barrier breaks with its code) and release everyone.  Returns the
 * state after; BARRIER_OPEN while others are still missing.
 */
enum barrier_state
barrier_complete(struct barrier *b, int (*fn)(void *, char *, size_t),
    void *arg)
{
	enum barrier_state	 s;
	char			 msg[sizeof(b->fail_msg)];
	int			 code;

	lock(b);
	if (b->state == BARRIER_OPEN && b->arrived == b->parties - 1) {
		msg[0] = '\0';
		if ((code = fn(arg, msg, sizeof(msg))) != 0) {
			b->state = BARRIER_BROKEN;
			b->fail_code = code;
			snprintf(b->fail_msg, sizeof(b->fail_msg), "%s", msg);
			pthread_cond_broadcast(&b->cond);
		} else
			arrive_locked(b);
	}
	s = b->state;
	unlock(b);
	return s;
}

void
barrier_set_notify(struct barrier *b, pid_t pid)
{
	lock(b);
	b->notify = pid;
	unlock(b);
}

enum barrier_state
barrier_arrive(struct barrier *b)
{
	enum barrier_state	 s;

	lock(b);
	s = arrive_locked(b);
	unlock(b);
	return s;
}

/*
 * Arrive and wait for the others.  Waiting wakes every BARRIER_CHECK_MS to
 * look at *stop (set by a signal handler) and at the parent: if either says
 * so, this party breaks the barrier rather than wait for ever.
 */
int
barrier_wait(struct barrier *b, volatile sig_atomic_t *stop, pid_t parent)
{
	struct timespec	 ts;
	int		 released;

	lock(b);
	arrive_locked(b);
	while (b->state == BARRIER_OPEN) {
		if ((stop && *stop) || (parent && getppid() != parent)) {
			b->state = BARRIER_BROKEN;
			if (b->fail_code == 0) {
				b->fail_code = 70;
				snprintf(b->fail_msg, sizeof(b->fail_msg),
				    "startup interrupted");
			}
			pthread_cond_broadcast(&b->cond);
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += BARRIER_CHECK_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		if (pthread_cond_timedwait(&b->cond, &b->mutex, &ts) ==
		    EOWNERDEAD)
			pthread_mutex_consistent(&b->mutex);
	}
	released = b->state == BARRIER_RELEASED;
	unlock(b);
	return released ? 0 : -1;
}

int
barrier_break(struct barrier *b, int code, const char *msg)
{
	int	 first = 0;

	lock(b);
	if (b->state == BARRIER_OPEN) {
		b->state = BARRIER_BROKEN;
		pthread_cond_broadcast(&b->cond);
	}
	if (b->state == BARRIER_BROKEN && b->fail_code == 0) {
		first = 1;
		b->fail_code = code;
		snprintf(b->fail_msg, sizeof(b->fail_msg), "%s", msg);
	}
	unlock(b);
	return first;
}

enum barrier_state
barrier_state(struct barrier *b)
{
	enum barrier_state	 s;

	lock(b);
	s = b->state;
	unlock(b);
	return s;
}

/* The exit code and reason of whoever broke the barrier first. */
int
barrier_fail_code(struct barrier *b, char *msg, size_t len)
{
	int	 code;

	lock(b);
	code = b->fail_code;
	if (msg != NULL && len > 0)
		snprintf(msg, len, "%s", b->fail_msg);
	unlock(b);
	return code;
}
