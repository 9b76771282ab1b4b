/*
 * The mass-delete guard (doc/safety.md, "The mass-delete guard"): how many
 * entries one refresh, reconcile or full reload may delete at once, and
 * the size of the copy a consumer held before a wipe, which the guard of
 * a full reload is measured against.
 */
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ldapfeed.h"

#define PEEK_WAIT_MS	10000	/* for the look into an untrusted store */

/*
 * A count refuses anything above it; a share refuses what is above that
 * share of the stored entries and above GUARD_FLOOR, so that a small
 * directory may still lose a few entries at once.  100% never refuses.
 */
int
guard_allows(const struct config *cfg, uint64_t n, uint64_t stored)
{
	if (cfg->max_delete_pct < 0)
		return n <= cfg->max_delete;
	if (n <= GUARD_FLOOR || cfg->max_delete_pct >= 100)
		return 1;
	/* (an LMDB store's counts are far below 2^57: no overflow) */
	return n * 100 <= (uint64_t)cfg->max_delete_pct * stored;
}

void
guard_limit_text(const struct config *cfg, char *buf, size_t len)
{
	if (cfg->max_delete_pct < 0)
		snprintf(buf, len, "%llu", (unsigned long long)cfg->max_delete);
	else
		snprintf(buf, len, "%d%% of them and more than %d",
		    cfg->max_delete_pct, GUARD_FLOOR);
}

/*
 * 0 when what may delete n of the stored entries; otherwise the refusal
 * is logged, once, with what to do about it, and -1 returned.
 */
int
guard_check(const struct config *cfg, const char *what, uint64_t n,
    uint64_t stored)
{
	char	 limit[64];

	if (guard_allows(cfg, n, stored))
		return 0;
	guard_limit_text(cfg, limit, sizeof(limit));
	log_warnx("mass-delete guard: %s would delete %llu of the %llu "
	    "entries the consumer holds, more than --max-delete allows "
	    "(%s): none of them was sent or stored, and the cookie did not "
	    "move.  Stopping (exit status %d).  If the server is right, "
	    "start again with a --max-delete above %llu",
	    what, (unsigned long long)n, (unsigned long long)stored, limit,
	    GUARD_EXIT, (unsigned long long)n);
	return -1;
}

/*
 * The copy a consumer holds, as a store tells it: its entries, or, while a
 * full reload has not reached its refresh_done, the larger of those and
 * the copy that reload replaces (the consumer drops nothing before then).
 */
uint64_t
guard_copy_size(const struct store_peek *p)
{
	if (p->snapshot && p->previous > p->entries)
		return p->previous;
	return p->entries;
}

/* The copy a consumer holds, from a store about to be wiped. */
uint64_t
guard_store_copy(struct store *store)
{
	struct store_peek	 p;
	struct span		 v;

	p.entries = store_count(store);
	p.previous = store_get_u64(store, "previous", 0);
	p.snapshot = store_get_meta(store, "snapshot", &v) == 1;
	return guard_copy_size(&p);
}

/*
 * A full reload from a wiped store: at its refresh_done the consumer drops
 * what it held that the snapshot did not send, at least the copy it held
 * before (the store's "previous") less what the snapshot sent.  Weighed
 * like deletes, before refresh_done goes out: 0 when allowed ("previous"
 * then forgotten), 1 when refused (logged), -1 on a store error.
 */
int
guard_reload(const struct config *cfg, struct store *store)
{
	uint64_t	 previous, count;

	if ((previous = store_get_u64(store, "previous", 0)) == 0)
		return 0;
	count = store_count(store);
	if (count < previous && guard_check(cfg, "this full reload (at its "
	    "refresh_done, the consumer drops what it held that the reload "
	    "did not send)", previous - count, previous) == -1)
		return 1;
	return store_del_meta(store, "previous") == -1 ? -1 : 0;
}

/*
 * The copy size from the store in dir, about to be wiped because it is
 * not trusted: a machine crash may have left it half written, so it is
 * read by a child of its own, which may crash or hang without harm.
 * 0 when there is none or it cannot be read: that reload is not guarded.
 */
uint64_t
guard_previous_copy(const char *dir)
{
	struct store_peek	 p;
	struct pollfd		 pfd;
	struct stat		 st;
	char			 path[4096];
	unsigned char		 out[8];
	uint64_t		 size = 0;
	ssize_t			 n = 0;
	pid_t			 pid;
	int			 fds[2], status;

	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	if (stat(path, &st) == -1 || st.st_size == 0)
		return 0;
	if (pipe(fds) == -1)
		return 0;
	if ((pid = fork()) == -1) {
		close(fds[0]);
		close(fds[1]);
		return 0;
	}
	if (pid == 0) {
		close(fds[0]);
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (store_peek(dir, &p) == 0) {
			put_le(out, guard_copy_size(&p), 8);
			(void)write(fds[1], out, 8);
		}
		_exit(0);
	}
	close(fds[1]);
	pfd.fd = fds[0];
	pfd.events = POLLIN;
	while (poll(&pfd, 1, PEEK_WAIT_MS) == -1 && errno == EINTR)
		;
	if (pfd.revents & (POLLIN | POLLHUP))
		while ((n = read(fds[0], out, 8)) == -1 && errno == EINTR)
			;
	if (n == 8)
		size = get_u64(out);
	close(fds[0]);
	kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	if (n != 8)
		log_warnx("cannot tell how many entries the consumer held "
		    "before this full reload: the reload is not guarded");
	return size;
}
