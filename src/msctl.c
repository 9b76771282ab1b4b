/*
 * Active Directory's LDAP extensions as the DirSync reader uses them
 * (MS-ADTS 3.1.1.3.4.1.3: the DirSync control's request and response
 * values) and objectGUID's two byte orders (doc/providers.md, "Active
 * Directory and Samba AD").  Every byte from the server is hostile: a
 * decoder returns -1 and a one-line reason.
 */
#include <lber.h>
#include <string.h>

#include "ldapfeed.h"

#define COOKIE_MAX	(1 << 20)	/* a DirSync cookie is a few hundred */

/*
 * The request: SEQUENCE { Flags INTEGER, MaxBytes INTEGER, Cookie OCTET
 * STRING }, the cookie empty for none.  MaxBytes 0 lets the server choose.
 */
int
dirsync_request_encode(struct buf *out, long flags, struct span cookie)
{
	BerElement	*ber;
	struct berval	*bv = NULL;
	int		 rc = -1;

	buf_reset(out);
	if ((ber = ber_alloc_t(LBER_USE_DER)) == NULL)
		return -1;
	if (ber_printf(ber, "{iio}", (ber_int_t)flags, (ber_int_t)0,
	    cookie.len ? (const char *)cookie.p : "", (ber_len_t)cookie.len) !=
	    -1 && ber_flatten(ber, &bv) == 0) {
		buf_add(out, bv->bv_val, bv->bv_len);
		rc = 0;
	}
	ber_bvfree(bv);
	ber_free(ber, 1);
	return rc;
}

/*
 * The response: SEQUENCE { MoreResults INTEGER, unused INTEGER,
 * CookieServer OCTET STRING }: *more non-zero when the server holds more
 * changes than it sent (search again at once with the new cookie).
 */
int
dirsync_response_decode(struct span value, int *more, struct buf *cookie,
    const char **why)
{
	BerElement	*ber;
	struct berval	 in, bv;
	ber_len_t	 len, rem;
	ber_int_t	 flag, unused;
	int		 rc = -1;

	*why = "a malformed DirSync response control";
	in.bv_val = (char *)(uintptr_t)value.p;	/* lber only reads it */
	in.bv_len = value.len;
	if (value.len == 0 || (ber = ber_init(&in)) == NULL)
		return -1;
	if (ber_scanf(ber, "{ii", &flag, &unused) == LBER_ERROR ||
	    ber_peek_tag(ber, &len) != LBER_OCTETSTRING)
		goto out;
	if (len > COOKIE_MAX) {
		*why = "a DirSync cookie over 1 MiB";
		goto out;
	}
	if (ber_scanf(ber, "m}", &bv) == LBER_ERROR)
		goto out;
	/* nothing may follow the sequence */
	if (ber_get_option(ber, LBER_OPT_REMAINING_BYTES, &rem) !=
	    LBER_OPT_SUCCESS || rem != 0)
		goto out;
	*more = flag != 0;
	buf_reset(cookie);
	buf_add(cookie, bv.bv_val, bv.bv_len);
	rc = 0;
out:
	ber_free(ber, 1);	/* ber_init made a copy of the value */
	return rc;
}

/*
 * objectGUID travels as 16 bytes whose first three fields are
 * little-endian; AD's tools write it with those fields byte-swapped
 * ("{4f3e2d1c-...}").  ldapfeed files and names an entry by the bytes of
 * that text form, so that uuid_format() prints what AD shows.  The swap
 * is its own inverse.
 */
void
guid_swap(const unsigned char *in, unsigned char *out)
{
	static const unsigned char order[16] = {
		3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15
	};
	unsigned char	 tmp[16];
	int		 i;

	for (i = 0; i < 16; i++)
		tmp[i] = in[order[i]];
	memcpy(out, tmp, 16);
}

/* An objectGUID value into ldapfeed's UUID bytes; -1 unless 16 bytes. */
int
guid_read(struct span v, unsigned char *uuid)
{
	if (v.len != 16)
		return -1;
	guid_swap(v.p, uuid);
	return 0;
}

/* "(objectGUID=\xx...)" for an entry named by its UUID bytes. */
void
guid_filter(struct buf *out, const unsigned char *uuid)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char	 raw[16];
	int		 i;

	guid_swap(uuid, raw);
	buf_add_str(out, "(objectGUID=");
	for (i = 0; i < 16; i++) {
		buf_add_u8(out, '\\');
		buf_add_u8(out, hex[raw[i] >> 4]);
		buf_add_u8(out, hex[raw[i] & 15]);
	}
	buf_add_u8(out, ')');
}
