/*
 * A child process's side of the process model (doc/processes.md): what a
 * child does between the supervisor's fork and its main function, and the
 * two ways it speaks to the supervisor.  The supervisor forks; the reader
 * and the workers call only this file, never the supervisor's.
 */
#include <sys/prctl.h>

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "ldapfeed.h"

static void
child_init(const struct child_ctx *ctx, const char *name)
{
	sigset_t	 none;

	log_procname(name);
	log_errors_to(ctx->stats);
	ctx->stats->pid = getpid();
	ctx->stats->started = time(NULL);
	ctx->stats->phase = PHASE_STARTING;
	if (signals_init() == -1)
		fatal(EX_OSERR, "signals");
	/* If the supervisor dies, we hear of it at once. */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) == -1)
		fatal(EX_OSERR, "prctl");
	if (getppid() != ctx->supervisor)
		sig_term = 1;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

/*
 * In the child, right after the fork: close the supervisor's descriptors
 * it was given in drop, become the reader (ctx->pipes set) or a worker,
 * and exit with what that returns.
 */
void
proc_child(const struct child_ctx *ctx, int *drop, unsigned ndrop)
{
	char		 name[32];
	unsigned	 i;

	for (i = 0; i < ndrop; i++)
		if (drop[i] >= 0)
			close(drop[i]);
	free(drop);
	if (ctx->pipes != NULL) {
		config_purge(ctx->cfg, PURGE_KEY);
		child_init(ctx, "reader");
		exit(reader_main(ctx));
	}
	config_purge(ctx->cfg, PURGE_PASSWORD);
	snprintf(name, sizeof(name), "worker %u", ctx->index);
	child_init(ctx, name);
	exit(worker_main(ctx));
}

/* A child that got SIGTERM passes it on, so that everything stops. */
void
child_ask_shutdown(const struct child_ctx *ctx)
{
	if (getppid() == ctx->supervisor)
		kill(ctx->supervisor, SIGSTOPREQ);
}

/* Before the barrier: one line, the barrier broken, out with the code. */
void
child_startup_failed(const struct child_ctx *ctx, int code, const char *fmt,
    ...)
{
	char	 msg[512];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (barrier_break(ctx->barrier, code, msg))
		log_warnx("%s", msg);
	else
		log_debug("%s", msg);
	exit(code);
}
