/*
 * The names the NATS output gives: the subject of each event, whether a
 * stream's subjects take them all, and each message's id for JetStream's
 * duplicate window (doc/outputs.md, "Subjects" and "Message ids").
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ldapfeed.h"

/*
 * Does pattern match subject?  Tokens are separated by dots; "*" matches
 * one token, ">" as the last token one or more.
 */
int
nats_subject_match(const char *pattern, const char *subject)
{
	const char	*p = pattern, *s = subject;
	size_t		 pl, sl;

	for (;;) {
		pl = strcspn(p, ".");
		sl = strcspn(s, ".");
		if (pl == 1 && p[0] == '>' && p[1] == '\0')
			return sl > 0;
		if (sl == 0)
			return 0;
		if (!(pl == 1 && p[0] == '*') &&
		    (pl != sl || memcmp(p, s, pl) != 0))
			return 0;
		p += pl;
		s += sl;
		if (*p == '\0' || *s == '\0')
			return *p == '\0' && *s == '\0';
		p++;
		s++;
	}
}

/* Do the patterns take PREFIX.<type> for every event type? */
int
nats_subjects_cover(const char *const *patterns, int n, const char *prefix)
{
	char	 subject[512];
	int	 t, i, found;

	for (t = EV_HELLO; t <= EV_REFRESH_DONE; t++) {
		snprintf(subject, sizeof(subject), "%s.%s", prefix,
		    event_type_name((enum event_type)t));
		for (found = 0, i = 0; i < n && !found; i++)
			found = patterns[i] != NULL &&
			    nats_subject_match(patterns[i], subject);
		if (!found)
			return 0;
	}
	return 1;
}

/*
 * EPOCH-SEQ names an entry event for ever (doc/store.md, "The epoch").
 * hello and refresh_done go out from every worker, and a hello has no seq:
 * theirs carry the worker, and a hello's the run's number, so that no two
 * are ever taken for duplicates.
 */
void
nats_msg_id(char *out, size_t len, const unsigned char *epoch,
    const struct event *ev, unsigned worker)
{
	char	 hex[33];

	epoch_format(epoch, hex);
	if (ev->type == EV_HELLO)
		snprintf(out, len, "%s-r%" PRIu64 "-w%u", hex, ev->seq, worker);
	else if (ev->type == EV_REFRESH_DONE)
		snprintf(out, len, "%s-%" PRIu64 "-w%u", hex, ev->seq, worker);
	else
		snprintf(out, len, "%s-%" PRIu64, hex, ev->seq);
}
