/*-------------------------------------------------------------------------
 * sse_keys.c
 *	  The relay's cache of machpay.ingest_keys, and the check of a token.
 *
 * The relay reads the keys over its libpq connection at least once a
 * second (sse.c), so a revoked key stops working within a second.  A token
 * is checked by its SHA-256, compared in constant time with every cached
 * key so the time taken says nothing about which bytes matched.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/cryptohash.h"
#include "common/sha2.h"
#include "utils/memutils.h"

#include "sse/sse.h"

typedef struct SseKey
{
	uint8		sha256[PG_SHA256_DIGEST_LENGTH];
	bool		console;
	char	   *entity_id;
} SseKey;

typedef struct SseKeySet
{
	MemoryContext cxt;
	int			nkeys;
	int			maxkeys;
	SseKey	   *keys;
} SseKeySet;

static SseKeySet current = {NULL, 0, 0, NULL};
static SseKeySet loading = {NULL, 0, 0, NULL};
static bool loaded = false;

void
sse_keys_begin_load(void)
{
	if (loading.cxt)
		MemoryContextDelete(loading.cxt);
	loading.cxt = AllocSetContextCreate(TopMemoryContext, "machpay sse keys",
										ALLOCSET_SMALL_SIZES);
	loading.nkeys = 0;
	loading.maxkeys = 16;
	loading.keys = MemoryContextAlloc(loading.cxt, sizeof(SseKey) * loading.maxkeys);
}

int
sse_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

void
sse_keys_add(const char *sha256_hex, const char *role, const char *entity_id)
{
	SseKey	   *k;
	int			i;

	if (loading.cxt == NULL || strlen(sha256_hex) != 2 * PG_SHA256_DIGEST_LENGTH)
		return;
	if (loading.nkeys == loading.maxkeys)
	{
		loading.maxkeys *= 2;
		loading.keys = repalloc(loading.keys, sizeof(SseKey) * loading.maxkeys);
	}
	k = &loading.keys[loading.nkeys];
	for (i = 0; i < PG_SHA256_DIGEST_LENGTH; i++)
	{
		int			hi = sse_hexval(sha256_hex[2 * i]);
		int			lo = sse_hexval(sha256_hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return;
		k->sha256[i] = (uint8) (hi << 4 | lo);
	}
	k->console = strcmp(role, "console") == 0;
	k->entity_id = MemoryContextStrdup(loading.cxt, entity_id);
	loading.nkeys++;
}

void
sse_keys_end_load(void)
{
	if (loading.cxt == NULL)
		return;
	if (current.cxt)
		MemoryContextDelete(current.cxt);
	current = loading;
	memset(&loading, 0, sizeof(loading));
	loaded = true;
}

/*
 * On success *entity_out is the entity the key is bound to ("*" = any),
 * allocated in the current memory context.
 */
SseAuthResult
sse_keys_check(const char *token, size_t len, char **entity_out)
{
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	pg_cryptohash_ctx *ctx;
	int			found = -1;
	int			i;

	if (token == NULL || len == 0)
		return SSE_AUTH_MISSING;
	if (!loaded)
		return SSE_AUTH_NOT_LOADED;

	ctx = pg_cryptohash_create(PG_SHA256);
	if (ctx == NULL ||
		pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) token, len) < 0 ||
		pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
	{
		pg_cryptohash_free(ctx);
		return SSE_AUTH_UNKNOWN;
	}
	pg_cryptohash_free(ctx);

	/* Every key is compared, whatever matched before. */
	for (i = 0; i < current.nkeys; i++)
	{
		if (timingsafe_bcmp(current.keys[i].sha256, digest, sizeof(digest)) == 0)
			found = i;
	}
	if (found < 0)
		return SSE_AUTH_UNKNOWN;
	if (!current.keys[found].console)
		return SSE_AUTH_WRONG_ROLE;
	*entity_out = pstrdup(current.keys[found].entity_id);
	return SSE_AUTH_OK;
}
