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
	STAT_SERIES_REMOVALS,			/* commits that removed metric_series rows: caches start over */
	STAT_ROWS_SERIES_LIMIT,			/* metric rows dropped: new series past max_series_per_entity */
	STAT_EVENTS_SERIES_LIMIT,		/* events rejected at admission: new series past max_series_per_entity */
	STAT_EVENTS_ACCEPTED,
	STAT_EVENTS_REJECTED,
	/* flusher (flusher.c, buffer.c) */
	STAT_FLUSHES,					/* committed flushes */
	STAT_FLUSH_FAILURES,			/* flush attempts that rolled back */
	STAT_FLUSH_EVENTS,				/* events committed by the flusher */
	STAT_EVENTS_DROPPED,			/* telemetry given up after the retry window */
	STAT_INTENTS_FAILED,			/* intents answered 503: not committed in time */
	STAT_FLUSH_DURATION_LE_1MS,		/* histogram, cumulative (Prometheus le) */
	STAT_FLUSH_DURATION_LE_5MS,
	STAT_FLUSH_DURATION_LE_10MS,
	STAT_FLUSH_DURATION_LE_50MS,
	STAT_FLUSH_DURATION_LE_100MS,
	STAT_FLUSH_DURATION_LE_500MS,
	STAT_FLUSH_DURATION_LE_1000MS,
	STAT_FLUSH_DURATION_LE_INF,
	STAT_FLUSH_DURATION_SUM_US,		/* histogram sum, microseconds */
	/* ingest workers (http*.c, auth.c) */
	STAT_AUTH_KEY_CHANGES,			/* DML on machpay.ingest_keys: workers reload keys */
	STAT_HTTP_REQUESTS_200,			/* answers by status: http_requests_NNN */
	STAT_HTTP_REQUESTS_202,
	STAT_HTTP_REQUESTS_400,
	STAT_HTTP_REQUESTS_401,
	STAT_HTTP_REQUESTS_403,
	STAT_HTTP_REQUESTS_404,
	STAT_HTTP_REQUESTS_405,
	STAT_HTTP_REQUESTS_408,
	STAT_HTTP_REQUESTS_411,
	STAT_HTTP_REQUESTS_413,
	STAT_HTTP_REQUESTS_415,
	STAT_HTTP_REQUESTS_422,
	STAT_HTTP_REQUESTS_429,
	STAT_HTTP_REQUESTS_500,
	STAT_HTTP_REQUESTS_503,
	STAT_HTTP_REQUESTS_OTHER,
	STAT_HTTP_EVENTS_ACCEPTED_GATEWAY,	/* events buffered, by source */
	STAT_HTTP_EVENTS_ACCEPTED_SDK,
	STAT_HTTP_EVENTS_ACCEPTED_PAYMENT_INTENT,
	STAT_HTTP_EVENTS_ACCEPTED_LOG,
	STAT_HTTP_EVENTS_REJECTED,		/* events rejected by validation */
	STAT_HTTP_EVENTS_REFUSED,		/* events of requests answered 429/503 */
	STAT_HTTP_BODIES_DEFERRED,		/* telemetry bodies mapped in a later turn */
	STAT_HTTP_CLOSES_PEER,			/* connections closed, by cause (net_loop.c) */
	STAT_HTTP_CLOSES_CLIENT_ASKED,
	STAT_HTTP_CLOSES_IDLE,
	STAT_HTTP_CLOSES_HEADER_TIMEOUT,
	STAT_HTTP_CLOSES_BODY_TIMEOUT,
	STAT_HTTP_CLOSES_WRITE_STALL,
	STAT_HTTP_CLOSES_REFUSED_BODY,
	STAT_HTTP_CLOSES_PROTOCOL_ERROR,
	STAT_HTTP_CLOSES_ABUSE,
	STAT_HTTP_CLOSES_TLS,
	STAT_HTTP_CLOSES_ERROR,
	STAT_HTTP_CLOSES_SHUTDOWN,
	STAT_HTTP_CLOSES_CONNECTION_LIMIT,
	STAT_HTTP_CLOSES_OTHER,
	STAT_HTTP_WORKERS_READY,		/* gauge: ingest workers serving (http.c) */
	/* SSE relay (sse_events.c) */
	STAT_SSE_NOTIFICATIONS_FORGED,	/* not signed by the receiver: dropped */
	STAT_SSE_NOTIFICATIONS_REPLAYED,	/* signed, sent again: dropped */
	STAT_SSE_NOTIFICATIONS_INVALID, /* signed but not relayable (bad JSON, too deep): dropped */
	STAT_SSE_INTENTS_REPLAYED,		/* payment_intent events read back after a reconnect */
	/* jobs (partman_guard.c) */
	STAT_PARTMAN_CALLS_REFUSED,		/* pg_partman's schema was not safe: not called */
	STAT_COUNTER_COUNT
} StatCounter;

extern void stats_add(StatCounter counter, int64 n);
extern uint64 stats_get(StatCounter counter);
extern const char *stats_name(StatCounter counter);

#endif							/* MACHPAY_STATS_H */
