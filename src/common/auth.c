/*-------------------------------------------------------------------------
 * auth.c
 *	  The key cache of the network workers (auth.h) and the trigger that
 *	  tells them machpay.ingest_keys changed.
 *
 * A worker holds every unrevoked key (SHA-256 of the token, entity, role).
 * A request hashes its bearer token and compares it with every cached hash
 * in constant time, so neither a query nor a timing difference per request.
 * The statement trigger on machpay.ingest_keys bumps the shared counter
 * auth_key_changes; a worker that sees it move reloads at once and keeps
 * reloading for a short window, because the trigger fires before the
 * change commits.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/sha.h>

#include "access/xact.h"
#include "commands/trigger.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "common/auth.h"
#include "common/machpay.h"
#include "common/stats.h"

/* How often the shared change counter is looked at, at most. */
#define AUTH_CHECK_INTERVAL_MS		100
/* After a change is seen, reload this often for this long (commit race). */
#define AUTH_SETTLE_RELOAD_MS		200
#define AUTH_SETTLE_WINDOW_MS		2000
/* A reload even without a seen change, in case a bump was missed. */
#define AUTH_FALLBACK_RELOAD_MS		30000

typedef struct AuthKey
{
	uint8		hash[PG_SHA256_DIGEST_LENGTH];
	char	   *entity_id;		/* NULL = any entity ('*') */
	AuthRole	role;
} AuthKey;

static MemoryContext auth_cxt = NULL;
static AuthKey *auth_keys = NULL;
static int	auth_nkeys = 0;
static bool auth_loaded = false;

static uint64 seen_changes = 0;
static TimestampTz last_change_at = 0;
static TimestampTz last_reload_at = 0;
static TimestampTz last_check_at = 0;

/* Compare two digests without an early exit. */
static bool
digest_equal(const uint8 *a, const uint8 *b)
{
	uint8		diff = 0;

	for (int i = 0; i < PG_SHA256_DIGEST_LENGTH; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

/*
 * OpenSSL directly rather than pg_cryptohash: the latter registers with
 * the current resource owner, and the event loop runs outside any
 * transaction, where there is none.
 */
static bool
sha256(const char *data, size_t len, uint8 *out)
{
	return SHA256((const unsigned char *) data, len, out) != NULL;
}

AuthResult
auth_check(const char *token, size_t len, AuthRole role, const char **bound_entity)
{
	uint8		hash[PG_SHA256_DIGEST_LENGTH];
	int			found = -1;

	*bound_entity = NULL;
	if (token == NULL || len == 0)
		return AUTH_MISSING;
	if (!sha256(token, len, hash))
		return AUTH_UNKNOWN;

	/* Scan every key so the time taken does not depend on a match. */
	for (int i = 0; i < auth_nkeys; i++)
	{
		if (digest_equal(auth_keys[i].hash, hash))
			found = i;
	}
	if (found < 0)
		return AUTH_UNKNOWN;
	if (auth_keys[found].role != role)
		return AUTH_WRONG_ROLE;
	*bound_entity = auth_keys[found].entity_id;
	return AUTH_OK;
}

int
auth_key_count(void)
{
	return auth_nkeys;
}

/* Read the unrevoked keys into a new context; swap it in on success. */
static bool
auth_load(void)
{
	MemoryContext newcxt;
	MemoryContext oldcxt = CurrentMemoryContext;
	AuthKey    *volatile keys = NULL;
	volatile int nkeys = 0;
	volatile bool ok = false;

	newcxt = AllocSetContextCreate(TopMemoryContext, "machpay auth keys",
								   ALLOCSET_SMALL_SIZES);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		int			ret;

		PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		ret = SPI_execute("SELECT token_sha256, entity_id, role FROM "
						  MACHPAY_SCHEMA ".ingest_keys WHERE revoked_at IS NULL",
						  true, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "reading ingest keys failed: %d", ret);

		keys = MemoryContextAllocZero(newcxt, sizeof(AuthKey) * Max(SPI_processed, 1));
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			Datum		d;
			bytea	   *hash;
			char	   *entity;
			char	   *role;

			d = SPI_getbinval(tup, desc, 1, &isnull);
			if (isnull)
				continue;
			hash = DatumGetByteaPP(d);
			if (VARSIZE_ANY_EXHDR(hash) != PG_SHA256_DIGEST_LENGTH)
				continue;
			entity = SPI_getvalue(tup, desc, 2);
			role = SPI_getvalue(tup, desc, 3);
			if (entity == NULL || role == NULL)
				continue;

			memcpy(keys[nkeys].hash, VARDATA_ANY(hash), PG_SHA256_DIGEST_LENGTH);
			keys[nkeys].entity_id = strcmp(entity, "*") == 0 ? NULL :
				MemoryContextStrdup(newcxt, entity);
			keys[nkeys].role = strcmp(role, "console") == 0 ?
				AUTH_ROLE_CONSOLE : AUTH_ROLE_INGEST;
			nkeys++;
		}
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		ok = true;
	}
	PG_CATCH();
	{
		machpay_worker_report_and_abort(oldcxt);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);

	if (!ok)
	{
		MemoryContextDelete(newcxt);
		return false;
	}
	if (auth_cxt != NULL)
		MemoryContextDelete(auth_cxt);
	auth_cxt = newcxt;
	auth_keys = keys;
	auth_nkeys = nkeys;
	auth_loaded = true;
	return true;
}

bool
auth_refresh(bool force)
{
	TimestampTz now = GetCurrentTimestamp();
	uint64		changes;
	bool		need = force || !auth_loaded;

	if (!need && !TimestampDifferenceExceeds(last_check_at, now, AUTH_CHECK_INTERVAL_MS))
		return true;
	last_check_at = now;

	changes = stats_get(STAT_AUTH_KEY_CHANGES);
	if (changes != seen_changes)
	{
		seen_changes = changes;
		last_change_at = now;
		need = true;
	}
	if (!TimestampDifferenceExceeds(last_change_at, now, AUTH_SETTLE_WINDOW_MS) &&
		TimestampDifferenceExceeds(last_reload_at, now, AUTH_SETTLE_RELOAD_MS))
		need = true;
	if (TimestampDifferenceExceeds(last_reload_at, now, AUTH_FALLBACK_RELOAD_MS))
		need = true;
	if (!need)
		return true;

	last_reload_at = now;
	return auth_load();
}

PG_FUNCTION_INFO_V1(machpay_auth_keys_changed);

/* Statement trigger on machpay.ingest_keys: tell the workers to reload. */
Datum
machpay_auth_keys_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("machpay_auth_keys_changed must be called as a trigger")));
	stats_add(STAT_AUTH_KEY_CHANGES, 1);
	return PointerGetDatum(NULL);
}
