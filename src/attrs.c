/*
 * The attribute blob: an entry's attributes flattened into one run of bytes,
 * written once by the reader and read, validated, by everyone else.
 */
#include <sysexits.h>

#include "ldapfeed.h"

static const unsigned char empty_blob[4];
const struct span attrs_empty = { empty_blob, sizeof(empty_blob) };

void
attrs_writer_init(struct attrs_writer *w, struct buf *b)
{
	w->b = b;
	w->nattrs = 0;
	w->nvals = 0;
	w->in_attr = 0;
	w->nattrs_off = b->len;
	buf_add_u32(b, 0);
}

static void
close_attr(struct attrs_writer *w)
{
	if (w->in_attr)
		buf_put_u32(w->b, w->nvals_off, w->nvals);
	w->in_attr = 0;
}

void
attrs_writer_attr(struct attrs_writer *w, const void *name, size_t len)
{
	if (len > UINT32_MAX || w->nattrs == UINT32_MAX)
		fatalx(EX_SOFTWARE, "attribute too large");
	close_attr(w);
	buf_add_u32(w->b, (uint32_t)len);
	buf_add(w->b, name, len);
	w->nvals_off = w->b->len;
	buf_add_u32(w->b, 0);
	w->nvals = 0;
	w->nattrs++;
	w->in_attr = 1;
}

void
attrs_writer_value(struct attrs_writer *w, const void *val, size_t len)
{
	if (!w->in_attr || len > UINT32_MAX || w->nvals == UINT32_MAX)
		fatalx(EX_SOFTWARE, "attribute value too large");
	buf_add_u32(w->b, (uint32_t)len);
	buf_add(w->b, val, len);
	w->nvals++;
}

void
attrs_writer_finish(struct attrs_writer *w)
{
	close_attr(w);
	buf_put_u32(w->b, w->nattrs_off, w->nattrs);
}

/* Take a u32-prefixed run of bytes off the front, or fail. */
static int
take(struct attrs_iter *it, struct span *out)
{
	uint32_t	 len;

	if (it->end - it->p < 4)
		return -1;
	len = get_u32(it->p);
	it->p += 4;
	if ((size_t)(it->end - it->p) < len)
		return -1;
	out->p = it->p;
	out->len = len;
	it->p += len;
	return 0;
}

int
attrs_iter_init(struct attrs_iter *it, struct span blob)
{
	it->p = it->end = blob.p;
	it->vals_left = 0;
	it->attrs_left = 0;
	if (blob.len < 4)
		return -1;
	it->end = blob.p + blob.len;
	it->attrs_left = get_u32(it->p);
	it->p += 4;
	return 0;
}

int
attrs_next_attr(struct attrs_iter *it, struct span *name, uint32_t *nvals)
{
	struct span	 skip;

	while (it->vals_left > 0)	/* values the caller did not read */
		if (attrs_next_value(it, &skip) != 1)
			return -1;
	if (it->attrs_left == 0)
		return it->p == it->end ? 0 : -1;
	if (take(it, name) == -1 || it->end - it->p < 4)
		return -1;
	it->vals_left = get_u32(it->p);
	it->p += 4;
	it->attrs_left--;
	if (nvals)
		*nvals = it->vals_left;
	return 1;
}

int
attrs_next_value(struct attrs_iter *it, struct span *val)
{
	if (it->vals_left == 0)
		return 0;
	if (take(it, val) == -1)
		return -1;
	it->vals_left--;
	return 1;
}

int
attrs_valid(struct span blob)
{
	struct attrs_iter	 it;
	struct span		 name;
	int			 r;

	if (attrs_iter_init(&it, blob) == -1)
		return 0;
	while ((r = attrs_next_attr(&it, &name, NULL)) == 1)
		;
	return r == 0;
}

int
names_iter(struct span *list, struct span *name)
{
	uint32_t	 len;

	/* The list's count is implied by its length: read until empty. */
	if (list->len == 0)
		return 0;
	if (list->len < 4)
		return -1;
	len = get_u32(list->p);
	if (list->len - 4 < len)
		return -1;
	name->p = list->p + 4;
	name->len = len;
	list->p += 4 + (size_t)len;
	list->len -= 4 + (size_t)len;
	return 1;
}
