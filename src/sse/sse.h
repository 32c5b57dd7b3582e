/*-------------------------------------------------------------------------
 * sse.h
 *	  The SSE relay: one background worker that LISTENs on machpay_events
 *	  and relays every notification to Server-Sent-Events clients.
 *
 * Words used by the relay: a *notification* is what NOTIFY delivers; a
 * *part* is one piece of a payload too large for NOTIFY (see schema/60_sse.sql);
 * an *event* here is one complete payload with its sequence number *seq*;
 * the *window* holds the latest events for Last-Event-ID replay; a *client*
 * is one open GET /v1/stream response.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_SSE_H
#define MACHPAY_SSE_H

/* h2o with its own event loop (libh2o-evloop), not libuv */
#ifndef H2O_USE_LIBUV
#define H2O_USE_LIBUV 0
#endif
#include <h2o.h>

/* Replay window: at most this many events and this many bytes. */
#define SSE_WINDOW_EVENTS		10000
#define SSE_WINDOW_MAX_BYTES	(64 * 1024 * 1024)

/* A client whose unsent backlog passes this is cut off. */
#define SSE_CLIENT_MAX_BACKLOG	(1024 * 1024)
/*
 * One write to a client references at most this many events and bytes
 * (no copy).  The relay takes at most SSE_RELAY_TURN_BYTES of new events
 * per loop turn, less than one write, so a client that reads as fast as
 * the loop turns never builds a backlog.
 */
#define SSE_CLIENT_WRITE_EVENTS	128
#define SSE_CLIENT_WRITE_CHUNK	(256 * 1024)
#define SSE_RELAY_TURN_BYTES	(128 * 1024)

/* Largest payload reassembled from parts (machpay.max_body_size's default). */
#define SSE_MAX_PAYLOAD			(8 * 1024 * 1024)

typedef struct SseEvent
{
	uint64		seq;
	uint64		offset;			/* bytes of wire text of all earlier events */
	char	   *type;			/* never NULL; "message" without a type */
	char	   *entity_id;		/* NULL when absent */
	char	   *gateway_id;
	char	   *agent_id;
	char	   *wire;			/* "id: ..\nevent: ..\ndata: ..\n\n" */
	size_t		wire_len;
	int			refcount;		/* writes in flight that reference it */
	bool		evicted;		/* left the window; freed at refcount 0 */
} SseEvent;

/* sse_events.c: the window and the payload protocol */
/* value of one hex digit, -1 if c is none (sse_keys.c) */
extern int	sse_hexval(char c);

extern void sse_window_init(uint64 first_seq);
extern uint64 sse_window_first_seq(void);
extern uint64 sse_window_next_seq(void);
extern uint64 sse_window_end_offset(void);
extern SseEvent *sse_window_get(uint64 seq);
extern void sse_event_release(SseEvent *ev);
extern size_t sse_relay_notification(const char *payload);
extern int64 sse_events_relayed(void);

/* sse_clients.c: HTTP handling and streaming */
extern void sse_clients_init(h2o_globalconf_t *config);
extern void sse_clients_wake(void);
extern void sse_clients_tick(uint64 now_ms);
extern int	sse_clients_count(void);

/* sse_keys.c: cache of console keys */
typedef enum SseAuthResult
{
	SSE_AUTH_OK,
	SSE_AUTH_MISSING,			/* no token presented: 401 */
	SSE_AUTH_UNKNOWN,			/* unknown or revoked: 401 */
	SSE_AUTH_WRONG_ROLE,		/* an ingest key: 403 */
	SSE_AUTH_NOT_LOADED			/* no key list read yet: 503 */
} SseAuthResult;

extern void sse_keys_begin_load(void);
extern void sse_keys_add(const char *sha256_hex, const char *role, const char *entity_id);
extern void sse_keys_end_load(void);
extern SseAuthResult sse_keys_check(const char *token, size_t len, char **entity_out);

/* sse_console.c: the page served at GET / */
extern const char *sse_console_page(size_t *len);

#endif							/* MACHPAY_SSE_H */
