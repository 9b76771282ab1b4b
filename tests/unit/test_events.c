/*
 * src/events.c: the events the reader derives from what the server sends,
 * against the store: attribute diffs (which attributes changed, in what
 * order), and the add / modify / rename / delete decisions with their seq
 * numbers: unchanged entries resent, subtree renames and moves out of the
 * search with their stored descendants, present-phase sweeps, and what a
 * delete does to the descendants in persist and in refresh.
 */
#include <ldap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ldapfeed.h"
#include "tap.h"
#include "fixtures.h"




/* The records the events wrote to worker 0's queue, as "type dn" lines. */
static void
drain(struct pipes *p, char *out, size_t outlen)
{
	struct event	 ev;
	size_t		 n, off = 0, o = 0;

	out[0] = '\0';
	for (;;) {
		struct buf	 view = { p->q[0].b.data + off, p->q[0].b.len - off,
				    0 };

		if ((n = pipe_record_complete(&view)) == 0)
			break;
		pipe_record_decode((struct span){ view.data, n }, &ev);
		o += snprintf(out + o, outlen - o, "%s%d:%llu:%.*s",
		    o ? " " : "", ev.type, (unsigned long long)ev.seq,
		    (int)ev.dn.len, ev.dn.p);
		if (ev.type == EV_RENAME)
			o += snprintf(out + o, outlen - o, "<%.*s",
			    (int)ev.old_dn.len, ev.old_dn.p);
		if (ev.type == EV_MODIFY) {
			struct span	 c = ev.changed, name;

			while (names_iter(&c, &name) == 1)
				o += snprintf(out + o, outlen - o, "[%.*s]",
				    (int)name.len, name.p);
		}
		off += n;
	}
	buf_reset(&p->q[0].b);
}

#define NOCSN	((struct span){ NULL, 0 })

/* Is the blob b what spec describes (A's syntax, "name=" for none)? */
static int
same(const struct buf *b, const char *spec)
{
	struct attrs_writer	 w;
	struct buf		 want = { 0 };
	char			*copy = strdup(spec), *attr, *save, *v, *vs;
	int			 r;

	attrs_writer_init(&w, &want);
	for (attr = strtok_r(copy, ";", &save); attr;
	    attr = strtok_r(NULL, ";", &save)) {
		char *eq = strchr(attr, '=');

		*eq = '\0';
		attrs_writer_attr(&w, attr, strlen(attr));
		for (v = strtok_r(eq + 1, "|", &vs); v; v = strtok_r(NULL, "|",
		    &vs))
			attrs_writer_value(&w, v, strlen(v));
	}
	attrs_writer_finish(&w);
	r = want.len == b->len && memcmp(want.data, b->data, b->len) == 0;
	buf_free(&want);
	free(copy);
	return r;
}

int
main(void)
{
	struct store	*st;
	struct config	 cfg;
	struct events	 ev;
	struct pipes	 p;
	struct buf	 b1 = { 0 }, b2 = { 0 }, changed = { 0 };
	struct buf	 added = { 0 }, removed = { 0 };
	struct span	 dn, attrs;
	unsigned char	 u[16];
	char		 dir[] = "/tmp/lf-events-XXXXXX", out[8192], path[256];
	int		 fds[2], i;
	uint64_t	 swept, unknown = 0;
	size_t		 c;

	if (mkdtemp(dir) == NULL)
		return 1;
	if (store_open(&st, dir, 1, 0) == -1)
		return 1;

	/* the values that appeared and went, per changed attribute */
	c = events_diff(A(&b1, "member=1|2|3|4|5;cn=x;sn=s"),
	    A(&b2, "member=1|3|4|5|6;cn=x;mail=m"), &changed, &added,
	    &removed);
	ok(c == 3 && same(&added, "mail=m;member=6;sn=") &&
	    same(&removed, "mail=;member=2;sn=s"),
	    "added and removed: one per changed name, in its order");
	c = events_diff(A(&b1, "member=a|b|c|d"), A(&b2, "member=d|x|b|a"),
	    &changed, &added, &removed);
	ok(c == 1 && same(&added, "member=x") && same(&removed, "member=c"),
	    "added and removed with the values reordered");
	c = events_diff(A(&b1, "member=a|b|c"), A(&b2, "member=c|a|b"),
	    &changed, &added, &removed);
	ok(c == 0 && same(&added, "") && same(&removed, ""),
	    "a reorder alone: nothing");

	/* attribute diffs */
	c = events_diff(A(&b1, "cn=a;sn=b"), A(&b2, "sn=b;cn=a"), &changed, NULL, NULL);
	ok(c == 0, "same attributes in another order: no change");
	c = events_diff(A(&b1, "member=1|2|3"), A(&b2, "member=3|1|2"),
	    &changed, NULL, NULL);
	ok(c == 0, "same values in another order: no change");
	c = events_diff(A(&b1, "postalAddress=1;postOfficeBox=2;Mail=m"),
	    A(&b2, "postalAddress=3;postOfficeBox=4;Mail=n"), &changed, NULL, NULL);
	{
		struct span	 all = { changed.data, changed.len }, n1, n2, n3;

		ok(c == 3 && names_iter(&all, &n1) == 1 &&
		    names_iter(&all, &n2) == 1 && names_iter(&all, &n3) == 1 &&
		    n1.len == 4 && memcmp(n1.p, "Mail", 4) == 0 &&
		    n2.len == 13 && memcmp(n2.p, "postOfficeBox", 13) == 0 &&
		    n3.len == 13 && memcmp(n3.p, "postalAddress", 13) == 0,
		    "changed is sorted by bytes, as Python's sorted()");
	}
	c = events_diff(A(&b1, "CN=a"), A(&b2, "cn=a"), &changed, NULL, NULL);
	ok(c == 0, "attribute names compare without case");
	c = events_diff(A(&b1, "cn=a;mail=x;sn=b"), A(&b2, "cn=a;sn=c;uid=u"),
	    &changed, NULL, NULL);
	{
		struct span	 l = { changed.data, changed.len }, name;
		char		 names[128] = "";

		while (names_iter(&l, &name) == 1)
			snprintf(names + strlen(names), sizeof(names) -
			    strlen(names), "%.*s,", (int)name.len, name.p);
		ok(c == 3 && strcmp(names, "mail,sn,uid,") == 0,
		    "changed: removed, modified, added, sorted: %s", names);
	}
	c = events_diff(A(&b1, "member=1|2"), A(&b2, "member=1|2|2"), &changed, NULL, NULL);
	ok(c == 1, "a duplicate value is a change");
	c = events_diff(A(&b1, "cn=a"), A(&b2, "cn=A"), &changed, NULL, NULL);
	ok(c == 1, "values compare exactly (bytes)");

	/* events: add, nothing, modify, rename, delete, sweep */
	memset(&cfg, 0, sizeof(cfg));
	cfg.base = "ou=people,dc=x";
	cfg.scope = LDAP_SCOPE_SUBTREE;
	if (pipe(fds) == -1)
		return 1;
	signals_init();
	pipes_init(&p, &fds[1], 1);
	events_init(&ev, &cfg, st, &p);
	uuid_of(u, 1);
	events_entry(&ev, u, S("ou=team,ou=people,dc=x"), A(&b1, "ou=team"), NOCSN, 1);
	uuid_of(u, 2);
	events_entry(&ev, u, S("uid=a,ou=team,ou=people,dc=x"),
	    A(&b1, "uid=a;cn=A"), NOCSN, 1);
	uuid_of(u, 3);
	events_entry(&ev, u, S("uid=b,ou=team,ou=people,dc=x"),
	    A(&b1, "uid=b"), NOCSN, 1);
	drain(&p, out, sizeof(out));
	ok(strcmp(out, "2:1:ou=team,ou=people,dc=x 2:2:uid=a,ou=team,ou=people,"
	    "dc=x 2:3:uid=b,ou=team,ou=people,dc=x") == 0, "three adds: %s", out);
	uuid_of(u, 2);
	ok(events_entry(&ev, u, S("uid=a,ou=team,ou=people,dc=x"),
	    A(&b1, "cn=A;uid=a"), NOCSN, 1) == 0, "unchanged entry resent: 0");
	drain(&p, out, sizeof(out));
	ok(out[0] == '\0', "unchanged entry resent: nothing");
	ok(events_entry(&ev, u, S("uid=a,ou=team,ou=people,dc=x"),
	    A(&b1, "cn=Alice;uid=a"), NOCSN, 1) == ENTRY_MODIFIED, "a modify");
	drain(&p, out, sizeof(out));
	ok(strcmp(out, "3:4:uid=a,ou=team,ou=people,dc=x[cn]") == 0,
	    "modify with changed=[cn]: %s", out);
	uuid_of(u, 1);
	ok(events_entry(&ev, u, S("ou=squad,ou=people,dc=x"),
	    A(&b1, "ou=squad"), NOCSN, 1) == (ENTRY_RENAMED | ENTRY_MODIFIED),
	    "a rename with a modify");
	drain(&p, out, sizeof(out));
	ok(strcmp(out, "4:5:ou=squad,ou=people,dc=x<ou=team,ou=people,dc=x "
	    "3:6:ou=squad,ou=people,dc=x[ou]") == 0,
	    "a rename is the entry's alone, then its modify: %s", out);
	uuid_of(u, 3);
	ok(store_get_entry(st, u, &dn, &attrs) == 1 && dn.len ==
	    strlen("uid=b,ou=team,ou=people,dc=x"), "nothing is inferred for "
	    "the descendants: the server is asked (subtree.c)");
	uuid_of(u, 1);
	buf_reset(&b2);
	ok(events_delete(&ev, u, &b2) == 1 && b2.len == 0, "a delete with "
	    "nothing stored below its DN: 1");
	drain(&p, out, sizeof(out));
	ok(strcmp(out, "5:7:ou=squad,ou=people,dc=x") == 0 &&
	    store_count(st) == 2, "only the entry deleted: %s", out);
	uuid_of(u, 40);
	events_entry(&ev, u, S("ou=team,ou=people,dc=x"), A(&b1, "ou=team"), NOCSN, 1);
	ok(events_delete(&ev, u, &b2) == 2 && b2.len ==
	    strlen("ou=team,ou=people,dc=x") && memcmp(b2.data,
	    "ou=team,ou=people,dc=x", b2.len) == 0, "a delete with stored "
	    "descendants: their root's DN back, for the server to answer");
	drain(&p, out, sizeof(out));
	uuid_of(u, 2);
	events_delete(&ev, u, &b2);
	uuid_of(u, 3);
	events_delete(&ev, u, &b2);
	uuid_of(u, 4);
	events_entry(&ev, u, S("uid=c,ou=people,dc=x"), A(&b1, "uid=c"), NOCSN, 1);
	ok(events_delete(&ev, u, &b2) == 1, "a delete without descendants: 1");
	uuid_of(u, 5);
	ok(events_delete(&ev, u, &b2) == 0,
	    "delete of an unknown UUID: nothing");
	drain(&p, out, sizeof(out));
	ok(strcmp(out, "5:10:uid=a,ou=team,ou=people,dc=x 5:11:uid=b,ou=team,"
	    "ou=people,dc=x 2:12:uid=c,ou=people,dc=x 5:13:uid=c,ou=people,dc=x")
	    == 0, "deletes name the stored DN: %s", out);
	for (i = 0; i < 3; i++) {
		uuid_of(u, 50 + i);
		snprintf(path, sizeof(path), "uid=s%d,ou=people,dc=x", i);
		events_entry(&ev, u, S(path), A(&b1, "uid=s"), NOCSN, 1);
		if (i != 1)
			store_mark_seen(st, u, 42);
	}
	drain(&p, out, sizeof(out));
	events_sweep(&ev, 42, SWEEP_UNSEEN, &swept, &unknown, 0);
	drain(&p, out, sizeof(out));
	ok(swept == 1 && strcmp(out, "5:17:uid=s1,ou=people,dc=x") == 0,
	    "sweep deletes only the unseen: %s", out);

	/* versions: an older entryCSN changes nothing */
	uuid_of(u, 70);
	events_entry(&ev, u, S("uid=v,ou=a,dc=x"), A(&b1, "uid=v"),
	    S("20261206000002.000000Z#000000#000#000000"), 1);
	drain(&p, out, sizeof(out));
	ok(events_entry(&ev, u, S("uid=v,ou=old,dc=x"), A(&b1, "uid=v"),
	    S("20261206000001.000000Z#000000#000#000000"), 1) == 0 &&
	    events_entry(&ev, u, S("uid=v,ou=old,dc=x"), A(&b1, "uid=v"),
	    S("20261206000002.000000Z#000000#000#000000"), 1) == 0,
	    "an older version, or the same again, changes nothing");
	ok(events_entry(&ev, u, S("uid=v,ou=b,dc=x"), A(&b1, "uid=v"),
	    S("20261206000002.000000Z#000000#000#000000"), 0) ==
	    ENTRY_RENAMED, "the same version from the server's answer: its DN");
	ok(events_delete(&ev, u, &b2) == 1, "a delete deletes");
	drain(&p, out, sizeof(out));

	/* a swept entry with stored descendants: a reconcile task */
	uuid_of(u, 62);
	events_entry(&ev, u, S("ou=t4,ou=people,dc=x"), A(&b1, "ou=t4"), NOCSN, 1);
	uuid_of(u, 63);
	events_entry(&ev, u, S("uid=m,ou=t4,ou=people,dc=x"), A(&b1, "uid=m"), NOCSN, 1);
	store_mark_seen(st, u, 43);
	for (i = 0; i < 2; i++) {
		uuid_of(u, 50 + 2 * i);
		store_mark_seen(st, u, 43);
	}
	drain(&p, out, sizeof(out));
	events_sweep(&ev, 43, SWEEP_UNSEEN, &swept, &unknown, 1);
	drain(&p, out, sizeof(out));
	{
		struct buf	 tdn = { 0 };
		unsigned char	 tu[16];
		uint64_t	 id;
		int		 kind;

		uuid_of(u, 62);
		ok(swept == 1 && strstr(out, ":ou=t4,ou=people,dc=x") &&
		    store_task_first(st, &id, &kind, tu, &tdn) == 1 &&
		    kind == TASK_RECONCILE && memcmp(tu, u, 16) == 0 &&
		    tdn.len == strlen("ou=t4,ou=people,dc=x"),
		    "a swept entry with descendants leaves a reconcile task: %s",
		    out);
		ok(store_task_done(st, id) == 0 &&
		    store_task_first(st, &id, &kind, tu, &tdn) == 0,
		    "the task done, none left");
		buf_free(&tdn);
	}

	store_commit(st);
	store_close(st);
	events_free(&ev);
	pipes_free(&p);
	buf_free(&b1);
	buf_free(&b2);
	buf_free(&changed);
	buf_free(&added);
	buf_free(&removed);
	snprintf(out, sizeof(out), "rm -rf %s", dir);
	system(out);
	return tap_done();
}
