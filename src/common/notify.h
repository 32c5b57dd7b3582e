/*-------------------------------------------------------------------------
 * notify.h
 *	  The one publisher on machpay_events, and the check the SSE relay makes
 *	  that a notification came from it.
 *
 * Any login may NOTIFY any channel, so the relay forwards only *signed*
 * notifications: the publisher appends ,"mac":"<hex>" to the JSON object,
 * an HMAC-SHA256 of the object without it, under a *notify key* made at
 * server start in shared memory (never stored, never shown to SQL).
 * A payload too large for one notification goes as *parts*
 * ({"type","part","parts","ref","chunk"}), each signed; the relay
 * reassembles them (src/sse/sse_events.c).
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_NOTIFY_H
#define MACHPAY_NOTIFY_H

/* NOTIFY refuses payloads of this many bytes or more. */
#define NOTIFY_PAYLOAD_LIMIT	8000
/* ,"mac":"<64 hex digits>"} replaces the closing brace of the object. */
#define NOTIFY_MAC_SUFFIX_LEN	(8 + 64 + 2)
/* Largest object sent whole (signed, it stays under the limit). */
#define NOTIFY_MAX_WHOLE		(NOTIFY_PAYLOAD_LIMIT - NOTIFY_MAC_SUFFIX_LEN)
/* Bytes of the payload per part (base64 in the part's "chunk"). */
#define NOTIFY_PART_BYTES		5000

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
 * The relay's check: when a notification is signed with this server's key,
 * returns the object without its mac (palloc'd, *len set); else NULL.
 */
extern char *machpay_notify_verify(const char *notification, size_t *len);

#endif							/* MACHPAY_NOTIFY_H */
