/*
 * The supervisor: data-dir and marker rules, the fork of the reader and the
 * workers, the startup barrier, and then nothing but supervision: it sleeps
 * in sigsuspend() and reacts to a child's death or a signal at once.
 */
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "ldapfeed.h"

#define STORE_SENTINEL	"ldapfeed.store"
#define KILL_AFTER_SECS	10	/* after a failure, children get this long */
#define STATUS_SECS	5	/* --status-file period */
#define ABORT_KILL_SECS	1	/* a failed startup's stragglers get this */

struct child {
	pid_t		 pid;
	const char	*role;		/* "reader" or "worker" */
	unsigned	 index;
	int		 status;	/* from waitpid, once exited */
	int		 exited;
};

struct supervisor {
	struct config	*cfg;
	struct barrier	*barrier;
	struct child	*children;	/* [0] reader, [1..W] workers */
	unsigned	 nchildren;
	unsigned	 alive;
	int		 running;	/* past the barrier */
	int		 stopping;	/* orderly shutdown asked */
	int		 failed;	/* a child died badly */
	int		 guarded;	/* the reader stopped for the guard */
	int		 lock_fd;	/* the data dir's lock */
	int		 pid_fd;	/* the pidfile, locked */
	int		 report_fd;	/* to the launcher, until started */
	struct proc_stats *stats;	/* [0] reader, [1..W] workers */
	time_t		 status_due;
	time_t		 kill_due;
	int		 killed;
	int		 aborting;	/* startup failed: children told */
	int		 operator_stop;	/* SIGTERMs and SIGINTs received */
	int		*pipe_rd;	/* workers' read ends not yet handed */
	unsigned	 npipes;
	/* what this start created, undone if it fails */
	char		**made_dirs;
	unsigned	 nmade;
	int		 absent[3];	/* our_files[i] was not there */
};

/* The files ldapfeed creates in its data directory. */
static const char *const our_files[] = { STORE_SENTINEL, "data.mdb",
    "lock.mdb" };

/*
 * The data directory: ours if empty, or if it holds our sentinel and only
 * files we create.  Anything else is refused (78): a mistyped --data-dir
 * must never lead to a wipe of someone else's files.
 */
static int
is_our_file(const char *name, const char *marker_base)
{
	return strcmp(name, STORE_SENTINEL) == 0 ||
	    strcmp(name, "data.mdb") == 0 || strcmp(name, "lock.mdb") == 0 ||
	    (marker_base != NULL && strcmp(name, marker_base) == 0);
}

/* mkdir, remembering what it made, so that a failed start can undo it. */
static int
made_dir(struct supervisor *sv, const char *path, mode_t mode)
{
	if (mkdir(path, mode) == -1)
		return errno == EEXIST ? 0 : -1;
	sv->made_dirs = xrealloc(sv->made_dirs, (sv->nmade + 1) *
	    sizeof(char *));
	sv->made_dirs[sv->nmade++] = xstrdup(path);
	return 0;
}

static int
mkdirs(struct supervisor *sv, const char *path)
{
	char	 tmp[PATH_MAX], *p;

	if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (made_dir(sv, tmp, 0755) == -1)
			return -1;
		*p = '/';
	}
	return made_dir(sv, tmp, 0700);
}

/*
 * A start that failed leaves the data directory as it found it: the files
 * it created go, then the directories, deepest first (ldapfeed.8, FILES).
 */
static void
datadir_undo(struct supervisor *sv)
{
	char	 path[PATH_MAX];
	size_t	 i;

	for (i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", sv->cfg->data_dir,
		    our_files[i]);
		if (sv->absent[i] && unlink(path) == -1 && errno != ENOENT)
			log_warn("unlink %s", path);
	}
	while (sv->nmade > 0) {
		sv->nmade--;
		if (rmdir(sv->made_dirs[sv->nmade]) == -1)
			log_warn("rmdir %s", sv->made_dirs[sv->nmade]);
		free(sv->made_dirs[sv->nmade]);
	}
	memset(sv->absent, 0, sizeof(sv->absent));
}

static void
datadir_forget(struct supervisor *sv)
{
	while (sv->nmade > 0)
		free(sv->made_dirs[--sv->nmade]);
	free(sv->made_dirs);
	sv->made_dirs = NULL;
}

/* The marker's basename when it lives in the data directory itself. */
static char *
marker_in_datadir(const struct config *cfg)
{
	char	 dir[PATH_MAX], mdir[PATH_MAX], m[PATH_MAX];

	if (realpath(cfg->data_dir, dir) == NULL)
		return NULL;
	snprintf(m, sizeof(m), "%s", cfg->marker);
	if (realpath(dirname(m), mdir) == NULL || strcmp(dir, mdir) != 0)
		return NULL;
	snprintf(m, sizeof(m), "%s", cfg->marker);
	return xstrdup(basename(m));
}

static int
datadir_check(struct supervisor *sv, char *err, size_t errlen)
{
	const struct config *cfg = sv->cfg;
	struct dirent	*de;
	struct stat	 st;
	DIR		*d;
	char		 path[PATH_MAX], *mbase;
	int		 has_sentinel = 0, foreign = 0, fd;
	char		 culprit[256] = "";
	size_t		 i;

	for (i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", cfg->data_dir,
		    our_files[i]);
		sv->absent[i] = access(path, F_OK) == -1 && errno == ENOENT;
	}
	if (stat(cfg->data_dir, &st) == -1) {
		if (errno != ENOENT || mkdirs(sv, cfg->data_dir) == -1) {
			snprintf(err, errlen, "--data-dir %s: %s", cfg->data_dir,
			    strerror(errno));
			return EX_CONFIG;
		}
	} else if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "--data-dir %s: not a directory",
		    cfg->data_dir);
		return EX_CONFIG;
	}
	if ((d = opendir(cfg->data_dir)) == NULL) {
		snprintf(err, errlen, "--data-dir %s: %s", cfg->data_dir,
		    strerror(errno));
		return EX_CONFIG;
	}
	mbase = marker_in_datadir(cfg);
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (strcmp(de->d_name, STORE_SENTINEL) == 0)
			has_sentinel = 1;
		else if (!is_our_file(de->d_name, mbase) && !foreign) {
			foreign = 1;
			snprintf(culprit, sizeof(culprit), "%s", de->d_name);
		} else if (strcmp(de->d_name, "data.mdb") == 0 ||
		    strcmp(de->d_name, "lock.mdb") == 0)
			if (culprit[0] == '\0')
				snprintf(culprit, sizeof(culprit), "%s",
				    de->d_name);
	}
	closedir(d);
	free(mbase);
	if (foreign || (!has_sentinel && culprit[0] != '\0')) {
		snprintf(err, errlen, "--data-dir %s holds '%s', which "
		    "ldapfeed did not create: refusing to use (or wipe) it",
		    cfg->data_dir, culprit);
		return EX_CONFIG;
	}

	/* The sentinel doubles as the lock against a second instance. */
	snprintf(path, sizeof(path), "%s/%s", cfg->data_dir, STORE_SENTINEL);
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return EX_CONFIG;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		snprintf(err, errlen, "--data-dir %s is in use by another "
		    "ldapfeed", cfg->data_dir);
		close(fd);
		return EX_CONFIG;
	}
	if (!has_sentinel) {
		const char	*text = "ldapfeed store: only ldapfeed "
		    "writes in this directory\n";

		if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			close(fd);
			return EX_CONFIG;
		}
	}
	sv->lock_fd = fd;
	return 0;
}

static int
fsync_dir_of(const char *file)
{
	char	 tmp[PATH_MAX];
	int	 fd, r;

	snprintf(tmp, sizeof(tmp), "%s", file);
	if ((fd = open(dirname(tmp), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

static int
marker_check(const struct config *cfg, char *err, size_t errlen)
{
	char	 tmp[PATH_MAX];
	struct stat st;

	snprintf(tmp, sizeof(tmp), "%s", cfg->marker);
	if (stat(dirname(tmp), &st) == -1 || !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "--marker %s: its directory does not "
		    "exist", cfg->marker);
		return EX_CONFIG;
	}
	if (stat(cfg->marker, &st) == 0 && !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "--marker %s: not a regular file",
		    cfg->marker);
		return EX_CONFIG;
	}
	return 0;
}

/* After a clean shutdown: the store on disk, then the marker. */
static int
marker_write(const struct config *cfg)
{
	char	 path[PATH_MAX], text[128];
	time_t	 now = time(NULL);
	int	 fd;

	snprintf(path, sizeof(path), "%s/data.mdb", cfg->data_dir);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) != -1) {
		if (fsync(fd) == -1) {
			log_warn("fsync %s", path);
			close(fd);
			return -1;
		}
		close(fd);
	}
	strftime(text, sizeof(text), "ldapfeed clean shutdown %Y-%m-%dT%H:%M:%SZ\n",
	    gmtime(&now));
	if ((fd = open(cfg->marker, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0644)) == -1) {
		log_warn("marker %s", cfg->marker);
		return -1;
	}
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text) ||
	    fsync(fd) == -1) {
		log_warn("marker %s", cfg->marker);
		close(fd);
		return -1;
	}
	close(fd);
	if (fsync_dir_of(cfg->marker) == -1) {
		log_warn("fsync the directory of %s", cfg->marker);
		return -1;
	}
	return 0;
}

/* ---- children ---- */

/*
 * Fork one child.  It keeps, of the supervisor's descriptors, only its own
 * end of its pipe (a dead peer must read as EOF or EPIPE, doc/processes.md).
 */
static pid_t
spawn(struct supervisor *sv, struct child_ctx *ctx, unsigned slot)
{
	struct child	*c = &sv->children[slot];
	int		*drop;
	unsigned	 n = 0, i;
	pid_t		 pid;

	fflush(NULL);
	if ((pid = fork()) == -1)
		return -1;
	if (pid > 0) {
		c->pid = pid;
		sv->alive++;
		return pid;
	}
	/*
	 * The child keeps the data directory's lock (the same open file, so
	 * the same flock): should the supervisor die first, the directory is
	 * in use until the last process of this instance has exited, and a
	 * new ldapfeed cannot wipe the store under a reader still finishing.
	 */
	drop = xcalloc(2 + sv->npipes, sizeof(int));
	drop[n++] = sv->pid_fd;
	drop[n++] = sv->report_fd;
	for (i = 0; i < sv->npipes; i++)
		if (sv->pipe_rd[i] != ctx->pipe_fd)
			drop[n++] = sv->pipe_rd[i];
	proc_child(ctx, drop, n);
}

static void
kill_children(struct supervisor *sv, int sig)
{
	unsigned	 i;

	for (i = 0; i < sv->nchildren; i++)
		if (sv->children[i].pid > 0 && !sv->children[i].exited)
			kill(sv->children[i].pid, sig);
}

static const char *
child_name(const struct child *c, char *buf, size_t len)
{
	if (strcmp(c->role, "reader") == 0)
		snprintf(buf, len, "reader");
	else
		snprintf(buf, len, "worker %u", c->index);
	return buf;
}

static const char *
describe(const struct child *c, char *buf, size_t len)
{
	if (WIFSIGNALED(c->status))
		snprintf(buf, len, "killed by signal %d", WTERMSIG(c->status));
	else
		snprintf(buf, len, "exited with status %d",
		    WEXITSTATUS(c->status));
	return buf;
}

/* Reap every child that exited and decide what it means. */
static void
reap(struct supervisor *sv)
{
	struct child	*c;
	char		 why[64], name[32];
	unsigned	 i;
	pid_t		 pid;
	int		 status, clean;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (i = 0, c = NULL; i < sv->nchildren; i++)
			if (sv->children[i].pid == pid)
				c = &sv->children[i];
		if (c == NULL)
			continue;
		c->exited = 1;
		c->status = status;
		sv->alive--;
		clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
		if (!sv->running)
			continue;	/* startup: the barrier has the story */
		/*
		 * The mass-delete guard stops the reader cleanly, all it
		 * applied handed on: a clean stop with a status of its own
		 * (doc/safety.md).
		 */
		if (c == &sv->children[0] && WIFEXITED(status) &&
		    WEXITSTATUS(status) == GUARD_EXIT) {
			sv->guarded = 1;
			clean = 1;
		}
		if (clean) {
			/*
			 * A worker exits 0 only once the reader closed its
			 * pipe: the reader is ending, and its status decides.
			 */
			if (c == &sv->children[0])
				sv->stopping = 1;
			continue;
		}
		if (!sv->failed) {
			log_warnx("%s %s: stopping", child_name(c, name,
			    sizeof(name)), describe(c, why, sizeof(why)));
			sv->failed = 1;
			kill_children(sv, SIGTERM);
		}
	}
}

static void
startup_check(struct supervisor *sv)
{
	unsigned	 i;

	if (barrier_state(sv->barrier) == BARRIER_OPEN) {
		/* A child gone before the barrier opened breaks it. */
		for (i = 0; i < sv->nchildren; i++)
			if (sv->children[i].exited) {
				char	 why[64], name[32], msg[160];

				snprintf(msg, sizeof(msg), "%s %s during "
				    "startup", child_name(&sv->children[i], name,
				    sizeof(name)), describe(&sv->children[i],
				    why, sizeof(why)));
				if (barrier_break(sv->barrier, EX_SOFTWARE, msg))
					log_warnx("%s", msg);
				break;
			}
		if ((sig_term || sig_stopreq) && barrier_break(sv->barrier,
		    EX_SOFTWARE, "startup interrupted by a signal"))
			log_warnx("startup interrupted by a signal");
		sig_term = sig_stopreq = 0;
	}
	/*
	 * Broken: nothing has been changed yet, so the parties still in their
	 * preparation (a handshake, a bind) need not finish it.
	 */
	if (barrier_state(sv->barrier) == BARRIER_BROKEN && !sv->aborting) {
		sv->aborting = 1;
		kill_children(sv, SIGTERM);
		sv->kill_due = time(NULL) + ABORT_KILL_SECS;
		sv->killed = 1;
	}
}

/*
 * Everyone else is ready: the marker goes before any child may change the
 * store or send an event (the barrier runs this under its lock).
 */
static int
before_release(void *arg, char *err, size_t errlen)
{
	struct supervisor	*sv = arg;
	const char		*marker = sv->cfg->marker;

	if ((unlink(marker) == -1 && errno != ENOENT) ||
	    fsync_dir_of(marker) == -1) {
		snprintf(err, errlen, "removing the marker %s: %s", marker,
		    strerror(errno));
		return EX_CONFIG;
	}
	return 0;
}

static void
started(struct supervisor *sv)
{
	const struct config *cfg = sv->cfg;

	sv->running = 1;
	if (sv->pid_fd != -1 && pidfile_write(sv->pid_fd, getpid()) == -1)
		log_warn("pidfile %s", cfg->pidfile);
	log_info("started: %s, %d workers, %s, format %s, consumer %s",
	    cfg->server_url, cfg->workers, cfg->mode == MODE_PERSIST ?
	    "persist" : "refresh", format_name(cfg->format), cfg->output);
	daemon_report(&sv->report_fd, 0, "started");
	if (cfg->status_file)
		sig_alrm = 1;	/* a first status file at once */
}

/*
 * An orderly shutdown delivers every event first, however long a consumer
 * takes to read them.  A second SIGTERM or SIGINT gives that up: everything
 * stops now, without the marker (the next start reloads).
 */
static void
stop(struct supervisor *sv, int by_operator)
{
	if (by_operator && sv->operator_stop++ > 0 && !sv->failed) {
		log_warnx("asked again to stop: not waiting for the consumer; "
		    "no marker, the next start reloads");
		sv->failed = 1;
		kill_children(sv, SIGKILL);
		return;
	}
	if (!sv->stopping && !sv->failed)
		log_info("shutting down");
	sv->stopping = 1;
	if (!sv->children[0].exited)
		kill(sv->children[0].pid, SIGTERM);
}

/* The one timer: the status file's period and the kill deadline. */
static void
tick(struct supervisor *sv)
{
	time_t		 now = time(NULL), next = 0;

	if (sig_alrm) {
		sig_alrm = 0;
		if (sv->cfg->status_file && now >= sv->status_due) {
			status_write_file(sv->stats, sv->nchildren,
			    sv->cfg->status_file);
			sv->status_due = now + STATUS_SECS;
		}
		if (sv->kill_due && now >= sv->kill_due) {
			log_warnx("children still running after a failure: "
			    "killing them");
			kill_children(sv, SIGKILL);
			sv->kill_due = 0;
		}
	}
	if (sv->cfg->status_file)
		next = sv->status_due;
	if (sv->kill_due && (next == 0 || sv->kill_due < next))
		next = sv->kill_due;
	alarm(next ? (next > now ? (unsigned)(next - now) : 1) : 0);
}

static int
fail_early(struct supervisor *sv, int code, const char *msg)
{
	log_warnx("%s", msg);
	pidfile_remove(sv->pid_fd, sv->cfg->pidfile);
	datadir_undo(sv);
	datadir_forget(sv);
	if (sv->lock_fd != -1)
		close(sv->lock_fd);
	/* Last: the launcher exits on this, everything must be clean. */
	daemon_report(&sv->report_fd, code, msg);
	return code;
}

/*
 * Before any fork: the pidfile, the marker and data-directory rules, and the
 * shared memory of the barrier and the status figures.  Returns 0, or the
 * exit status of a refusal (already reported).
 */
static int
prepare(struct supervisor *sv, struct config *cfg, int report_fd)
{
	char	 err[512];
	int	 code;

	memset(sv, 0, sizeof(*sv));
	sv->cfg = cfg;
	sv->lock_fd = -1;
	sv->pid_fd = -1;
	sv->report_fd = report_fd;
	if (cfg->pidfile && (sv->pid_fd = pidfile_lock(cfg->pidfile, err,
	    sizeof(err))) == -1) {
		log_warnx("%s", err);
		daemon_report(&sv->report_fd, EX_CONFIG, err);
		return EX_CONFIG;
	}
	if ((code = marker_check(cfg, err, sizeof(err))) != 0 ||
	    (code = datadir_check(sv, err, sizeof(err))) != 0)
		return fail_early(sv, code, err);
	sv->nchildren = 1 + (unsigned)cfg->workers;
	sv->children = xcalloc(sv->nchildren, sizeof(*sv->children));
	if ((sv->barrier = barrier_create(1 + sv->nchildren)) == NULL ||
	    (sv->stats = status_create(sv->nchildren)) == NULL)
		fatal(EX_OSERR, "shared memory");
	barrier_set_notify(sv->barrier, getpid());
	return 0;
}

/*
 * Signals are only taken in sigsuspend(), never mid-work: block them and
 * return, in *wait, the mask sigsuspend() lets them in with.
 */
static void
mask_signals(sigset_t *wait)
{
	sigset_t	 block;
	int		 i;

	if (signals_init() == -1)
		fatal(EX_OSERR, "signals");
	signals_handled(&block);
	sigprocmask(SIG_BLOCK, &block, wait);
	/* main() blocked them already: sigsuspend must let them in. */
	for (i = 1; i < NSIG; i++)
		if (sigismember(&block, i))
			sigdelset(wait, i);
}

/*
 * One pipe per worker; the reader, then the workers.  The reader keeps the
 * write ends, each worker its read end, the supervisor none.
 */
static void
spawn_children(struct supervisor *sv)
{
	struct child_ctx	 ctx;
	unsigned		 i, w = sv->nchildren - 1;
	int			*rd, *wr, fds[2];

	rd = xcalloc(w, sizeof(int));
	wr = xcalloc(w, sizeof(int));
	for (i = 0; i < w; i++) {
		if (pipe2(fds, O_CLOEXEC) == -1)
			fatal(EX_OSERR, "pipe");
		/* A bigger pipe lets the reader run ahead of a busy worker. */
		(void)fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
		rd[i] = fds[0];
		wr[i] = fds[1];
	}
	memset(&ctx, 0, sizeof(ctx));
	ctx.cfg = sv->cfg;
	ctx.barrier = sv->barrier;
	ctx.supervisor = getpid();
	ctx.trusted = access(sv->cfg->marker, F_OK) == 0;
	ctx.workers = w;
	ctx.pipes = wr;
	ctx.pipe_fd = -1;
	ctx.stats = &sv->stats[0];
	sv->children[0].role = "reader";
	for (i = 0; i < w; i++) {
		sv->children[1 + i].role = "worker";
		sv->children[1 + i].index = i;
	}
	sv->pipe_rd = rd;
	sv->npipes = w;
	if (spawn(sv, &ctx, 0) == -1)
		fatal(EX_OSERR, "fork");
	for (i = 0; i < w; i++)
		close(wr[i]);
	ctx.pipes = NULL;
	for (i = 0; i < w; i++) {
		ctx.index = i;
		ctx.pipe_fd = rd[i];
		ctx.stats = &sv->stats[1 + i];
		if (spawn(sv, &ctx, 1 + i) == -1) {
			log_warn("fork");
			barrier_break(sv->barrier, EX_OSERR, "fork failed");
			break;
		}
		close(rd[i]);
		rd[i] = -1;
	}
	for (; i < w; i++)
		if (rd[i] != -1)
			close(rd[i]);
	sv->pipe_rd = NULL;
	sv->npipes = 0;
	free(rd);
	free(wr);
}

/* Until every child is gone: react to each signal and each death. */
static void
supervise(struct supervisor *sv, const sigset_t *wait)
{
	sv->status_due = time(NULL);
	for (;;) {
		reap(sv);
		if (!sv->running) {
			startup_check(sv);
			if (barrier_complete(sv->barrier, before_release, sv) ==
			    BARRIER_RELEASED)
				started(sv);
			else
				startup_check(sv);	/* broken by the marker */
		}
		if (sv->alive == 0)
			break;
		if (sv->running && sig_term) {
			sig_term = 0;
			stop(sv, 1);
		}
		if (sv->running && sig_stopreq) {
			sig_stopreq = 0;
			stop(sv, 0);
		}
		if (sig_usr1) {
			sig_usr1 = 0;
			status_log(sv->stats, sv->nchildren);
		}
		if (sv->failed && sv->kill_due == 0 && !sv->killed) {
			sv->kill_due = time(NULL) + KILL_AFTER_SECS;
			sv->killed = 1;
		}
		tick(sv);
		sig_hup = 0;	/* syslog needs no reopening */
		sig_usr2 = 0;
		sig_chld = 0;
		sigsuspend(wait);
	}
	alarm(0);
}

/*
 * Everyone is gone: the run's exit status.  Only a run in which every
 * child exited 0 after the barrier writes the marker.
 */
static int
verdict(struct supervisor *sv, char *err, size_t errlen)
{
	unsigned	 i;
	int		 code;

	if (!sv->running) {
		if ((code = barrier_fail_code(sv->barrier, err, errlen)) == 0) {
			code = EX_SOFTWARE;
			snprintf(err, errlen, "startup failed");
		}
		return code;
	}
	if (sv->failed)
		return EX_SOFTWARE;
	for (i = 0; i < sv->nchildren; i++)
		if (!WIFEXITED(sv->children[i].status) ||
		    (WEXITSTATUS(sv->children[i].status) != 0 &&
		    !(i == 0 && sv->guarded)))
			return EX_SOFTWARE;
	if (marker_write(sv->cfg) == -1)
		return EX_SOFTWARE;
	if (sv->guarded) {
		log_warnx("stopped by the mass-delete guard, marker written: "
		    "the next start resumes before the refused deletes");
		return GUARD_EXIT;
	}
	log_info("clean shutdown, marker written");
	return 0;
}

int
supervisor_run(struct config *cfg, int report_fd)
{
	struct supervisor	 sv;
	sigset_t		 wait;
	char			 err[512] = "";
	int			 code;

	if ((code = prepare(&sv, cfg, report_fd)) != 0)
		return code;
	mask_signals(&wait);
	spawn_children(&sv);
	config_purge(cfg, PURGE_PASSWORD | PURGE_KEY);
	supervise(&sv, &wait);
	sigprocmask(SIG_SETMASK, &wait, NULL);
	code = verdict(&sv, err, sizeof(err));

	if (cfg->status_file && sv.running)
		status_write_file(sv.stats, sv.nchildren, cfg->status_file);
	barrier_destroy(sv.barrier);
	status_destroy(sv.stats, sv.nchildren);
	free(sv.children);
	close(sv.lock_fd);
	pidfile_remove(sv.pid_fd, cfg->pidfile);
	if (!sv.running)
		datadir_undo(&sv);
	datadir_forget(&sv);
	/* Last: the launcher exits on this, everything must be clean. */
	if (!sv.running)
		daemon_report(&sv.report_fd, code, err);
	return code;
}
