/*
 * src/msctl.c: the DirSync control's request and response values
 * (MS-ADTS 3.1.1.3.4.1.3) against hand-built bytes and hostile ones, and
 * objectGUID's byte order (doc/providers.md, "Active Directory and Samba
 * AD").
 */
#include <stdlib.h>
#include <string.h>

#include "ldapfeed.h"
#include "tap.h"

static struct span
sp(const void *p, size_t len)
{
	return (struct span){ p, len };
}

static int
is(const struct buf *b, const void *want, size_t len)
{
	return b->len == len && memcmp(b->data, want, len) == 0;
}

int
main(void)
{
	/* objectGUID 5f861b5e-bf43-114d-a895-a911263309fc on the wire */
	static const unsigned char guid[16] = {
		0x5f, 0x86, 0x1b, 0x5e, 0xbf, 0x43, 0x11, 0x4d,
		0xa8, 0x95, 0xa9, 0x11, 0x26, 0x33, 0x09, 0xfc
	};
	static const unsigned char req0[] = {
		0x30, 0x08, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x04, 0x00
	};
	static const unsigned char req1[] = {
		0x30, 0x0d, 0x02, 0x03, 0x00, 0x80, 0x01, 0x02, 0x01, 0x00,
		0x04, 0x03, 'a', 'b', 'c'
	};
	static const unsigned char resp[] = {
		0x30, 0x0b, 0x02, 0x01, 0x01, 0x02, 0x01, 0x00, 0x04, 0x03,
		'x', 'y', 'z'
	};
	static const unsigned char resp_done[] = {
		0x30, 0x0b, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x04, 0x03,
		'x', 'y', 'z'
	};
	static const unsigned char trailing[] = {
		0x30, 0x0b, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x04, 0x03,
		'x', 'y', 'z', 0x00
	};
	static const unsigned char no_cookie[] = {
		0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00
	};
	static const unsigned char int_cookie[] = {
		0x30, 0x09, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x02, 0x01, 0x05
	};
	static const unsigned char cut[] = {
		0x30, 0x0b, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x04, 0x03, 'x'
	};
	static const unsigned char huge[] = {
		0x30, 0x0c, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x04, 0x84,
		0x7f, 0xff, 0xff, 0xff
	};
	unsigned char	 uuid[16], back[16];
	char		 text[37];
	struct buf	 b = { 0 }, cookie = { 0 };
	const char	*why;
	int		 more = -1;

	/* the request */
	ok(dirsync_request_encode(&b, 0, sp(NULL, 0)) == 0 &&
	    is(&b, req0, sizeof(req0)), "request: flags 0, no cookie");
	ok(dirsync_request_encode(&b, 0x800, sp("abc", 3)) == 0 &&
	    is(&b, req1, sizeof(req1)) == 0, "request: the flags are in it");
	ok(dirsync_request_encode(&b, 0x8001, sp("abc", 3)) == 0 &&
	    is(&b, req1, sizeof(req1)), "request: flags 0x8001 and a cookie");

	/* the response */
	ok(dirsync_response_decode(sp(resp, sizeof(resp)), &more, &cookie,
	    &why) == 0 && more == 1 && is(&cookie, "xyz", 3),
	    "response: more results and the cookie");
	ok(dirsync_response_decode(sp(resp_done, sizeof(resp_done)), &more,
	    &cookie, &why) == 0 && more == 0 && is(&cookie, "xyz", 3),
	    "response: no more results");
	ok(dirsync_response_decode(sp(trailing, sizeof(trailing)), &more,
	    &cookie, &why) == -1, "response: trailing bytes refused");
	ok(dirsync_response_decode(sp(no_cookie, sizeof(no_cookie)), &more,
	    &cookie, &why) == -1, "response: no cookie refused");
	ok(dirsync_response_decode(sp(int_cookie, sizeof(int_cookie)), &more,
	    &cookie, &why) == -1, "response: a cookie that is no OCTET STRING "
	    "refused");
	ok(dirsync_response_decode(sp(cut, sizeof(cut)), &more, &cookie,
	    &why) == -1, "response: cut short refused");
	ok(dirsync_response_decode(sp(huge, sizeof(huge)), &more, &cookie,
	    &why) == -1, "response: a 2 GiB cookie refused");
	ok(dirsync_response_decode(sp("", 0), &more, &cookie, &why) == -1,
	    "response: empty value refused");

	/* objectGUID: the first three fields byte-swapped, as AD prints it */
	ok(guid_read(sp(guid, 16), uuid) == 0, "guid_read: 16 bytes");
	uuid_format(uuid, text);
	ok(strcmp(text, "5e1b865f-43bf-4d11-a895-a911263309fc") == 0,
	    "uuid of objectGUID 5f861b5e...: %s", text);
	guid_swap(uuid, back);
	ok(memcmp(back, guid, 16) == 0, "guid_swap is its own inverse");
	ok(guid_read(sp(guid, 15), uuid) == -1, "guid_read: 15 bytes refused");
	buf_reset(&b);
	guid_read(sp(guid, 16), uuid);
	guid_filter(&b, uuid);
	ok(is(&b, "(objectGUID=\\5f\\86\\1b\\5e\\bf\\43\\11\\4d\\a8\\95\\a9"
	    "\\11\\26\\33\\09\\fc)", 61), "guid_filter: the bytes on the wire, "
	    "escaped");
	buf_free(&b);
	buf_free(&cookie);
	return tap_done();
}
