/*
 * ldapfeed: follow an LDAP directory with syncrepl and stream its changes to
 * a multiprocessing.connection consumer.  Shared types and prototypes.
 */
#ifndef LDAPFEED_H
#define LDAPFEED_H

#include <sys/types.h>
#include <sys/socket.h>

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define LDAPFEED_VERSION	"0.1.0"

#ifndef __dead
#define __dead		__attribute__((__noreturn__))
#endif
#define PRINTFLIKE(f, a)	__attribute__((__format__(__printf__, f, a)))

/* A borrowed run of bytes: never owns its memory. */
struct span {
	const unsigned char	*p;
	size_t			 len;
};

/* A growable byte buffer: the one owner of its memory. */
struct buf {
	unsigned char		*data;
	size_t			 len;
	size_t			 cap;
};

/*
 * buf.c: out of memory is fatal (there is no sane way to go on).  The
 * appends are inline: the reader and the encoders make millions of them.
 */
void	buf_grow(struct buf *, size_t);

static inline void
buf_reserve(struct buf *b, size_t extra)
{
	if (b->cap - b->len < extra)
		buf_grow(b, extra);
}

static inline void
buf_add(struct buf *b, const void *p, size_t n)
{
	if (n == 0)
		return;
	buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

static inline void
buf_add_u8(struct buf *b, uint8_t v)
{
	buf_reserve(b, 1);
	b->data[b->len++] = v;
}

/* The n low bytes of v at p, little-endian: every number ldapfeed stores. */
static inline void
put_le(unsigned char *p, uint64_t v, size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

static inline void
buf_add_u32(struct buf *b, uint32_t v)	/* little-endian */
{
	buf_reserve(b, 4);
	put_le(b->data + b->len, v, 4);
	b->len += 4;
}

/* A buffer's contents as a span (valid until the buffer changes). */
static inline struct span
buf_span(const struct buf *b)
{
	return (struct span){ b->data, b->len };
}

void	buf_add_str(struct buf *, const char *);
void	buf_add_u64(struct buf *, uint64_t);	/* little-endian */
void	buf_put_u32(struct buf *, size_t, uint32_t);	/* patch in place */
void	buf_printf(struct buf *, const char *, ...) PRINTFLIKE(2, 3);
void	buf_consume(struct buf *, size_t);	/* drop a prefix */
void	buf_reset(struct buf *);
void	buf_free(struct buf *);
/*
 * A byte queue: appended at the end, taken from the front without moving
 * the rest each time (a 10 MB event sent in 200 KB pieces must not be
 * memmoved fifty times).
 */
struct queue {
	struct buf	 b;
	size_t		 off;	/* bytes already taken */
};
#define queue_len(q)	((q)->b.len - (q)->off)
#define queue_data(q)	((q)->b.data + (q)->off)
void	queue_drop(struct queue *, size_t);
uint32_t get_u32(const unsigned char *);
uint64_t get_u64(const unsigned char *);
int	hex_digit(int);
int64_t	clock_ms(void);
double	seconds_since(int64_t);
void	*xmalloc(size_t);
void	*xcalloc(size_t, size_t);
void	*xrealloc(void *, size_t);
char	*xstrdup(const char *);

/*
 * attrs.c: an entry's attributes as one flat blob, the form they take in the
 * store, in reader->worker records and in the encoders:
 *   u32 nattrs, then per attribute: u32 namelen, name, u32 nvals,
 *   then per value: u32 len, bytes.  (All integers little-endian.)
 */
struct attrs_writer {
	struct buf	*b;
	size_t		 nattrs_off;
	size_t		 nvals_off;
	uint32_t	 nattrs;
	uint32_t	 nvals;
	int		 in_attr;
};
void	attrs_writer_init(struct attrs_writer *, struct buf *);
void	attrs_writer_attr(struct attrs_writer *, const void *, size_t);
void	attrs_writer_value(struct attrs_writer *, const void *, size_t);
void	attrs_writer_finish(struct attrs_writer *);

struct attrs_iter {
	const unsigned char	*p;
	const unsigned char	*end;
	uint32_t		 attrs_left;
	uint32_t		 vals_left;
};
/* Each returns 1 for an item, 0 at the end, -1 for a malformed blob. */
int	attrs_iter_init(struct attrs_iter *, struct span);
int	attrs_next_attr(struct attrs_iter *, struct span *, uint32_t *);
int	attrs_next_value(struct attrs_iter *, struct span *);
int	attrs_valid(struct span);
extern const struct span attrs_empty;	/* a blob with no attribute */

/*
 * A list of names (the "changed" field of a modify): per name u32 len,
 * bytes, up to the end.  names_iter takes the next one off the front.
 */
int	names_iter(struct span *, struct span *);	/* 1, 0 or -1 as above */

/* entry.c: one PartialAttribute of an LDAP entry, read in place. */
int	entry_attr_parse(struct span, struct span *, struct span *);
int	entry_next_value(struct span *, struct span *);
struct berelement;
struct entry {
	struct buf	 attrs;		/* the attributes kept, as a blob */
	int		 has_subs;	/* hasSubordinates: TRUE */
	int		 subs_known;	/* hasSubordinates came at all */
	int		 has_uuid;	/* a well-formed entryUUID came */
	unsigned char	 uuid[16];
	struct span	 csn;		/* its entryCSN, into the message */
};
#define DECODE_STRIP_SUBS	1	/* leave hasSubordinates out */
#define DECODE_STRIP_UUID	2	/* leave entryUUID out */
#define DECODE_STRIP_ACI	4	/* leave aci out */
#define DECODE_STRIP_CSN	8	/* leave entryCSN out */
#define DECODE_GUID		16	/* uuid_attr holds a binary objectGUID */
int	entry_decode(struct berelement *, int, const char *, struct entry *);
int	entry_may_have_children(const struct entry *);
int	uuid_parse_text(struct span, unsigned char *);

/* Events, as the reader hands them to the workers (doc/events.md; the
 * records: doc/processes.md, "Pipes and sharding"). */
enum event_type {
	EV_HELLO = 1,
	EV_ADD,
	EV_MODIFY,
	EV_RENAME,
	EV_DELETE,
	EV_REFRESH_DONE
};

enum format {
	FORMAT_PICKLE,
	FORMAT_JSON
};

struct event {
	enum event_type	 type;
	uint64_t	 seq;		/* hello: the run's number */
	unsigned char	 uuid[16];	/* hello: the store's epoch */
	struct span	 dn;
	struct span	 old_dn;	/* rename */
	struct span	 old_attrs;	/* modify, delete: an attrs blob */
	struct span	 new_attrs;	/* add, modify: an attrs blob */
	struct span	 changed;	/* modify: a names list, sorted */
	struct span	 added;		/* modify: attrs blob, per changed name */
	struct span	 removed;	/* modify: the same, the values gone */
	struct span	 csn;		/* add, modify, rename: entryCSN, or empty */
	int		 reload;	/* hello */
	int		 worker;	/* hello: filled in by the worker */
	int		 workers;	/* hello: filled in by the worker */
};

/* encode.c: one event as a pickle (protocol 3) or a UTF-8 JSON object. */
void	encode_event(struct buf *, const struct event *, enum format);
const char *format_name(enum format);
const char *event_type_name(enum event_type);
void	uuid_format(const unsigned char[16], char[37]);
void	epoch_format(const unsigned char[16], char[33]);

/* pipe.c: reader -> worker records, of any size. */
void	pipe_record_encode(struct buf *, const struct event *);
int	pipe_record_decode(struct span, struct event *);
/* Bytes of one whole record at the head of the buffer, or 0 if incomplete. */
size_t	pipe_record_complete(const struct buf *);
struct pipes {
	unsigned	 n;
	int		*fd;	/* write ends, one per worker */
	struct queue	*q;	/* what each has not taken yet */
	size_t		 write_min; /* a partial flush skips smaller queues */
};
void	pipes_init(struct pipes *, int *, unsigned);
void	pipes_free(struct pipes *);
void	pipes_send(struct pipes *, unsigned, const struct event *);
void	pipes_send_all(struct pipes *, const struct event *);
int	pipes_flush(struct pipes *, int);
#define PIPES_HIGH_WATER	(1 << 20)
size_t	pipes_pending(const struct pipes *);

/* wire.c: multiprocessing.connection framing and authentication. */
#define WIRE_MAX_HEADER	12
size_t	wire_frame_header(unsigned char *, uint64_t);
int	wire_send_frame(int, const void *, size_t, int);
int	wire_recv_frame(int, struct buf *, size_t, int);
/*
 * Both return 0 on success, -1 on an I/O error (errno set), or WIRE_REFUSED
 * when the key or the peer's protocol is wrong, with a one-line reason.
 */
#define WIRE_REFUSED	(-2)
int	wire_answer_challenge(int, struct span, int, char *, size_t);
int	wire_deliver_challenge(int, struct span, int, char *, size_t);
/* The pure parts, for tests: the response to a challenge message, and its check. */
int	wire_response(struct span, struct span, struct buf *);
int	wire_verify(struct span, struct span, struct span);

/*
 * syncrepl.c: RFC 4533 controls and intermediate messages, encoded and
 * decoded with liblber.  Every field from the server is treated as hostile:
 * a decoder returns -1 and points *why at a static one-line reason.
 * Decoders reuse the caller's buffers (buf_reset, then fill); the caller
 * owns and frees them.
 */
#define SYNC_MODE_REFRESH_ONLY		1
#define SYNC_MODE_REFRESH_AND_PERSIST	3

enum sync_state_value {
	SYNC_PRESENT = 0,
	SYNC_ADD = 1,
	SYNC_MODIFY = 2,
	SYNC_DELETE = 3
};

struct sync_state {
	int		 state;		/* enum sync_state_value */
	unsigned char	 uuid[16];
	int		 has_cookie;
	struct buf	 cookie;
};

struct sync_done {
	int		 has_cookie;
	struct buf	 cookie;
	int		 refresh_deletes;	/* absent: 0 */
};

enum sync_info_type {
	SYNC_INFO_NEW_COOKIE,
	SYNC_INFO_REFRESH_DELETE,
	SYNC_INFO_REFRESH_PRESENT,
	SYNC_INFO_ID_SET
};

struct sync_info {
	enum sync_info_type type;
	int		 has_cookie;
	struct buf	 cookie;
	int		 refresh_done;		/* absent: 1 */
	int		 refresh_deletes;	/* absent: 0 */
	struct buf	 uuids;			/* syncIdSet: n * 16 bytes */
};

/* The Sync Request control's value (DER), cookie NULL for none. */
int	sync_request_encode(struct buf *, int, const struct span *, int);
int	sync_state_decode(struct span, struct sync_state *, const char **);
int	sync_done_decode(struct span, struct sync_done *, const char **);
struct ldapcontrol;
int	sync_done_find(struct ldapcontrol **, struct sync_done *,
	    const char **);
int	sync_info_decode(struct span, struct sync_info *, const char **);
void	sync_state_free(struct sync_state *);
void	sync_done_free(struct sync_done *);
void	sync_info_free(struct sync_info *);
/* The OpenLDAP cookie: rid=NNN[,sid=XXX],csn=CSN[;CSN...][,delcsn=CSN] */
int	cookie_is_openldap(struct span);
int	cookie_changenumber(struct span, uint64_t *);
int64_t	csn_time_us(struct span);
int64_t	cookie_time_us(struct span);
int	cookie_has_csn(struct span);
void	cookie_merge(struct buf *, struct span, struct span);

/* config.c: the command line (ldapfeed.8, OPTIONS), parsed into one struct. */
enum mode {
	MODE_PERSIST,
	MODE_REFRESH
};

enum output_kind {
	OUTPUT_LISTENER,	/* multiprocessing.connection: unix or inet */
	OUTPUT_NATS		/* NATS JetStream */
};

/* How the reader follows the directory (doc/providers.md). */
enum protocol {
	PROTOCOL_AUTO,		/* from the root DSE */
	PROTOCOL_SYNCREPL,	/* RFC 4533 */
	PROTOCOL_DIRSYNC	/* Active Directory's DirSync */
};

/* Which worker an entry's events take (doc/processes.md, "Pipes and sharding"). */
enum route {
	ROUTE_DN,		/* fnv1a64 of the DN: the Listener */
	ROUTE_UUID		/* of the UUID: an entry keeps its worker */
};

enum nats_cred {
	NATS_CRED_NONE,
	NATS_CRED_TOKEN,	/* the -k file's first line */
	NATS_CRED_CREDS		/* a .creds file: user JWT and NKey seed */
};

struct config {
	/* the search, from the LDAP URL */
	char		*url;		/* as given (never holds a secret) */
	char		*server_url;	/* scheme://host:port, for ldap_initialize */
	char		*base;
	int		 scope;		/* LDAP_SCOPE_* */
	char		*filter;
	char	       **attrs;		/* NULL: all user attributes */
	char		*bindname;	/* bindname= extension: simple bind */
	char		*saslmech;	/* x-saslmech= extension: SASL bind */
	char		*password_file;
	struct buf	 password;	/* simple-bind password, wiped at exit */
	/* the store */
	char		*data_dir;
	char		*marker;
	/* the consumer */
	char		*output;	/* as given */
	enum output_kind output_kind;
	struct sockaddr_storage addr;
	socklen_t	 addrlen;
	char		*key_file;
	struct buf	 key;
	enum route	 route;
	/* NATS JetStream (doc/outputs.md) */
	char	       **nats_urls;	/* NULL-terminated */
	int		 nats_nurls;
	char		*nats_stream;
	char		*nats_subject;
	char		*nats_ca;
	int		 nats_replicas;	/* for a stream ldapfeed creates */
	enum nats_cred	 nats_cred;
	/* processes and behaviour */
	int		 processes;	/* as given */
	int		 workers;	/* W, from the process budget */
	enum mode	 mode;
	enum protocol	 protocol;
	int		 poll_interval;	/* DirSync: seconds between polls */
	enum format	 format;
	int		 starttls;
	int		 foreground;
	char		*pidfile;
	char		*status_file;
	int		 verbosity;
	/* the mass-delete guard (guard.c): a share, or a count when -1 */
	int		 max_delete_pct;
	uint64_t	 max_delete;
	int		 check;		/* --check: check.c, then exit */
};

/* Parse argv into cfg; on error return the sysexits code, message in err. */
#define CONFIG_DONE	(-1)	/* --help or --version was printed */
int	config_parse(struct config *, int, char **, char *, size_t);
void	config_free(struct config *);
#define PURGE_PASSWORD	1
#define PURGE_KEY	2
void	config_purge(struct config *, int);
int	config_budget(int, int, int *, char *, size_t);
int	config_cpus(void);
int	config_parse_address(const char *, const char *, struct sockaddr_storage *,
	    socklen_t *, char *, size_t);
void	config_usage(FILE *);

/* barrier.c: the process-shared, breakable startup barrier. */
enum barrier_state {
	BARRIER_OPEN,
	BARRIER_RELEASED,
	BARRIER_BROKEN
};
struct barrier;
struct barrier *barrier_create(unsigned);
void	barrier_destroy(struct barrier *);
/* Arrive and wait: 0 once all parties arrived, -1 if broken. */
int	barrier_wait(struct barrier *, volatile sig_atomic_t *, pid_t);
/* Arrive without waiting: returns the state after it. */
enum barrier_state barrier_arrive(struct barrier *);
/* The last party: when all others are in, fn then the release. */
enum barrier_state barrier_complete(struct barrier *,
	    int (*)(void *, char *, size_t), void *);
/* Break it for everyone; returns 1 for the first to break it. */
int	barrier_break(struct barrier *, int, const char *);
enum barrier_state barrier_state(struct barrier *);
int	barrier_fail_code(struct barrier *, char *, size_t);
void	barrier_set_notify(struct barrier *, pid_t);

/* store.c: the LMDB store (doc/store.md). */
struct proc_stats;
struct store;
typedef int (*store_visit)(void *, const unsigned char *, struct span,
	    struct span);
int	store_open(struct store **, const char *, int, size_t);
void	store_close(struct store *);
int	store_sync(struct store *);
void	store_figures(struct store *, struct proc_stats *);
int	store_begin(struct store *);
int	store_commit(struct store *);
int	store_commit_seq(struct store *, uint64_t, uint64_t *);
size_t	store_txn_bytes(const struct store *);
void	store_abort(struct store *);
int	store_get_meta(struct store *, const char *, struct span *);
int	store_put_meta(struct store *, const char *, struct span);
int	store_del_meta(struct store *, const char *);
int	store_epoch(struct store *, unsigned char[16]);
uint64_t store_get_u64(struct store *, const char *, uint64_t);
int	store_put_u64(struct store *, const char *, uint64_t);
int	store_get_entry(struct store *, const unsigned char *, struct span *,
	    struct span *);
int	store_put_entry(struct store *, const unsigned char *, struct span,
	    struct span, const struct span *);
int	store_del_entry(struct store *, const unsigned char *);
int	store_get_csn(struct store *, const unsigned char *, struct span *);
int	store_put_csn(struct store *, const unsigned char *, struct span);
int	store_mark_seen(struct store *, const unsigned char *, uint64_t);
uint64_t store_count(struct store *);
/*
 * A mark with this bit is a delete held back until the refresh ends
 * (doc/safety.md, "Counting before deleting").  What a sweep takes: the
 * entries not marked in the generation, or those held back in it.
 */
#define SEEN_DOOMED	(1ULL << 63)
enum sweep_mode {
	SWEEP_UNSEEN,
	SWEEP_DOOMED
};
int	store_sweep(struct store *, uint64_t, enum sweep_mode, store_visit,
	    void *, uint64_t *);
int	store_sweep_count(struct store *, uint64_t, enum sweep_mode,
	    uint64_t *);
uint64_t store_count_below(struct store *, struct span);
/* What a store holds, read without a lock or a write (guard.c). */
struct store_peek {
	uint64_t	 entries;
	uint64_t	 previous;	/* meta "previous" */
	int		 snapshot;	/* meta "snapshot" set */
};
int	store_peek(const char *, struct store_peek *);
int	store_foreach_below(struct store *, struct span, store_visit, void *);
int	store_has_below(struct store *, struct span);
int	store_task_add(struct store *, int, const unsigned char *, struct span);
int	store_task_first(struct store *, uint64_t *, int *, unsigned char *,
	    struct buf *);
int	store_task_done(struct store *, uint64_t);
int	store_task_next(struct store *, uint64_t, uint64_t *, int *,
	    unsigned char *, struct buf *);
int	store_find_dn(struct store *, struct span, unsigned char *);

/*
 * guard.c: the mass-delete guard (doc/safety.md).  guard_allows says
 * whether deleting n of stored entries at once is within --max-delete;
 * guard_check also logs the refusal, naming what would have deleted them.
 */
#define GUARD_DEFAULT_PCT	50
#define GUARD_FLOOR		100	/* a share never refuses this many */
#define GUARD_EXIT		65	/* EX_DATAERR: the server's data is suspect */
int	guard_allows(const struct config *, uint64_t, uint64_t);
int	guard_check(const struct config *, const char *, uint64_t, uint64_t);
void	guard_limit_text(const struct config *, char *, size_t);
uint64_t guard_copy_size(const struct store_peek *);
uint64_t guard_store_copy(struct store *);
uint64_t guard_previous_copy(const char *);
int	guard_reload(const struct config *, struct store *);

/* The server's kind, from its root DSE (conn.c; doc/providers.md). */
enum provider_kind {
	PROVIDER_OPENLDAP,	/* and any server that does not say */
	PROVIDER_389DS,
	PROVIDER_AD		/* Active Directory, Samba AD: DirSync */
};
struct provider {
	enum provider_kind kind;
	int		 sync_known;	/* the root DSE lists its controls */
	int		 has_sync;	/* ... and RFC 4533's is one of them */
	int		 has_dirsync;	/* ... DirSync is one */
	int		 has_notify;	/* ... change notification is one */
};

struct ldap;
struct ldapmsg;

/* dn.c: the DN rules (doc/subtrees.md, "Names"). */
#define DNKEY_MAX	(511 - 16)	/* LMDB's key limit less the UUID */
uint64_t shard_hash(const void *, size_t);	/* fnv1a64, A-Z folded */
unsigned shard_of(struct span dn, unsigned workers);
unsigned shard_of_uuid(const unsigned char *, unsigned workers);
void	dn_key(struct buf *, struct span);
int	dn_is_below(struct span, struct span);
int	dn_parent(struct span, struct span *);

/* events.c: entries compared with the store become events. */
struct events {
	const struct config *cfg;
	struct store	*store;
	struct pipes	*pipes;
	uint64_t	 seq;		/* the last seq given */
	uint64_t	 counts[EV_REFRESH_DONE + 1];
	/* called between the steps of a long cascade or sweep */
	int		(*checkpoint)(void *);
	void		*checkpoint_arg;
	struct buf	 old_dn, old_attrs, changed;	/* scratch */
	struct buf	 added, removed;
	struct buf	 dn2;
};
#define ENTRY_ADDED	1
#define ENTRY_RENAMED	2
#define ENTRY_MODIFIED	4
void	events_init(struct events *, const struct config *, struct store *,
	    struct pipes *);
int	events_entry(struct events *, const unsigned char *, struct span,
	    struct span, struct span, int);
int	events_delete(struct events *, const unsigned char *, struct buf *);
int	events_sweep(struct events *, uint64_t, enum sweep_mode, uint64_t *,
	    uint64_t *, int);
void	events_refresh_done(struct events *);
void	events_free(struct events *);
size_t	events_diff(struct span, struct span, struct buf *, struct buf *,
	    struct buf *);
int	events_checkpoint(struct events *);

/* subtree.c: what only the server can answer about a subtree. */
#define TASK_FETCH	1
#define TASK_RECONCILE	2
#define TASK_LOOKUP	9	/* is this entry in the search, and as what */
#define TASK_ADOPT	10	/* the entry at this parent DN, for a child */
#define SUBTREE_BATCH	256	/* UUIDs asked about per search */
#define SUBTREE_GUARDED	2	/* a reconcile held back by the guard */
#define SUBTREE_UNLISTED 3	/* a listing without every UUID */
struct ldap;
struct subtree {
	const struct config *cfg;
	struct events	*ev;
	const char	*uuid_attr;	/* entryUUID, or 389-ds's nsUniqueId */
	struct ldap	*ld;		/* the tasks' own connection */
	char	       **attrs;		/* the search's, + entryUUID */
	int		 decode_flags;
	uint64_t	 mark_gen;	/* mark what a fetch finds seen, or 0 */
	int		 whole;		/* a full refresh: every entry comes */
	uint64_t	 doomed;	/* lookups held back to the refresh's end */
	int		 listed_odd;	/* listed entries to look up */
	int		 adopt;		/* an entry below an unknown parent DN:
					 * read the parent (TASK_ADOPT) */
	unsigned char	 parent[16];	/* the UUID that read found */
	int		 parent_found;
	struct entry	 ent;
	unsigned char	 batch[SUBTREE_BATCH][16];
	char		 batch_seen[SUBTREE_BATCH];
	size_t		 batch_n;
	int		 nameless, deleted;
	int		 dry;		/* count what a reconcile would delete */
	uint64_t	 would_delete;
	int		 no_such;	/* the last search's base was gone */
	int		 unsettled;	/* this pass saw the tree move */
	unsigned char	 want[16];	/* the UUID a fetch looks for */
	struct buf	 where;		/* ... and where it found it */
	struct buf	 filter, scratch;
	struct sync_done done;		/* a sync search's end (catch-up) */
};
void	subtree_init(struct subtree *, const struct config *, struct events *,
	    char **, int, enum provider_kind);
const char *provider_uuid_attr(enum provider_kind);
int	subtree_task(struct subtree *, int, const unsigned char *, struct span);
int	subtree_list(struct subtree *, uint64_t);
int	subtree_catch_up(struct subtree *, const char *, struct span);
int	subtree_run_pending(struct subtree *);
void	subtree_close(struct subtree *);
void	subtree_free(struct subtree *);

/* msctl.c: Active Directory's DirSync control and objectGUID (MS-ADTS). */
int	dirsync_request_encode(struct buf *, long, struct span);
int	dirsync_response_decode(struct span, int *, struct buf *, const char **);
void	guid_swap(const unsigned char *, unsigned char *);
int	guid_read(struct span, unsigned char *);
void	guid_filter(struct buf *, const unsigned char *);

/*
 * adsearch.c: one search run to its end while the reader stays awake to
 * signals; each message of the search to a callback.  Returns the
 * server's result code (>= 0) or one of these.
 */
#define ADS_FAIL	(-1)	/* the callback failed: ours, fatal */
#define ADS_LOST	(-2)	/* the connection failed, or the server fell silent */
#define ADS_STOP	(-3)	/* a stop was asked: the search was abandoned */
struct ldapcontrol;
struct ad_search {
	const char	*base;
	int		 scope;
	const char	*filter;
	char	       **attrs;
	struct ldapcontrol **ctrls;	/* the request's */
	int		(*entry)(void *, struct ldapmsg *);
	void		*arg;
	struct ldapcontrol **done_ctrls; /* the SearchResultDone's, to free */
	char		 text[512];	/* what went wrong, for a log line */
};
int	ad_search_run(struct ldap *, struct ad_search *);
#define AD_PAGE_SIZE	500	/* AD's MaxPageSize is 1000 */
int	ad_search_paged(struct ldap *, struct ad_search *, int (*)(void *));
int	ad_permanent(int);

/*
 * resolve.c: what the server says of the objects DirSync named: whether
 * each is in the search, under which DN, with which attributes; and what
 * that means for other stored entries (doc/providers.md, "Active Directory
 * and Samba AD").  The work waits in the store's task table.
 */
#define TASK_RESOLVE	3	/* is this object in the search, and how */
#define TASK_RESOLVE_OLD 4	/* the same, for an object that moved */
#define TASK_BELOW	5	/* read what lies below an entry that came in */
#define TASK_GONE	6	/* a DN went: which stored entries still name it */
#define TASK_RESOLVE_DELETED 7	/* a tombstone: its DN before the delete */
#define TASK_LINKS	8	/* an object outside the search that moved:
				 * the stored entries it links with */
#define RESOLVE_BATCH	256	/* objects asked about per search */
struct resolver {
	const struct config *cfg;
	struct events	*ev;
	struct ldap	*ld;		/* the reader's connection, borrowed */
	const char	*root;		/* the naming context's DN */
	const char	*base;		/* the search's, as the server writes DNs */
	char	       **attrs;		/* the search's, + objectGUID */
	int		 decode_flags;
	char	       **untracked;	/* attributes DirSync cannot follow */
	size_t		 nuntracked;	/* (sorted, A-Z folded order) */
	int		 follow;	/* an event's consequences become tasks */
	uint64_t	 nameless;	/* entries skipped: objectGUID unreadable */
	struct entry	 ent;
	unsigned char	 batch[RESOLVE_BATCH][16];
	char		 batch_seen[RESOLVE_BATCH];
	uint64_t	 batch_id[RESOLVE_BATCH];
	int		 batch_kind[RESOLVE_BATCH];
	struct buf	 batch_dn[RESOLVE_BATCH];	/* where DirSync saw it */
	size_t		 batch_n;
	struct buf	 filter, scratch, dn, vals, entdn, kept;
};
void	resolve_init(struct resolver *, const struct config *, struct events *,
	    char **, int, const char *);
void	resolve_free(struct resolver *);
int	resolve_entry(struct resolver *, struct ldapmsg *, int);
int	resolve_pending(struct resolver *);

/* status.c: per-process figures in shared memory, for SIGUSR1 and files. */
enum phase {
	PHASE_STARTING,
	PHASE_REFRESH,
	PHASE_PERSIST,
	PHASE_RECONNECTING,
	PHASE_RUNNING,
	PHASE_STOPPING
};
struct proc_stats {
	pid_t		 pid;
	int		 phase;
	uint64_t	 events[EV_REFRESH_DONE + 1];
	uint64_t	 messages;	/* worker: frames sent */
	uint64_t	 queue;		/* bytes not yet with the consumer */
	uint64_t	 reconnects;
	uint64_t	 entries;	/* reader: entries in the store */
	time_t		 started;
	/* health (doc/safety.md, "Health figures") */
	int		 connected;	/* reader: to LDAP; worker: to its output */
	uint64_t	 sent_bytes;	/* worker: bytes its output delivered */
	int64_t		 last_csn_us;	/* newest change handed on (CSN time) */
	uint64_t	 store_bytes;	/* reader: data.mdb on disk */
	uint64_t	 map_bytes, map_used, map_grows;
	int64_t		 error_time;	/* the last warning or error */
	uint32_t	 error_seq;	/* odd while error is written */
	char		 error[200];
};
struct proc_stats *status_create(unsigned);
void	status_destroy(struct proc_stats *, unsigned);
void	status_log(const struct proc_stats *, unsigned);
int	status_write_file(const struct proc_stats *, unsigned, const char *);

/* daemon.c: detaching with a startup report, and the pidfile. */
int	daemon_detach(const sigset_t *);
void	daemon_report(int *, int, const char *);
int	pidfile_lock(const char *, char *, size_t);
int	pidfile_write(int, pid_t);
void	pidfile_remove(int, const char *);

/* signals.c: handlers set these flags and poke a self-pipe. */
extern volatile sig_atomic_t sig_term, sig_chld, sig_hup, sig_usr1, sig_usr2,
	    sig_alrm, sig_stopreq;
/* A child's "please stop everything": not a SIGTERM, which an operator
 * may send a second time to mean "stop now". */
#define SIGSTOPREQ	(SIGRTMIN + 1)
void	signals_handled(sigset_t *);
int	signals_init(void);
int	signals_fd(void);
void	signals_drain(void);
void	signals_pause(int);

/* conn.c: the reader's LDAP connection (an LDAP * from <ldap.h>). */
struct ldap;
void	conn_provider(struct ldap *, struct provider *);
int	conn_check_retro(struct ldap *, char *, size_t);
int	conn_open(const struct config *, struct ldap **, char *, size_t);
int	conn_check_search(const struct config *, struct ldap *, char *, size_t);
enum protocol conn_protocol(const struct config *, const struct provider *);
int	conn_describe_response(struct ldap *, struct ldapmsg *, char *, size_t);

/*
 * The worker's output (doc/outputs.md): one small interface, one file per
 * implementation.  A worker opens it before the barrier, hands it events
 * while it is not full, waits on what it asks for, lets it work after each
 * wait, and is done when its pipe ended and nothing is pending.
 */
struct pollfd;
struct child_ctx;
struct output;
struct output_ops {
	/* connect and authenticate: 0, or a sysexits code and a reason */
	int	(*open)(struct output *, char *, size_t);
	/* take one event (copied: the record it came from is reused) */
	int	(*send)(struct output *, const struct event *);
	/* 1 while it holds as much as it may: stop reading the pipe */
	int	(*full)(const struct output *);
	/* what to wait for: a descriptor and events, and a timeout */
	void	(*wait)(struct output *, struct pollfd *, int *);
	/* after the wait: move bytes, take acks; -1 ends the run */
	int	(*work)(struct output *, const struct pollfd *);
	/* bytes taken and not yet delivered */
	size_t	(*pending)(const struct output *);
	void	(*close)(struct output *);
	/* after the last delivery: 0 once the consumer read everything
	 * (NULL: pending 0 already says so) */
	int	(*finish)(struct output *);
};
struct output {
	const struct output_ops	*ops;
	const struct child_ctx	*ctx;
};
struct output *out_listener_new(const struct child_ctx *);
struct output *out_nats_new(const struct child_ctx *);

/* nats_names.c: the NATS output's subjects and message ids (doc/outputs.md). */
#define NATS_MSGID_MAX	80
int	nats_subject_match(const char *, const char *);
int	nats_subjects_cover(const char *const *, int, const char *);
void	nats_msg_id(char *, size_t, const unsigned char *, const struct event *,
	    unsigned);

/* supervisor.c, reader.c, worker.c: the three kinds of process. */
struct child_ctx {
	struct config		*cfg;		/* its secrets purged per process */
	struct barrier		*barrier;
	pid_t			 supervisor;
	int			 trusted;	/* the marker was there */
	unsigned		 workers;
	int			*pipes;		/* the reader's write ends; NULL: a worker */
	int			 pipe_fd;	/* worker: read end */
	unsigned		 index;		/* worker: its number */
	struct proc_stats	*stats;		/* this process's slot */
};
int	supervisor_run(struct config *, int);
int	check_run(struct config *);
/* proc.c: the child's side */
__dead void proc_child(const struct child_ctx *, int *, unsigned);
void	child_ask_shutdown(const struct child_ctx *);
__dead void child_startup_failed(const struct child_ctx *, int, const char *,
	    ...) PRINTFLIKE(3, 4);
int	reader_main(const struct child_ctx *);
/* dirsync.c: the reader when it follows DirSync (reader.c hands over) */
int	dirsync_main(const struct child_ctx *, struct ldap *,
	    const struct provider *);
int	worker_main(const struct child_ctx *);

/* log.c */
void	log_init(int, int, const char *);
void	log_errors_to(struct proc_stats *);
void	log_procname(const char *);
void	log_warn(const char *, ...) PRINTFLIKE(1, 2);
void	log_warnx(const char *, ...) PRINTFLIKE(1, 2);
void	log_notice(const char *, ...) PRINTFLIKE(1, 2);
void	log_info(const char *, ...) PRINTFLIKE(1, 2);
void	log_debug(const char *, ...) PRINTFLIKE(1, 2);
__dead void fatal(int, const char *, ...) PRINTFLIKE(2, 3);
__dead void fatalx(int, const char *, ...) PRINTFLIKE(2, 3);

#endif
