/*-------------------------------------------------------------------------
 * stats.h
 *	  Receiver counters in shared memory: the source of /metrics and of the
 *	  machpay.stat_receiver view.
 *
 * Counters only ever grow (Prometheus counters); gauges are set.  Adding a
 * counter means adding it to the enum and to stats_names in stats.c.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_STATS_H
#define MACHPAY_STATS_H

typedef enum StatCounter
{
	STAT_CONFIG_UNKNOWN_GATEWAY,	/* config reports for gateways without a users row */
	STAT_CONFIG_UPDATES,			/* vendor_profiles rows changed */
	STAT_CONFIG_STALE,				/* config reports older than the stored one */
	STAT_ROWS_METRICS,
	STAT_ROWS_DEBUG_LOGS,
	STAT_ROWS_PAYMENT_INTENTS,
	STAT_ROWS_INGEST_REJECTS,
	STAT_INTENTS_DUPLICATE,
	STAT_EVENTS_ACCEPTED,
	STAT_EVENTS_REJECTED,
	STAT_COUNTER_COUNT
} StatCounter;

extern void stats_add(StatCounter counter, int64 n);
extern uint64 stats_get(StatCounter counter);
extern const char *stats_name(StatCounter counter);

#endif							/* MACHPAY_STATS_H */
