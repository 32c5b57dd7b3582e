/*-------------------------------------------------------------------------
 * auth.h
 *	  Ingest and console keys as the network workers see them: a copy of
 *	  machpay.ingest_keys cached in the worker, looked up by the SHA-256 of
 *	  the bearer token, refreshed when a key is created or revoked.
 *
 * A *key* is one row of machpay.ingest_keys; the token itself is never
 * stored, only its hash.  The cache is refreshed when the shared counter
 * auth_key_changes moves (a trigger on the table bumps it), so a revocation
 * takes effect within a second without a query per request.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_AUTH_H
#define MACHPAY_AUTH_H

typedef enum AuthRole
{
	AUTH_ROLE_INGEST,
	AUTH_ROLE_CONSOLE,
} AuthRole;

typedef enum AuthResult
{
	AUTH_OK,
	AUTH_MISSING,				/* no Authorization: Bearer: 401 */
	AUTH_UNKNOWN,				/* unknown or revoked token: 401 */
	AUTH_WRONG_ROLE,			/* key of another role: 403 */
} AuthResult;

/*
 * Check a bearer token (not NUL-terminated) for a role.  On AUTH_OK,
 * *bound_entity is the key's entity, or NULL when the key is for any entity;
 * it points into the cache and is valid until the next auth_refresh().
 */
extern AuthResult auth_check(const char *token, size_t len, AuthRole role,
							 const char **bound_entity);

/*
 * Reload the cache if keys changed (or force it).  Opens a short
 * transaction: call it from the worker's loop, outside any transaction.
 * Returns false if the keys could not be read (extension missing).
 */
extern bool auth_refresh(bool force);

/* Keys in the cache (for tests and logs). */
extern int	auth_key_count(void);

#endif							/* MACHPAY_AUTH_H */
