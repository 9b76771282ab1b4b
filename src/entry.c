/*
 * An entry's attributes read in place from the LDAP message: the contents
 * of each PartialAttribute (RFC 4511: SEQUENCE { type OCTET STRING, vals SET
 * OF OCTET STRING }), with spans into the message; every length is checked
 * against what is there.  The entryUUID and hasSubordinates that the reader
 * asks for itself are taken out on the way.
 */
#include <lber.h>
#include <strings.h>

#include "ldapfeed.h"

#define TAG_OCTETS	0x04
#define TAG_SET		0x31

/* One tag-length-value off the front of *in, with the tag expected. */
static int
tlv(struct span *in, unsigned char tag, struct span *out)
{
	const unsigned char	*p = in->p;
	size_t			 left = in->len, len, n;

	if (left < 2 || p[0] != tag)
		return -1;
	len = p[1];
	p += 2;
	left -= 2;
	if (len & 0x80) {
		n = len & 0x7f;
		if (n == 0 || n > 4 || n > left)
			return -1;	/* indefinite, too long, or cut */
		for (len = 0; n > 0; n--, left--)
			len = len << 8 | *p++;
	}
	if (len > left)
		return -1;
	out->p = p;
	out->len = len;
	in->p = p + len;
	in->len = left - len;
	return 0;
}

int
entry_attr_parse(struct span seq, struct span *type, struct span *vals)
{
	if (tlv(&seq, TAG_OCTETS, type) == -1 || tlv(&seq, TAG_SET, vals) == -1 ||
	    seq.len != 0)
		return -1;
	return 0;
}

/* 1 and the next value, 0 at the end, -1 for a malformed set. */
int
entry_next_value(struct span *vals, struct span *v)
{
	if (vals->len == 0)
		return 0;
	return tlv(vals, TAG_OCTETS, v) == -1 ? -1 : 1;
}

static int
span_is(struct span a, const char *name)
{
	return a.len == strlen(name) &&
	    strncasecmp((const char *)a.p, name, a.len) == 0;
}

/* "3906f8c4-7c8b-1041-92e1-057ae57b83af" into its 16 bytes. */
int
uuid_parse_text(struct span s, unsigned char *out)
{
	size_t	 i, n = 0;
	int	 hi = -1, d;

	for (i = 0; i < s.len; i++) {
		if (s.p[i] == '-')
			continue;
		if ((d = hex_digit(s.p[i])) == -1)
			return -1;
		if (hi == -1)
			hi = d;
		else {
			if (n == 16)
				return -1;
			out[n++] = (unsigned char)(hi << 4 | d);
			hi = -1;
		}
	}
	return n == 16 && hi == -1 ? 0 : -1;
}

/*
 * The attribute list of a SearchResultEntry, from a BerElement that libldap
 * bounded to it (ldap_get_dn_ber), into e->attrs.  hasSubordinates (TRUE,
 * and whether it came at all) and a well-formed UUID in the attribute
 * uuid_attr (entryUUID, or 389-ds's nsUniqueId) are noted in e; with
 * DECODE_STRIP_SUBS or DECODE_STRIP_UUID the attribute is left out of
 * e->attrs, and with DECODE_STRIP_ACI so is the aci that 389-ds's Content
 * Synchronization adds to every search
 * (doc/providers.md); the entryCSN is noted too, and left out with
 * DECODE_STRIP_CSN.  With DECODE_GUID the UUID is AD's binary objectGUID
 * (msctl.c).  -1 for a malformed list.
 */
int
entry_decode(struct berelement *ber, int flags, const char *uuid_attr,
    struct entry *e)
{
	struct attrs_writer	 w;
	struct berval		 seq;
	struct span		 type, vals, v;
	ber_len_t		 rem;
	int			 rv;

	buf_reset(&e->attrs);
	attrs_writer_init(&w, &e->attrs);
	e->has_subs = 0;
	e->subs_known = 0;
	e->has_uuid = 0;
	e->csn = (struct span){ NULL, 0 };
	while (ber_get_option(ber, LBER_OPT_REMAINING_BYTES, &rem) ==
	    LBER_OPT_SUCCESS && rem > 0) {
		if (ber_skip_element(ber, &seq) != LBER_SEQUENCE ||
		    entry_attr_parse((struct span){ (unsigned char *)
		    seq.bv_val, seq.bv_len }, &type, &vals) == -1)
			return -1;
		if (span_is(type, "hasSubordinates")) {
			struct span	 peek = vals;

			e->has_subs = entry_next_value(&peek, &v) == 1 &&
			    span_is(v, "TRUE");
			e->subs_known = 1;
			if (flags & DECODE_STRIP_SUBS)
				continue;
		}
		if (span_is(type, uuid_attr)) {
			struct span	 peek = vals;

			e->has_uuid = entry_next_value(&peek, &v) == 1 &&
			    ((flags & DECODE_GUID) ? guid_read(v, e->uuid) :
			    uuid_parse_text(v, e->uuid)) == 0;
			if (flags & DECODE_STRIP_UUID)
				continue;
		}
		if (span_is(type, "entryCSN")) {
			struct span	 peek = vals;

			if (entry_next_value(&peek, &v) == 1)
				e->csn = v;
			if (flags & DECODE_STRIP_CSN)
				continue;
		}
		if ((flags & DECODE_STRIP_ACI) && span_is(type, "aci"))
			continue;
		attrs_writer_attr(&w, type.p, type.len);
		while ((rv = entry_next_value(&vals, &v)) == 1)
			attrs_writer_value(&w, v.p, v.len);
		if (rv == -1)
			return -1;
	}
	attrs_writer_finish(&w);
	return 0;
}

/*
 * Whether the server must be asked what lies below the entry: it said it
 * has children, or it did not say.  389-ds sends the entries of a refresh
 * from a cookie without the operational attributes asked for,
 * hasSubordinates included (doc/providers.md): a subtree moved into the
 * search while ldapfeed was stopped comes as its root alone.
 */
int
entry_may_have_children(const struct entry *e)
{
	return e->has_subs || !e->subs_known;
}
