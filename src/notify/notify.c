/*-------------------------------------------------------------------------
 * notify.c
 *	  Signed notifications on machpay_events (see notify.h): the publisher
 *	  every component uses, machpay.notify_event() for SQL, and the check
 *	  the SSE relay makes.
 *
 * The *notify key* is 32 random bytes made when shared memory is set up,
 * so it changes at every server start and no one can read it back.  A MAC
 * rather than checking the sender's backend pid: a pid lookup races with
 * short-lived backends (the sender may be gone, its pid reused, by the
 * time the relay reads the notification); a MAC does not.  The replay
 * window lives in shared memory too, so a restarted relay still refuses
 * what it relayed before.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "port/atomics.h"
#include "common/base64.h"
#include "common/hmac.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "common/machpay.h"
#include "notify/notify.h"

#define NOTIFY_KEY_BYTES	32
#define NOTIFY_MAC_BYTES	32
/* A part's type is cut to this many bytes: escaped, it still fits. */
#define NOTIFY_PART_TYPE_MAX	190

typedef struct NotifyShared
{
	uint8		key[NOTIFY_KEY_BYTES];
	pg_atomic_uint64 next_counter;	/* of the next notification */
	/* The relay's replay window: only the relay reads or writes these. */
	uint64		seen_high;		/* highest counter accepted, 0 before any */
	uint64		seen[NOTIFY_REPLAY_WINDOW / 64];	/* bit c % window: c accepted */
} NotifyShared;

static NotifyShared *notify_shared = NULL;

/*
 * Deferral (machpay_notify_defer): the signed notifications of the current
 * transaction, collected instead of queued; kept after its commit until
 * machpay_notify_queue_deferred(), forgotten on its abort.
 */
static bool deferring = false;
static List *deferred = NIL;
static MemoryContext deferred_cxt = NULL;

Size
notify_shmem_size(void)
{
	return MAXALIGN(sizeof(NotifyShared));
}

void
notify_shmem_init(void)
{
	bool		found;

	notify_shared = ShmemInitStruct("machpay_receiver notify key", notify_shmem_size(), &found);
	if (found)
		return;
	memset(notify_shared, 0, sizeof(NotifyShared));
	pg_atomic_init_u64(&notify_shared->next_counter, 1);
	if (!pg_strong_random(notify_shared->key, NOTIFY_KEY_BYTES))
		ereport(FATAL,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate the machpay_events notify key")));
}

/*
 * The mac of a notification: its counter as 16 hex digits, then the
 * HMAC-SHA256 under the notify key of the counter (8 bytes, big-endian)
 * and the object, as 64 hex digits.
 */
static void
notify_mac_hex(uint64 counter, const char *data, size_t len, char *hex)
{
	uint8		mac[NOTIFY_MAC_BYTES];
	uint8		cbytes[8];
	pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA256);

	for (int i = 0; i < 8; i++)
		cbytes[i] = (uint8) (counter >> (56 - 8 * i));
	if (ctx == NULL ||
		pg_hmac_init(ctx, notify_shared->key, NOTIFY_KEY_BYTES) < 0 ||
		pg_hmac_update(ctx, cbytes, sizeof(cbytes)) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) data, len) < 0 ||
		pg_hmac_final(ctx, mac, sizeof(mac)) < 0)
	{
		pg_hmac_free(ctx);
		elog(ERROR, "could not compute the MAC of a machpay_events notification");
	}
	pg_hmac_free(ctx);
	hex_encode((const char *) cbytes, sizeof(cbytes), hex);
	hex_encode((const char *) mac, sizeof(mac), hex + 2 * sizeof(cbytes));
	hex[NOTIFY_MAC_HEX_LEN] = '\0';
}

/* Queues one object of at most NOTIFY_MAX_WHOLE bytes, signed. */
static void
notify_signed(const char *obj, size_t len)
{
	StringInfoData buf;
	char		hex[NOTIFY_MAC_HEX_LEN + 1];

	Assert(len >= 2 && obj[0] == '{' && obj[len - 1] == '}');
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, obj, len - 1);
	if (notify_shared != NULL)
	{
		/* "{}" has no member to put a comma after. */
		bool		empty = (len == 2);

		notify_mac_hex(pg_atomic_fetch_add_u64(&notify_shared->next_counter, 1), obj, len, hex);
		appendStringInfo(&buf, "%s\"mac\":\"%s\"", empty ? "" : ",", hex);
	}
	appendStringInfoChar(&buf, '}');
	if (deferring)
		deferred = lappend(deferred, MemoryContextStrdup(deferred_cxt, buf.data));
	else
		Async_Notify(MACHPAY_NOTIFY_CHANNEL, buf.data);
	pfree(buf.data);
}

static void
forget_deferred(void)
{
	deferred = NIL;
	if (deferred_cxt != NULL)
		MemoryContextReset(deferred_cxt);
}

/* Deferral ends with the transaction; an abort forgets what it collected. */
static void
notify_defer_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			deferring = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			if (deferring)
				forget_deferred();
			deferring = false;
			break;
		default:
			break;
	}
}

void
machpay_notify_defer(void)
{
	if (deferred_cxt == NULL)
	{
		deferred_cxt = AllocSetContextCreate(TopMemoryContext,
											 "machpay deferred notifications",
											 ALLOCSET_SMALL_SIZES);
		RegisterXactCallback(notify_defer_xact_callback, NULL);
	}
	Assert(IsTransactionState());
	deferring = true;
}

int
machpay_notify_queue_deferred(void)
{
	ListCell   *lc;
	int			n = list_length(deferred);

	Assert(!deferring);
	foreach(lc, deferred)
		Async_Notify(MACHPAY_NOTIFY_CHANNEL, (const char *) lfirst(lc));
	forget_deferred();
	return n;
}

bool
machpay_notify_has_deferred(void)
{
	return deferred != NIL;
}

/* A random reference shared by the parts of one payload. */
static void
notify_part_ref(char *ref)
{
	uint8		raw[16];

	if (!pg_strong_random(raw, sizeof(raw)))
		elog(ERROR, "could not generate a random reference");
	hex_encode((const char *) raw, sizeof(raw), ref);
	ref[2 * sizeof(raw)] = '\0';
}

int
machpay_notify(const char *payload, size_t len, const char *type)
{
	StringInfoData part;
	char		ref[33];
	char	   *ptype;
	int			nparts;

	if (len < 2 || payload[0] != '{' || payload[len - 1] != '}')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a machpay_events payload must be a JSON object")));
	if (len <= NOTIFY_MAX_WHOLE)
	{
		notify_signed(payload, len);
		return 1;
	}
	type = type ? type : "message";
	ptype = pnstrdup(type, pg_mbcliplen(type, strlen(type), NOTIFY_PART_TYPE_MAX));
	nparts = (len + NOTIFY_PART_BYTES - 1) / NOTIFY_PART_BYTES;
	notify_part_ref(ref);
	initStringInfo(&part);
	for (int i = 0; i < nparts; i++)
	{
		size_t		off = (size_t) i * NOTIFY_PART_BYTES;
		int			n = Min(NOTIFY_PART_BYTES, len - off);
		int			enclen = pg_b64_enc_len(n);
		int			used;

		resetStringInfo(&part);
		appendStringInfoString(&part, "{\"type\":");
		escape_json(&part, ptype);
		appendStringInfo(&part, ",\"part\":%d,\"parts\":%d,\"ref\":\"%s\",\"chunk\":\"",
						 i + 1, nparts, ref);
		enlargeStringInfo(&part, enclen + 3);
		used = pg_b64_encode(payload + off, n, part.data + part.len, enclen);
		if (used < 0)
			elog(ERROR, "could not encode a part of a machpay_events payload");
		part.len += used;
		appendStringInfoString(&part, "\"}");
		notify_signed(part.data, part.len);
	}
	pfree(part.data);
	pfree(ptype);
	return nparts;
}

/*
 * Accepts counter once: true the first time a counter within the window is
 * seen.  Counters are handed out in order but notifications commit out of
 * order, so a window of bits rather than only the highest.
 */
static bool
notify_counter_first_seen(uint64 counter)
{
	uint64		high = notify_shared->seen_high;
	uint64	   *bits = notify_shared->seen;
	uint64		slot = counter % NOTIFY_REPLAY_WINDOW;

	if (counter > high)
	{
		/* Slots of the counters the window leaves behind are free again. */
		if (counter - high >= NOTIFY_REPLAY_WINDOW)
			memset(bits, 0, sizeof(notify_shared->seen));
		else
			for (uint64 c = high + 1; c <= counter; c++)
				bits[(c % NOTIFY_REPLAY_WINDOW) / 64] &= ~(UINT64CONST(1) << (c % 64));
		notify_shared->seen_high = counter;
	}
	else if (high - counter >= NOTIFY_REPLAY_WINDOW)
		return false;
	else if (bits[slot / 64] & (UINT64CONST(1) << (slot % 64)))
		return false;
	bits[slot / 64] |= UINT64CONST(1) << (slot % 64);
	return true;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

NotifyCheck
machpay_notify_verify(const char *notification, char **obj_out, size_t *len)
{
	const char *mac;
	size_t		olen;
	char	   *obj;
	char		hex[NOTIFY_MAC_HEX_LEN + 1];
	uint64		counter = 0;
	int			diff = 0;

	if (notify_shared == NULL)
		return NOTIFY_FORGED;
	olen = strlen(notification);
	if (olen < NOTIFY_MAC_SUFFIX_LEN || notification[0] != '{')
		return NOTIFY_FORGED;
	mac = notification + olen - NOTIFY_MAC_SUFFIX_LEN;
	/* ,"mac":"<hex>"}  or, for an empty object, {"mac":"<hex>"} */
	if (memcmp(mac, ",\"mac\":\"", 8) == 0)
		olen = mac - notification;
	else if (olen == NOTIFY_MAC_SUFFIX_LEN && memcmp(notification, "{\"mac\":\"", 8) == 0)
		olen = 1;
	else
		return NOTIFY_FORGED;
	mac += 8;
	if (memcmp(mac + NOTIFY_MAC_HEX_LEN, "\"}", 2) != 0)
		return NOTIFY_FORGED;
	for (int i = 0; i < 16; i++)
	{
		int			v = hexval(mac[i]);

		if (v < 0)
			return NOTIFY_FORGED;
		counter = (counter << 4) | v;
	}
	obj = palloc(olen + 2);
	memcpy(obj, notification, olen);
	obj[olen] = '}';
	obj[olen + 1] = '\0';
	notify_mac_hex(counter, obj, olen + 1, hex);
	/* Constant time: a forger learns nothing from how fast it fails. */
	for (int i = 16; i < NOTIFY_MAC_HEX_LEN; i++)
		diff |= hex[i] ^ mac[i];
	if (diff != 0)
	{
		pfree(obj);
		return NOTIFY_FORGED;
	}
	if (!notify_counter_first_seen(counter))
	{
		pfree(obj);
		return NOTIFY_REPLAYED;
	}
	*obj_out = obj;
	*len = olen + 1;
	return NOTIFY_SIGNED;
}

PG_FUNCTION_INFO_V1(machpay_notify_event);

/*
 * machpay.notify_event(payload jsonb) → integer: publish a JSON object on
 * machpay_events; returns the number of notifications sent (0 for NULL).
 */
Datum
machpay_notify_event(PG_FUNCTION_ARGS)
{
	Jsonb	   *payload;
	JsonbValue *type;
	char	   *text;
	char	   *tname = NULL;

	if (PG_ARGISNULL(0))
		PG_RETURN_INT32(0);
	payload = PG_GETARG_JSONB_P(0);
	if (!JB_ROOT_IS_OBJECT(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a machpay_events payload must be a JSON object")));
	type = getKeyJsonValueFromContainer(&payload->root, "type", 4, NULL);
	if (type != NULL && type->type == jbvString)
		tname = pnstrdup(type->val.string.val, type->val.string.len);
	text = JsonbToCString(NULL, &payload->root, VARSIZE(payload));
	PG_RETURN_INT32(machpay_notify(text, strlen(text), tname));
}
