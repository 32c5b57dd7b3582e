/*-------------------------------------------------------------------------
 * fe_alloc.c
 *	  The palloc family for the mapper's frontend programs (fuzz harness,
 *	  print tool), backed by a per-input *arena* of tracked allocations.
 *
 * The mapper allocates from "the caller's memory context" and never frees
 * it; in the backend the caller resets that context per request.  Here the
 * arena plays that role: fe_arena_reset() after each input frees whatever
 * the mapper and PostgreSQL's JSON parser left, so nothing leaks across
 * iterations.  Every chunk is its own malloc, so AddressSanitizer sees
 * overruns and use-after-free exactly.  These definitions take precedence
 * over libpgcommon's fe_memutils (the link puts this object first).
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include "fe_alloc.h"

typedef struct Chunk
{
	struct Chunk *prev;
	struct Chunk *next;
	size_t		size;
	max_align_t align[];
} Chunk;

static Chunk arena = {&arena, &arena, 0};

#define CHUNK_OF(p) ((Chunk *) ((char *) (p) - offsetof(Chunk, align)))

static void *
arena_alloc(size_t size, bool zero)
{
	Chunk	   *c = malloc(sizeof(Chunk) + (size ? size : 1));

	if (c == NULL)
	{
		fprintf(stderr, "out of memory\n");
		abort();
	}
	c->size = size;
	c->next = arena.next;
	c->prev = &arena;
	arena.next->prev = c;
	arena.next = c;
	if (zero)
		memset(c->align, 0, size);
	return c->align;
}

void
fe_arena_reset(void)
{
	Chunk	   *c = arena.next;

	while (c != &arena)
	{
		Chunk	   *next = c->next;

		free(c);
		c = next;
	}
	arena.next = arena.prev = &arena;
}

void *
palloc(size_t size)
{
	return arena_alloc(size, false);
}

void *
palloc0(size_t size)
{
	return arena_alloc(size, true);
}

void *
palloc_extended(size_t size, int flags)
{
	return arena_alloc(size, (flags & MCXT_ALLOC_ZERO) != 0);
}

void
pfree(void *pointer)
{
	Chunk	   *c = CHUNK_OF(pointer);

	c->prev->next = c->next;
	c->next->prev = c->prev;
	free(c);
}

void *
repalloc(void *pointer, size_t size)
{
	Chunk	   *old = CHUNK_OF(pointer);
	void	   *p = arena_alloc(size, false);

	memcpy(p, pointer, Min(old->size, size));
	pfree(pointer);
	return p;
}

char *
pstrdup(const char *in)
{
	size_t		len = strlen(in);
	char	   *p = arena_alloc(len + 1, false);

	memcpy(p, in, len + 1);
	return p;
}

char *
pnstrdup(const char *in, Size size)
{
	size_t		len = strnlen(in, size);
	char	   *p = arena_alloc(len + 1, false);

	memcpy(p, in, len);
	p[len] = '\0';
	return p;
}
