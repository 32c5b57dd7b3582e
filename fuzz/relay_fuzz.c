/*-------------------------------------------------------------------------
 * relay_fuzz.c
 *	  libFuzzer harness for the SSE relay's notification path: the signed
 *	  publisher and its check (notify/notify.c), payload parsing, part
 *	  reassembly and the replay window (src/sse/sse_events.c), linked with
 *	  the backend stand-ins of relay_stubs.c.
 *
 * Input: byte 0 selects the mode, the rest is payloads separated by NUL
 * bytes (a notification cannot hold one).
 *	 bit 0: the payloads go to the relay as they are (unsigned: forged)
 *	 otherwise each is published with machpay_notify (signed, in parts
 *	 when large) and the queued notifications go to the relay:
 *	 bit 1: each then again (a replay) and with one byte changed (forged)
 *	 bit 2: the queue in reverse order (parts out of order)
 *	 bit 3: each payload also as a missed payment intent
 * After each notification the window is checked: every event whole, its
 * wire text one SSE event, the bytes reported equal to the bytes added;
 * a signed payload relayed as one event must come out as it went in.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "notify/notify.h"
#include "sse/sse.h"
#include "relay_stubs.h"

static void
check_event(SseEvent *ev, uint64 seq)
{
	const char *w;
	const char *data;

	if (ev == NULL || ev->seq != seq || ev->type == NULL || ev->wire_len < 8)
		abort();
	w = ev->wire;
	if (strncmp(w, "id: ", 4) != 0 || memcmp(w + ev->wire_len - 2, "\n\n", 2) != 0)
		abort();
	/* three lines and the blank one: id, event, data */
	data = strstr(w, "\ndata: ");
	if (data == NULL || strchr(data + 1, '\n') != w + ev->wire_len - 2)
		abort();
}

/* Relays one notification and checks what it added. */
static void
relay_one(const char *text)
{
	uint64		first = sse_window_next_seq();
	size_t		added = sse_relay_notification(text);
	size_t		wire = 0;

	for (uint64 seq = first; seq < sse_window_next_seq(); seq++)
	{
		SseEvent   *ev = sse_window_get(seq);

		check_event(ev, seq);
		wire += ev->wire_len;
	}
	if (wire != added)
		abort();
}

/* The payload relayed as the newest event, as it was published. */
static void
check_round_trip(const char *payload, size_t len)
{
	SseEvent   *ev = sse_window_get(sse_window_next_seq() - 1);
	const char *data = strstr(ev->wire, "\ndata: ") + 7;

	if ((size_t) (ev->wire + ev->wire_len - 2 - data) != len)
		abort();
	for (size_t i = 0; i < len; i++)
	{
		char		want = (payload[i] == '\n' || payload[i] == '\r') ? ' ' : payload[i];

		if (data[i] != want)
			abort();
	}
}

static void
take_queue(RelayNotification **list, bool reverse)
{
	RelayNotification *q = relay_queued;

	relay_queued = NULL;
	if (reverse)
	{
		RelayNotification *r = NULL;

		while (q)
		{
			RelayNotification *next = q->next;

			q->next = r;
			r = q;
			q = next;
		}
		q = r;
	}
	*list = q;
}

static void
free_list(RelayNotification *q)
{
	while (q)
	{
		RelayNotification *next = q->next;

		free(q->text);
		free(q);
		q = next;
	}
}

static void
publish_and_relay(const char *payload, size_t len, int mode)
{
	RelayNotification *q;
	uint64		before = sse_window_next_seq();
	bool		published = true;
	MemoryContext old = CurrentMemoryContext;

	PG_TRY();
	{
		(void) machpay_notify(payload, len, NULL);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		published = false;		/* not an object: refused */
	}
	PG_END_TRY();
	take_queue(&q, (mode & 4) != 0);
	if (!published && q != NULL)
		abort();
	for (RelayNotification *n = q; n; n = n->next)
		relay_one(n->text);
	/* one event out of a signed payload in order: the payload itself */
	if (published && !(mode & 4) && sse_window_next_seq() == before + 1 &&
		strstr(payload, "\"chunk\"") == NULL)
		check_round_trip(payload, len);
	if (mode & 2)
	{
		for (RelayNotification *n = q; n; n = n->next)
		{
			uint64		b = sse_window_next_seq();
			size_t		tlen = strlen(n->text);

			relay_one(n->text);
			if (sse_window_next_seq() != b)
				abort();		/* a replay was relayed */
			n->text[tlen / 2] ^= 1;
			if (n->text[tlen / 2] != '\0')
				relay_one(n->text);
		}
	}
	free_list(q);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool initialized = false;
	int			mode;
	char	   *buf;
	size_t		off = 0;

	if (!initialized)
	{
		relay_stubs_init();
		notify_shmem_init();
		initialized = true;
	}
	if (size < 1)
		return 0;
	mode = data[0];
	data++;
	size--;
	sse_window_init(1);

	buf = malloc(size + 1);
	memcpy(buf, data, size);
	buf[size] = '\0';
	while (off <= size)
	{
		char	   *piece = buf + off;
		size_t		len = strlen(piece);

		if (mode & 1)
			relay_one(piece);
		else
			publish_and_relay(piece, len, mode);
		if (mode & 8)
			sse_relay_missed_intent(piece);
		off += len + 1;
	}
	free(buf);
	relay_stubs_reset();
	return 0;
}
