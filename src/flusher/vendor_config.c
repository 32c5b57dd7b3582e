/*-------------------------------------------------------------------------
 * vendor_config.c
 *	  Gateway `config` reports -> machpay.vendor_profiles (SPEC §4).
 *
 * A *report* is the config object of one gateway event.  The profile row
 * belongs to the user whose wallet_address is the gateway id; a gateway
 * without a users row changes nothing and is counted.  Of several reports
 * of one gateway in a batch the newest period_end wins; a report older
 * than the one that last wrote the row (config_period_end) is *stale* and
 * ignored.  Only fields present in the report are compared and written,
 * and the row is written only when a value changed, so updated_at and the
 * `config` notification move only then.
 *
 * Concurrent writers of one gateway (the flusher and machpay.ingest())
 * serialize on the users row, locked before the profile is read.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "common/machpay.h"
#include "notify/notify.h"
#include "flusher/xact_stats.h"
#include "flusher/writer_parts.h"

/* Profile fields in column order; the report's field for each. */
#define NFIELDS 4
static const char *const field_columns[NFIELDS] = {
	"base_price_atomic", "accepted_mint", "withdrawal_address", "config_version"
};
static const uint32 field_flags[NFIELDS] = {
	CONFIG_HAS_PRICE, CONFIG_HAS_MINT, CONFIG_HAS_WITHDRAWAL, CONFIG_HAS_VERSION
};

static int
config_cmp(const void *a, const void *b)
{
	const ConfigInput *x = a;
	const ConfigInput *y = b;
	int			c = strcmp(x->gateway_id, y->gateway_id);

	if (c != 0)
		return c;
	if (x->period_end != y->period_end)
		return x->period_end < y->period_end ? -1 : 1;
	return x->batch_pos - y->batch_pos;
}

/* numeric's canonical text, so "05000" and 5000 compare equal. */
static char *
canonical_numeric(const char *s)
{
	Datum		d = DirectFunctionCall3(numeric_in, CStringGetDatum(s),
										ObjectIdGetDatum(InvalidOid),
										Int32GetDatum(-1));

	return DatumGetCString(DirectFunctionCall1(numeric_out, d));
}

/*
 * The changed values are bounded by what the mapper accepts, but a version
 * string is the client's: if the payload would pass NOTIFY's limit, send
 * the changed field names only, as a reference to the row (nothing is cut).
 */
static void
config_notify(const char *gateway_id, int64 user_id, bool *changed,
			  char **newval)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int pass = 0; pass < 2; pass++)
	{
		bool		firstf = true;

		resetStringInfo(&buf);
		appendStringInfoString(&buf, "{\"type\":\"config\",\"gateway_id\":");
		escape_json(&buf, gateway_id);
		appendStringInfo(&buf, ",\"user_id\":" INT64_FORMAT ",\"changed\":%c",
						 user_id, pass == 0 ? '{' : '[');
		for (int f = 0; f < NFIELDS; f++)
		{
			if (!changed[f])
				continue;
			if (!firstf)
				appendStringInfoChar(&buf, ',');
			firstf = false;
			escape_json(&buf, field_columns[f]);
			if (pass == 0)
			{
				appendStringInfoChar(&buf, ':');
				if (newval[f] == NULL)
					appendStringInfoString(&buf, "null");
				else
					escape_json(&buf, newval[f]);
			}
		}
		appendStringInfoChar(&buf, pass == 0 ? '}' : ']');
		if (pass == 1)
			appendStringInfoString(&buf, ",\"ref\":\"machpay.vendor_profiles\"");
		appendStringInfoChar(&buf, '}');
		if (buf.len <= NOTIFY_MAX_WHOLE)
			break;
	}
	(void) machpay_notify(buf.data, buf.len, "config");
	pfree(buf.data);
}


/*
 * Orders us against another writer of this gateway's profile until our
 * transaction ends.  An advisory lock rather than SELECT ... FOR UPDATE on
 * machpay.users: a row lock needs UPDATE on users, which the workers' role
 * must not have.  Keys: "conf", then the user id (truncated: two users
 * sharing a key only wait for each other).
 */
static void
lock_profile(int64 user_id)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0x636f6e66, (uint32) user_id, 2);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/*
 * A newer report that changes nothing still moves the profile's report
 * time (not updated_at): a report dated before it, arriving later, is then
 * stale and cannot bring back values this one confirmed.
 */
static void
config_record_period_end(int64 user_id, TimestampTz period_end)
{
	Datum		args[2];
	Oid			argtypes[2] = {INT8OID, TIMESTAMPTZOID};
	int			rc;

	args[0] = Int64GetDatum(user_id);
	args[1] = TimestampTzGetDatum(period_end);
	rc = SPI_execute_with_args("UPDATE machpay.vendor_profiles SET config_period_end = $2"
							   " WHERE user_id = $1"
							   "   AND (config_period_end IS NULL OR config_period_end < $2)",
							   2, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "writing machpay.vendor_profiles failed: %s", SPI_result_code_string(rc));
}

static void
config_apply_one(const ConfigInput *c, WriteResult *result)
{
	Datum		args[7];
	Oid			argtypes[7];
	char		nulls[7];
	int			rc;
	int64		user_id;
	bool		isnull;
	char	   *stored[NFIELDS] = {NULL, NULL, NULL, NULL};
	char	   *newval[NFIELDS];
	bool		changed[NFIELDS] = {false, false, false, false};
	bool		any = false;
	const char *reported[NFIELDS];

	reported[0] = c->price;
	reported[1] = c->mint;
	reported[2] = c->withdrawal;
	reported[3] = c->version;

	args[0] = CStringGetTextDatum(c->gateway_id);
	argtypes[0] = TEXTOID;
	rc = SPI_execute_with_args("SELECT id FROM machpay.users WHERE wallet_address = $1",
							   1, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading machpay.users failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
	{
		result->config_unknown_gateway++;
		xact_stats_add(STAT_CONFIG_UNKNOWN_GATEWAY, 1);
		SPI_freetuptable(SPI_tuptable);
		return;
	}
	user_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	lock_profile(user_id);

	/* A new statement: its snapshot sees what the lock holder committed. */
	args[0] = Int64GetDatum(user_id);
	argtypes[0] = INT8OID;
	args[1] = TimestampTzGetDatum(c->period_end);
	argtypes[1] = TIMESTAMPTZOID;
	rc = SPI_execute_with_args("SELECT base_price_atomic::text, accepted_mint, withdrawal_address,"
							   "       config_version, config_period_end > $2"
							   "  FROM machpay.vendor_profiles WHERE user_id = $1",
							   2, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "reading machpay.vendor_profiles failed: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		stale;

		for (int f = 0; f < NFIELDS; f++)
			stored[f] = SPI_getvalue(tup, desc, f + 1);
		stale = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
		if (!isnull && stale)
		{
			result->config_stale++;
			xact_stats_add(STAT_CONFIG_STALE, 1);
			SPI_freetuptable(SPI_tuptable);
			return;
		}
	}
	SPI_freetuptable(SPI_tuptable);

	for (int f = 0; f < NFIELDS; f++)
	{
		newval[f] = stored[f];
		if (!(c->present & field_flags[f]))
			continue;
		newval[f] = (f == 0) ? canonical_numeric(reported[f]) : pstrdup(reported[f]);
		if (stored[f] == NULL || strcmp(stored[f], newval[f]) != 0)
			changed[f] = any = true;
	}
	if (!any)
	{
		config_record_period_end(user_id, c->period_end);
		return;
	}

	args[0] = Int64GetDatum(user_id);
	argtypes[0] = INT8OID;
	for (int f = 0; f < NFIELDS; f++)
	{
		args[f + 1] = newval[f] ? CStringGetTextDatum(newval[f]) : (Datum) 0;
		nulls[f + 1] = newval[f] ? ' ' : 'n';
		argtypes[f + 1] = TEXTOID;
	}
	nulls[0] = ' ';
	args[5] = TimestampTzGetDatum(c->period_end);
	argtypes[5] = TIMESTAMPTZOID;
	nulls[5] = ' ';
	rc = SPI_execute_with_args("INSERT INTO machpay.vendor_profiles AS p"
							   "       (user_id, base_price_atomic, accepted_mint, withdrawal_address,"
							   "        config_version, updated_at, config_period_end)"
							   " VALUES ($1, $2::numeric, $3, $4, $5, now(), $6)"
							   " ON CONFLICT (user_id) DO UPDATE SET"
							   "   base_price_atomic = EXCLUDED.base_price_atomic,"
							   "   accepted_mint = EXCLUDED.accepted_mint,"
							   "   withdrawal_address = EXCLUDED.withdrawal_address,"
							   "   config_version = EXCLUDED.config_version,"
							   "   updated_at = EXCLUDED.updated_at,"
							   "   config_period_end = EXCLUDED.config_period_end",
							   6, argtypes, args, nulls, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "writing machpay.vendor_profiles failed: %s", SPI_result_code_string(rc));

	result->config_changed++;
	xact_stats_add(STAT_CONFIG_UPDATES, 1);
	config_notify(c->gateway_id, user_id, changed, newval);
}

void
vendor_config_apply(ConfigInput *in, int n, WriteResult *result)
{
	qsort(in, n, sizeof(ConfigInput), config_cmp);
	for (int i = 0; i < n; i++)
	{
		/* Sorted by gateway, then age: the last of a run is the newest. */
		if (i + 1 < n && strcmp(in[i].gateway_id, in[i + 1].gateway_id) == 0)
			continue;
		config_apply_one(&in[i], result);
	}
}
