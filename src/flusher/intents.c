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
#include "notify/notify.h"
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

/*
 * The statements are parsed and planned once per process and kept
 * (SPI_keepplan): at 1,000 intents/s the intents writer spent a tenth of its
 * CPU parsing and analysing the same three statements.  The plan cache
 * replans them when the tables change (a new partition, DDL).
 */
static SPIPlanPtr
kept_plan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

		if (plan == NULL)
			elog(ERROR, "preparing a payment intent statement failed: %s",
				 SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "keeping a payment intent statement failed");
		*slot = plan;
	}
	return *slot;
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

/*
 * One call of intents_store: the batch's intents and what the phases have
 * learnt of them.  Positions index the input; uniq lists the first
 * occurrence of each key, in key order.
 */
typedef struct IntentClaim
{
	const IntentInput *in;
	int			n;
	int		   *first;			/* first occurrence of each row's key */
	int		   *uniq;			/* positions of first occurrences */
	int			nuniq;
	bool	   *isnew;			/* first occurrences that claimed their key */
	int			nnew;
	pg_uuid_t  *ids;			/* candidate, then final id of first occurrences */
} IntentClaim;

/* A text[] of one string field of the intents at positions pos[0..m). */
static Datum
field_array(const IntentClaim *c, const int *pos, int m, size_t field)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(m, 1));

	for (int k = 0; k < m; k++)
	{
		const char *val = *(const char *const *) ((const char *) &c->in[pos[k]] + field);

		elems[k] = PointerGetDatum(cstring_to_text(val));
	}
	return text_array_datum(elems, m);
}

static Datum
uuid_array(const IntentClaim *c, const int *pos, int m)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(m, 1));

	for (int k = 0; k < m; k++)
		elems[k] = UUIDPGetDatum(&c->ids[pos[k]]);
	return PointerGetDatum(construct_array(elems, m, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
}

static Datum
received_at_array(const IntentClaim *c, const int *pos, int m)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(m, 1));

	for (int k = 0; k < m; k++)
		elems[k] = TimestampTzGetDatum(c->in[pos[k]].received_at);
	return PointerGetDatum(construct_array(elems, m, TIMESTAMPTZOID, sizeof(TimestampTz),
										   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/* The first occurrences whose key was new (wanted true) or not, in key order. */
static int
select_uniq(const IntentClaim *c, bool wanted, int *pos)
{
	int			m = 0;

	for (int k = 0; k < c->nuniq; k++)
		if (c->isnew[c->uniq[k]] == wanted)
			pos[m++] = c->uniq[k];
	return m;
}

/*
 * Fold the batch's own duplicates onto their first occurrence, and give
 * each first occurrence a candidate id.  uniq comes out in key order:
 * two claimers of the same keys (writers, ingest() sessions) then lock
 * them in the same order, so one waits for the other instead of both
 * deadlocking.
 */
static void
fold_duplicates(IntentClaim *c)
{
	IntentKey  *keys = palloc(sizeof(IntentKey) * c->n);

	for (int i = 0; i < c->n; i++)
	{
		keys[i].pos = i;
		keys[i].in = &c->in[i];
	}
	qsort(keys, c->n, sizeof(IntentKey), intent_key_cmp);
	for (int i = 0; i < c->n; i++)
	{
		if (i > 0 && intent_same_key(keys[i].in, keys[i - 1].in))
			c->first[keys[i].pos] = c->first[keys[i - 1].pos];
		else
			c->first[keys[i].pos] = keys[i].pos;
	}
	for (int s = 0; s < c->n; s++)
	{
		int			i = keys[s].pos;

		if (c->first[i] != i)
			continue;
		intent_new_id(c->ids[i].data);
		c->uniq[c->nuniq++] = i;
	}
	pfree(keys);
}

/* Claim the keys: RETURNING gives back the candidate ids that won. */
static void
claim_keys(IntentClaim *c)
{
	Datum		args[5];
	Oid			argtypes[5] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
							   UUIDARRAYOID, TIMESTAMPTZARRAYOID};
	int			rc;
	static SPIPlanPtr plan = NULL;

	args[0] = field_array(c, c->uniq, c->nuniq, offsetof(IntentInput, gateway_id));
	args[1] = field_array(c, c->uniq, c->nuniq, offsetof(IntentInput, agent_id));
	args[2] = field_array(c, c->uniq, c->nuniq, offsetof(IntentInput, nonce));
	args[3] = uuid_array(c, c->uniq, c->nuniq);
	args[4] = received_at_array(c, c->uniq, c->nuniq);
	rc = SPI_execute_plan(kept_plan(&plan,
									"INSERT INTO machpay.payment_intent_keys (gateway_id, agent_id, nonce, id, created_at)"
									" SELECT g, a, n::numeric, i, t"
									"   FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[])"
									"        AS u(g, a, n, i, t)"
									" ON CONFLICT DO NOTHING RETURNING id",
									5, argtypes),
						  args, NULL, false, 0);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "claiming payment intent keys failed: %s", SPI_result_code_string(rc));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		pg_uuid_t  *won = DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[r],
												  SPI_tuptable->tupdesc, 1, &isnull));

		for (int k = 0; k < c->nuniq; k++)
		{
			int			i = c->uniq[k];

			if (!c->isnew[i] && memcmp(won->data, c->ids[i].data, UUID_LEN) == 0)
			{
				c->isnew[i] = true;
				c->nnew++;
				break;
			}
		}
	}
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Keys claimed before: the ids of their first intents, read in a statement
 * of its own, whose fresh snapshot sees a claimant that committed while we
 * waited on its key.
 */
static void
read_first_ids(IntentClaim *c)
{
	int		   *back = palloc(sizeof(int) * c->nuniq);	/* ordinal -> position */
	int			m = select_uniq(c, false, back);
	Datum		args[3];
	Oid			argtypes[3] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
	int			rc;
	static SPIPlanPtr plan = NULL;

	args[0] = field_array(c, back, m, offsetof(IntentInput, gateway_id));
	args[1] = field_array(c, back, m, offsetof(IntentInput, agent_id));
	args[2] = field_array(c, back, m, offsetof(IntentInput, nonce));
	rc = SPI_execute_plan(kept_plan(&plan,
									"SELECT u.o, k.id"
									"  FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(g, a, n, o)"
									"  JOIN machpay.payment_intent_keys k"
									"    ON k.gateway_id = u.g AND k.agent_id = u.a AND k.nonce = u.n::numeric",
									3, argtypes),
						  args, NULL, false, 0);
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

		memcpy(c->ids[back[o - 1]].data, id->data, UUID_LEN);
	}
	SPI_freetuptable(SPI_tuptable);
}

/* The new intents themselves, and a notification for each. */
static void
insert_new_intents(IntentClaim *c)
{
	int		   *pos = palloc(sizeof(int) * c->nuniq);
	int			m = select_uniq(c, true, pos);
	Datum		args[8];
	Oid			argtypes[8] = {UUIDARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
							   TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
							   TEXTARRAYOID, TIMESTAMPTZARRAYOID};
	int			rc;
	static SPIPlanPtr plan = NULL;

	args[0] = uuid_array(c, pos, m);
	args[1] = field_array(c, pos, m, offsetof(IntentInput, gateway_id));
	args[2] = field_array(c, pos, m, offsetof(IntentInput, agent_id));
	args[3] = field_array(c, pos, m, offsetof(IntentInput, nonce));
	args[4] = field_array(c, pos, m, offsetof(IntentInput, amount));
	args[5] = field_array(c, pos, m, offsetof(IntentInput, token));
	args[6] = field_array(c, pos, m, offsetof(IntentInput, signature));
	args[7] = received_at_array(c, pos, m);
	rc = SPI_execute_plan(kept_plan(&plan,
									"INSERT INTO machpay.payment_intents"
									"       (id, gateway_id, agent_id, nonce, amount, token, signature, created_at)"
									" SELECT i, g, a, n::numeric, m::numeric, k, s, t"
									"   FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],"
									"               $6::text[], $7::text[], $8::timestamptz[])"
									"        AS u(i, g, a, n, m, k, s, t)"
									" RETURNING status",
									8, argtypes),
						  args, NULL, false, 0);
	if (rc != SPI_OK_INSERT_RETURNING || SPI_processed != (uint64) m)
		elog(ERROR, "inserting payment intents failed: %s", SPI_result_code_string(rc));
	/* RETURNING keeps the order of the insert's input. */
	for (int k = 0; k < m; k++)
	{
		char	   *status = SPI_getvalue(SPI_tuptable->vals[k],
										  SPI_tuptable->tupdesc, 1);

		intent_notify(&c->in[pos[k]], c->ids[pos[k]].data,
					  status ? status : "PENDING");
	}
	SPI_freetuptable(SPI_tuptable);
}

int64
intents_store(const IntentInput *in, int n, IntentOutcome *out, int64 *nduplicate)
{
	IntentClaim c;

	memset(&c, 0, sizeof(c));
	c.in = in;
	c.n = n;
	c.first = palloc(sizeof(int) * n);
	c.uniq = palloc(sizeof(int) * n);
	c.isnew = palloc0(sizeof(bool) * n);
	c.ids = palloc(sizeof(pg_uuid_t) * n);

	fold_duplicates(&c);
	claim_keys(&c);
	if (c.nnew < c.nuniq)
		read_first_ids(&c);
	if (c.nnew > 0)
		insert_new_intents(&c);

	for (int i = 0; i < n; i++)
	{
		int			f = c.first[i];

		out[i].event_index = in[i].event_index;
		memcpy(out[i].id, c.ids[f].data, UUID_LEN);
		out[i].duplicate = (f != i) || !c.isnew[f];
	}
	*nduplicate = (n - c.nuniq) + (c.nuniq - c.nnew);
	return c.nnew;
}
