/*-------------------------------------------------------------------------
 * fe_alloc.h
 *	  Per-input arena behind palloc in the mapper's frontend programs.
 *-------------------------------------------------------------------------
 */
#ifndef MACHPAY_FE_ALLOC_H
#define MACHPAY_FE_ALLOC_H

/* Free everything palloc'd since the last reset. */
extern void fe_arena_reset(void);

#endif							/* MACHPAY_FE_ALLOC_H */
