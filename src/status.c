/*
 * Status: each process keeps its figures in a shared-memory slot; the
 * supervisor reads them for SIGUSR1 (one log line per process) and for the
 * --status-file (Prometheus text format, replaced atomically).
 */
#include <sys/mman.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ldapfeed.h"

static const char *const type_names[] = {
	[EV_HELLO] = "hello", [EV_ADD] = "add", [EV_MODIFY] = "modify",
	[EV_RENAME] = "rename", [EV_DELETE] = "delete",
	[EV_REFRESH_DONE] = "refresh_done"
};

static const char *const phase_names[] = {
	[PHASE_STARTING] = "starting", [PHASE_REFRESH] = "refresh",
	[PHASE_PERSIST] = "persist", [PHASE_RECONNECTING] = "reconnecting",
	[PHASE_RUNNING] = "running", [PHASE_STOPPING] = "stopping"
};

struct proc_stats *
status_create(unsigned n)
{
	struct proc_stats	*s;

	s = mmap(NULL, n * sizeof(*s), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (s == MAP_FAILED)
		return NULL;
	memset(s, 0, n * sizeof(*s));
	return s;
}

void
status_destroy(struct proc_stats *s, unsigned n)
{
	if (s != NULL)
		munmap(s, n * sizeof(*s));
}

static void
slot_name(unsigned i, char *buf, size_t len)
{
	if (i == 0)
		snprintf(buf, len, "reader");
	else
		snprintf(buf, len, "worker%u", i - 1);
}

/* One line per process, for SIGUSR1. */
void
status_log(const struct proc_stats *s, unsigned n)
{
	time_t		 now = time(NULL);
	char		 name[32];
	unsigned	 i;

	for (i = 0; i < n; i++) {
		const struct proc_stats *p = &s[i];

		slot_name(i, name, sizeof(name));
		char	 tail[96];

		/* Workers never reconnect (a lost consumer ends the run):
		 * their count is 0, shown so every line has the same fields. */
		if (i == 0)
			snprintf(tail, sizeof(tail), "reconnects %llu, store "
			    "entries %llu", (unsigned long long)p->reconnects,
			    (unsigned long long)p->entries);
		else
			snprintf(tail, sizeof(tail), "reconnects %llu, messages "
			    "%llu", (unsigned long long)p->reconnects,
			    (unsigned long long)p->messages);
		log_notice("status %s pid %ld: phase %s, events %s add %llu "
		    "modify %llu rename %llu delete %llu refresh_done %llu, "
		    "queue %llu bytes, %s, up %lld s",
		    name, (long)p->pid, phase_names[p->phase],
		    i == 0 ? "made" : "sent",
		    (unsigned long long)p->events[EV_ADD],
		    (unsigned long long)p->events[EV_MODIFY],
		    (unsigned long long)p->events[EV_RENAME],
		    (unsigned long long)p->events[EV_DELETE],
		    (unsigned long long)p->events[EV_REFRESH_DONE],
		    (unsigned long long)p->queue, tail,
		    p->started ? (long long)(now - p->started) : 0LL);
	}
}

/* The figures in Prometheus text exposition format. */
static void
prometheus(const struct proc_stats *s, unsigned n, struct buf *b)
{
	time_t		 now = time(NULL);
	char		 name[32];
	unsigned	 i, t, ph;

	buf_printf(b, "# HELP ldapfeed_events_total Events made (reader) or "
	    "sent (workers), by type.\n# TYPE ldapfeed_events_total counter\n");
	for (i = 0; i < n; i++) {
		slot_name(i, name, sizeof(name));
		for (t = EV_HELLO; t <= EV_REFRESH_DONE; t++)
			buf_printf(b, "ldapfeed_events_total{process=\"%s\","
			    "type=\"%s\"} %llu\n", name, type_names[t],
			    (unsigned long long)s[i].events[t]);
	}
	buf_printf(b, "# HELP ldapfeed_queue_bytes Bytes waiting between the "
	    "reader and the consumer.\n# TYPE ldapfeed_queue_bytes gauge\n");
	for (i = 0; i < n; i++) {
		slot_name(i, name, sizeof(name));
		buf_printf(b, "ldapfeed_queue_bytes{process=\"%s\"} %llu\n",
		    name, (unsigned long long)s[i].queue);
	}
	buf_printf(b, "# HELP ldapfeed_phase The phase each process is in.\n"
	    "# TYPE ldapfeed_phase gauge\n");
	for (i = 0; i < n; i++) {
		slot_name(i, name, sizeof(name));
		for (ph = 0; ph < sizeof(phase_names) / sizeof(*phase_names);
		    ph++)
			buf_printf(b, "ldapfeed_phase{process=\"%s\",phase="
			    "\"%s\"} %d\n", name, phase_names[ph],
			    s[i].phase == (int)ph);
	}
	buf_printf(b, "# HELP ldapfeed_reconnects_total Reconnections to the "
	    "LDAP server.\n# TYPE ldapfeed_reconnects_total counter\n"
	    "ldapfeed_reconnects_total %llu\n",
	    (unsigned long long)s[0].reconnects);
	buf_printf(b, "# HELP ldapfeed_store_entries Entries in the store.\n"
	    "# TYPE ldapfeed_store_entries gauge\nldapfeed_store_entries "
	    "%llu\n", (unsigned long long)s[0].entries);
	buf_printf(b, "# HELP ldapfeed_uptime_seconds Seconds since each "
	    "process started.\n# TYPE ldapfeed_uptime_seconds gauge\n");
	for (i = 0; i < n; i++) {
		slot_name(i, name, sizeof(name));
		buf_printf(b, "ldapfeed_uptime_seconds{process=\"%s\"} %lld\n",
		    name, s[i].started ? (long long)(now - s[i].started) : 0LL);
	}
}

/* Write the file beside itself and rename it over: readers never see half. */
int
status_write_file(const struct proc_stats *s, unsigned n, const char *path)
{
	struct buf	 b = { 0 };
	char		 tmp[4096];
	FILE		*fp;
	int		 r = 0;

	prometheus(s, n, &b);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if ((fp = fopen(tmp, "w")) == NULL) {
		log_warn("status file %s", tmp);
		buf_free(&b);
		return -1;
	}
	if (fwrite(b.data, 1, b.len, fp) != b.len)
		r = -1;
	if (fclose(fp) != 0)
		r = -1;
	if (r == 0 && rename(tmp, path) == -1)
		r = -1;
	if (r == -1) {
		log_warn("status file %s", path);
		unlink(tmp);
	}
	buf_free(&b);
	return r;
}
