/*
 * src/store.c: the LMDB store.  Meta values, entries, the DN index with
 * subtree scans, present-phase sweeps (also one that deletes as it goes),
 * map growth, reopening and wiping, and a store that failed (a full map,
 * a map that cannot grow) committing nothing more.  The events derived on
 * top of it are tested in test_events.c, the DN rules in test_dn.c.
 */
#include <sys/resource.h>
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ldapfeed.h"
#include "tap.h"
#include "fixtures.h"




static struct store *sweep_store;

static int
delete_it(void *arg, const unsigned char *uuid, struct span dn,
    struct span attrs)
{
	(void)dn;
	(void)attrs;
	(*(int *)arg)++;
	return store_del_entry(sweep_store, uuid) == 1 ? 0 : -1;
}

/* One 64 KiB entry numbered n into the open batch. */
static int
put_big(struct store *st, struct buf *b, int n)
{
	struct attrs_writer	 w;
	static char		 value[64 * 1024];
	char			 dn[64];
	unsigned char		 u[16];

	memset(value, 'v', sizeof(value));
	buf_reset(b);
	attrs_writer_init(&w, b);
	attrs_writer_attr(&w, "photo", 5);
	attrs_writer_value(&w, value, sizeof(value));
	attrs_writer_finish(&w);
	snprintf(dn, sizeof(dn), "cn=big%d,dc=x", n);
	uuid_of(u, 5000 + n);
	return store_put_entry(st, u, S(dn), (struct span){ b->data, b->len },
	    NULL);
}

/* The process's address space in use, from /proc/self/status. */
static rlim_t
vm_size(void)
{
	char	 line[256];
	FILE	*f;
	rlim_t	 kb = 0;

	if ((f = fopen("/proc/self/status", "r")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmSize: %llu kB", (unsigned long long *)&kb) ==
		    1)
			break;
	fclose(f);
	return kb * 1024;
}

/*
 * A full map: one batch bigger than the map (growth happens only between
 * batches) fails, and so does every later commit: the events made from
 * the lost batch were queued already, and a later commit that succeeded
 * would let the reader hand them on (doc/safety.md, "A full disk").
 */
static void
full_map(const char *top)
{
	struct store	*st;
	struct proc_stats ps;
	struct buf	 b = { 0 };
	char		 dir[256];
	int		 i, failed_at = -1;

	snprintf(dir, sizeof(dir), "%s/full", top);
	mkdir(dir, 0700);
	ok(store_open(&st, dir, 0, 1 << 20) == 0 &&
	    store_put_u64(st, "seq", 1) == 0 && store_commit(st) == 0,
	    "a store with a 1 MiB map, seq 1 committed");
	for (i = 0; i < 40 && failed_at == -1; i++)
		if (put_big(st, &b, i) == -1)
			failed_at = i;
	ok(failed_at > 0, "a batch of 64 KiB entries fills the 1 MiB map at "
	    "entry %d (MDB_MAP_FULL)", failed_at);
	ok(store_put_u64(st, "seq", 2) == -1 && store_commit(st) == -1,
	    "the batch does not commit");
	ok(store_put_u64(st, "seq", 3) == -1 && store_commit(st) == -1,
	    "nor does any later one: the store failed");
	ok(store_begin(st) == -1 && store_count(st) == 0,
	    "a failed store begins no batch and counts nothing");
	memset(&ps, 0, sizeof(ps));
	store_figures(st, &ps);
	ok(ps.map_bytes == 1 << 20, "its figures still name the map");
	store_close(st);
	ok(store_open(&st, dir, 0, 1 << 20) == 0 &&
	    store_get_u64(st, "seq", 0) == 1 && store_count(st) == 0,
	    "reopened: the store holds what was committed before, no more");
	store_close(st);
	buf_free(&b);
}

/*
 * A map that cannot grow: the address space is limited (ulimit -v) so
 * that doubling the 1 MiB map is refused.  LMDB has let go of the old
 * map by then: the store fails, says why, and is not touched again but to
 * be closed.
 */
static void
map_cannot_grow(const char *top)
{
	struct store	*st;
	struct proc_stats ps;
	struct rlimit	 old, lim;
	struct buf	 b = { 0 };
	char		 dir[256];
	int		 i, r = 0;

	snprintf(dir, sizeof(dir), "%s/nogrow", top);
	mkdir(dir, 0700);
	ok(store_open(&st, dir, 0, 1 << 20) == 0, "a store with a 1 MiB map");
	/* Half the map in use: the next batch doubles it. */
	for (i = 0; i < 9 && r == 0; i++)
		r = put_big(st, &b, i);
	ok(r == 0 && store_commit(st) == 0, "half the map used, committed");
	ok(getrlimit(RLIMIT_AS, &old) == 0 && vm_size() > 0,
	    "the address space in use: %llu bytes",
	    (unsigned long long)vm_size());
	lim = old;
	lim.rlim_cur = vm_size() + 512 * 1024;
	ok(setrlimit(RLIMIT_AS, &lim) == 0, "the address space limited to "
	    "what is in use and 512 KiB");
	r = store_put_u64(st, "seq", 9);
	setrlimit(RLIMIT_AS, &old);
	ok(r == -1, "the batch cannot begin: the map cannot grow");
	ok(store_put_u64(st, "seq", 10) == -1 && store_commit(st) == -1 &&
	    store_count(st) == 0, "the store stays failed, limit lifted or not");
	memset(&ps, 0, sizeof(ps));
	store_figures(st, &ps);
	ok(ps.map_used == 0, "and its figures do not read the map it lost");
	store_close(st);
	ok(store_open(&st, dir, 0, 0) == 0 && store_count(st) == 9,
	    "reopened: the 9 entries committed before are there");
	store_close(st);
	buf_free(&b);
}

static int
count_below(void *arg, const unsigned char *uuid, struct span dn,
    struct span attrs)
{
	(void)uuid;
	(void)dn;
	(void)attrs;
	(*(int *)arg)++;
	return 0;
}

int
main(void)
{
	struct store	*st;
	struct buf	 b1 = { 0 }, b2 = { 0 };
	struct span	 dn, attrs, v;
	unsigned char	 u[16];
	char		 dir[] = "/tmp/lf-store-XXXXXX", out[8192], path[256];
	int		 n, i;
	uint64_t	 unknown = 0, c = 0;

	if (mkdtemp(dir) == NULL)
		return 1;
	ok(store_open(&st, dir, 0, 1 << 20) == 0, "store opens with a 1 MiB map");

	/* meta */
	ok(store_get_meta(st, "cookie", &v) == 0, "no cookie in a new store");
	ok(store_put_meta(st, "cookie", S("rid=000,csn=x")) == 0 &&
	    store_get_meta(st, "cookie", &v) == 1 && v.len == 13,
	    "cookie stored");
	ok(store_put_u64(st, "seq", 0x0102030405060708ULL) == 0 &&
	    store_get_u64(st, "seq", 0) == 0x0102030405060708ULL, "u64 meta");
	ok(store_commit(st) == 0, "commit");

	/* entries and the DN index */
	uuid_of(u, 1);
	ok(store_put_entry(st, u, S("ou=people,dc=x"), A(&b1, "ou=people"),
	    NULL) == 0, "put entry");
	for (i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "uid=u%d,ou=people,dc=x", i);
		uuid_of(u, 10 + i);
		store_put_entry(st, u, S(path), A(&b1, "uid=u"), NULL);
	}
	uuid_of(u, 20);
	store_put_entry(st, u, S("uid=deep,ou=team,ou=people,dc=x"),
	    A(&b1, "uid=deep"), NULL);
	uuid_of(u, 21);
	store_put_entry(st, u, S("ou=people2,dc=x"), A(&b1, "ou=people2"),
	    NULL);
	uuid_of(u, 22);
	store_put_entry(st, u, S("uid=esc\\,aped,ou=people,dc=x"),
	    A(&b1, "uid=e"), NULL);
	n = 0;
	store_foreach_below(st, S("ou=people,dc=x"), count_below, &n);
	ok(n == 5, "5 entries below ou=people (not ou=people2): %d", n);
	n = 0;
	store_foreach_below(st, S("OU=People,DC=X"), count_below, &n);
	ok(n == 5, "the subtree scan ignores case: %d", n);
	n = 0;
	store_foreach_below(st, S("dc=x"), count_below, &n);
	ok(n == 7, "7 entries below dc=x: %d", n);
	ok(store_count(st) == 7, "count 7");
	uuid_of(u, 10);
	ok(store_get_entry(st, u, &dn, &attrs) == 1 &&
	    dn.len == strlen("uid=u0,ou=people,dc=x"), "get entry");
	ok(store_del_entry(st, u) == 1 && store_get_entry(st, u, &dn, &attrs) ==
	    0, "delete entry");
	n = 0;
	store_foreach_below(st, S("ou=people,dc=x"), count_below, &n);
	ok(n == 4, "the index forgets a deleted entry: %d", n);
	ok(store_has_below(st, S("ou=people,dc=x")) == 1 &&
	    store_has_below(st, S("ou=nobody,dc=x")) == 0, "has_below");

	/* present-phase sweep */
	for (i = 11; i <= 12; i++) {
		uuid_of(u, i);
		store_mark_seen(st, u, 7);
	}
	uuid_of(u, 900);		/* listed present, never added */
	store_mark_seen(st, u, 7);
	uuid_of(u, 901);		/* a stale mark from another search */
	store_mark_seen(st, u, 3);
	uuid_of(u, 1);
	store_mark_seen(st, u, 3);	/* an entry marked in another search */
	n = 0;
	ok(store_sweep(st, 7, SWEEP_UNSEEN, count_below, &n, &unknown) == 0 && n == 4,
	    "sweep: 4 entries unseen in generation 7: %d", n);
	ok(unknown == 1, "sweep: 1 UUID listed present but unknown: %llu",
	    (unsigned long long)unknown);
	n = 0;
	unknown = 0;
	store_sweep(st, 7, SWEEP_UNSEEN, count_below, &n, &unknown);
	ok(n == 4 && unknown == 0, "sweep: marks without an entry are gone "
	    "after a sweep");
	store_commit(st);

	/* deletes held back in a refresh: counted, then taken alone */
	uuid_of(u, 11);
	store_mark_seen(st, u, 9 | SEEN_DOOMED);
	uuid_of(u, 12);
	store_mark_seen(st, u, 9);
	uuid_of(u, 902);		/* held back, but not stored */
	store_mark_seen(st, u, 9 | SEEN_DOOMED);
	ok(store_sweep_count(st, 9, SWEEP_DOOMED, &c) == 0 && c == 1,
	    "count: 1 delete held back in generation 9: %llu",
	    (unsigned long long)c);
	ok(store_sweep_count(st, 9, SWEEP_UNSEEN, &c) == 0 &&
	    c == store_count(st) - 1, "count: %llu of %llu not seen in "
	    "generation 9", (unsigned long long)c,
	    (unsigned long long)store_count(st));
	uuid_of(u, 902);
	ok(store_get_csn(st, u, &dn) == 0, "count: changes nothing");
	n = 0;
	ok(store_sweep(st, 9, SWEEP_DOOMED, count_below, &n, &unknown) == 0 &&
	    n == 1, "sweep: the held-back delete alone: %d", n);
	ok(store_count_below(st, S("ou=people,dc=x")) == 4 &&
	    store_count_below(st, S("ou=nobody,dc=x")) == 0,
	    "count below: %llu", (unsigned long long)store_count_below(st,
	    S("ou=people,dc=x")));
	store_commit(st);

	/* a sweep over many chunks that deletes as it goes */
	for (i = 0; i < 10000; i++) {
		if (i % 1000 == 0)
			store_commit(st);	/* batches, as the reader's */
		uuid_of(u, 20000 + i);
		snprintf(path, sizeof(path), "uid=s%d,ou=many,dc=x", i);
		store_put_entry(st, u, S(path), A(&b1, "uid=s"), NULL);
		if (i % 3 == 0)
			store_mark_seen(st, u, 8);
		else if (i % 3 == 1)
			store_mark_seen(st, u, 5);
	}
	for (i = 0; i < 3000; i++) {	/* marks interleaved, no entries */
		uuid_of(u, 20000 + 10000 + i);
		store_mark_seen(st, u, 8);
	}
	sweep_store = st;
	n = 0;
	{
		uint64_t	 before = store_count(st);

		unknown = 0;
		ok(store_sweep(st, 8, SWEEP_UNSEEN, delete_it, &n, &unknown) == 0 &&
		    n == (int)before - 3334 && unknown == 3000 &&
		    store_count(st) == 3334,
		    "sweep across chunks: %d deleted, %llu unknown, %llu left",
		    n, (unsigned long long)unknown,
		    (unsigned long long)store_count(st));
	}
	store_commit(st);

	/* map growth: 6 MiB of entries through a 1 MiB map */
	buf_reset(&b2);
	buf_reserve(&b2, 64 * 1024);
	memset(b2.data, 'v', 64 * 1024);
	b2.len = 64 * 1024;
	for (i = 0; i < 100; i++) {
		struct attrs_writer	 w;

		if (i % 10 == 0) {
			if (store_commit(st) == -1)
				break;
		}
		buf_reset(&b1);
		attrs_writer_init(&w, &b1);
		attrs_writer_attr(&w, "photo", 5);
		attrs_writer_value(&w, b2.data, b2.len);
		attrs_writer_finish(&w);
		snprintf(path, sizeof(path), "cn=big%d,dc=x", i);
		uuid_of(u, 1000 + i);
		if (store_put_entry(st, u, S(path), (struct span){ b1.data,
		    b1.len }, NULL) == -1)
			break;
	}
	ok(store_txn_bytes(st) >= 10 * 64 * 1024 &&
	    store_txn_bytes(st) < 11 * 64 * 1024,
	    "the batch counts the bytes it wrote: %zu", store_txn_bytes(st));
	ok(i == 100 && store_commit(st) == 0 && store_txn_bytes(st) == 0,
	    "the map grows instead of failing with MDB_MAP_FULL");
	{
		struct proc_stats	 ps;

		memset(&ps, 0, sizeof(ps));
		store_figures(st, &ps);
		ok(ps.map_bytes >= 8 << 20 && ps.map_grows >= 3 &&
		    ps.map_used > 6 << 20 && ps.map_used < ps.map_bytes &&
		    ps.store_bytes > 6 << 20,
		    "the status figures: map %llu bytes, grown %llu times, "
		    "%llu used, %llu on disk",
		    (unsigned long long)ps.map_bytes,
		    (unsigned long long)ps.map_grows,
		    (unsigned long long)ps.map_used,
		    (unsigned long long)ps.store_bytes);
	}
	store_close(st);
	ok(store_open(&st, dir, 0, 1 << 20) == 0 && store_count(st) == 3434,
	    "reopened, all there: %llu", (unsigned long long)store_count(st));
	store_close(st);
	ok(store_open(&st, dir, 1, 0) == 0 && store_count(st) == 0,
	    "wipe empties the store");
	store_close(st);

	full_map(dir);
	map_cannot_grow(dir);

	buf_free(&b1);
	buf_free(&b2);
	snprintf(out, sizeof(out), "rm -rf %s", dir);
	system(out);
	return tap_done();
}
