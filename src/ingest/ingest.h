/*-------------------------------------------------------------------------
 * ingest.h
 *	  The one ingest path: what every front end does around the mapper.
 *
 * A *front end* hands in a payload: the HTTP server (http/http_ingest.c),
 * machpay.ingest() (flusher/ingest_sql.c), machpay.buffer_ingest() and the
 * previews (this folder).  Each prepares the mapper's options here
 * (ingest_prepare: the server's *settings*, the receipt time, the caps per
 * request, the key's entity), maps, and answers with the one body of
 * ingest_response.h or, in SQL, the one error of ingest_raise_refusal().
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_INGEST_H
#define MACHPAY_INGEST_H

#include "buffer/buffer.h"
#include "ingest/ingest_response.h"
#include "mapper/mapper.h"

/* What the mapper takes from tables: read by SPI, so cached by the HTTP workers. */
typedef struct IngestSettings
{
	int64		metrics_retention_us;	/* 0: the mapper's default */
	int64		logs_retention_us;	/* 0: the mapper's default */
} IngestSettings;

/*
 * The retentions of machpay.retention_policies (the default where a row is
 * missing).  Needs a transaction and a snapshot (uses SPI).
 */
extern void ingest_settings_load(IngestSettings *settings);

/* The time of receipt of the payload being ingested now (see ingest_path.c). */
extern TimestampTz ingest_receipt_time(void);

/*
 * The mapper's options for one payload: receipt time, machpay.max_clock_skew,
 * the retentions of settings (NULL: loaded now, which needs a transaction),
 * the caps of machpay.max_*_per_request with the body's size as sent
 * (body_bytes, 0 when not known), and the entity of the caller's key
 * (NULL: any).
 */
extern void ingest_prepare(MapOptions *opts, const IngestSettings *settings,
						   const char *bound_entity, int64 body_bytes);

/*
 * Put the mapped rows of an accepted payload into the shared buffer (the
 * buffer takes rows and counts, not the mapper's result); a ticket is
 * issued when they include payment intents.
 */
extern BufferPutStatus ingest_put(const MapResult *result, BufferTicket *ticket);

/*
 * A refused payload in SQL: ERROR with the one SQLSTATE and wording per
 * refusal (the HTTP 400 / 413 / 422 cases).  Returns when result->status
 * is MAP_OK.
 */
extern void ingest_raise_refusal(const MapResult *result);

#endif							/* MACHPAY_INGEST_H */
