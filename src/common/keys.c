/*-------------------------------------------------------------------------
 * keys.c
 *	  machpay.create_ingest_key() and machpay.revoke_ingest_key().
 *
 * A *token* is "mpk_" followed by 64 hex digits of pg_strong_random (256
 * random bits).  It is shown once; machpay.ingest_keys keeps only
 * sha256(token text), so whoever authenticates a request hashes the bearer
 * token the same way and looks the digest up.  A key is bound to one
 * entity id (or '*': any) and has a role: `ingest` (POST /v1/ingest) or
 * `console` (the SSE stream).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "common/base58.h"
#include "common/machpay.h"

PG_FUNCTION_INFO_V1(machpay_create_ingest_key);
PG_FUNCTION_INFO_V1(machpay_revoke_ingest_key);

#define TOKEN_PREFIX		"mpk_"
#define TOKEN_RANDOM_BYTES	32

static bytea *
token_sha256(const char *token, size_t len)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);
	bytea	   *digest = palloc(VARHDRSZ + PG_SHA256_DIGEST_LENGTH);

	SET_VARSIZE(digest, VARHDRSZ + PG_SHA256_DIGEST_LENGTH);
	if (pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) token, len) < 0 ||
		pg_cryptohash_final(ctx, (uint8 *) VARDATA(digest), PG_SHA256_DIGEST_LENGTH) < 0)
	{
		const char *err = pg_cryptohash_error(ctx);

		pg_cryptohash_free(ctx);
		elog(ERROR, "could not compute SHA-256: %s", err);
	}
	pg_cryptohash_free(ctx);
	return digest;
}

Datum
machpay_create_ingest_key(PG_FUNCTION_ARGS)
{
	char	   *entity = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *role = text_to_cstring(PG_GETARG_TEXT_PP(1));
	unsigned char rnd[TOKEN_RANDOM_BYTES];
	char		token[sizeof(TOKEN_PREFIX) + TOKEN_RANDOM_BYTES * 2];
	size_t		plen = strlen(TOKEN_PREFIX);
	Datum		args[3];
	Oid			argtypes[3] = {BYTEAOID, TEXTOID, TEXTOID};
	int			rc;

	if (strcmp(role, "ingest") != 0 && strcmp(role, "console") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid key role \"%s\"", role),
				 errhint("The role is \"ingest\" (POST /v1/ingest) or \"console\" (the event stream).")));
	if (strcmp(entity, "*") != 0 &&
		!base58_decode_exact(entity, strlen(entity), NULL, BASE58_ID_BYTES))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid entity id \"%s\"", entity),
				 errdetail("An entity id is base58 text of 32 bytes, or '*' for any entity.")));

	if (!pg_strong_random(rnd, sizeof(rnd)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random values")));
	memcpy(token, TOKEN_PREFIX, plen);
	hex_encode((const char *) rnd, sizeof(rnd), token + plen);
	token[plen + TOKEN_RANDOM_BYTES * 2] = '\0';

	args[0] = PointerGetDatum(token_sha256(token, strlen(token)));
	args[1] = CStringGetTextDatum(entity);
	args[2] = CStringGetTextDatum(role);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_with_args("INSERT INTO machpay.ingest_keys (token_sha256, entity_id, role)"
							   " VALUES ($1, $2, $3)",
							   3, argtypes, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "storing the key failed: %s", SPI_result_code_string(rc));
	SPI_finish();

	PG_RETURN_TEXT_P(cstring_to_text(token));
}

/* By key_id (digits) or by token; true when a live key was revoked. */
Datum
machpay_revoke_ingest_key(PG_FUNCTION_ARGS)
{
	char	   *arg = text_to_cstring(PG_GETARG_TEXT_PP(0));
	bool		by_id = (arg[0] != '\0');
	Datum		argv[1];
	Oid			argtypes[1];
	int			rc;
	bool		revoked;

	for (const char *p = arg; *p; p++)
		if (*p < '0' || *p > '9')
			by_id = false;
	if (by_id && strlen(arg) > 18)
		by_id = false;			/* not a bigint: cannot be a key id */

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (by_id)
	{
		argv[0] = Int64GetDatum(pg_strtoint64(arg));
		argtypes[0] = INT8OID;
		rc = SPI_execute_with_args("UPDATE machpay.ingest_keys SET revoked_at = now()"
								   " WHERE key_id = $1 AND revoked_at IS NULL",
								   1, argtypes, argv, NULL, false, 0);
	}
	else
	{
		argv[0] = PointerGetDatum(token_sha256(arg, strlen(arg)));
		argtypes[0] = BYTEAOID;
		rc = SPI_execute_with_args("UPDATE machpay.ingest_keys SET revoked_at = now()"
								   " WHERE token_sha256 = $1 AND revoked_at IS NULL",
								   1, argtypes, argv, NULL, false, 0);
	}
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "revoking the key failed: %s", SPI_result_code_string(rc));
	revoked = (SPI_processed > 0);
	SPI_finish();
	PG_RETURN_BOOL(revoked);
}
