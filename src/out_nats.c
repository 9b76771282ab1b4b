/*
 * The NATS JetStream output (doc/outputs.md): one connection per worker,
 * one message per event, published asynchronously; an event is delivered
 * once JetStream acknowledged it, and is published again, under the same
 * Msg-Id, until it is.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include <nats/nats.h>

#include "ldapfeed.h"

#define CONNECT_TIMEOUT_MS	10000
#define API_WAIT_MS		10000	/* stream lookups and creation */
#define API_ASK_MS		60000	/* then JetStream "did not answer" */
#define ACK_WAIT_MS		3000	/* then a publish is tried again */
#define RETRY_MIN_MS		100
#define RETRY_MAX_MS		2000
#define WINDOW			256	/* events taken and not yet acked */
#define WINDOW_BYTES		(4 << 20)
#define BUCKETS			4096	/* uuid hash -> published, unacked */
#define DUP_WINDOW_S		300	/* of a stream ldapfeed creates */
#define TICK_MS			1000

enum slot_state {
	SLOT_NEW,		/* taken, never published */
	SLOT_FLIGHT,		/* published, no answer yet */
	SLOT_FAILED,		/* refused or timed out: publish again */
	SLOT_ACKED
};

struct slot {
	enum slot_state	 state;
	natsMsg		*msg;		/* while libnats holds it: the ack's key */
	enum event_type	 type;
	uint64_t	 seq;
	unsigned char	 uuid[16];
	unsigned	 bucket;
	int		 err;		/* the last failure's natsStatus */
	int		 holds;		/* it set busy[bucket] */
	int		 tries;
	int64_t		 retry_at;
	char		 id[NATS_MSGID_MAX];
	struct buf	 data;
};

struct nats {
	struct output	 out;
	natsOptions	*opts;
	natsConnection	*nc;
	jsCtx		*js;
	struct buf	 jwt, seed;	/* a .creds file's, for every reconnect */
	unsigned char	 epoch[16];	/* from the hello */
	pthread_mutex_t	 mu;		/* slot states, against the ack thread */
	int		 wake[2];	/* the ack thread pokes the worker */
	struct slot	 ring[WINDOW];
	unsigned	 head, count;
	size_t		 bytes;		/* payloads in the window */
	unsigned char	 busy[BUCKETS];	/* an entry's event is out */
	unsigned	 scan_mark[BUCKETS];
	unsigned	 scan;
	uint64_t	 retries;
	struct buf	 subject;
	volatile sig_atomic_t closing;	/* our own close: no warning */
};


static int
exit_code(natsStatus s)
{
	switch (s) {
	case NATS_CONNECTION_AUTH_FAILED:
	case NATS_NOT_PERMITTED:
		return EX_NOPERM;
	default:
		return EX_UNAVAILABLE;
	}
}

static int
failed(char *why, size_t len, int code, const char *what, natsStatus s)
{
	const char	*text = nats_GetLastError(NULL);

	snprintf(why, len, "NATS: %s: %s%s%s", what, natsStatus_GetText(s),
	    text && *text ? ": " : "", text ? text : "");
	return code;
}

/* libnats' threads: say what happens, touch nothing else. */
static void
on_disconnected(natsConnection *nc, void *arg)
{
	struct nats	*n = arg;

	(void)nc;
	if (n->closing)
		return;
	n->out.ctx->stats->connected = 0;
	log_warnx("NATS: disconnected; reconnecting (events wait)");
}

static void
on_reconnected(natsConnection *nc, void *arg)
{
	struct nats	*n = arg;
	char		 url[256];

	if (natsConnection_GetConnectedUrl(nc, url, sizeof(url)) != NATS_OK)
		snprintf(url, sizeof(url), "?");
	n->out.ctx->stats->reconnects++;
	n->out.ctx->stats->connected = 1;
	log_info("NATS: reconnected to %s", url);
}

static void
on_error(natsConnection *nc, natsSubscription *sub, natsStatus err,
    void *arg)
{
	(void)nc;
	(void)sub;
	(void)arg;
	log_warnx("NATS: %s", natsStatus_GetText(err));
}

/* A .creds file: the user JWT, and the seed that signs the server's nonce. */
static natsStatus
creds_jwt(char **jwt, char **errtxt, void *arg)
{
	struct nats	*n = arg;

	(void)errtxt;
	if ((*jwt = strdup((const char *)n->jwt.data)) == NULL)
		return NATS_NO_MEMORY;
	return NATS_OK;
}

static natsStatus
creds_sign(char **errtxt, unsigned char **sig, int *siglen, const char *nonce,
    void *arg)
{
	struct nats	*n = arg;

	(void)errtxt;
	return nats_Sign((const char *)n->seed.data, nonce, sig, siglen);
}

/*
 * The text between a "-----BEGIN ...MARK...-----" line and the next line
 * of dashes: how nsc writes a .creds file.
 */
static int
creds_block(const struct buf *file, const char *mark, struct buf *out)
{
	const char	*p, *end, *start, *stop;

	p = memmem(file->data, file->len, mark, strlen(mark));
	if (p == NULL)
		return -1;
	end = (const char *)file->data + file->len;
	if ((start = memchr(p, '\n', (size_t)(end - p))) == NULL)
		return -1;
	while (start < end && (*start == '\n' || *start == '\r' ||
	    *start == ' '))
		start++;
	for (stop = start; stop < end && *stop != '\n' && *stop != '\r' &&
	    *stop != ' '; stop++)
		;
	if (stop == start)
		return -1;
	buf_add(out, start, (size_t)(stop - start));
	buf_add_u8(out, '\0');
	return 0;
}

static int
set_credential(struct nats *n, const struct config *cfg, char *why,
    size_t len)
{
	natsStatus	 s = NATS_OK;

	switch (cfg->nats_cred) {
	case NATS_CRED_NONE:
		return 0;
	case NATS_CRED_TOKEN:
		s = natsOptions_SetToken(n->opts, (const char *)cfg->key.data);
		break;
	case NATS_CRED_CREDS:
		if (creds_block(&cfg->key, "NATS USER JWT", &n->jwt) == -1 ||
		    creds_block(&cfg->key, "NKEY SEED", &n->seed) == -1) {
			snprintf(why, len, "--auth-key %s: not a .creds file",
			    cfg->key_file);
			return EX_USAGE;
		}
		s = natsOptions_SetUserCredentialsCallbacks(n->opts, creds_jwt,
		    n, creds_sign, n);
		break;
	}
	if (s != NATS_OK)
		return failed(why, len, EX_SOFTWARE, "credential", s);
	return 0;
}

static int
set_options(struct nats *n, char *why, size_t len)
{
	const struct config	*cfg = n->out.ctx->cfg;
	char			 name[64];
	natsStatus		 s;
	int			 i, tls = 0, code;

	for (i = 0; i < cfg->nats_nurls; i++)
		tls |= strncasecmp(cfg->nats_urls[i], "tls://", 6) == 0;
	snprintf(name, sizeof(name), "ldapfeed worker %u", n->out.ctx->index);
	/*
	 * Reconnect for ever: an outage is backpressure, not an end
	 * (doc/outputs.md, "Delivery").  What is published meanwhile waits
	 * in libnats' reconnect buffer, bounded by the window.
	 */
	if ((s = natsOptions_Create(&n->opts)) != NATS_OK ||
	    (s = natsOptions_SetServers(n->opts,
	    (const char **)(uintptr_t)cfg->nats_urls, cfg->nats_nurls)) != NATS_OK ||
	    (s = natsOptions_SetName(n->opts, name)) != NATS_OK ||
	    (s = natsOptions_SetTimeout(n->opts, CONNECT_TIMEOUT_MS)) !=
	    NATS_OK ||
	    (s = natsOptions_SetAllowReconnect(n->opts, true)) != NATS_OK ||
	    (s = natsOptions_SetMaxReconnect(n->opts, -1)) != NATS_OK ||
	    (s = natsOptions_SetReconnectWait(n->opts, 250)) != NATS_OK ||
	    (s = natsOptions_SetReconnectJitter(n->opts, 100, 100)) !=
	    NATS_OK ||
	    (s = natsOptions_SetPingInterval(n->opts, 2000)) != NATS_OK ||
	    (s = natsOptions_SetMaxPingsOut(n->opts, 3)) != NATS_OK ||
	    (s = natsOptions_SetReconnectBufSize(n->opts,
	    2 * WINDOW_BYTES + (1 << 20))) != NATS_OK ||
	    (s = natsOptions_SetDisconnectedCB(n->opts, on_disconnected,
	    n)) != NATS_OK ||
	    (s = natsOptions_SetReconnectedCB(n->opts, on_reconnected, n)) !=
	    NATS_OK ||
	    (s = natsOptions_SetErrorHandler(n->opts, on_error, n)) != NATS_OK)
		return failed(why, len, EX_SOFTWARE, "options", s);
	/*
	 * The CA for nats:// URLs too: libnats goes TLS with a server that
	 * requires it, and verifies it with what was loaded here.
	 */
	if ((tls && (s = natsOptions_SetSecure(n->opts, true)) != NATS_OK) ||
	    (cfg->nats_ca && (s = natsOptions_LoadCATrustedCertificates(
	    n->opts, cfg->nats_ca)) != NATS_OK))
		return failed(why, len, EX_CONFIG, "TLS options", s);
	if ((code = set_credential(n, cfg, why, len)) != 0)
		return code;
	return 0;
}

/*
 * A replicated stream without a leader (electing one, or just created by
 * another worker) answers nothing, or "temporarily unavailable", until it
 * has one: ask again, until a minute is over.
 */
static int
ask_again(natsStatus s, jsErrCode jerr, int64_t until)
{
	if ((s != NATS_TIMEOUT && jerr != JSClusterNotAvailErr) ||
	    clock_ms() >= until)
		return 0;
	log_info("NATS: JetStream did not answer yet: asking again");
	nats_Sleep(RETRY_MIN_MS);
	return 1;
}

/*
 * The stream: used as it is when it exists, if its subjects take every
 * PREFIX.<type>; else created, file storage, with a duplicate window far
 * longer than one event's retries (doc/outputs.md, "The stream").
 */
static int
check_stream(struct nats *n, char *why, size_t len)
{
	const struct config	*cfg = n->out.ctx->cfg;
	jsStreamInfo		*si = NULL;
	jsStreamConfig		 sc;
	jsErrCode		 jerr = 0;
	natsStatus		 s = NATS_OK;
	const char		*subjects[1];
	char			 all[512];
	int			 tries;
	int64_t			 until = clock_ms() + API_ASK_MS;

	for (tries = 0; tries < 2;) {
		jerr = 0;
		s = js_GetStreamInfo(&si, n->js, cfg->nats_stream, NULL, &jerr);
		if (ask_again(s, jerr, until))
			continue;
		if (s != NATS_NOT_FOUND)
			break;
		if (cfg->check) {	/* --check changes nothing */
			log_info("NATS: stream %s does not exist: a start "
			    "creates it", cfg->nats_stream);
			return 0;
		}
		snprintf(all, sizeof(all), "%s.>", cfg->nats_subject);
		subjects[0] = all;
		jsStreamConfig_Init(&sc);
		sc.Name = cfg->nats_stream;
		sc.Subjects = subjects;
		sc.SubjectsLen = 1;
		sc.Storage = js_FileStorage;
		sc.Replicas = cfg->nats_replicas;
		sc.Duplicates = (int64_t)DUP_WINDOW_S * 1000000000;
		jerr = 0;
		s = js_AddStream(&si, n->js, &sc, NULL, &jerr);
		if (s == NATS_OK) {
			log_info("NATS: created stream %s for %s",
			    cfg->nats_stream, all);
			break;
		}
		/* Another worker made it first, or the answer is lost: look. */
		if (jerr != JSStreamNameExistErr && !ask_again(s, jerr, until))
			break;
		tries++;
	}
	if (s != NATS_OK) {
		if (s == NATS_TIMEOUT)
			return failed(why, len, EX_UNAVAILABLE, "JetStream did "
			    "not answer", s);
		if (jerr == JSNotEnabledErr || jerr == JSNotEnabledForAccountErr ||
		    s == NATS_NO_RESPONDERS)
			return failed(why, len, EX_CONFIG, "JetStream is not "
			    "enabled", s);
		if (s == NATS_NOT_PERMITTED)
			return failed(why, len, EX_NOPERM, "stream", s);
		return failed(why, len, EX_CONFIG, cfg->nats_stream, s);
	}
	if (!nats_subjects_cover(si->Config->Subjects,
	    si->Config->SubjectsLen, cfg->nats_subject)) {
		snprintf(why, len, "NATS: stream %s does not take the subjects "
		    "%s.<type>", cfg->nats_stream, cfg->nats_subject);
		jsStreamInfo_Destroy(si);
		return EX_CONFIG;
	}
	if (si->Config->Duplicates < (int64_t)60 * 1000000000)
		log_warnx("NATS: stream %s keeps message ids for %" PRId64
		    " s only: a retry after that may store an event twice",
		    cfg->nats_stream, si->Config->Duplicates / 1000000000);
	jsStreamInfo_Destroy(si);
	return 0;
}

/* libnats' thread: a publish was answered, or timed out. */
static void
on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *arg)
{
	struct nats	*n = arg;
	struct slot	*sl;
	unsigned	 i;

	(void)js;
	(void)pa;
	pthread_mutex_lock(&n->mu);
	for (i = 0; i < n->count; i++) {
		sl = &n->ring[(n->head + i) % WINDOW];
		if (sl->msg != msg)
			continue;
		sl->msg = NULL;		/* libnats frees it after this call */
		if (pae == NULL)
			sl->state = SLOT_ACKED;
		else {
			sl->state = SLOT_FAILED;
			sl->err = pae->Err;
		}
		break;
	}
	pthread_mutex_unlock(&n->mu);
	/* The handler owns the message (nats.h, jsPubAckHandler). */
	natsMsg_Destroy(msg);
	(void)write(n->wake[1], "", 1);
}

static int
nats_open(struct output *o, char *why, size_t len)
{
	struct nats		*n = (struct nats *)o;
	const struct config	*cfg = o->ctx->cfg;
	jsOptions		 jo;
	natsStatus		 s;
	char			 url[256];
	int			 code;

	if (pipe2(n->wake, O_CLOEXEC | O_NONBLOCK) == -1) {
		snprintf(why, len, "pipe: %s", strerror(errno));
		return EX_OSERR;
	}
	if ((s = nats_Open(-1)) != NATS_OK)
		return failed(why, len, EX_SOFTWARE, "init", s);
	if ((code = set_options(n, why, len)) != 0)
		return code;
	if ((s = natsConnection_Connect(&n->nc, n->opts)) != NATS_OK)
		return failed(why, len, exit_code(s), cfg->output, s);
	if (natsConnection_GetConnectedUrl(n->nc, url, sizeof(url)) == NATS_OK)
		log_debug("NATS: connected to %s", url);
	jsOptions_Init(&jo);
	jo.Wait = API_WAIT_MS;
	jo.PublishAsync.MaxPending = 2 * WINDOW;	/* never stalls us */
	jo.PublishAsync.AckHandler = on_ack;
	jo.PublishAsync.AckHandlerClosure = n;
	if ((s = natsConnection_JetStream(&n->js, n->nc, &jo)) != NATS_OK)
		return failed(why, len, EX_SOFTWARE, "JetStream", s);
	return check_stream(n, why, len);
}

static int
nats_send(struct output *o, const struct event *ev)
{
	struct nats	*n = (struct nats *)o;
	struct slot	*sl;

	if (ev->type == EV_HELLO)
		memcpy(n->epoch, ev->uuid, 16);
	/* The ack thread looks at the first count slots only. */
	sl = &n->ring[(n->head + n->count) % WINDOW];
	sl->state = SLOT_NEW;
	sl->msg = NULL;
	sl->type = ev->type;
	sl->seq = ev->seq;
	memcpy(sl->uuid, ev->uuid, 16);
	sl->bucket = (unsigned)(shard_hash(ev->uuid, 16) % BUCKETS);
	sl->tries = 0;
	sl->err = 0;
	sl->holds = 0;
	sl->retry_at = 0;
	nats_msg_id(sl->id, sizeof(sl->id), n->epoch, ev, o->ctx->index);
	buf_reset(&sl->data);
	encode_event(&sl->data, ev, o->ctx->cfg->format);
	n->bytes += sl->data.len;
	pthread_mutex_lock(&n->mu);
	n->count++;
	pthread_mutex_unlock(&n->mu);
	return 0;
}

static int
nats_full(const struct output *o)
{
	const struct nats	*n = (const struct nats *)o;

	return n->count == WINDOW || n->bytes >= WINDOW_BYTES;
}

/* hello and refresh_done go out alone: after all before, before all after. */
static int
is_barrier(const struct slot *sl)
{
	return sl->type == EV_HELLO || sl->type == EV_REFRESH_DONE;
}

static natsStatus
publish(struct nats *n, struct slot *sl)
{
	const struct config	*cfg = n->out.ctx->cfg;
	jsPubOptions		 po;
	natsMsg			*msg = NULL;
	natsStatus		 s;
	char			 num[24], uuid[37];

	buf_reset(&n->subject);
	buf_printf(&n->subject, "%s.%s", cfg->nats_subject,
	    event_type_name(sl->type));
	buf_add_u8(&n->subject, '\0');
	if (sl->data.len > INT32_MAX)
		return NATS_MAX_PAYLOAD;
	s = natsMsg_Create(&msg, (const char *)n->subject.data, NULL,
	    (const char *)sl->data.data, (int)sl->data.len);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(msg, "Nats-Msg-Id", sl->id);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(msg, "Ldapfeed-Type",
		    event_type_name(sl->type));
	if (s == NATS_OK && sl->type != EV_HELLO) {
		snprintf(num, sizeof(num), "%" PRIu64, sl->seq);
		s = natsMsgHeader_Set(msg, "Ldapfeed-Seq", num);
	}
	if (s == NATS_OK && !is_barrier(sl)) {
		uuid_format(sl->uuid, uuid);
		s = natsMsgHeader_Set(msg, "Ldapfeed-Uuid", uuid);
	}
	if (s != NATS_OK) {
		natsMsg_Destroy(msg);
		return s;
	}
	jsPubOptions_Init(&po);
	po.MaxWait = ACK_WAIT_MS;
	/* The ack may come before we return: mark the slot first. */
	pthread_mutex_lock(&n->mu);
	sl->msg = msg;
	sl->state = SLOT_FLIGHT;
	pthread_mutex_unlock(&n->mu);
	s = js_PublishMsgAsync(n->js, &msg, &po);
	if (s != NATS_OK) {
		pthread_mutex_lock(&n->mu);
		sl->msg = NULL;
		sl->state = SLOT_FAILED;
		sl->err = s;
		pthread_mutex_unlock(&n->mu);
		natsMsg_Destroy(msg);
	}
	return s;
}

/*
 * Publish what may go out now.  Per entry one event at a time: the next
 * event of a uuid waits for the ack of the one before, so a retry can
 * never put an entry's events out of order (doc/outputs.md, "Order").
 * States are read once, under the lock: an answer that comes meanwhile
 * pokes the pipe, and is seen on the next round.
 */
static int
publish_ready(struct nats *n)
{
	enum slot_state	 st[WINDOW];
	struct slot	*sl;
	int64_t		 now = clock_ms();
	unsigned	 i, count;
	int		 first = 1, due;

	pthread_mutex_lock(&n->mu);
	count = n->count;
	for (i = 0; i < count; i++)
		st[i] = n->ring[(n->head + i) % WINDOW].state;
	pthread_mutex_unlock(&n->mu);
	n->scan++;
	for (i = 0; i < count; i++) {
		sl = &n->ring[(n->head + i) % WINDOW];
		if (st[i] == SLOT_ACKED)
			continue;
		due = st[i] == SLOT_NEW || (st[i] == SLOT_FAILED &&
		    sl->retry_at != 0 && sl->retry_at <= now);
		if (is_barrier(sl)) {
			if (!first || !due)
				break;
		} else if (!due || n->scan_mark[sl->bucket] == n->scan ||
		    (st[i] == SLOT_NEW && n->busy[sl->bucket])) {
			n->scan_mark[sl->bucket] = n->scan;
			first = 0;
			continue;
		}
		first = 0;
		if (!is_barrier(sl)) {
			n->scan_mark[sl->bucket] = n->scan;
			if (!sl->holds) {
				n->busy[sl->bucket] = 1;
				sl->holds = 1;
			}
		}
		sl->tries++;
		sl->retry_at = 0;
		if (publish(n, sl) == NATS_MAX_PAYLOAD) {
			log_warnx("NATS: event seq %" PRIu64 " is %zu bytes, "
			    "more than the server's max_payload", sl->seq,
			    sl->data.len);
			return -1;
		}
		if (is_barrier(sl))
			break;
	}
	return 0;
}

/* Take the answers: free what was acked from the head, schedule retries. */
static void
take_acks(struct nats *n)
{
	struct slot	*sl;
	unsigned	 i, delay;
	int64_t		 now = clock_ms();

	pthread_mutex_lock(&n->mu);
	for (i = 0; i < n->count; i++) {
		sl = &n->ring[(n->head + i) % WINDOW];
		if (sl->state == SLOT_ACKED && sl->holds) {
			n->busy[sl->bucket] = 0;
			sl->holds = 0;
		}
		if (sl->state == SLOT_FAILED && sl->retry_at == 0) {
			delay = RETRY_MIN_MS << (sl->tries < 5 ? sl->tries : 5);
			sl->retry_at = now + (delay < RETRY_MAX_MS ? delay :
			    RETRY_MAX_MS);
			n->retries++;
			if (sl->tries == 1 || sl->tries % 10 == 0)
				log_info("NATS: %s not acknowledged (%s, try "
				    "%d): publishing it again",
				    sl->id, natsStatus_GetText(sl->err),
				    sl->tries);
		}
	}
	while (n->count > 0 && n->ring[n->head].state == SLOT_ACKED) {
		sl = &n->ring[n->head];
		n->bytes -= sl->data.len;
		n->out.ctx->stats->sent_bytes += sl->data.len;
		if (sl->data.cap > (64 << 10))
			buf_free(&sl->data);
		n->head = (n->head + 1) % WINDOW;
		n->count--;
	}
	pthread_mutex_unlock(&n->mu);
}

static void
nats_wait(struct output *o, struct pollfd *pfd, int *timeout)
{
	struct nats	*n = (struct nats *)o;
	int64_t		 next = -1, now = clock_ms();
	unsigned	 i;
	struct slot	*sl;

	pfd->fd = n->wake[0];
	pfd->events = POLLIN;
	pthread_mutex_lock(&n->mu);
	for (i = 0; i < n->count; i++) {
		sl = &n->ring[(n->head + i) % WINDOW];
		if (sl->state == SLOT_FAILED && (next == -1 ||
		    sl->retry_at < next))
			next = sl->retry_at;	/* 0: not yet scheduled */
	}
	pthread_mutex_unlock(&n->mu);
	*timeout = next == -1 ? TICK_MS : next <= now ? 0 : (int)(next - now);
}

static int
nats_work(struct output *o, const struct pollfd *pfd)
{
	struct nats	*n = (struct nats *)o;
	char		 junk[256];

	if (pfd->revents & POLLIN)
		while (read(n->wake[0], junk, sizeof(junk)) > 0)
			;
	take_acks(n);
	if (publish_ready(n) == -1)
		return -1;
	o->ctx->stats->queue = n->bytes;
	return 0;
}

static size_t
nats_pending(const struct output *o)
{
	const struct nats	*n = (const struct nats *)o;

	return n->count ? (n->bytes ? n->bytes : n->count) : 0;
}

static void
wipe(struct buf *b)
{
	if (b->data)
		explicit_bzero(b->data, b->cap);
	buf_free(b);
}

static void
nats_close(struct output *o)
{
	struct nats	*n = (struct nats *)o;
	unsigned	 i;

	if (n->retries)
		log_info("NATS: %" PRIu64 " publishes tried again", n->retries);
	n->closing = 1;
	jsCtx_Destroy(n->js);
	natsConnection_Destroy(n->nc);
	natsOptions_Destroy(n->opts);
	nats_CloseAndWait(2000);
	for (i = 0; i < WINDOW; i++)
		buf_free(&n->ring[i].data);
	wipe(&n->jwt);
	wipe(&n->seed);
	buf_free(&n->subject);
	if (n->wake[0] != -1) {
		close(n->wake[0]);
		close(n->wake[1]);
	}
	pthread_mutex_destroy(&n->mu);
	free(n);
}

static const struct output_ops nats_ops = {
	nats_open,
	nats_send,
	nats_full,
	nats_wait,
	nats_work,
	nats_pending,
	nats_close,
	NULL		/* an acknowledgement is delivery: nothing to wait for */
};

struct output *
out_nats_new(const struct child_ctx *ctx)
{
	struct nats	*n;

	n = xcalloc(1, sizeof(*n));
	n->out.ops = &nats_ops;
	n->out.ctx = ctx;
	n->wake[0] = n->wake[1] = -1;
	pthread_mutex_init(&n->mu, NULL);
	return &n->out;
}
