/*-------------------------------------------------------------------------
 * auth.h
 *	  Ingest and console keys as the network workers see them: the one
 *	  cache of machpay.ingest_keys and the one bearer-token check, used by
 *	  the ingest server and the SSE relay alike.
 *
 * A *key* is one row of machpay.ingest_keys; the token itself is never
 * stored, only its SHA-256.  A key is *live* while revoked_at is NULL or
 * still in the future.  A *grant* is what a successful check returns: the
 * key's digest, role and entity, kept by whoever must re-check it later
 * (an open SSE stream).  The *generation* moves whenever the answer for
 * some grant may have changed (keys reloaded, a revoked_at passed).
 *
 * Freshness: a statement on machpay.ingest_keys bumps a shared counter
 * when its transaction commits; auth_refresh(), called once per loop turn,
 * reloads when the counter moved.  A check made while a reload is overdue
 * (the counter moved more than AUTH_STALE_MAX_MS ago and the keys could
 * not be read) answers AUTH_UNAVAILABLE: a revoked key is never honoured
 * from a cache that could not learn of its revocation.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_AUTH_H
#define MACHPAY_AUTH_H

#include "common/sha2.h"
#include "datatype/timestamp.h"

/* Longest entity id a key may be bound to (base58 of 32 bytes is 44). */
#define AUTH_ENTITY_MAX		64

typedef enum AuthRole
{
	AUTH_ROLE_INGEST,			/* POST /v1/ingest */
	AUTH_ROLE_CONSOLE,			/* GET /v1/stream */
} AuthRole;

typedef enum AuthResult
{
	AUTH_OK,
	AUTH_MISSING,				/* no bearer token: 401 */
	AUTH_UNKNOWN,				/* unknown, revoked or expired key: 401 */
	AUTH_WRONG_ROLE,			/* key of the other role: 403 */
	AUTH_UNAVAILABLE,			/* keys not loaded, or a reload overdue: 503 */
} AuthResult;

typedef struct AuthGrant
{
	uint8		digest[PG_SHA256_DIGEST_LENGTH];	/* SHA-256 of the token */
	AuthRole	role;
	bool		any_entity;		/* key for '*' */
	char		entity[AUTH_ENTITY_MAX + 1];	/* bound entity, "" if any */
} AuthGrant;

/*
 * Check the token of a request for a role.  header: the Authorization
 * header's value ("Bearer <token>"), or NULL; query_token: a token from
 * the query string (the relay's ?access_token=, for EventSource), or NULL;
 * the header wins when it carries a bearer token.  Neither needs a NUL.
 * On AUTH_OK *grant describes the key.  Never ereports: safe in network
 * callbacks.
 */
extern AuthResult auth_check_bearer(const char *header, size_t header_len,
									const char *query_token, size_t query_len,
									AuthRole role, AuthGrant *grant);

/* Is the key of an earlier grant still live?  AUTH_OK or why not. */
extern AuthResult auth_recheck(const AuthGrant *grant);

/* Moves whenever auth_recheck() may answer differently than before. */
extern uint64 auth_generation(void);

/*
 * Reload the cache when keys changed (or force it).  Opens a short
 * transaction: call it from the worker's loop, outside any transaction.
 * Returns false if the keys could not be read (extension missing).
 */
extern bool auth_refresh(bool force);

/* Keys in the cache (for tests and logs). */
extern int	auth_key_count(void);

#endif							/* MACHPAY_AUTH_H */
