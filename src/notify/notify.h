/*-------------------------------------------------------------------------
 * notify.h
 *	  The one publisher on machpay_events, and the check the SSE relay makes
 *	  that a notification came from it.
 *
 * Any login may NOTIFY any channel, so the relay forwards only *signed*
 * notifications: the publisher appends ,"mac":"<hex>" to the JSON object.
 * The hex is the notification's *counter* (16 digits, from a shared
 * counter: each notification has its own) and an HMAC-SHA256 of the
 * counter and the object without the mac (64 digits), under a *notify key*
 * made at server start in shared memory (never stored, never shown to
 * SQL).  A login that LISTENs sees signed notifications and may send them
 * again; the counter lets the relay drop such a *replay*: it accepts each
 * counter once, within a window of the newest NOTIFY_REPLAY_WINDOW.
 * A payload too large for one notification goes as *parts*
 * ({"type","part","parts","ref","chunk"}), each signed; the relay
 * reassembles them (src/sse/sse_events.c).
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_NOTIFY_H
#define MACHPAY_NOTIFY_H

/* NOTIFY refuses payloads of this many bytes or more. */
#define NOTIFY_PAYLOAD_LIMIT	8000
/* ,"mac":"<16 + 64 hex digits>"} replaces the closing brace. */
#define NOTIFY_MAC_HEX_LEN		(16 + 64)
#define NOTIFY_MAC_SUFFIX_LEN	(8 + NOTIFY_MAC_HEX_LEN + 2)
/* Largest object sent whole (signed, it stays under the limit). */
#define NOTIFY_MAX_WHOLE		(NOTIFY_PAYLOAD_LIMIT - NOTIFY_MAC_SUFFIX_LEN)
/* Bytes of the payload per part (base64 in the part's "chunk"). */
#define NOTIFY_PART_BYTES		5000
/*
 * Counters the relay remembers: a notification committed after this many
 * newer ones were relayed is too old to tell from a replay and dropped.
 */
#define NOTIFY_REPLAY_WINDOW	(1024 * 1024)

/* What the relay's check makes of a notification. */
typedef enum NotifyCheck
{
	NOTIFY_SIGNED,				/* signed by this server, first time seen */
	NOTIFY_FORGED,				/* no valid signature */
	NOTIFY_REPLAYED				/* signed, but its counter was seen or is too old */
} NotifyCheck;

extern Size notify_shmem_size(void);
extern void notify_shmem_init(void);

/*
 * Queues a JSON object (text, len bytes) on machpay_events in the current
 * transaction, signed; in parts when it is too large for one notification.
 * type names the parts' "type" (NULL: "message").  Returns the number of
 * notifications queued.
 */
extern int	machpay_notify(const char *payload, size_t len, const char *type);

/*
 * Deferral, for a writer whose data transaction must not take PostgreSQL's
 * notify lock (PreCommit_Notify holds it to the end of the commit, WAL
 * flush included, so every notifying commit waits for the one before):
 * after machpay_notify_defer(), machpay_notify() collects the signed
 * notifications of the current transaction instead of queuing them.  An
 * abort forgets them; after the commit, machpay_notify_queue_deferred()
 * queues them in the caller's next transaction (one that writes no WAL
 * and so commits without a flush) and returns how many.
 */
extern void machpay_notify_defer(void);
extern bool machpay_notify_has_deferred(void);
extern int	machpay_notify_queue_deferred(void);

/*
 * The relay's check (one process only: it keeps the replay window): on
 * NOTIFY_SIGNED *obj gets the object without its mac (palloc'd), *len its
 * length.
 */
extern NotifyCheck machpay_notify_verify(const char *notification, char **obj, size_t *len);

#endif							/* MACHPAY_NOTIFY_H */
