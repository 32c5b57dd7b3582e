/*-------------------------------------------------------------------------
 * rowbuf.c
 *	  Encoding and decoding of request rows (see rowbuf.h).
 *
 * Hand-written because it is our own wire format between processes; it is
 * a length-prefixed record list, nothing a library would give us.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mapper/rowbuf.h"

void
rowbuf_append(StringInfo buf, RowKind kind, int32 event_index,
			  const void *fixed, Size fixed_len,
			  int nstrings, const char *const *strs, const uint32 *lens)
{
	RowHeader	hdr;
	Size		total = MAXALIGN(sizeof(RowHeader)) + MAXALIGN(fixed_len);
	int			start;

	Assert(nstrings <= ROW_MAX_STRINGS);
	for (int i = 0; i < nstrings; i++)
		total += sizeof(uint32) + lens[i] + 1;
	total = MAXALIGN(total);

	hdr.len = (uint32) total;
	hdr.kind = (uint8) kind;
	hdr.nstrings = (uint8) nstrings;
	hdr.fixed_len = (uint16) fixed_len;
	hdr.event_index = event_index;

	enlargeStringInfo(buf, (int) total);
	start = buf->len;
	memset(buf->data + start, 0, total);
	memcpy(buf->data + start, &hdr, sizeof(hdr));
	memcpy(buf->data + start + MAXALIGN(sizeof(RowHeader)), fixed, fixed_len);
	{
		char	   *p = buf->data + start + MAXALIGN(sizeof(RowHeader)) + MAXALIGN(fixed_len);

		for (int i = 0; i < nstrings; i++)
		{
			memcpy(p, &lens[i], sizeof(uint32));
			p += sizeof(uint32);
			if (lens[i] > 0)
				memcpy(p, strs[i], lens[i]);
			p[lens[i]] = '\0';
			p += lens[i] + 1;
		}
	}
	buf->len += (int) total;
	buf->data[buf->len] = '\0';
}

void
rowbuf_reader_init(RowReader *reader, const char *data, Size len)
{
	reader->pos = data;
	reader->end = data + len;
}

/*
 * Returns false at the end of the rows.  They are produced by our own
 * mapper, so a malformed record is a bug: we stop rather than read past it.
 */
bool
rowbuf_next(RowReader *reader, RowView *row)
{
	RowHeader	hdr;
	const char *p;

	if (reader->end - reader->pos < (long) MAXALIGN(sizeof(RowHeader)))
		return false;
	memcpy(&hdr, reader->pos, sizeof(hdr));
	if (hdr.len == 0 || hdr.len > (Size) (reader->end - reader->pos) ||
		hdr.nstrings > ROW_MAX_STRINGS)
		return false;

	row->kind = (RowKind) hdr.kind;
	row->event_index = hdr.event_index;
	row->fixed = reader->pos + MAXALIGN(sizeof(RowHeader));
	row->nstrings = hdr.nstrings;
	p = reader->pos + MAXALIGN(sizeof(RowHeader)) + MAXALIGN(hdr.fixed_len);
	for (int i = 0; i < hdr.nstrings; i++)
	{
		memcpy(&row->len[i], p, sizeof(uint32));
		p += sizeof(uint32);
		row->str[i] = p;
		p += row->len[i] + 1;
	}
	reader->pos += hdr.len;
	return true;
}

/*
 * Append to out the records of data whose kind is (or, with !matching, is
 * not) kind, unchanged; returns how many.  The flusher splits a request's
 * rows this way: its intents apart from its telemetry.
 */
int
rowbuf_copy_kind(StringInfo out, const char *data, Size len, RowKind kind,
				 bool matching)
{
	RowReader	reader;
	RowView		row;
	int			n = 0;

	rowbuf_reader_init(&reader, data, len);
	for (;;)
	{
		const char *start = reader.pos;

		if (!rowbuf_next(&reader, &row))
			break;
		if ((row.kind == kind) == matching)
		{
			appendBinaryStringInfo(out, start, (int) (reader.pos - start));
			n++;
		}
	}
	return n;
}
