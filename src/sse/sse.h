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

#include "net/net.h"

/* Replay window: at most this many events and this many bytes. */
#define SSE_WINDOW_EVENTS		10000
#define SSE_WINDOW_MAX_BYTES	(64 * 1024 * 1024)

/* A client whose unsent backlog passes this is cut off. */
#define SSE_CLIENT_MAX_BACKLOG	(1024 * 1024)
/*
 * One write to a client copies at most this many events and bytes.  The
 * relay takes at most SSE_RELAY_TURN_BYTES of new events per loop turn,
 * less than one write, so a client that reads as fast as the loop turns
 * never builds a backlog.
 */
#define SSE_CLIENT_WRITE_EVENTS	128
#define SSE_CLIENT_WRITE_CHUNK	(256 * 1024)
#define SSE_RELAY_TURN_BYTES	(128 * 1024)

/* Largest payload reassembled from parts (machpay.max_body_size's default). */
#define SSE_MAX_PAYLOAD			(8 * 1024 * 1024)
/* Deepest nesting of a relayed payload (SPEC's limit for ingested JSON). */
#define SSE_MAX_JSON_DEPTH		64

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
	int			refcount;		/* holders besides the window */
	bool		evicted;		/* left the window; freed at refcount 0 */
} SseEvent;

/* sse_events.c: the window and the payload protocol */
/* value of one hex digit, -1 if c is none */
extern int	sse_hexval(char c);

extern void sse_window_init(uint64 first_seq);
extern uint64 sse_window_first_seq(void);
extern uint64 sse_window_next_seq(void);
extern uint64 sse_window_end_offset(void);
extern SseEvent *sse_window_get(uint64 seq);
extern void sse_event_release(SseEvent *ev);
extern size_t sse_relay_notification(const char *notification);
extern void sse_relay_missed_intent(const char *payload);
extern const char *sse_last_intent_created_at(void);
extern int64 sse_events_relayed(void);

/* sse_clients.c: HTTP handling and streaming; sse.c wakes the clients
 * after relaying new events into the window */
extern const NetHandler *sse_clients_init(void);
extern void sse_clients_wake(void);
extern void sse_clients_tick(uint64 now_ms);
extern void sse_clients_end_all(void);
/* Close the streams whose key is no longer live (keys: common/auth.h). */
extern void sse_clients_revalidate(void);
extern int	sse_clients_count(void);

/* sse_console.c: the page served at GET / */
extern const char *sse_console_page(size_t *len);

#endif							/* MACHPAY_SSE_H */
