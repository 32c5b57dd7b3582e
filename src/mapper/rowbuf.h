/*-------------------------------------------------------------------------
 * rowbuf.h
 *	  Request rows: the flat byte format in which the validated rows of
 *	  one request travel from the event mapper through the shared-memory
 *	  buffer to the writer.
 *
 * A *row* is one record of this format and becomes one table row (or one
 * vendor-profile upsert).  Records are self-describing and MAXALIGNed so a
 * request's rows can be copied into shared memory, concatenated with the
 * rows of other requests (a flush's *batch*) and read back without any
 * pointer fix-up.  This file compiles in the backend and in frontend
 * programs (the fuzz harness).
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_ROWBUF_H
#define MACHPAY_ROWBUF_H

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"

typedef enum RowKind
{
	ROW_METRIC = 1,				/* machpay.metrics */
	ROW_LOG,					/* machpay.debug_logs */
	ROW_INTENT,					/* machpay.payment_intents */
	ROW_CONFIG,					/* machpay.vendor_profiles upsert */
	ROW_REJECT,					/* machpay.ingest_rejects (dead letter) */
} RowKind;

#define ROW_KIND_MAX ROW_REJECT

/* The `source` of an event; indexes MapResult.events_by_source. */
typedef enum EventSource
{
	SOURCE_GATEWAY = 0,
	SOURCE_SDK,
	SOURCE_PAYMENT_INTENT,
	SOURCE_LOG,
} EventSource;

#define EVENT_SOURCE_COUNT 4
#define ROW_MAX_STRINGS 8

/* Fixed parts, one per kind; the strings follow in the order listed. */

/* strings: entity_id, metric_name, labels (JSON object text, "{}" if none) */
typedef struct MetricRow
{
	TimestampTz time;
	double		value;
	int32		source;			/* EventSource: gateway or sdk */
} MetricRow;

/* strings: entity_id, level, message, fields (JSON object text, or empty = NULL) */
typedef struct LogRow
{
	TimestampTz time;
} LogRow;

/*
 * strings: gateway_id, agent_id, token, signature, nonce, amount (nonce and
 * amount as canonical decimal text, 0..2^64-1).
 */
typedef struct IntentRow
{
	TimestampTz received_at;	/* becomes created_at */
} IntentRow;

/* Which optional config fields the report carried. */
#define CONFIG_HAS_PRICE		0x01
#define CONFIG_HAS_MINT			0x02
#define CONFIG_HAS_WITHDRAWAL	0x04
#define CONFIG_HAS_VERSION		0x08

/*
 * strings: gateway_id, price_per_unit (decimal text), accepted_mint,
 * withdrawal_address, version (absent ones are empty; see present).
 */
typedef struct ConfigRow
{
	TimestampTz period_end;
	uint32		present;
} ConfigRow;

/* strings: code, message, remote_addr, excerpt */
typedef struct RejectRow
{
	TimestampTz time;
} RejectRow;

typedef struct RowHeader
{
	uint32		len;			/* whole record, header included, MAXALIGNed */
	uint8		kind;			/* RowKind */
	uint8		nstrings;
	uint16		fixed_len;		/* bytes of the fixed part after the header */
	int32		event_index;	/* the event's index in its request */
} RowHeader;

/* A record as read back: pointers into the rows read, valid while they live. */
typedef struct RowView
{
	RowKind		kind;
	int32		event_index;
	const void *fixed;
	int			nstrings;
	const char *str[ROW_MAX_STRINGS];	/* NUL-terminated */
	uint32		len[ROW_MAX_STRINGS];
} RowView;

typedef struct RowReader
{
	const char *pos;
	const char *end;
} RowReader;

extern void rowbuf_append(StringInfo buf, RowKind kind, int32 event_index,
						  const void *fixed, Size fixed_len,
						  int nstrings, const char *const *strs,
						  const uint32 *lens);
extern void rowbuf_reader_init(RowReader *reader, const char *data, Size len);
extern bool rowbuf_next(RowReader *reader, RowView *row);
extern int	rowbuf_copy_kind(StringInfo out, const char *data, Size len,
							 RowKind kind, bool matching);

#endif							/* MACHPAY_ROWBUF_H */
