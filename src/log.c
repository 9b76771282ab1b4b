/*
 * Logging: to stderr in the foreground, to syslog (facility daemon) when
 * detached.  The x forms do not append strerror(errno).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "ldapfeed.h"

static int	 log_to_stderr = 1;
static int	 log_verbosity = 0;	/* -1 quiet, 0 normal, 1+ verbose */
static char	 log_proc[32] = "ldapfeed";
static struct proc_stats *log_slot;	/* where warnings are kept, or NULL */

void
log_init(int to_stderr, int verbosity, const char *procname)
{
	log_to_stderr = to_stderr;
	log_verbosity = verbosity;
	log_procname(procname);
	if (!to_stderr)
		openlog("ldapfeed", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

/* A child's warnings and errors also go to its status slot (the last
 * error of the status file, doc/safety.md, "Health figures"). */
void
log_errors_to(struct proc_stats *slot)
{
	log_slot = slot;
}

/*
 * Written under a sequence count (odd while it changes) that the
 * supervisor, reading the slot from another process, checks.
 */
static void
keep_error(const char *msg)
{
	struct proc_stats	*p = log_slot;

	__atomic_add_fetch(&p->error_seq, 1, __ATOMIC_SEQ_CST);
	snprintf(p->error, sizeof(p->error), "%s", msg);
	p->error_time = time(NULL);
	__atomic_add_fetch(&p->error_seq, 1, __ATOMIC_SEQ_CST);
}

void
log_procname(const char *name)
{
	snprintf(log_proc, sizeof(log_proc), "%s", name);
}

static void
vlog(int pri, const char *fmt, va_list ap, int with_errno)
{
	char	 msg[1024];
	int	 saved = errno;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (with_errno) {
		size_t	 n = strlen(msg);

		snprintf(msg + n, sizeof(msg) - n, ": %s", strerror(saved));
	}
	if (log_slot != NULL && pri <= LOG_WARNING)
		keep_error(msg);
	if (log_to_stderr)
		fprintf(stderr, "ldapfeed[%ld] %s: %s\n", (long)getpid(),
		    log_proc, msg);
	else
		syslog(pri, "%s: %s", log_proc, msg);
	errno = saved;
}

void
log_warn(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	vlog(LOG_WARNING, fmt, ap, 1);
	va_end(ap);
}

void
log_warnx(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	vlog(LOG_WARNING, fmt, ap, 0);
	va_end(ap);
}

/* Asked-for output (status): shown whatever the verbosity. */
void
log_notice(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	vlog(LOG_NOTICE, fmt, ap, 0);
	va_end(ap);
}

void
log_info(const char *fmt, ...)
{
	va_list	 ap;

	if (log_verbosity < 0)
		return;
	va_start(ap, fmt);
	vlog(LOG_INFO, fmt, ap, 0);
	va_end(ap);
}

void
log_debug(const char *fmt, ...)
{
	va_list	 ap;

	if (log_verbosity < 1)
		return;
	va_start(ap, fmt);
	vlog(LOG_DEBUG, fmt, ap, 0);
	va_end(ap);
}

void
fatal(int code, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	vlog(LOG_ERR, fmt, ap, 1);
	va_end(ap);
	exit(code);
}

void
fatalx(int code, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	vlog(LOG_ERR, fmt, ap, 0);
	va_end(ap);
	exit(code);
}
