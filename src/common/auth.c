/*-------------------------------------------------------------------------
 * auth.c
 *	  The key cache of the network workers (auth.h), the bearer-token
 *	  check both servers use, and the trigger that tells them
 *	  machpay.ingest_keys changed.
 *
 * A worker holds every live key (SHA-256 of the token, entity, role, when
 * it stops being live).  A request hashes its bearer token and compares it
 * with every cached digest in constant time, so neither a query nor a
 * timing difference per request.
 *
 * The statement trigger on machpay.ingest_keys bumps the shared counter
 * auth_key_changes when its transaction commits (commit_counter.c), so one
 * reload after the bump is always enough, however long the changing
 * transaction took to commit.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <openssl/evp.h>

#include "access/xact.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "common/auth.h"
#include "common/commit_counter.h"
#include "common/machpay.h"
#include "common/stats.h"

/*
 * A check made while a seen change is not loaded yet, for longer than
 * this, answers AUTH_UNAVAILABLE.  Loops turn at least every 100 ms, so
 * only a reload that fails gets there.
 */
#define AUTH_STALE_MAX_MS		500
/* A reload even without a seen change (keys changed with triggers off). */
#define AUTH_FALLBACK_RELOAD_MS	30000
/* After a failed reload, the next attempt waits this long (one log line each). */
#define AUTH_RETRY_MS			1000
/* The reload waits no longer than this for a lock on the table. */
#define AUTH_LOCK_TIMEOUT		"200ms"

typedef struct AuthKey
{
	uint8		hash[PG_SHA256_DIGEST_LENGTH];
	AuthRole	role;
	bool		any_entity;
	TimestampTz live_until;		/* revoked_at; DT_NOEND when NULL */
	char		entity[AUTH_ENTITY_MAX + 1];
} AuthKey;

static MemoryContext auth_cxt = NULL;
static AuthKey *auth_keys = NULL;
static int	auth_nkeys = 0;
static bool auth_loaded = false;

static uint64 loaded_changes = 0;	/* shared counter when the cache was read */
static TimestampTz stale_since = 0; /* first check that saw it move, 0 = none */
static TimestampTz last_reload_at = 0;
static TimestampTz last_failure_at = 0;
static TimestampTz next_expiry = DT_NOEND;	/* earliest live_until ahead */
static uint64 generation = 0;

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
 * the current resource owner, and the event loops run outside any
 * transaction, where there is none.  The digest is fetched once and the
 * context reused: OpenSSL 3 looks the algorithm up under a lock on every
 * one-shot SHA256(), a cost paid on every request, refused ones included.
 */
static bool
sha256(const char *data, size_t len, uint8 *out)
{
	static EVP_MD *md = NULL;
	static EVP_MD_CTX *ctx = NULL;
	unsigned int n;

	if (md == NULL && (md = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL)
		return false;
	if (ctx == NULL && (ctx = EVP_MD_CTX_new()) == NULL)
		return false;
	return EVP_DigestInit_ex(ctx, md, NULL) == 1 &&
		EVP_DigestUpdate(ctx, data, len) == 1 &&
		EVP_DigestFinal_ex(ctx, out, &n) == 1;
}

/*
 * The token of "Bearer <token>" (scheme case-insensitive, spaces around
 * the token ignored); false when the header is no bearer credential.
 */
static bool
parse_bearer(const char *header, size_t len, const char **token, size_t *token_len)
{
	const char *t;
	size_t		n;

	if (header == NULL || len <= 7 || pg_strncasecmp(header, "Bearer ", 7) != 0)
		return false;
	t = header + 7;
	n = len - 7;
	while (n > 0 && *t == ' ')
		t++, n--;
	while (n > 0 && t[n - 1] == ' ')
		n--;
	*token = t;
	*token_len = n;
	return n > 0;
}

/* Whether the cache may answer: loaded, and not overdue for a reload. */
static bool
cache_usable(TimestampTz now)
{
	if (!auth_loaded)
		return false;
	if (stats_get(STAT_AUTH_KEY_CHANGES) == loaded_changes)
		return true;
	if (stale_since == 0)
		stale_since = now;
	return !TimestampDifferenceExceeds(stale_since, now, AUTH_STALE_MAX_MS);
}

/* The index of the live key with this digest, or -1; scans every key. */
static int
find_key(const uint8 *digest, TimestampTz now)
{
	int			found = -1;

	for (int i = 0; i < auth_nkeys; i++)
	{
		if (digest_equal(auth_keys[i].hash, digest))
			found = i;
	}
	if (found >= 0 && auth_keys[found].live_until <= now)
		return -1;
	return found;
}

static AuthResult
check_digest(const uint8 *digest, AuthRole role, AuthGrant *grant)
{
	TimestampTz now = GetCurrentTimestamp();
	int			k;

	if (!cache_usable(now))
		return AUTH_UNAVAILABLE;
	k = find_key(digest, now);
	if (k < 0)
		return AUTH_UNKNOWN;
	if (auth_keys[k].role != role)
		return AUTH_WRONG_ROLE;
	if (grant != NULL)
	{
		memcpy(grant->digest, digest, PG_SHA256_DIGEST_LENGTH);
		grant->role = role;
		grant->any_entity = auth_keys[k].any_entity;
		strlcpy(grant->entity, auth_keys[k].entity, sizeof(grant->entity));
	}
	return AUTH_OK;
}

AuthResult
auth_check_bearer(const char *header, size_t header_len,
				  const char *query_token, size_t query_len,
				  AuthRole role, AuthGrant *grant)
{
	const char *token = NULL;
	size_t		len = 0;
	uint8		digest[PG_SHA256_DIGEST_LENGTH];

	memset(grant, 0, sizeof(*grant));
	if (!parse_bearer(header, header_len, &token, &len))
	{
		token = query_token;
		len = query_token ? query_len : 0;
	}
	if (token == NULL || len == 0)
		return AUTH_MISSING;
	if (!sha256(token, len, digest))
		return AUTH_UNAVAILABLE;
	return check_digest(digest, role, grant);
}

AuthResult
auth_recheck(const AuthGrant *grant)
{
	return check_digest(grant->digest, grant->role, NULL);
}

uint64
auth_generation(void)
{
	return generation;
}

int
auth_key_count(void)
{
	return auth_nkeys;
}

static TimestampTz
earliest_expiry(TimestampTz now)
{
	TimestampTz first = DT_NOEND;

	for (int i = 0; i < auth_nkeys; i++)
		if (auth_keys[i].live_until > now && auth_keys[i].live_until < first)
			first = auth_keys[i].live_until;
	return first;
}

/* One row of the key query into *key; false to skip a malformed row. */
static bool
read_key(HeapTuple tup, TupleDesc desc, AuthKey *key)
{
	bool		isnull;
	Datum		d;
	bytea	   *hash;
	char	   *entity;
	char	   *role;

	d = SPI_getbinval(tup, desc, 1, &isnull);
	if (isnull)
		return false;
	hash = DatumGetByteaPP(d);
	if (VARSIZE_ANY_EXHDR(hash) != PG_SHA256_DIGEST_LENGTH)
		return false;
	entity = SPI_getvalue(tup, desc, 2);
	role = SPI_getvalue(tup, desc, 3);
	if (entity == NULL || role == NULL || strlen(entity) > AUTH_ENTITY_MAX)
		return false;
	d = SPI_getbinval(tup, desc, 4, &isnull);

	memcpy(key->hash, VARDATA_ANY(hash), PG_SHA256_DIGEST_LENGTH);
	key->any_entity = strcmp(entity, "*") == 0;
	strlcpy(key->entity, key->any_entity ? "" : entity, sizeof(key->entity));
	key->role = strcmp(role, "console") == 0 ? AUTH_ROLE_CONSOLE : AUTH_ROLE_INGEST;
	key->live_until = isnull ? DT_NOEND : DatumGetTimestampTz(d);
	return true;
}

/*
 * Read the live keys into a new context; swap it in on success.  The
 * counter is read before the transaction's snapshot: a change committed
 * after it moves the counter past what we record, and is loaded next turn.
 */
static bool
auth_load(void)
{
	MemoryContext newcxt;
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	AuthKey    *volatile keys = NULL;
	volatile int nkeys = 0;
	volatile bool ok = false;
	uint64		changes = stats_get(STAT_AUTH_KEY_CHANGES);

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
		/* A lock held on the table must not stall the worker's loop. */
		if (SPI_execute("SET LOCAL lock_timeout = '" AUTH_LOCK_TIMEOUT "'", false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "setting lock_timeout failed");
		ret = SPI_execute("SELECT token_sha256, entity_id, role, revoked_at FROM "
						  MACHPAY_SCHEMA ".ingest_keys"
						  " WHERE revoked_at IS NULL OR revoked_at > pg_catalog.now()",
						  true, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "reading ingest keys failed: %d", ret);

		keys = MemoryContextAllocZero(newcxt, sizeof(AuthKey) * Max(SPI_processed, 1));
		for (uint64 i = 0; i < SPI_processed; i++)
			if (read_key(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &keys[nkeys]))
				nkeys++;
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
	/* A network worker keeps its own owner between transactions. */
	CurrentResourceOwner = oldowner;

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
	loaded_changes = changes;
	stale_since = 0;
	next_expiry = earliest_expiry(GetCurrentTimestamp());
	generation++;
	return true;
}

bool
auth_refresh(bool force)
{
	TimestampTz now = GetCurrentTimestamp();

	if (auth_loaded && next_expiry <= now)
	{
		/* A key's revoked_at passed: open streams re-check their keys. */
		next_expiry = earliest_expiry(now);
		generation++;
	}
	if (!force && auth_loaded &&
		stats_get(STAT_AUTH_KEY_CHANGES) == loaded_changes &&
		!TimestampDifferenceExceeds(last_reload_at, now, AUTH_FALLBACK_RELOAD_MS))
		return true;
	if (!force && last_failure_at != 0 &&
		!TimestampDifferenceExceeds(last_failure_at, now, AUTH_RETRY_MS))
		return false;
	last_reload_at = now;
	if (auth_load())
	{
		last_failure_at = 0;
		return true;
	}
	last_failure_at = now;
	return false;
}

/* ---- the trigger side: any backend that changes machpay.ingest_keys ---- */

PG_FUNCTION_INFO_V1(machpay_auth_keys_changed);

/*
 * Statement trigger on machpay.ingest_keys: the workers reload when this
 * transaction commits (commit_counter.c).
 */
Datum
machpay_auth_keys_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("machpay_auth_keys_changed must be called as a trigger")));
	commit_counter_bump_at_commit(STAT_AUTH_KEY_CHANGES, MACHPAY_SCHEMA ".ingest_keys");
	return PointerGetDatum(NULL);
}
