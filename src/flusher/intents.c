/*-------------------------------------------------------------------------
 * intents.c
 *	  Payment intents: stored once per (gateway_id, agent_id, nonce), ever.
 *
 * machpay.payment_intent_keys is the registry that outlives the monthly
 * partitions of payment_intents.  A batch claims its keys with INSERT ...
 * ON CONFLICT DO NOTHING RETURNING: the keys it got are new intents, the
 * others are *duplicates* and get the id of the first one (read back in a
 * second statement, whose fresh snapshot sees a concurrent claimant that
 * committed while we waited on its key).  Duplicates inside the batch are
 * folded before any SQL: the first occurrence decides, the others are
 * duplicates of it.  Keys are claimed in sorted order, so concurrent
 * claimers of overlapping keys never deadlock.  Arrays through SPI are fine: intents are few.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "common/machpay.h"
#include "common/notify.h"
#include "flusher/writer_parts.h"

typedef struct IntentKey
{
	int			pos;			/* index into the input */
	const IntentInput *in;
} IntentKey;

static int
intent_key_cmp(const void *a, const void *b)
{
	const IntentKey *x = a;
	const IntentKey *y = b;
	int			c;

	if ((c = strcmp(x->in->gateway_id, y->in->gateway_id)) != 0)
		return c;
	if ((c = strcmp(x->in->agent_id, y->in->agent_id)) != 0)
		return c;
	if ((c = strcmp(x->in->nonce, y->in->nonce)) != 0)
		return c;
	return x->pos - y->pos;
}

static bool
intent_same_key(const IntentInput *a, const IntentInput *b)
{
	return strcmp(a->gateway_id, b->gateway_id) == 0 &&
		strcmp(a->agent_id, b->agent_id) == 0 &&
		strcmp(a->nonce, b->nonce) == 0;
}

/* A random (version 4) uuid. */
static void
intent_new_id(unsigned char *id)
{
	if (!pg_strong_random(id, UUID_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random values")));
	id[6] = (id[6] & 0x0f) | 0x40;
	id[8] = (id[8] & 0x3f) | 0x80;
}

static Datum
text_array_datum(Datum *elems, int n)
{
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

static void
intent_append_uuid(StringInfo buf, const unsigned char *id)
{
	static const char hex[] = "0123456789abcdef";

	for (int i = 0; i < UUID_LEN; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			appendStringInfoChar(buf, '-');
		appendStringInfoChar(buf, hex[id[i] >> 4]);
		appendStringInfoChar(buf, hex[id[i] & 0x0f]);
	}
}

/*
 * Every field is bounded (base58 ids of 44 characters, 20-digit numbers, a
 * uuid, a timestamp, the status): the payload stays far below NOTIFY's
 * limit.
 */
static void
intent_notify(const IntentInput *in, const unsigned char *id, const char *status)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"type\":\"payment_intent\",\"id\":\"");
	intent_append_uuid(&buf, id);
	appendStringInfoString(&buf, "\",\"gateway_id\":");
	escape_json(&buf, in->gateway_id);
	appendStringInfoString(&buf, ",\"agent_id\":");
	escape_json(&buf, in->agent_id);
	/* u64 as strings: JavaScript numbers lose precision past 2^53. */
	appendStringInfoString(&buf, ",\"nonce\":");
	escape_json(&buf, in->nonce);
	appendStringInfoString(&buf, ",\"amount\":");
	escape_json(&buf, in->amount);
	appendStringInfoString(&buf, ",\"token\":");
	escape_json(&buf, in->token);
	appendStringInfoString(&buf, ",\"status\":");
	escape_json(&buf, status);
	appendStringInfoString(&buf, ",\"created_at\":");
	writer_append_json_time(&buf, in->received_at);
	appendStringInfoChar(&buf, '}');
	Assert(buf.len <= NOTIFY_MAX_WHOLE);
	(void) machpay_notify(buf.data, buf.len, "payment_intent");
	pfree(buf.data);
}

int64
intents_store(const IntentInput *in, int n, IntentOutcome *out, int64 *nduplicate)
{
	IntentKey  *keys = palloc(sizeof(IntentKey) * n);
	int		   *first = palloc(sizeof(int) * n);	/* first occurrence of each row's key */
	int		   *uniq = palloc(sizeof(int) * n); /* positions of first occurrences */
	bool	   *isnew = palloc0(sizeof(bool) * n);
	int			nuniq = 0;
	int			nnew = 0;
	int			ndup_db = 0;
	Datum	   *d_gw = palloc(sizeof(Datum) * n);
	Datum	   *d_ag = palloc(sizeof(Datum) * n);
	Datum	   *d_nonce = palloc(sizeof(Datum) * n);
	Datum	   *d_id = palloc(sizeof(Datum) * n);
	Datum	   *d_ts = palloc(sizeof(Datum) * n);
	pg_uuid_t  *ids = palloc(sizeof(pg_uuid_t) * n);
	Datum		args[8];
	Oid			argtypes[8];
	int			rc;

	/* Fold the batch's own duplicates onto their first occurrence. */
	for (int i = 0; i < n; i++)
	{
		keys[i].pos = i;
		keys[i].in = &in[i];
	}
	qsort(keys, n, sizeof(IntentKey), intent_key_cmp);
	for (int i = 0; i < n; i++)
	{
		if (i > 0 && intent_same_key(keys[i].in, keys[i - 1].in))
			first[keys[i].pos] = first[keys[i - 1].pos];
		else
			first[keys[i].pos] = keys[i].pos;
	}
	/*
	 * Claim in key order: two claimers of the same keys (writers, ingest()
	 * sessions) then lock them in the same order, so one waits for the other
	 * instead of both deadlocking.
	 */
	for (int s = 0; s < n; s++)
	{
		int			i = keys[s].pos;

		if (first[i] != i)
			continue;
		intent_new_id(ids[i].data);
		d_gw[nuniq] = PointerGetDatum(cstring_to_text(in[i].gateway_id));
		d_ag[nuniq] = PointerGetDatum(cstring_to_text(in[i].agent_id));
		d_nonce[nuniq] = PointerGetDatum(cstring_to_text(in[i].nonce));
		d_id[nuniq] = UUIDPGetDatum(&ids[i]);
		d_ts[nuniq] = TimestampTzGetDatum(in[i].received_at);
		uniq[nuniq++] = i;
	}

	/* Claim the keys: RETURNING gives back the candidate ids that won. */
	args[0] = text_array_datum(d_gw, nuniq);
	args[1] = text_array_datum(d_ag, nuniq);
	args[2] = text_array_datum(d_nonce, nuniq);
	args[3] = PointerGetDatum(construct_array(d_id, nuniq, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	args[4] = PointerGetDatum(construct_array(d_ts, nuniq, TIMESTAMPTZOID, sizeof(TimestampTz),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	argtypes[0] = argtypes[1] = argtypes[2] = TEXTARRAYOID;
	argtypes[3] = UUIDARRAYOID;
	argtypes[4] = TIMESTAMPTZARRAYOID;
	rc = SPI_execute_with_args(
							   "INSERT INTO machpay.payment_intent_keys (gateway_id, agent_id, nonce, id, created_at)"
							   " SELECT g, a, n::numeric, i, t"
							   "   FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[])"
							   "        AS u(g, a, n, i, t)"
							   " ON CONFLICT DO NOTHING RETURNING id",
							   5, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "claiming payment intent keys failed: %s", SPI_result_code_string(rc));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		pg_uuid_t  *won = DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[r],
												  SPI_tuptable->tupdesc, 1, &isnull));

		for (int k = 0; k < nuniq; k++)
			if (!isnew[uniq[k]] && memcmp(won->data, ids[uniq[k]].data, UUID_LEN) == 0)
			{
				isnew[uniq[k]] = true;
				nnew++;
				break;
			}
	}
	SPI_freetuptable(SPI_tuptable);

	/* Keys claimed before: fetch the first id. */
	if (nnew < nuniq)
	{
		int			m = 0;
		int		   *back = palloc(sizeof(int) * nuniq);	/* ordinal -> input position */

		for (int k = 0; k < nuniq; k++)
		{
			int			i = uniq[k];

			if (isnew[i])
				continue;
			d_gw[m] = PointerGetDatum(cstring_to_text(in[i].gateway_id));
			d_ag[m] = PointerGetDatum(cstring_to_text(in[i].agent_id));
			d_nonce[m] = PointerGetDatum(cstring_to_text(in[i].nonce));
			back[m] = i;
			m++;
		}
		args[0] = text_array_datum(d_gw, m);
		args[1] = text_array_datum(d_ag, m);
		args[2] = text_array_datum(d_nonce, m);
		rc = SPI_execute_with_args(
								   "SELECT u.o, k.id"
								   "  FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(g, a, n, o)"
								   "  JOIN machpay.payment_intent_keys k"
								   "    ON k.gateway_id = u.g AND k.agent_id = u.a AND k.nonce = u.n::numeric",
								   3, argtypes, args, NULL, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "reading payment intent keys failed: %s", SPI_result_code_string(rc));
		if (SPI_processed != (uint64) m)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("payment intent keys changed concurrently"),
					 errhint("Retry the batch.")));
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			int64		o = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
														SPI_tuptable->tupdesc, 1, &isnull));
			pg_uuid_t  *id = DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[r],
													 SPI_tuptable->tupdesc, 2, &isnull));
			int			i = back[o - 1];

			memcpy(ids[i].data, id->data, UUID_LEN);
		}
		SPI_freetuptable(SPI_tuptable);
		ndup_db = nuniq - nnew;
	}

	/* The new intents themselves. */
	if (nnew > 0)
	{
		Datum	   *d_tok = palloc(sizeof(Datum) * nnew);
		Datum	   *d_sig = palloc(sizeof(Datum) * nnew);
		Datum	   *d_amt = palloc(sizeof(Datum) * nnew);
		int			m = 0;

		for (int k = 0; k < nuniq; k++)
		{
			int			i = uniq[k];

			if (!isnew[i])
				continue;
			d_id[m] = UUIDPGetDatum(&ids[i]);
			d_gw[m] = PointerGetDatum(cstring_to_text(in[i].gateway_id));
			d_ag[m] = PointerGetDatum(cstring_to_text(in[i].agent_id));
			d_nonce[m] = PointerGetDatum(cstring_to_text(in[i].nonce));
			d_amt[m] = PointerGetDatum(cstring_to_text(in[i].amount));
			d_tok[m] = PointerGetDatum(cstring_to_text(in[i].token));
			d_sig[m] = PointerGetDatum(cstring_to_text(in[i].signature));
			d_ts[m] = TimestampTzGetDatum(in[i].received_at);
			m++;
		}
		args[0] = PointerGetDatum(construct_array(d_id, m, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
		args[1] = text_array_datum(d_gw, m);
		args[2] = text_array_datum(d_ag, m);
		args[3] = text_array_datum(d_nonce, m);
		args[4] = text_array_datum(d_amt, m);
		args[5] = text_array_datum(d_tok, m);
		args[6] = text_array_datum(d_sig, m);
		args[7] = PointerGetDatum(construct_array(d_ts, m, TIMESTAMPTZOID, sizeof(TimestampTz),
												  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		argtypes[0] = UUIDARRAYOID;
		argtypes[1] = argtypes[2] = argtypes[3] = argtypes[4] = argtypes[5] = argtypes[6] = TEXTARRAYOID;
		argtypes[7] = TIMESTAMPTZARRAYOID;
		rc = SPI_execute_with_args(
								   "INSERT INTO machpay.payment_intents"
								   "       (id, gateway_id, agent_id, nonce, amount, token, signature, created_at)"
								   " SELECT i, g, a, n::numeric, m::numeric, k, s, t"
								   "   FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],"
								   "               $6::text[], $7::text[], $8::timestamptz[])"
								   "        AS u(i, g, a, n, m, k, s, t)"
								   " RETURNING status",
								   8, argtypes, args, NULL, false, 0);
		if (rc != SPI_OK_INSERT_RETURNING || SPI_processed != (uint64) m)
			elog(ERROR, "inserting payment intents failed: %s", SPI_result_code_string(rc));
		/* RETURNING keeps the order of the insert's input. */
		m = 0;
		for (int k = 0; k < nuniq; k++)
		{
			int			i = uniq[k];
			char	   *status;

			if (!isnew[i])
				continue;
			status = SPI_getvalue(SPI_tuptable->vals[m], SPI_tuptable->tupdesc, 1);
			intent_notify(&in[i], ids[i].data, status ? status : "PENDING");
			m++;
		}
		SPI_freetuptable(SPI_tuptable);
	}

	for (int i = 0; i < n; i++)
	{
		int			f = first[i];

		out[i].event_index = in[i].event_index;
		memcpy(out[i].id, ids[f].data, UUID_LEN);
		out[i].duplicate = (f != i) || !isnew[f];
	}
	*nduplicate = (n - nuniq) + ndup_db;
	return nnew;
}
