/*
 * An entry's attributes read in place from the LDAP message: the contents
 * of one PartialAttribute (RFC 4511: SEQUENCE { type OCTET STRING, vals SET
 * OF OCTET STRING }), with spans into the message and no allocation.  Every
 * length is checked against what is there.
 */
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
