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

/*
 * The last warning of a process, read under its sequence count (the child
 * may be writing it meanwhile): 1 and the text and time, 0 if none.
 */
static int
last_error(const struct proc_stats *p, char *buf, size_t len, time_t *when)
{
	uint32_t	 a, b;
	int		 tries;

	for (tries = 0; tries < 10; tries++) {
		a = __atomic_load_n(&p->error_seq, __ATOMIC_SEQ_CST);
		if (a & 1)
			continue;
		snprintf(buf, len, "%.*s", (int)sizeof(p->error) - 1, p->error);
		*when = p->error_time;
		b = __atomic_load_n(&p->error_seq, __ATOMIC_SEQ_CST);
		if (a == b)
			return a != 0;
	}
	return 0;
}

/* The server time of the newest change handed on, in microseconds. */
static int64_t
newest_change(const struct proc_stats *s, unsigned n)
{
	int64_t		 t = 0;
	unsigned	 i;

	for (i = 0; i < n; i++)
		if (s[i].last_csn_us > t)
			t = s[i].last_csn_us;
	return t;
}

/*
 * The lag (doc/safety.md, "Health figures"): 0 while the reader follows
 * the server and nothing waits on the way to the consumer; otherwise the
 * age of the newest change handed on.
 */
static double
lag_seconds(const struct proc_stats *s, unsigned n)
{
	struct timespec	 ts;
	int64_t		 newest = newest_change(s, n), now;
	unsigned	 i;
	int		 current;

	current = s[0].phase == PHASE_PERSIST && s[0].connected;
	for (i = 0; i < n; i++)
		current = current && s[i].queue == 0;
	if (current || newest == 0)
		return 0;
	clock_gettime(CLOCK_REALTIME, &ts);
	now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
	return now > newest ? (now - newest) / 1e6 : 0;
}

/* One line per process, for SIGUSR1. */
void
status_log(const struct proc_stats *s, unsigned n)
{
	time_t		 now = time(NULL), when;
	char		 name[32], tail[256], err[200], errtail[260];
	unsigned	 i;

	for (i = 0; i < n; i++) {
		const struct proc_stats *p = &s[i];

		slot_name(i, name, sizeof(name));
		/* Workers never reconnect (a lost consumer ends the run):
		 * their count is 0, shown so every line has the same fields. */
		if (i == 0)
			snprintf(tail, sizeof(tail), "reconnects %llu, store "
			    "entries %llu, ldap %s, lag %.0f s, store %llu "
			    "bytes, map %llu of %llu bytes (grown %llu times)",
			    (unsigned long long)p->reconnects,
			    (unsigned long long)p->entries, p->connected ?
			    "connected" : "disconnected", lag_seconds(s, n),
			    (unsigned long long)p->store_bytes,
			    (unsigned long long)p->map_used,
			    (unsigned long long)p->map_bytes,
			    (unsigned long long)p->map_grows);
		else
			snprintf(tail, sizeof(tail), "reconnects %llu, messages "
			    "%llu, consumer %s, sent %llu bytes",
			    (unsigned long long)p->reconnects,
			    (unsigned long long)p->messages, p->connected ?
			    "connected" : "disconnected",
			    (unsigned long long)p->sent_bytes);
		errtail[0] = '\0';
		if (last_error(p, err, sizeof(err), &when))
			snprintf(errtail, sizeof(errtail), ", last error %lld s "
			    "ago: %s", (long long)(now - when), err);
		log_notice("status %s pid %ld: phase %s, events %s add %llu "
		    "modify %llu rename %llu delete %llu refresh_done %llu, "
		    "queue %llu bytes, %s, up %lld s%s",
		    name, (long)p->pid, phase_names[p->phase],
		    i == 0 ? "made" : "sent",
		    (unsigned long long)p->events[EV_ADD],
		    (unsigned long long)p->events[EV_MODIFY],
		    (unsigned long long)p->events[EV_RENAME],
		    (unsigned long long)p->events[EV_DELETE],
		    (unsigned long long)p->events[EV_REFRESH_DONE],
		    (unsigned long long)p->queue, tail,
		    p->started ? (long long)(now - p->started) : 0LL, errtail);
	}
}

static void
family(struct buf *b, const char *name, const char *type, const char *help)
{
	buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: backslash, double quote and newline escaped. */
static void
label_value(struct buf *b, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			buf_printf(b, "\\%c", *v);
		else if (*v == '\n')
			buf_add_str(b, "\\n");
		else
			buf_add_u8(b, (uint8_t)*v);
	}
}

/* Health: doc/safety.md, "Health figures". */
static void
prometheus_health(const struct proc_stats *s, unsigned n, struct buf *b)
{
	char		 name[32], err[200];
	time_t		 when;
	unsigned	 i;

	family(b, "ldapfeed_last_event_timestamp_seconds", "gauge", "Server "
	    "time (from its entryCSN) of the newest change handed to the "
	    "consumer.");
	buf_printf(b, "ldapfeed_last_event_timestamp_seconds %.6f\n",
	    newest_change(s, n) / 1e6);
	family(b, "ldapfeed_lag_seconds", "gauge", "Age of that change while "
	    "the feed is not current; 0 while it follows and nothing waits.");
	buf_printf(b, "ldapfeed_lag_seconds %.3f\n", lag_seconds(s, n));
	family(b, "ldapfeed_ldap_connected", "gauge", "1 while the reader is "
	    "connected to the LDAP server.");
	buf_printf(b, "ldapfeed_ldap_connected %d\n", s[0].connected ? 1 : 0);
	family(b, "ldapfeed_consumer_connected", "gauge", "1 while a worker "
	    "is connected to its consumer.");
	for (i = 1; i < n; i++) {
		slot_name(i, name, sizeof(name));
		buf_printf(b, "ldapfeed_consumer_connected{process=\"%s\"} %d\n",
		    name, s[i].connected ? 1 : 0);
	}
	family(b, "ldapfeed_sent_bytes_total", "counter", "Bytes each worker "
	    "delivered to its consumer.");
	for (i = 1; i < n; i++) {
		slot_name(i, name, sizeof(name));
		buf_printf(b, "ldapfeed_sent_bytes_total{process=\"%s\"} %llu\n",
		    name, (unsigned long long)s[i].sent_bytes);
	}
	family(b, "ldapfeed_last_error_timestamp_seconds", "gauge", "Time of "
	    "each process's last warning or error (0: none).");
	for (i = 0; i < n; i++) {
		slot_name(i, name, sizeof(name));
		buf_printf(b, "ldapfeed_last_error_timestamp_seconds{process="
		    "\"%s\"} %lld\n", name, last_error(&s[i], err,
		    sizeof(err), &when) ? (long long)when : 0LL);
	}
	family(b, "ldapfeed_last_error_info", "gauge", "Each process's last "
	    "warning or error, as its message label.");
	for (i = 0; i < n; i++) {
		if (!last_error(&s[i], err, sizeof(err), &when))
			continue;
		slot_name(i, name, sizeof(name));
		buf_printf(b, "ldapfeed_last_error_info{process=\"%s\","
		    "message=\"", name);
		label_value(b, err);
		buf_add_str(b, "\"} 1\n");
	}
}

/* The store: doc/store.md, "Map growth". */
static void
prometheus_store(const struct proc_stats *s, struct buf *b)
{
	family(b, "ldapfeed_store_entries", "gauge", "Entries in the store.");
	buf_printf(b, "ldapfeed_store_entries %llu\n",
	    (unsigned long long)s[0].entries);
	family(b, "ldapfeed_store_size_bytes", "gauge", "The store's data.mdb "
	    "on disk.");
	buf_printf(b, "ldapfeed_store_size_bytes %llu\n",
	    (unsigned long long)s[0].store_bytes);
	family(b, "ldapfeed_store_map_size_bytes", "gauge", "The LMDB map "
	    "size.");
	buf_printf(b, "ldapfeed_store_map_size_bytes %llu\n",
	    (unsigned long long)s[0].map_bytes);
	family(b, "ldapfeed_store_map_used_bytes", "gauge", "Pages of the map "
	    "in use.");
	buf_printf(b, "ldapfeed_store_map_used_bytes %llu\n",
	    (unsigned long long)s[0].map_used);
	family(b, "ldapfeed_store_map_grows_total", "counter", "Times the map "
	    "was doubled in this run.");
	buf_printf(b, "ldapfeed_store_map_grows_total %llu\n",
	    (unsigned long long)s[0].map_grows);
}

/* The figures in Prometheus text exposition format. */
static void
prometheus(const struct proc_stats *s, unsigned n, struct buf *b)
{
	time_t		 now = time(NULL);
	char		 name[32];
	unsigned	 i, t, ph;

	family(b, "ldapfeed_events_total", "counter", "Events made (reader) "
	    "or sent (workers), by type.");
	for (i = 0; i < n; i++) {
		slot_name(i, name, sizeof(name));
		for (t = EV_HELLO; t <= EV_REFRESH_DONE; t++)
			buf_printf(b, "ldapfeed_events_total{process=\"%s\","
			    "type=\"%s\"} %llu\n", name, type_names[t],
			    (unsigned long long)s[i].events[t]);
	}
	family(b, "ldapfeed_queue_bytes", "gauge", "Bytes waiting between the "
	    "reader and the consumer.");
	for (i = 0; i < n; i++) {
		slot_name(i, name, sizeof(name));
		buf_printf(b, "ldapfeed_queue_bytes{process=\"%s\"} %llu\n",
		    name, (unsigned long long)s[i].queue);
	}
	family(b, "ldapfeed_phase", "gauge", "The phase each process is in.");
	for (i = 0; i < n; i++) {
		slot_name(i, name, sizeof(name));
		for (ph = 0; ph < sizeof(phase_names) / sizeof(*phase_names);
		    ph++)
			buf_printf(b, "ldapfeed_phase{process=\"%s\",phase="
			    "\"%s\"} %d\n", name, phase_names[ph],
			    s[i].phase == (int)ph);
	}
	family(b, "ldapfeed_reconnects_total", "counter", "Reconnections to "
	    "the LDAP server.");
	buf_printf(b, "ldapfeed_reconnects_total %llu\n",
	    (unsigned long long)s[0].reconnects);
	prometheus_store(s, b);
	prometheus_health(s, n, b);
	family(b, "ldapfeed_uptime_seconds", "gauge", "Seconds since each "
	    "process started.");
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
