/*-------------------------------------------------------------------------
 * relay_stubs.c
 *	  The backend's services that the relay's notification code
 *	  (sse_events.c, notify/notify.c) uses, made small for the relay fuzz
 *	  harness: memory contexts, ereport, a hash table, time, shared memory,
 *	  NOTIFY, the statistics counters.
 *
 * Memory contexts are lists of malloc'ed chunks, so AddressSanitizer sees
 * every overrun and use-after-free, and relay_stubs_reset() frees every
 * context after each input.  ereport at ERROR jumps to the innermost
 * PG_TRY, as in the backend; below ERROR it prints nothing.  Async_Notify
 * collects what the publisher queues, for the harness to hand to the
 * relay.  What the relay never calls aborts.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "nodes/pg_list.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "nodes/memnodes.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "common/stats.h"
#include "relay_stubs.h"

/* ---- memory contexts ---- */

typedef struct StubChunk
{
	struct StubChunk *prev;
	struct StubChunk *next;
	struct StubContext *owner;
	size_t		size;
	max_align_t align[];
} StubChunk;

typedef struct StubContext
{
	MemoryContextData base;
	StubChunk  *first;			/* its chunks, newest first */
	struct StubContext *next_cxt;	/* every context but the top one */
} StubContext;

#define CHUNK_OF(p) ((StubChunk *) ((char *) (p) - offsetof(StubChunk, align)))

static StubContext top_cxt;
static StubContext *all_cxts = NULL;

MemoryContext TopMemoryContext = NULL;
MemoryContext CurrentMemoryContext = NULL;
MemoryContext ErrorContext = NULL;

static void
cxt_init(StubContext *c, const char *name)
{
	memset(c, 0, sizeof(*c));
	c->base.type = T_AllocSetContext;
	c->base.name = name;
}

static void
cxt_free_chunks(StubContext *c)
{
	StubChunk  *ch = c->first;

	while (ch != NULL)
	{
		StubChunk  *next = ch->next;

		free(ch);
		ch = next;
	}
	c->first = NULL;
}

void
relay_stubs_init(void)
{
	cxt_init(&top_cxt, "TopMemoryContext");
	TopMemoryContext = CurrentMemoryContext = ErrorContext = &top_cxt.base;
}

void
relay_stubs_reset(void)
{
	while (all_cxts)
	{
		StubContext *c = all_cxts;

		all_cxts = c->next_cxt;
		cxt_free_chunks(c);
		free(c);
	}
	cxt_free_chunks(&top_cxt);
	CurrentMemoryContext = TopMemoryContext;
}

MemoryContext
AllocSetContextCreateInternal(MemoryContext parent, const char *name,
							  Size minContextSize, Size initBlockSize, Size maxBlockSize)
{
	StubContext *c = malloc(sizeof(StubContext));

	if (c == NULL)
		abort();
	cxt_init(c, name);
	c->base.parent = parent;
	c->next_cxt = all_cxts;
	all_cxts = c;
	return &c->base;
}

void
MemoryContextDelete(MemoryContext context)
{
	StubContext **pp;

	for (pp = &all_cxts; *pp; pp = &(*pp)->next_cxt)
	{
		if (&(*pp)->base == context)
		{
			StubContext *c = *pp;

			*pp = c->next_cxt;
			cxt_free_chunks(c);
			free(c);
			return;
		}
	}
	abort();					/* not a context of ours, or deleted twice */
}

void
MemoryContextReset(MemoryContext context)
{
	cxt_free_chunks((StubContext *) context);
}

static void *
chunk_alloc(MemoryContext context, Size size, bool zero)
{
	StubContext *c = (StubContext *) context;
	StubChunk  *ch;

	if (size > MaxAllocHugeSize)
		elog(ERROR, "invalid memory alloc request size %zu", (size_t) size);
	ch = malloc(sizeof(StubChunk) + (size ? size : 1));
	if (ch == NULL)
		abort();
	ch->owner = c;
	ch->size = size;
	ch->prev = NULL;
	ch->next = c->first;
	if (c->first)
		c->first->prev = ch;
	c->first = ch;
	if (zero)
		memset(ch->align, 0, size);
	return ch->align;
}

void *
MemoryContextAlloc(MemoryContext context, Size size)
{
	return chunk_alloc(context, size, false);
}

void *
MemoryContextAllocZero(MemoryContext context, Size size)
{
	return chunk_alloc(context, size, true);
}

void *
MemoryContextAllocExtended(MemoryContext context, Size size, int flags)
{
	return chunk_alloc(context, size, (flags & MCXT_ALLOC_ZERO) != 0);
}

void *
palloc(Size size)
{
	return chunk_alloc(CurrentMemoryContext, size, false);
}

void *
palloc0(Size size)
{
	return chunk_alloc(CurrentMemoryContext, size, true);
}

void *
palloc_extended(Size size, int flags)
{
	return chunk_alloc(CurrentMemoryContext, size, (flags & MCXT_ALLOC_ZERO) != 0);
}

void
pfree(void *pointer)
{
	StubChunk  *ch = CHUNK_OF(pointer);

	if (ch->prev)
		ch->prev->next = ch->next;
	else
		ch->owner->first = ch->next;
	if (ch->next)
		ch->next->prev = ch->prev;
	free(ch);
}

void *
repalloc(void *pointer, Size size)
{
	StubChunk  *old = CHUNK_OF(pointer);
	void	   *n = chunk_alloc(&old->owner->base, size, false);

	memcpy(n, pointer, Min(size, old->size));
	pfree(pointer);
	return n;
}

char *
MemoryContextStrdup(MemoryContext context, const char *string)
{
	size_t		len = strlen(string) + 1;
	char	   *n = chunk_alloc(context, len, false);

	memcpy(n, string, len);
	return n;
}

char *
pstrdup(const char *in)
{
	return MemoryContextStrdup(CurrentMemoryContext, in);
}

char *
pnstrdup(const char *in, Size len)
{
	char	   *n;

	len = strnlen(in, len);
	n = palloc(len + 1);
	memcpy(n, in, len);
	n[len] = '\0';
	return n;
}

/* ---- errors ---- */

sigjmp_buf *PG_exception_stack = NULL;
ErrorContextCallback *error_context_stack = NULL;
static int	error_level;
static int	errors_thrown;

bool
errstart(int elevel, const char *domain)
{
	error_level = elevel;
	return elevel >= ERROR;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	if (error_level >= ERROR)
	{
		errors_thrown++;
		if (PG_exception_stack == NULL || error_level > ERROR)
			abort();
		siglongjmp(*PG_exception_stack, 1);
	}
}

int
errcode(int sqlerrcode)
{
	return 0;
}

int
errmsg(const char *fmt,...)
{
	return 0;
}

int
errmsg_internal(const char *fmt,...)
{
	return 0;
}

int
errdetail(const char *fmt,...)
{
	return 0;
}

int
errhint(const char *fmt,...)
{
	return 0;
}

void
EmitErrorReport(void)
{
}

void
FlushErrorState(void)
{
}

void
pg_re_throw(void)
{
	if (PG_exception_stack == NULL)
		abort();
	siglongjmp(*PG_exception_stack, 1);
}

/* ---- a hash table of fixed-size string keys (all the relay needs) ---- */

typedef struct StubHash
{
	Size		keysize;
	Size		entrysize;
	int			nbuckets;
	struct StubEntry **buckets;
} StubHash;

typedef struct StubEntry
{
	struct StubEntry *next;
	max_align_t align[];
} StubEntry;

static void
stub_hash_free(HTAB *hashp)
{
	StubHash   *h = (StubHash *) hashp;

	if (h == NULL)
		return;
	for (int i = 0; i < h->nbuckets; i++)
		while (h->buckets[i])
		{
			StubEntry  *e = h->buckets[i];

			h->buckets[i] = e->next;
			free(e);
		}
	free(h->buckets);
	free(h);
}

/* The relay makes one table, again at each window init: the old one goes. */
static StubHash *last_hash = NULL;

HTAB *
hash_create(const char *tabname, long nelem, const HASHCTL *info, int flags)
{
	StubHash   *h = calloc(1, sizeof(StubHash));

	if (h == NULL || !(flags & HASH_STRINGS))
		abort();
	h->keysize = info->keysize;
	h->entrysize = info->entrysize;
	h->nbuckets = 4096;
	h->buckets = calloc(h->nbuckets, sizeof(StubEntry *));
	stub_hash_free((HTAB *) last_hash);
	last_hash = h;
	return (HTAB *) h;
}

static uint32
hash_key(StubHash *h, const char *key)
{
	uint32		v = 2166136261u;

	for (size_t i = 0; i < h->keysize && key[i]; i++)
		v = (v ^ (unsigned char) key[i]) * 16777619u;
	return v % h->nbuckets;
}

void *
hash_search(HTAB *hashp, const void *keyPtr, HASHACTION action, bool *foundPtr)
{
	StubHash   *h = (StubHash *) hashp;
	StubEntry **pp = &h->buckets[hash_key(h, keyPtr)];

	for (; *pp; pp = &(*pp)->next)
	{
		if (strncmp((char *) (*pp)->align, keyPtr, h->keysize - 1) == 0)
		{
			StubEntry  *e = *pp;

			if (foundPtr)
				*foundPtr = true;
			if (action == HASH_REMOVE)
			{
				*pp = e->next;
				free(e);
				return (void *) 1;	/* callers only test for NULL */
			}
			return e->align;
		}
	}
	if (foundPtr)
		*foundPtr = false;
	if (action == HASH_ENTER)
	{
		StubEntry  *e = calloc(1, sizeof(StubEntry) + h->entrysize);

		strlcpy((char *) e->align, keyPtr, h->keysize);
		e->next = NULL;
		*pp = e;
		return e->align;
	}
	return NULL;
}

/* ---- time, statistics, the clients ---- */

static TimestampTz stub_now = 0;

TimestampTz
GetCurrentTimestamp(void)
{
	return stub_now += USECS_PER_SEC;
}

bool
TimestampDifferenceExceeds(TimestampTz start_time, TimestampTz stop_time, int msec)
{
	return stop_time - start_time >= (TimestampTz) msec * 1000;
}

int64		relay_stat_counts[STAT_COUNTER_COUNT];

void
stats_add(StatCounter counter, int64 n)
{
	if ((int) counter < 0 || (int) counter >= STAT_COUNTER_COUNT)
		abort();
	relay_stat_counts[counter] += n;
}

const char *
stats_name(StatCounter counter)
{
	return "counter";
}

void
sse_clients_wake(void)
{
}

/* ---- shared memory and NOTIFY, for notify/notify.c ---- */

static void *shmem_block = NULL;

void *
ShmemInitStruct(const char *name, Size size, bool *foundPtr)
{
	*foundPtr = shmem_block != NULL;
	if (shmem_block == NULL)
		shmem_block = calloc(1, size);
	return shmem_block;
}

/*
 * Deferred notifications (machpay_notify_defer(), a telemetry writer's)
 * are never asked for by the harness: their list and transaction callback
 * only have to link.
 */
void
RegisterXactCallback(XactCallback callback, void *arg)
{
}

List *
lappend(List *list, void *datum)
{
	abort();					/* only after machpay_notify_defer() */
}

RelayNotification *relay_queued = NULL;

void
Async_Notify(const char *channel, const char *payload)
{
	RelayNotification *n = malloc(sizeof(RelayNotification));

	n->text = strdup(payload);
	n->next = NULL;
	/* in order: the relay reassembles parts in the order they were sent */
	{
		RelayNotification **pp = &relay_queued;

		while (*pp)
			pp = &(*pp)->next;
		*pp = n;
	}
}

uint64
hex_encode(const char *src, size_t len, char *dst)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++)
	{
		*dst++ = hex[(unsigned char) src[i] >> 4];
		*dst++ = hex[(unsigned char) src[i] & 15];
	}
	return len * 2;
}

/* The part's type is escaped as a JSON string (what escape_json makes). */
void
escape_json(StringInfo buf, const char *str)
{
	appendStringInfoChar(buf, '"');
	for (const char *p = str; *p; p++)
	{
		unsigned char c = *p;

		if (c == '"' || c == '\\')
			appendStringInfo(buf, "\\%c", c);
		else if (c < 0x20)
			appendStringInfo(buf, "\\u%04x", c);
		else
			appendStringInfoChar(buf, c);
	}
	appendStringInfoChar(buf, '"');
}

/* Cut at a character boundary of UTF-8 text, like pg_mbcliplen. */
int
pg_mbcliplen(const char *mbstr, int len, int limit)
{
	if (len <= limit)
		return len;
	while (limit > 0 && ((unsigned char) mbstr[limit] & 0xC0) == 0x80)
		limit--;
	return limit;
}

int
GetDatabaseEncoding(void)
{
	return PG_UTF8;
}

/* SQL-callable parts of notify.c, never reached by the harness. */
struct varlena *
pg_detoast_datum(struct varlena *datum)
{
	abort();
}

JsonbValue *
getKeyJsonValueFromContainer(JsonbContainer *container, const char *keyVal, int keyLen,
							 JsonbValue *res)
{
	abort();
}

char *
JsonbToCString(StringInfo out, JsonbContainer *in, int estimated_len)
{
	abort();
}
