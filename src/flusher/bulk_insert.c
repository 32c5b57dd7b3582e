/*-------------------------------------------------------------------------
 * bulk_insert.c
 *	  Multi-row insertion into a partitioned table, done as COPY FROM does
 *	  it (see bulk_insert.h): no SQL text per row.
 *
 * The root table gets an EState with a one-entry range table and a
 * ModifyTableState stub, which is what ExecFindPartition needs to route a
 * row and open the leaf partition (indexes included).  Each leaf touched
 * gets a *part buffer* of slots; a full buffer is written with
 * table_multi_insert, then its index entries and AFTER ROW triggers follow
 * slot by slot.  Leaves with BEFORE/INSTEAD OF row triggers cannot be
 * multi-inserted (the trigger may change or swallow the row), so their rows
 * go one by one; foreign partitions are refused.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/tupconvert.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "executor/execPartition.h"
#include "executor/executor.h"
#include "executor/nodeModifyTable.h"
#include "nodes/makefuncs.h"
#if PG_VERSION_NUM >= 160000
#include "parser/parse_relation.h"
#endif
#include "storage/bufmgr.h"
#include "storage/smgr.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "flusher/bulk_insert.h"
#include "common/machpay.h"

/* As COPY FROM: bound a buffer by rows and by bytes, and the buffer count. */
#define BULK_MAX_SLOTS		1000
#define BULK_MAX_BYTES		65535
#define BULK_MAX_BUFFERS	32

typedef struct PartBuffer
{
	ResultRelInfo *rri;
	bool		use_multi;		/* false: row triggers, insert one by one */
	int			nused;
	Size		bytes;
	BulkInsertState bistate;
	TupleDesc	slotdesc;		/* unpinned copy shared by the slots */
	TupleTableSlot *slots[BULK_MAX_SLOTS];
	int32		event_index[BULK_MAX_SLOTS];
	BlockNumber *blocks_before; /* the leaf's, then each index's, at first use */
} PartBuffer;

struct BulkTarget
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *root_rri;
	ModifyTableState *mtstate;
	PartitionTupleRouting *proute;	/* NULL for a plain table */
	TupleTableSlot *root_slot;
	CommandId	cid;
	List	   *buffers;		/* PartBuffer * */
	PartBuffer *last;			/* most recently used: rows come in runs */
	int64		nrows;
	int32		cur_event_index;	/* for the error context */
};

/*
 * WAL pacing (bulk_insert_set_wal_step): a big batch leaves its WAL to be
 * flushed at or after its commit, and a payment intent committing meanwhile
 * flushes all of it first (WAL is flushed in order).  Having it flushed
 * every wal_step bytes keeps what an intent's commit finds unflushed to
 * about one step.
 */
static Size wal_step = 0;

void
bulk_insert_set_wal_step(Size bytes)
{
	wal_step = bytes;
}

static void
bulk_pace_wal(void)
{
	XLogRecPtr	flushed;

	if (wal_step == 0 || XactLastRecEnd == InvalidXLogRecPtr)
		return;
	flushed = GetFlushRecPtr(NULL);
	if (XactLastRecEnd <= flushed || XactLastRecEnd - flushed < wal_step)
		return;
	/*
	 * A batch that commits without waiting only wakes the WAL writer to
	 * flush in the background; one that waits for its commit flushes
	 * itself.
	 */
	if (synchronous_commit == SYNCHRONOUS_COMMIT_OFF)
		XLogSetAsyncXactLSN(XactLastRecEnd);
	else
		XLogFlush(XactLastRecEnd);
}

static void
bulk_error_callback(void *arg)
{
	BulkTarget *bt = (BulkTarget *) arg;

	errcontext("machpay writer: row of event %d into table \"%s\"",
			   bt->cur_event_index, RelationGetRelationName(bt->rel));
}

BulkTarget *
bulk_target_open(const char *relname)
{
	BulkTarget *bt = palloc0(sizeof(BulkTarget));
	Oid			nsp = get_namespace_oid(MACHPAY_SCHEMA, false);
	Oid			relid = get_relname_relid(relname, nsp);
	RangeTblEntry *rte;
	MemoryContext oldcxt;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s.%s\" does not exist", MACHPAY_SCHEMA, relname)));

	/* The executor expects the lock to be held already. */
	bt->rel = table_open(relid, RowExclusiveLock);
	bt->cid = GetCurrentCommandId(true);
	bt->estate = CreateExecutorState();
	oldcxt = MemoryContextSwitchTo(bt->estate->es_query_cxt);

	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = relid;
	rte->relkind = bt->rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
#if PG_VERSION_NUM < 160000
	rte->requiredPerms = ACL_INSERT;
	ExecInitRangeTable(bt->estate, list_make1(rte));
#else
	{
		/*
		 * From 16 the permissions live beside the range table; an RTE with
		 * no perminfoindex fails as soon as an error message wants the
		 * inserted columns (a CHECK constraint that refuses a row).
		 */
		List	   *perminfos = NIL;
		RTEPermissionInfo *perminfo = addRTEPermissionInfo(&perminfos, rte);

		perminfo->requiredPerms = ACL_INSERT;
#if PG_VERSION_NUM < 180000
		ExecInitRangeTable(bt->estate, list_make1(rte), perminfos);
#else
		ExecInitRangeTable(bt->estate, list_make1(rte), perminfos, bms_make_singleton(1));
#endif
	}
#endif
	bt->estate->es_output_cid = bt->cid;

	bt->root_rri = makeNode(ResultRelInfo);
	ExecInitResultRelation(bt->estate, bt->root_rri, 1);
#if PG_VERSION_NUM < 170000
	CheckValidResultRel(bt->root_rri, CMD_INSERT);
#elif PG_VERSION_NUM < 190000
	CheckValidResultRel(bt->root_rri, CMD_INSERT, NIL);
#else
	CheckValidResultRel(bt->root_rri, CMD_INSERT, ONCONFLICT_NONE, NIL);
#endif
	ExecOpenIndices(bt->root_rri, false);

	/* What ExecFindPartition/ExecInitPartitionInfo read of a ModifyTable. */
	bt->mtstate = makeNode(ModifyTableState);
	bt->mtstate->ps.plan = NULL;
	bt->mtstate->ps.state = bt->estate;
	bt->mtstate->operation = CMD_INSERT;
	bt->mtstate->mt_nrels = 1;
	bt->mtstate->resultRelInfo = bt->root_rri;
	bt->mtstate->rootResultRelInfo = bt->root_rri;

	if (bt->rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		bt->proute = ExecSetupPartitionTupleRouting(bt->estate, bt->rel);

	bt->root_slot = ExecInitExtraTupleSlot(bt->estate, RelationGetDescr(bt->rel),
										   &TTSOpsVirtual);

	AfterTriggerBeginQuery();
	ExecBSInsertTriggers(bt->estate, bt->root_rri);

	MemoryContextSwitchTo(oldcxt);
	return bt;
}

AttrNumber
bulk_target_attnum(BulkTarget *bt, const char *colname)
{
	TupleDesc	desc = RelationGetDescr(bt->rel);

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), colname) == 0)
			return att->attnum;
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("column \"%s\" of relation \"%s\" does not exist",
					colname, RelationGetRelationName(bt->rel))));
	return InvalidAttrNumber;	/* keep compiler quiet */
}

TupleTableSlot *
bulk_target_slot(BulkTarget *bt)
{
	TupleTableSlot *slot = bt->root_slot;

	ExecClearTuple(slot);
	for (int i = 0; i < slot->tts_tupleDescriptor->natts; i++)
	{
		slot->tts_values[i] = (Datum) 0;
		slot->tts_isnull[i] = true;
	}
	return slot;
}

/* Index entries and AFTER ROW triggers of a slot already in the heap. */
static void
bulk_after_insert(BulkTarget *bt, ResultRelInfo *rri, TupleTableSlot *slot)
{
	List	   *recheck = NIL;

	if (rri->ri_NumIndices > 0)
#if PG_VERSION_NUM < 160000
		recheck = ExecInsertIndexTuples(rri, slot, bt->estate, false, false,
										NULL, NIL);
#else
		recheck = ExecInsertIndexTuples(rri, slot, bt->estate, false, false,
										NULL, NIL, false);
#endif
	if (rri->ri_TrigDesc && rri->ri_TrigDesc->trig_insert_after_row)
		ExecARInsertTriggers(bt->estate, rri, slot, recheck, NULL);
	list_free(recheck);
}

static void
bulk_flush_buffer(BulkTarget *bt, PartBuffer *buf)
{
	MemoryContext oldcxt;
	ResultRelInfo *rri = buf->rri;

	if (buf->nused == 0)
		return;

	oldcxt = MemoryContextSwitchTo(GetPerTupleMemoryContext(bt->estate));
	bt->cur_event_index = buf->event_index[0];
	table_multi_insert(rri->ri_RelationDesc, buf->slots, buf->nused,
					   bt->cid, 0, buf->bistate);
	MemoryContextSwitchTo(oldcxt);

	for (int i = 0; i < buf->nused; i++)
	{
		bt->cur_event_index = buf->event_index[i];
		bulk_after_insert(bt, rri, buf->slots[i]);
		ExecClearTuple(buf->slots[i]);
		ResetPerTupleExprContext(bt->estate);
	}
	bt->nrows += buf->nused;
	buf->nused = 0;
	buf->bytes = 0;
	bulk_pace_wal();
}

/*
 * PostgreSQL 15 extends a relation by writing zero pages to the kernel,
 * while the rows stay in shared buffers, and nothing asks for those pages
 * on disk until a checkpoint: a writer landing half a million rows a
 * second left a gigabyte of dirty pages, which the kernel wrote out all
 * at once when they expired (30 s later), and every WAL flush waited
 * behind that burst, a payment intent's commit for half a second.  So a
 * batch starts the writeback of the pages it added at once
 * (smgrwriteback: sync_file_range, which does not wait), as
 * backend_flush_after does for the buffers a backend writes.  From 16 a
 * bulk extension allocates without writing, and this finds little to do.
 */
static void
remember_sizes(PartBuffer *buf)
{
	ResultRelInfo *rri = buf->rri;

	buf->blocks_before = palloc(sizeof(BlockNumber) * (rri->ri_NumIndices + 1));
	buf->blocks_before[0] = RelationGetNumberOfBlocks(rri->ri_RelationDesc);
	for (int i = 0; i < rri->ri_NumIndices; i++)
		buf->blocks_before[i + 1] = RelationGetNumberOfBlocks(rri->ri_IndexRelationDescs[i]);
}

static void
write_back_added(Relation rel, BlockNumber before)
{
	BlockNumber now = RelationGetNumberOfBlocks(rel);

	if (now > before)
		smgrwriteback(RelationGetSmgr(rel), MAIN_FORKNUM, before, now - before);
}

static void
write_back_extensions(PartBuffer *buf)
{
	ResultRelInfo *rri = buf->rri;

	write_back_added(rri->ri_RelationDesc, buf->blocks_before[0]);
	for (int i = 0; i < rri->ri_NumIndices; i++)
		write_back_added(rri->ri_IndexRelationDescs[i], buf->blocks_before[i + 1]);
}

static void
bulk_free_buffer(BulkTarget *bt, PartBuffer *buf)
{
	write_back_extensions(buf);
	for (int i = 0; i < BULK_MAX_SLOTS && buf->slots[i] != NULL; i++)
		ExecDropSingleTupleTableSlot(buf->slots[i]);
	if (buf->bistate)
	{
		FreeBulkInsertState(buf->bistate);
		table_finish_bulk_insert(buf->rri->ri_RelationDesc, 0);
	}
	pfree(buf);
}

/* Too many leaves touched: flush everything and start over, as COPY does. */
static void
bulk_trim_buffers(BulkTarget *bt)
{
	ListCell   *lc;

	foreach(lc, bt->buffers)
	{
		PartBuffer *buf = (PartBuffer *) lfirst(lc);

		bulk_flush_buffer(bt, buf);
		bulk_free_buffer(bt, buf);
	}
	list_free(bt->buffers);
	bt->buffers = NIL;
	bt->last = NULL;
}

static PartBuffer *
bulk_buffer_for(BulkTarget *bt, ResultRelInfo *rri)
{
	ListCell   *lc;
	PartBuffer *buf;
	MemoryContext oldcxt;
	TriggerDesc *trig = rri->ri_TrigDesc;

	if (bt->last && bt->last->rri == rri)
		return bt->last;
	foreach(lc, bt->buffers)
	{
		buf = (PartBuffer *) lfirst(lc);
		if (buf->rri == rri)
			return bt->last = buf;
	}

	if (rri->ri_FdwRoutine != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("machpay writer cannot insert into foreign partition \"%s\"",
						RelationGetRelationName(rri->ri_RelationDesc))));

	if (list_length(bt->buffers) >= BULK_MAX_BUFFERS)
		bulk_trim_buffers(bt);

	oldcxt = MemoryContextSwitchTo(bt->estate->es_query_cxt);
	buf = palloc0(sizeof(PartBuffer));
	buf->rri = rri;
	buf->use_multi = !(trig && (trig->trig_insert_before_row ||
								trig->trig_insert_instead_row));
	if (buf->use_multi)
		buf->bistate = GetBulkInsertState();
	remember_sizes(buf);
	bt->buffers = lappend(bt->buffers, buf);
	MemoryContextSwitchTo(oldcxt);
	return bt->last = buf;
}

/* The slow path: one row through the BEFORE/INSTEAD OF triggers. */
static void
bulk_insert_one(BulkTarget *bt, ResultRelInfo *rri, TupleTableSlot *slot)
{
	TriggerDesc *trig = rri->ri_TrigDesc;
	Relation	rel = rri->ri_RelationDesc;

	if (trig && trig->trig_insert_before_row)
	{
		if (!ExecBRInsertTriggers(bt->estate, rri, slot))
			return;				/* the trigger skipped the row */
	}
	if (trig && trig->trig_insert_instead_row)
	{
		ExecIRInsertTriggers(bt->estate, rri, slot);
		return;
	}
	if (rel->rd_att->constr && rel->rd_att->constr->has_generated_stored)
		ExecComputeStoredGenerated(rri, bt->estate, slot, CMD_INSERT);
	if (rel->rd_att->constr)
		ExecConstraints(rri, slot, bt->estate);
	/* A BEFORE trigger may have moved the row out of this partition. */
	if (rel->rd_rel->relispartition)
		ExecPartitionCheck(rri, slot, bt->estate, true);
	table_tuple_insert(rel, slot, bt->cid, 0, NULL);
	bulk_after_insert(bt, rri, slot);
	bt->nrows++;
}

void
bulk_target_put(BulkTarget *bt, int32 event_index)
{
	ErrorContextCallback errcb;
	ResultRelInfo *rri = bt->root_rri;
	TupleTableSlot *src = bt->root_slot;
	TupleTableSlot *dst;
	TupleConversionMap *map = NULL;
	PartBuffer *buf;
	Relation	rel;

	bt->cur_event_index = event_index;
	errcb.callback = bulk_error_callback;
	errcb.arg = bt;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	ExecStoreVirtualTuple(src);

	/*
	 * A row outside every partition gets ExecFindPartition's own error ("no
	 * partition of relation ... found for row", with the key's value), plus
	 * our context line naming the event.
	 */
	if (bt->proute)
	{
		rri = ExecFindPartition(bt->mtstate, bt->root_rri, bt->proute, src,
								bt->estate);
#if PG_VERSION_NUM < 160000
		map = rri->ri_RootToPartitionMap;
#else
		map = ExecGetRootToChildMap(rri, bt->estate);
#endif
	}
	rel = rri->ri_RelationDesc;
	buf = bulk_buffer_for(bt, rri);

	/*
	 * Slots over an unpinned copy of the descriptor: a pin per slot would
	 * cost a resource-owner entry each, and a batch makes up to a thousand.
	 */
	if (buf->slots[buf->nused] == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(bt->estate->es_query_cxt);

		if (buf->slotdesc == NULL)
			buf->slotdesc = CreateTupleDescCopy(RelationGetDescr(rel));
		buf->slots[buf->nused] = MakeSingleTupleTableSlot(buf->slotdesc,
														  table_slot_callbacks(rel));
		MemoryContextSwitchTo(oldcxt);
	}
	dst = buf->slots[buf->nused];

	/* The copy is owned by the slot, so the caller may reuse its values. */
	if (map != NULL)
	{
		execute_attr_map_slot(map->attrMap, src, dst);
		ExecMaterializeSlot(dst);
	}
	else
		ExecCopySlot(dst, src);

	if (!buf->use_multi)
	{
		bulk_insert_one(bt, rri, dst);
		ExecClearTuple(dst);
		ResetPerTupleExprContext(bt->estate);
	}
	else
	{
		bool		dummy;

		if (rel->rd_att->constr && rel->rd_att->constr->has_generated_stored)
			ExecComputeStoredGenerated(rri, bt->estate, dst, CMD_INSERT);
		if (rel->rd_att->constr)
			ExecConstraints(rri, dst, bt->estate);
		buf->event_index[buf->nused] = event_index;
		buf->bytes += ExecFetchSlotHeapTuple(dst, true, &dummy)->t_len;
		buf->nused++;
		if (buf->nused >= BULK_MAX_SLOTS || buf->bytes >= BULK_MAX_BYTES)
			bulk_flush_buffer(bt, buf);
		ResetPerTupleExprContext(bt->estate);
	}

	error_context_stack = errcb.previous;
}

int64
bulk_target_finish(BulkTarget *bt)
{
	ErrorContextCallback errcb;
	int64		nrows;

	errcb.callback = bulk_error_callback;
	errcb.arg = bt;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	bulk_trim_buffers(bt);
	error_context_stack = errcb.previous;

	ExecASInsertTriggers(bt->estate, bt->root_rri, NULL);
	AfterTriggerEndQuery(bt->estate);

	ExecResetTupleTable(bt->estate->es_tupleTable, false);
	if (bt->proute)
		ExecCleanupTupleRouting(bt->mtstate, bt->proute);
	ExecCloseResultRelations(bt->estate);
	ExecCloseRangeTableRelations(bt->estate);
	FreeExecutorState(bt->estate);
	table_close(bt->rel, NoLock);

	nrows = bt->nrows;
	pfree(bt);
	return nrows;
}
