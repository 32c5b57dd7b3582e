/*-------------------------------------------------------------------------
 * mapper.h
 *	  The event mapper: request bytes (or a jsonb value) in, validated rows
 *	  (request rows, see rowbuf.h) and per-event errors out.
 *
 * The mapper knows nothing of HTTP, tables or transactions: it needs no
 * database access, so the HTTP workers call it inside their event loop and
 * the fuzz harness links it alone.  All memory comes from the caller's
 * CurrentMemoryContext; callers reset that context per request.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_MAPPER_H
#define MACHPAY_MAPPER_H

#include "mapper/rowbuf.h"

/* Error codes of SPEC §4; the strings are the wire names. */
typedef enum MapErrorCode
{
	MAP_ERR_UNKNOWN_SOURCE,
	MAP_ERR_INVALID_ENTITY_ID,
	MAP_ERR_MISSING_FIELD,
	MAP_ERR_INVALID_TYPE,
	MAP_ERR_TIME_OUT_OF_RANGE,
	MAP_ERR_INVALID_AMOUNT,
	MAP_ERR_TOO_LARGE,
	MAP_ERR_ENTITY_NOT_ALLOWED,
} MapErrorCode;

extern const char *map_error_code_name(MapErrorCode code);

typedef struct MapOptions
{
	TimestampTz now;			/* receipt time: intents' created_at, time checks */
	int64		max_clock_skew_us;	/* how far ahead an event time may be */
	int64		metrics_retention_us;	/* older telemetry is time_out_of_range */
	int64		logs_retention_us;	/* older logs are time_out_of_range */
	const char *bound_entity;	/* key's entity; NULL or "*" = any */
	const char *remote_addr;	/* for dead letters; may be NULL */
	int			max_depth;		/* JSON nesting limit (64) */
	int			max_rows_per_event; /* 10,000 */
	int			max_label_bytes;	/* 256 */
	int			max_errors_listed;	/* 100 */
	bool		record_rejects; /* emit ROW_REJECT rows for rejected events */

	/*
	 * Caps per request (0 = none), checked as the walk goes so a request
	 * that passes one stops costing at once: events read, rows of accepted
	 * events, rejected events, and rows (dead letters included) per byte
	 * of the body as it came over the wire (body_bytes; 0 = not known).
	 */
	int			max_events;
	int64		max_rows;
	int			max_rejects;
	int			max_rows_per_body_byte;
	int64		body_bytes;
} MapOptions;

extern void map_options_init(MapOptions *opts, TimestampTz now);

typedef struct MapError
{
	int			index;			/* 0-based event index in the request */
	MapErrorCode code;
	char	   *message;
} MapError;

/*
 * Every status but MAP_OK refuses the whole request: result->rows is empty,
 * nothing of it is stored, and refusal_message says why.
 */
typedef enum MapStatus
{
	MAP_OK,						/* events were read (some may be rejected) */
	MAP_BAD_REQUEST,			/* not JSON/NDJSON or nesting > max_depth (400) */
	MAP_TOO_LARGE,				/* more events or rows than the caps allow (413) */
	MAP_TOO_MANY_REJECTS,		/* more rejected events than allowed (422) */
} MapStatus;

typedef struct MapResult
{
	MapStatus	status;
	char	   *refusal_message;	/* with any status but MAP_OK */
	int			accepted;		/* events accepted */
	int			rejected;		/* events rejected */
	int			nerrors;		/* errors listed (<= max_errors_listed) */
	MapError   *errors;
	int			nintents;		/* ROW_INTENT rows in rows */
	int64		nrows[ROW_KIND_MAX + 1];	/* rows by RowKind */
	int64		events_by_source[EVENT_SOURCE_COUNT];	/* accepted events */
	StringInfoData rows;		/* the request rows */
} MapResult;

/*
 * Body as sent over HTTP: one object, an array of objects, or NDJSON.  An
 * event's index is its array position, or for NDJSON the line's 0-based
 * position among non-empty lines (blank lines are not counted).  With
 * MAP_BAD_REQUEST, result->rows is empty and all counts are zero, and
 * refusal_message says why (the answer: ingest/ingest_response.h).
 */
extern void map_json_text(const char *body, size_t len, bool ndjson,
						  const MapOptions *opts, MapResult *result);

#ifndef FRONTEND
#include "utils/jsonb.h"
/* The same mapping from a jsonb value (machpay.ingest()). */
extern void map_jsonb(Jsonb *payload, const MapOptions *opts, MapResult *result);
#endif

/* A JSON string literal of len bytes of s, escaped as labels are. */
extern void map_json_string(StringInfo out, const char *s, size_t len);

/*
 * Reject accepted events after the mapping (map_reject.c): indexes sorted
 * ascending, messages[i] the message of indexes[i].  Every row of those
 * events leaves result->rows; counts, errors and dead letters follow.
 */
extern void map_reject_events(MapResult *result, const MapOptions *opts,
							  const int32 *indexes, int n, MapErrorCode code,
							  const char *const *messages);

#endif							/* MACHPAY_MAPPER_H */
