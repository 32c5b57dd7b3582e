/*-------------------------------------------------------------------------
 * writer_parts.h
 *	  The pieces of the bulk writer (writer.c) that are not bulk: payment
 *	  intents (intents.c) and vendor config (vendor_config.c).
 *
 * Both run through SPI inside the writer's SPI connection: they carry few
 * rows (an intent per payment, a config report per gateway a minute).
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_WRITER_PARTS_H
#define MACHPAY_WRITER_PARTS_H

#include "flusher/writer.h"

/* A ROW_INTENT row as read from the batch (pointers into the batch). */
typedef struct IntentInput
{
	int32		event_index;
	TimestampTz received_at;
	const char *gateway_id;
	const char *agent_id;
	const char *token;
	const char *signature;
	const char *nonce;			/* canonical decimal */
	const char *amount;			/* canonical decimal */
} IntentInput;

/*
 * Stores the new intents once per (gateway_id, agent_id, nonce), fills
 * out[] in input order and queues a `payment_intent` notification per new
 * intent.  Returns the number of new intents; *nduplicate gets the rest.
 */
extern int64 intents_store(const IntentInput *in, int n, IntentOutcome *out,
						   int64 *nduplicate);

/* A ROW_CONFIG row as read from the batch. */
typedef struct ConfigInput
{
	int32		batch_pos;		/* position in the batch: later wins ties */
	TimestampTz period_end;
	uint32		present;		/* CONFIG_HAS_* */
	const char *gateway_id;
	const char *price;
	const char *mint;
	const char *withdrawal;
	const char *version;
} ConfigInput;

/* Applies config reports (newest per gateway); counts into result. */
extern void vendor_config_apply(ConfigInput *in, int n, WriteResult *result);

/* JSON text of a timestamp in UTC (ISO 8601), for notification payloads. */
extern void writer_append_json_time(StringInfo buf, TimestampTz ts);

#endif							/* MACHPAY_WRITER_PARTS_H */
