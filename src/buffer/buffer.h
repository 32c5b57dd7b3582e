/*-------------------------------------------------------------------------
 * buffer.h
 *	  The shared-memory buffer between the ingest workers (producers) and the
 *	  flusher (consumer): row batches, whole requests at a time.
 *
 * An *entry* is the row batch of one request.  A request is buffered whole
 * or not at all.  Requests that carry payment intents get a *ticket*: the
 * flusher posts the intents' outcomes (ids, duplicate flags) to it after the
 * commit and sets the producer's latch; the producer polls it.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_BUFFER_H
#define MACHPAY_BUFFER_H

#include "mapper/mapper.h"

typedef enum BufferPutStatus
{
	BUFFER_PUT_OK,
	BUFFER_PUT_FULL,			/* no room now: 429 + Retry-After */
	BUFFER_PUT_UNAVAILABLE,		/* no flusher / shutting down: 503 */
} BufferPutStatus;

/* Room for a request of some size, decided before its body is parsed. */
typedef enum BufferRoom
{
	BUFFER_ROOM_NONE,			/* 429 */
	BUFFER_ROOM_INTENTS_ONLY,	/* only a request with payment intents fits */
	BUFFER_ROOM_ANY,
} BufferRoom;

typedef enum TicketState
{
	TICKET_PENDING,				/* not committed yet */
	TICKET_COMMITTED,			/* outcomes available */
	TICKET_FAILED,				/* could not be committed: 503 */
} TicketState;

typedef struct BufferTicket
{
	int			slot;			/* ticket slot in shared memory */
	uint64		generation;		/* guards against slot reuse */
} BufferTicket;

/* Producer side (ingest workers). */
extern bool buffer_available(void);	/* in shared_preload_libraries */
extern bool buffer_accepting(void);	/* a flusher is attached, not shutting down */
extern bool buffer_has_room(Size bytes);	/* cheap pre-check before parsing */
extern BufferRoom buffer_room(Size bytes);	/* the same, intents-aware */
extern BufferPutStatus buffer_put(const MapResult *result, BufferTicket *ticket);
extern TicketState buffer_ticket_poll(const BufferTicket *ticket,
									  IntentOutcome *outcomes, int noutcomes);
extern void buffer_ticket_release(const BufferTicket *ticket);

/* Gauges for /metrics. */
extern Size buffer_bytes_used(void);
extern Size buffer_capacity(void);
extern int	buffer_intents_waiting(void);

#endif							/* MACHPAY_BUFFER_H */
