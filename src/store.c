/*
 * The store, in LMDB: the sync cookie and other meta values, and for every
 * entry its UUID, DN and attributes, plus a DN index for subtree work and
 * the generation in which each entry was last seen (present-phase sweeps).
 * Writes are batched in one transaction the reader opens and commits.
 */
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <errno.h>
#include <lmdb.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "ldapfeed.h"

#define MAP_INITIAL	(1ULL << 30)	/* grows by doubling, see grow() */
#define CHUNK		4096		/* UUIDs collected per visit pass */

struct store {
	MDB_env		*env;
	MDB_txn		*txn;		/* the open write batch, or NULL */
	MDB_dbi		 meta;		/* name -> value */
	MDB_dbi		 entries;	/* uuid -> u32 dnlen, dn, attrs blob */
	MDB_dbi		 dns;		/* dnkey + uuid -> (nothing) */
	MDB_dbi		 seen;		/* uuid -> u64 generation */
	MDB_dbi		 tasks;		/* u64 id (native) -> kind, uuid, DN */
	MDB_dbi		 csns;		/* uuid -> the entryCSN last applied */
	size_t		 mapsize;
	uint64_t	 grows;		/* times the map was doubled */
	size_t		 txn_bytes;	/* written in the open batch */
	int		 failed;	/* see lmdb_fail() */
	struct buf	 scratch;
	struct buf	 key;
};

/*
 * Any failure fails the store for the rest of the run: nothing more is
 * committed and LMDB is not touched again but to close it.  The events made
 * from the lost batch are queued already, and a later commit that
 * succeeded would let the reader hand them on (doc/safety.md, "A full
 * disk"); after a growth that failed, LMDB holds no map at all.
 */
static int
lmdb_fail(struct store *s, const char *what, int rc)
{
	s->failed = 1;
	if (rc == ENOSPC || rc == EDQUOT)
		log_warnx("store: %s: %s: the disk of the data directory is "
		    "full; nothing the store does not hold was sent, and the "
		    "next start, with room, reloads fully", what,
		    mdb_strerror(rc));
	else if (rc == MDB_MAP_FULL)
		log_warnx("store: %s: %s: the LMDB map of %zu MiB is full; "
		    "nothing the store does not hold was sent, and the next "
		    "start reloads fully", what, mdb_strerror(rc),
		    s->mapsize >> 20);
	else
		log_warnx("store: %s: %s", what, mdb_strerror(rc));
	return -1;
}

static int
open_dbs(struct store *s)
{
	MDB_txn	*txn;
	int	 rc;

	if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0)
		return lmdb_fail(s, "begin", rc);
	if ((rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta)) != 0 ||
	    (rc = mdb_dbi_open(txn, "entries", MDB_CREATE, &s->entries)) != 0 ||
	    (rc = mdb_dbi_open(txn, "dns", MDB_CREATE, &s->dns)) != 0 ||
	    (rc = mdb_dbi_open(txn, "seen", MDB_CREATE, &s->seen)) != 0 ||
	    (rc = mdb_dbi_open(txn, "tasks", MDB_CREATE | MDB_INTEGERKEY,
	    &s->tasks)) != 0 ||
	    (rc = mdb_dbi_open(txn, "csns", MDB_CREATE, &s->csns)) != 0) {
		mdb_txn_abort(txn);
		return lmdb_fail(s, "open tables", rc);
	}
	if ((rc = mdb_txn_commit(txn)) != 0)
		return lmdb_fail(s, "commit", rc);
	return 0;
}

/* Remove the store's own files, and nothing else. */
static int
wipe(const char *dir)
{
	static const char *const files[] = { "data.mdb", "lock.mdb" };
	char	 path[4096];
	size_t	 i;

	for (i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		if (unlink(path) == -1 && errno != ENOENT) {
			log_warn("store: unlink %s", path);
			return -1;
		}
	}
	return 0;
}

int
store_open(struct store **sp, const char *dir, int do_wipe, size_t map)
{
	struct store	*s;
	struct stat	 st;
	char		 path[4096];
	int		 rc;

	if (do_wipe && wipe(dir) == -1)
		return -1;
	s = xcalloc(1, sizeof(*s));
	s->mapsize = map ? map : MAP_INITIAL;
	snprintf(path, sizeof(path), "%s/data.mdb", dir);
	if (stat(path, &st) == 0)
		while (s->mapsize < 2 * (size_t)st.st_size)
			s->mapsize *= 2;
	if ((rc = mdb_env_create(&s->env)) != 0) {
		lmdb_fail(s, "create", rc);
		free(s);
		return -1;
	}
	/*
	 * No fsync per commit (doc/store.md, "Durability"): the supervisor
	 * syncs the file before it writes the marker; after a crash the store
	 * is not trusted anyway.
	 */
	if ((rc = mdb_env_set_maxdbs(s->env, 8)) != 0 ||
	    (rc = mdb_env_set_mapsize(s->env, s->mapsize)) != 0 ||
	    (rc = mdb_env_open(s->env, dir, MDB_NOSYNC | MDB_NOTLS, 0600)) != 0) {
		lmdb_fail(s, dir, rc);
		mdb_env_close(s->env);
		free(s);
		return -1;
	}
	if (open_dbs(s) == -1) {
		mdb_env_close(s->env);
		free(s);
		return -1;
	}
	*sp = s;
	return 0;
}

void
store_close(struct store *s)
{
	if (s == NULL)
		return;
	if (s->txn)
		mdb_txn_abort(s->txn);
	mdb_env_sync(s->env, 1);
	mdb_env_close(s->env);
	buf_free(&s->scratch);
	buf_free(&s->key);
	free(s);
}

int
store_sync(struct store *s)
{
	int	 rc;

	if ((rc = mdb_env_sync(s->env, 1)) != 0)
		return lmdb_fail(s, "sync", rc);
	return 0;
}

/*
 * The store's figures for the status (doc/safety.md, "Health figures"):
 * the map, the pages in use, its growths, and data.mdb's size on disk.
 */
void
store_figures(struct store *s, struct proc_stats *st)
{
	MDB_envinfo	 info;
	MDB_stat	 ms;
	struct stat	 sb;
	int		 fd;

	st->map_bytes = s->mapsize;
	st->map_grows = s->grows;
	if (s->failed)
		return;
	if (mdb_env_info(s->env, &info) == 0 && mdb_env_stat(s->env, &ms) == 0)
		st->map_used = (info.me_last_pgno + 1) * (uint64_t)ms.ms_psize;
	if (mdb_env_get_fd(s->env, &fd) == 0 && fstat(fd, &sb) == 0)
		st->store_bytes = (uint64_t)sb.st_blocks * 512;
}

/*
 * Keep at least half the map free before a batch starts, so that no batch
 * (bounded by the reader) ever meets MDB_MAP_FULL.
 */
static int
grow(struct store *s)
{
	MDB_envinfo	 info;
	MDB_stat	 st;
	size_t		 used;
	char		 what[64];
	int		 rc;

	if (mdb_env_info(s->env, &info) != 0 || mdb_env_stat(s->env, &st) != 0)
		return 0;
	used = (info.me_last_pgno + 1) * (size_t)st.ms_psize;
	if (used < s->mapsize / 2)
		return 0;
	while (used >= s->mapsize / 2)
		s->mapsize *= 2;
	/* A refused mmap (an address-space limit, ulimit -v) leaves LMDB
	 * without a map: lmdb_fail() keeps the store from touching it. */
	if ((rc = mdb_env_set_mapsize(s->env, s->mapsize)) != 0) {
		snprintf(what, sizeof(what), "grow the map to %zu MiB "
		    "(ulimit -v?)", s->mapsize >> 20);
		return lmdb_fail(s, what, rc);
	}
	s->grows++;
	log_debug("store: map grown to %zu MiB", s->mapsize >> 20);
	return 0;
}

int
store_begin(struct store *s)
{
	int	 rc;

	if (s->txn)
		return 0;
	if (s->failed)
		return -1;
	if (grow(s) == -1)
		return -1;
	if ((rc = mdb_txn_begin(s->env, NULL, 0, &s->txn)) != 0) {
		s->txn = NULL;
		return lmdb_fail(s, "begin", rc);
	}
	s->txn_bytes = 0;
	return 0;
}

/* Bytes of entries written in the open batch: the reader bounds it. */
size_t
store_txn_bytes(const struct store *s)
{
	return s->txn ? s->txn_bytes : 0;
}

/*
 * LMDB reports a short write of its pages as EIO: a disk with no room
 * left (under 64 KiB) says which it was.
 */
static int
disk_full(struct store *s, int rc)
{
	struct statvfs	 vfs;
	int		 fd;

	if (rc == ENOSPC || rc == EDQUOT)
		return 1;
	return rc == EIO && mdb_env_get_fd(s->env, &fd) == 0 &&
	    fstatvfs(fd, &vfs) == 0 &&
	    (uint64_t)vfs.f_bavail * vfs.f_frsize < 65536;
}

int
store_commit(struct store *s)
{
	int	 rc;

	if (s->failed) {
		store_abort(s);
		return -1;
	}
	if (s->txn == NULL)
		return 0;
	rc = mdb_txn_commit(s->txn);
	s->txn = NULL;
	if (rc != 0)
		return lmdb_fail(s, "commit", disk_full(s, rc) ? ENOSPC : rc);
	return 0;
}

/*
 * Commits with the sequence number of the last event queued (meta "seq"),
 * so that a restart numbers on from what the store holds; *committed
 * follows only a commit that succeeded.
 */
int
store_commit_seq(struct store *s, uint64_t seq, uint64_t *committed)
{
	if (seq != *committed && store_put_u64(s, "seq", seq) == -1)
		return -1;
	if (store_commit(s) == -1)
		return -1;
	*committed = seq;
	return 0;
}

void
store_abort(struct store *s)
{
	if (s->txn)
		mdb_txn_abort(s->txn);
	s->txn = NULL;
}

static MDB_val
val(const void *p, size_t len)
{
	MDB_val	 v;

	v.mv_data = (void *)(uintptr_t)p;
	v.mv_size = len;
	return v;
}

static int
need_txn(struct store *s)
{
	if (s->failed || (s->txn == NULL && store_begin(s) == -1))
		return -1;
	return 0;
}

int
store_get_meta(struct store *s, const char *name, struct span *out)
{
	MDB_val	 k = val(name, strlen(name)), v;
	int	 rc;

	if (need_txn(s) == -1)
		return -1;
	if ((rc = mdb_get(s->txn, s->meta, &k, &v)) == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return lmdb_fail(s, "get meta", rc);
	out->p = v.mv_data;
	out->len = v.mv_size;
	return 1;
}

int
store_put_meta(struct store *s, const char *name, struct span value)
{
	MDB_val	 k = val(name, strlen(name)), v = val(value.p, value.len);
	int	 rc;

	if (need_txn(s) == -1)
		return -1;
	if ((rc = mdb_put(s->txn, s->meta, &k, &v, 0)) != 0)
		return lmdb_fail(s, "put meta", rc);
	return 0;
}

int
store_del_meta(struct store *s, const char *name)
{
	MDB_val	 k = val(name, strlen(name));
	int	 rc;

	if (need_txn(s) == -1)
		return -1;
	rc = mdb_del(s->txn, s->meta, &k, NULL);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return lmdb_fail(s, "del meta", rc);
	return 0;
}

/*
 * The store's epoch: 128 random bits made with the store, so a new or
 * wiped store has a new one (doc/store.md, "The epoch"); with seq it names
 * an event for ever.
 */
int
store_epoch(struct store *s, unsigned char epoch[16])
{
	struct span	 v;
	int		 r;

	if ((r = store_get_meta(s, "epoch", &v)) == -1)
		return -1;
	if (r == 1 && v.len == 16) {
		memcpy(epoch, v.p, 16);
		return 0;
	}
	if (RAND_bytes(epoch, 16) != 1) {
		log_warnx("store: no random bytes for the epoch");
		return -1;
	}
	return store_put_meta(s, "epoch", (struct span){ epoch, 16 });
}

uint64_t
store_get_u64(struct store *s, const char *name, uint64_t dflt)
{
	struct span	 v;

	if (store_get_meta(s, name, &v) != 1 || v.len != 8)
		return dflt;
	return get_u64(v.p);
}

int
store_put_u64(struct store *s, const char *name, uint64_t value)
{
	unsigned char	 le[8];

	put_le(le, value, 8);
	return store_put_meta(s, name, (struct span){ le, 8 });
}

/* Returns 1 and the entry (valid until the next write), 0 if unknown. */
int
store_get_entry(struct store *s, const unsigned char *uuid,
    struct span *dn, struct span *attrs)
{
	MDB_val	 k = val(uuid, 16), v;
	uint32_t len;
	int	 rc;

	if (need_txn(s) == -1)
		return -1;
	if ((rc = mdb_get(s->txn, s->entries, &k, &v)) == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return lmdb_fail(s, "get entry", rc);
	if (v.mv_size < 4 || (len = get_u32(v.mv_data)) > v.mv_size - 4) {
		log_warnx("store: corrupt entry record");
		return -1;
	}
	dn->p = (unsigned char *)v.mv_data + 4;
	dn->len = len;
	attrs->p = dn->p + len;
	attrs->len = v.mv_size - 4 - len;
	return 1;
}

/*
 * A put that tries MDB_APPEND first: keys that arrive in ascending order
 * (time-based entryUUIDs in a full load) then fill LMDB's pages instead of
 * splitting them in half, which keeps the store near the size of its data.
 */
static int
put_append(struct store *s, MDB_dbi dbi, MDB_val *k, MDB_val *v,
    unsigned flags)
{
	int	 rc;

	rc = mdb_put(s->txn, dbi, k, v, flags | MDB_APPEND);
	if (rc == MDB_KEYEXIST)
		rc = mdb_put(s->txn, dbi, k, v, flags);
	return rc;
}

static int
dn_index(struct store *s, const unsigned char *uuid, struct span dn,
    int add)
{
	MDB_val	 k, v = val("", 0);
	int	 rc;

	dn_key(&s->key, dn);
	buf_add(&s->key, uuid, 16);
	k = val(s->key.data, s->key.len);
	if (add)
		rc = put_append(s, s->dns, &k, &v, 0);
	else
		rc = mdb_del(s->txn, s->dns, &k, NULL);
	if (rc != 0 && !(rc == MDB_NOTFOUND && !add))
		return lmdb_fail(s, "dn index", rc);
	return 0;
}

/* Insert or replace; old_dn is the stored DN when there was one. */
int
store_put_entry(struct store *s, const unsigned char *uuid,
    struct span dn, struct span attrs, const struct span *old_dn)
{
	MDB_val	 k = val(uuid, 16), v;
	int	 rc, was_new = old_dn == NULL;

	if (need_txn(s) == -1)
		return -1;
	if (dn.len > UINT32_MAX)
		return -1;
	if (old_dn != NULL && (old_dn->len != dn.len ||
	    memcmp(old_dn->p, dn.p, dn.len) != 0)) {
		/* copy: old_dn may point into the map we are about to change */
		buf_reset(&s->scratch);
		buf_add(&s->scratch, old_dn->p, old_dn->len);
		if (dn_index(s, uuid, buf_span(&s->scratch), 0) == -1)
			return -1;
		old_dn = NULL;
	}
	v.mv_size = 4 + dn.len + attrs.len;
	v.mv_data = NULL;
	s->txn_bytes += v.mv_size;
	rc = was_new ? put_append(s, s->entries, &k, &v, MDB_RESERVE) :
	    mdb_put(s->txn, s->entries, &k, &v, MDB_RESERVE);
	if (rc != 0)
		return lmdb_fail(s, "put entry", rc);
	put_le(v.mv_data, dn.len, 4);
	memcpy((unsigned char *)v.mv_data + 4, dn.p, dn.len);
	if (attrs.len)
		memcpy((unsigned char *)v.mv_data + 4 + dn.len, attrs.p,
		    attrs.len);
	if (old_dn == NULL && dn_index(s, uuid, dn, 1) == -1)
		return -1;
	return 0;
}

int
store_del_entry(struct store *s, const unsigned char *uuid)
{
	struct span	 dn, attrs;
	MDB_val		 k = val(uuid, 16);
	int		 rc;

	if ((rc = store_get_entry(s, uuid, &dn, &attrs)) != 1)
		return rc;
	buf_reset(&s->scratch);
	buf_add(&s->scratch, dn.p, dn.len);
	if (dn_index(s, uuid, buf_span(&s->scratch), 0) == -1)
		return -1;
	if ((rc = mdb_del(s->txn, s->entries, &k, NULL)) != 0)
		return lmdb_fail(s, "del entry", rc);
	rc = mdb_del(s->txn, s->seen, &k, NULL);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return lmdb_fail(s, "del seen", rc);
	rc = mdb_del(s->txn, s->csns, &k, NULL);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return lmdb_fail(s, "del csn", rc);
	return 1;
}

/*
 * The entryCSN of the version of an entry last applied: 1 and it (valid
 * until the next write), 0 if none is known.
 */
int
store_get_csn(struct store *s, const unsigned char *uuid, struct span *csn)
{
	MDB_val	 k = val(uuid, 16), v;
	int	 rc;

	if (need_txn(s) == -1)
		return -1;
	if ((rc = mdb_get(s->txn, s->csns, &k, &v)) == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return lmdb_fail(s, "get csn", rc);
	csn->p = v.mv_data;
	csn->len = v.mv_size;
	return 1;
}

int
store_put_csn(struct store *s, const unsigned char *uuid, struct span csn)
{
	MDB_val	 k = val(uuid, 16), v = val(csn.p, csn.len);
	int	 rc;

	if (need_txn(s) == -1)
		return -1;
	if (csn.len == 0 || csn.len > 256)
		return 0;
	if ((rc = mdb_put(s->txn, s->csns, &k, &v, 0)) != 0)
		return lmdb_fail(s, "put csn", rc);
	return 0;
}

int
store_mark_seen(struct store *s, const unsigned char *uuid, uint64_t gen)
{
	unsigned char	 le[8];
	MDB_val		 k = val(uuid, 16), v = val(le, 8);
	int		 rc;

	if (need_txn(s) == -1)
		return -1;
	put_le(le, gen, 8);
	if ((rc = mdb_put(s->txn, s->seen, &k, &v, 0)) != 0)
		return lmdb_fail(s, "mark seen", rc);
	return 0;
}

uint64_t
store_count(struct store *s)
{
	MDB_stat	 st;
	MDB_txn		*txn = s->txn;
	uint64_t	 n = 0;

	if (s->failed)
		return 0;
	/* Outside a batch, a read transaction: no writer lock, no growth. */
	if (txn == NULL && mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0)
		return 0;
	if (mdb_stat(txn, s->entries, &st) == 0)
		n = st.ms_entries;
	if (txn != s->txn)
		mdb_txn_abort(txn);
	return n;
}

/*
 * Visit, in chunks, the UUIDs a scan selects, so that the visitor may
 * change the store: a chunk is collected first, then visited, then the scan
 * resumes after its last key.
 */
static int
visit_chunks(struct store *s, MDB_dbi dbi, struct span prefix,
    int (*select)(struct store *, MDB_val *, MDB_val *, void *),
    void *sel_arg, store_visit fn, void *arg)
{
	MDB_cursor	*c;
	MDB_val		 k, v;
	struct buf	 uuids = { 0 }, resume = { 0 };
	struct span	 dn, attrs;
	size_t		 i, n;
	int		 rc, r = 0, op, more = 1;

	if (need_txn(s) == -1)
		return -1;
	buf_add(&resume, prefix.p, prefix.len);
	while (more) {
		/* (the visitor may have committed the batch) */
		if (need_txn(s) == -1) {
			r = -1;
			break;
		}
		if ((rc = mdb_cursor_open(s->txn, dbi, &c)) != 0) {
			r = lmdb_fail(s, "cursor", rc);
			break;
		}
		buf_reset(&uuids);
		k = val(resume.data, resume.len);
		op = resume.len ? MDB_SET_RANGE : MDB_FIRST;
		n = 0;
		more = 0;
		while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
			op = MDB_NEXT;
			if (k.mv_size < prefix.len || (prefix.len > 0 &&
			    memcmp(k.mv_data, prefix.p, prefix.len) != 0))
				break;
			if (n == CHUNK) {
				/* resume here next pass */
				buf_reset(&resume);
				buf_add(&resume, k.mv_data, k.mv_size);
				more = 1;
				break;
			}
			if (select(s, &k, &v, sel_arg)) {
				buf_add(&uuids, (unsigned char *)k.mv_data +
				    k.mv_size - 16, 16);
				n++;
			}
		}
		mdb_cursor_close(c);
		if (rc != 0 && rc != MDB_NOTFOUND) {
			r = lmdb_fail(s, "scan", rc);
			break;
		}
		for (i = 0; i < uuids.len && r == 0; i += 16) {
			if ((rc = store_get_entry(s, uuids.data + i, &dn,
			    &attrs)) == 1)
				r = fn(arg, uuids.data + i, dn, attrs);
			else if (rc == -1)
				r = -1;
		}
		if (r != 0)
			break;
	}
	buf_free(&uuids);
	buf_free(&resume);
	return r;
}

static int
mark_is(MDB_val *v, uint64_t gen)
{
	return v->mv_size == 8 && get_u64(v->mv_data) == gen;
}

/* Does a sweep in this mode take an entry with this mark (NULL: none)? */
static int
swept(MDB_val *mark, uint64_t gen, enum sweep_mode mode)
{
	if (mode == SWEEP_DOOMED)
		return mark != NULL && mark_is(mark, gen | SEEN_DOOMED);
	return mark == NULL || !mark_is(mark, gen);
}

struct walk {
	uint64_t	 gen;
	enum sweep_mode	 mode;
	int		 count_only;	/* read: no visit, no mark dropped */
	uint64_t	 n;		/* entries taken */
	uint64_t	*unknown;
};

/*
 * One ordered walk of the entries and their marks (both keyed by UUID),
 * a chunk of at most CHUNK entries at a time from resume on: the UUIDs
 * the mode takes go to uuids.  A present-phase sweep (SWEEP_UNSEEN) also
 * drops each mark without an entry, adding it to *unknown when it is of
 * generation gen (listed present by the server, unknown here).  Returns 1
 * when more is left (resume set), 0 at the end, -1 on an error.
 */
static int
walk_chunk(struct store *s, struct walk *w, struct buf *resume,
    struct buf *uuids)
{
	MDB_cursor	*ce = NULL, *cs = NULL;
	MDB_val		 ke, ve, ks, vs;
	size_t		 n = 0;
	int		 re, rs, cmp, op, more = 0;

	if ((re = mdb_cursor_open(s->txn, s->entries, &ce)) != 0 ||
	    (re = mdb_cursor_open(s->txn, s->seen, &cs)) != 0) {
		if (ce)
			mdb_cursor_close(ce);
		return lmdb_fail(s, "cursor", re);
	}
	op = resume->len ? MDB_SET_RANGE : MDB_FIRST;
	ke.mv_data = ks.mv_data = resume->data;
	ke.mv_size = ks.mv_size = resume->len;
	re = mdb_cursor_get(ce, &ke, &ve, op);
	rs = mdb_cursor_get(cs, &ks, &vs, op);
	while (re == 0 || rs == 0) {
		if (re == 0 && rs == 0 && ke.mv_size == 16 && ks.mv_size == 16)
			cmp = memcmp(ke.mv_data, ks.mv_data, 16);
		else
			cmp = re == 0 ? -1 : 1;
		if (cmp <= 0 && n == CHUNK) {
			buf_reset(resume);
			buf_add(resume, ke.mv_data, ke.mv_size);
			more = 1;
			break;
		}
		if (cmp <= 0 && swept(cmp == 0 ? &vs : NULL, w->gen, w->mode)) {
			buf_add(uuids, ke.mv_data, 16);
			n++;
		}
		if (cmp > 0 && w->mode == SWEEP_UNSEEN && !w->count_only) {
			if (mark_is(&vs, w->gen))
				(*w->unknown)++;
			if ((rs = mdb_cursor_del(cs, 0)) != 0)
				break;
		}
		if (cmp <= 0)
			re = mdb_cursor_get(ce, &ke, &ve, MDB_NEXT);
		if (cmp >= 0)
			rs = mdb_cursor_get(cs, &ks, &vs, MDB_NEXT);
	}
	mdb_cursor_close(ce);
	mdb_cursor_close(cs);
	if ((re != 0 && re != MDB_NOTFOUND) || (rs != 0 && rs != MDB_NOTFOUND))
		return lmdb_fail(s, "sweep", re && re != MDB_NOTFOUND ? re : rs);
	w->n += n;
	return more;
}

static int
walk(struct store *s, struct walk *w, store_visit fn, void *arg)
{
	struct buf	 uuids = { 0 }, resume = { 0 };
	struct span	 dn, attrs;
	size_t		 i;
	int		 more = 1, r = 0, rc;

	while (more == 1 && r == 0) {
		/* (the visitor may have committed the batch) */
		if (need_txn(s) == -1) {
			r = -1;
			break;
		}
		buf_reset(&uuids);
		if ((more = walk_chunk(s, w, &resume, &uuids)) == -1) {
			r = -1;
			break;
		}
		for (i = 0; i < uuids.len && r == 0 && !w->count_only; i += 16)
			if ((rc = store_get_entry(s, uuids.data + i, &dn,
			    &attrs)) == 1)
				r = fn(arg, uuids.data + i, dn, attrs);
			else if (rc == -1)
				r = -1;
	}
	buf_free(&uuids);
	buf_free(&resume);
	return r;
}

/*
 * The sweep after a present phase or a reload (SWEEP_UNSEEN: every entry
 * not marked in generation gen), or at the end of a refresh whose deletes
 * were held back (SWEEP_DOOMED): each entry taken goes to fn, which
 * deletes it.  Entries are collected a chunk at a time, so that fn may
 * change the store.
 */
int
store_sweep(struct store *s, uint64_t gen, enum sweep_mode mode,
    store_visit fn, void *arg, uint64_t *unknown)
{
	struct walk	 w = { gen, mode, 0, 0, unknown };

	return walk(s, &w, fn, arg);
}

/* How many entries that sweep would take, changing nothing. */
int
store_sweep_count(struct store *s, uint64_t gen, enum sweep_mode mode,
    uint64_t *count)
{
	struct walk	 w = { gen, mode, 1, 0, NULL };
	int		 r;

	r = walk(s, &w, NULL, NULL);
	*count = w.n;
	return r;
}

struct below {
	struct span	 root;
	struct span	 dn;
};

static int
select_below(struct store *s, MDB_val *k, MDB_val *v, void *arg)
{
	struct below	*b = arg;
	struct span	 dn, attrs;

	(void)v;
	if (k->mv_size < 16 || store_get_entry(s, (unsigned char *)k->mv_data +
	    k->mv_size - 16, &dn, &attrs) != 1)
		return 0;
	return dn_is_below(dn, b->root);
}

/* Every stored entry strictly below root, by DN. */
int
store_foreach_below(struct store *s, struct span root, store_visit fn,
    void *arg)
{
	struct below	 b;
	struct buf	 prefix = { 0 };
	int		 r;

	b.root = root;
	dn_key(&prefix, root);
	if (root.len == 0)
		buf_reset(&prefix);
	r = visit_chunks(s, s->dns, buf_span(&prefix),
	    select_below, &b, fn, arg);
	buf_free(&prefix);
	return r;
}

static int
stop_at_first(void *arg, const unsigned char *uuid, struct span dn,
    struct span attrs)
{
	(void)arg;
	(void)uuid;
	(void)dn;
	(void)attrs;
	return 1;
}

static int
count_one(void *arg, const unsigned char *uuid, struct span dn,
    struct span attrs)
{
	(void)uuid;
	(void)dn;
	(void)attrs;
	(*(uint64_t *)arg)++;
	return 0;
}

/* How many stored entries lie below root (0 on an error). */
uint64_t
store_count_below(struct store *s, struct span root)
{
	uint64_t	 n = 0;

	if (store_foreach_below(s, root, count_one, &n) == -1)
		return 0;
	return n;
}

/* 1 if some stored entry lies below root, 0 if none, -1 on error. */
int
store_has_below(struct store *s, struct span root)
{
	return store_foreach_below(s, root, stop_at_first, NULL);
}

/*
 * What a store in dir holds, read without taking its lock or writing
 * anything (MDB_RDONLY | MDB_NOLOCK): the entries and the size of the copy
 * an unfinished snapshot replaces (doc/safety.md, "A full reload").
 */
int
store_peek(const char *dir, struct store_peek *p)
{
	MDB_env		*env;
	MDB_txn		*txn;
	MDB_dbi		 meta, entries;
	MDB_stat	 st;
	MDB_val		 k, v;
	int		 rc;

	memset(p, 0, sizeof(*p));
	if ((rc = mdb_env_create(&env)) != 0)
		return -1;
	if ((rc = mdb_env_set_maxdbs(env, 8)) != 0 ||
	    (rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK |
	    MDB_NOTLS, 0600)) != 0 ||
	    (rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) != 0) {
		mdb_env_close(env);
		return -1;
	}
	if (mdb_dbi_open(txn, "entries", 0, &entries) == 0 &&
	    mdb_stat(txn, entries, &st) == 0)
		p->entries = st.ms_entries;
	if (mdb_dbi_open(txn, "meta", 0, &meta) == 0) {
		k = val("snapshot", 8);
		p->snapshot = mdb_get(txn, meta, &k, &v) == 0;
		k = val("previous", 8);
		if (mdb_get(txn, meta, &k, &v) == 0 && v.mv_size == 8)
			p->previous = get_u64(v.mv_data);
	}
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return 0;
}

/*
 * Pending subtree tasks (doc/subtrees.md, "Tasks"): work the server must
 * answer, kept in the store so that a lost connection or a stop in the
 * middle of one is taken up again, never forgotten.
 */
int
store_task_add(struct store *s, int kind, const unsigned char *uuid,
    struct span dn)
{
	MDB_cursor	*c;
	MDB_val		 k, v;
	uint64_t	 id = 1;
	int		 rc;

	if (need_txn(s) == -1)
		return -1;
	if ((rc = mdb_cursor_open(s->txn, s->tasks, &c)) != 0)
		return lmdb_fail(s, "cursor", rc);
	if ((rc = mdb_cursor_get(c, &k, &v, MDB_LAST)) == 0 &&
	    k.mv_size == sizeof(id)) {
		memcpy(&id, k.mv_data, sizeof(id));
		id++;
	}
	mdb_cursor_close(c);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return lmdb_fail(s, "tasks", rc);
	buf_reset(&s->scratch);
	buf_add_u8(&s->scratch, (uint8_t)kind);
	buf_add(&s->scratch, uuid, 16);
	buf_add(&s->scratch, dn.p, dn.len);
	k = val(&id, sizeof(id));
	v = val(s->scratch.data, s->scratch.len);
	if ((rc = mdb_put(s->txn, s->tasks, &k, &v, 0)) != 0)
		return lmdb_fail(s, "add a task", rc);
	return 0;
}

/* The oldest pending task: 1 and its id, kind, UUID and DN (copies), 0 if
 * none. */
int
store_task_first(struct store *s, uint64_t *id, int *kind, unsigned char *uuid,
    struct buf *dn)
{
	return store_task_next(s, 0, id, kind, uuid, dn);	/* ids from 1 */
}

int
store_task_done(struct store *s, uint64_t id)
{
	MDB_val	 k = val(&id, sizeof(id));
	int	 rc;

	if (need_txn(s) == -1)
		return -1;
	rc = mdb_del(s->txn, s->tasks, &k, NULL);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return lmdb_fail(s, "end a task", rc);
	return 0;
}

/*
 * The task after id `after` (0: the oldest), as store_task_first, so that
 * a caller can look along the pending tasks without taking them.
 */
int
store_task_next(struct store *s, uint64_t after, uint64_t *id, int *kind,
    unsigned char *uuid, struct buf *dn)
{
	MDB_cursor	*c;
	MDB_val		 k, v;
	uint64_t	 from = after + 1;
	int		 rc;

	if (need_txn(s) == -1)
		return -1;
	if ((rc = mdb_cursor_open(s->txn, s->tasks, &c)) != 0)
		return lmdb_fail(s, "cursor", rc);
	k = val(&from, sizeof(from));
	rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	mdb_cursor_close(c);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != 0)
		return lmdb_fail(s, "tasks", rc);
	if (k.mv_size != sizeof(*id) || v.mv_size < 17) {
		log_warnx("store: corrupt task record");
		return -1;
	}
	memcpy(id, k.mv_data, sizeof(*id));
	*kind = ((unsigned char *)v.mv_data)[0];
	memcpy(uuid, (unsigned char *)v.mv_data + 1, 16);
	buf_reset(dn);
	buf_add(dn, (unsigned char *)v.mv_data + 17, v.mv_size - 17);
	return 1;
}

static unsigned char
fold(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/*
 * The stored entry whose DN is dn, A-Z folded as the DN index does: 1 and
 * its UUID, 0 if none.  (Two entries may briefly share a DN: the first.)
 */
int
store_find_dn(struct store *s, struct span dn, unsigned char *uuid)
{
	MDB_cursor	*c;
	MDB_val		 k, v;
	struct span	 sdn, attrs;
	size_t		 i, klen;
	int		 rc, found = 0;

	if (need_txn(s) == -1)
		return -1;
	dn_key(&s->key, dn);
	klen = s->key.len;
	if ((rc = mdb_cursor_open(s->txn, s->dns, &c)) != 0)
		return lmdb_fail(s, "cursor", rc);
	k = val(s->key.data, klen);
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && !found;
	    rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size < klen + 16 || memcmp(k.mv_data, s->key.data,
		    klen) != 0)
			break;
		/* the entries below dn share the prefix; a cut key also
		 * holds longer DNs: compare the DN itself */
		if (klen < DNKEY_MAX && k.mv_size != klen + 16)
			continue;
		memcpy(uuid, (unsigned char *)k.mv_data + k.mv_size - 16, 16);
		if (store_get_entry(s, uuid, &sdn, &attrs) != 1 ||
		    sdn.len != dn.len)
			continue;
		for (i = 0; i < dn.len; i++)
			if (fold(sdn.p[i]) != fold(dn.p[i]))
				break;
		found = i == dn.len;
	}
	mdb_cursor_close(c);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return lmdb_fail(s, "dn index", rc);
	return found;
}
