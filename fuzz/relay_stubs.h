/*-------------------------------------------------------------------------
 * relay_stubs.h
 *	  The relay fuzz harness's stand-ins for backend services
 *	  (relay_stubs.c).
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_RELAY_STUBS_H
#define MACHPAY_RELAY_STUBS_H

#include "common/stats.h"

/* A notification queued by the publisher (Async_Notify), oldest first. */
typedef struct RelayNotification
{
	char	   *text;
	struct RelayNotification *next;
} RelayNotification;

extern RelayNotification *relay_queued;
extern int64 relay_stat_counts[STAT_COUNTER_COUNT];

extern void relay_stubs_init(void);
/* Frees every memory context's chunks and every context but the top one. */
extern void relay_stubs_reset(void);

#endif							/* MACHPAY_RELAY_STUBS_H */
