/*-------------------------------------------------------------------------
 * partman_guard.c
 *	  machpay._partman_schema(): the schema of pg_partman, returned only when
 *	  it is safe to call into; every call into pg_partman goes through it.
 *
 * pg_partman runs as the owner of this extension (a superuser: the install
 * script, and machpay._maintenance, which is SECURITY DEFINER) and 5.x
 * sets search_path to its own schema, then calls functions such as
 * format() by unqualified name.  A function or operator of that schema
 * with an exact signature outranks pg_catalog's (format(text, VARIADIC
 * "any")), so whoever can create objects in pg_partman's schema runs code
 * as a superuser.  The schema is *safe* when its owner is a superuser, no
 * role that is not a superuser may create in it, and every function and
 * operator in it belongs to a superuser.  When it is not, the call is
 * *refused*: an error, counted as partman_calls_refused; the maintenance
 * run fails with it and its `job` event carries the error.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_proc.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "common/stats.h"

/* Why a schema is not safe: one role and what it may do there. */
typedef struct PartmanUnsafe
{
	const char *role;
	const char *what;			/* "owns the schema", "may create in it", ... */
} PartmanUnsafe;

static bool
role_may_create(Oid nspid, Oid roleid)
{
#if PG_VERSION_NUM >= 160000
	return object_aclcheck(NamespaceRelationId, nspid, roleid, ACL_CREATE) == ACLCHECK_OK;
#else
	return pg_namespace_aclcheck(nspid, roleid, ACL_CREATE) == ACLCHECK_OK;
#endif
}

/*
 * The first role that is not a superuser and may create in the schema.
 * pg_database_owner stands for the database's owner, a role of pg_authid
 * that the scan meets itself (membership counts in the ACL check).
 */
static bool
find_creating_role(Oid nspid, PartmanUnsafe *why)
{
	Relation	rel = table_open(AuthIdRelationId, AccessShareLock);
	SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	HeapTuple	tup;
	bool		found = false;

	while (!found && HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_authid role = (Form_pg_authid) GETSTRUCT(tup);

		if (role->rolsuper || role->oid == ROLE_PG_DATABASE_OWNER)
			continue;
		if (role_may_create(nspid, role->oid))
		{
			why->role = pstrdup(NameStr(role->rolname));
			why->what = "may create objects in it";
			found = true;
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * The first function or operator of the schema whose owner is not a
 * superuser (planted before the privilege was taken away).  pg_proc and
 * pg_operator have no index on the schema alone: a scan of a few thousand
 * rows, once or twice a maintenance run.
 */
static bool
find_foreign_object(Oid relid, Oid nspid, PartmanUnsafe *why)
{
	Relation	rel = table_open(relid, AccessShareLock);
	SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	HeapTuple	tup;
	bool		found = false;

	while (!found && HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Oid			ns;
		Oid			owner;

		if (relid == ProcedureRelationId)
		{
			ns = ((Form_pg_proc) GETSTRUCT(tup))->pronamespace;
			owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
		}
		else
		{
			ns = ((Form_pg_operator) GETSTRUCT(tup))->oprnamespace;
			owner = ((Form_pg_operator) GETSTRUCT(tup))->oprowner;
		}
		if (ns == nspid && !superuser_arg(owner))
		{
			why->role = GetUserNameFromId(owner, false);
			why->what = relid == ProcedureRelationId ? "owns a function in it"
				: "owns an operator in it";
			found = true;
		}
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

static bool
partman_schema_unsafe(Oid nspid, PartmanUnsafe *why)
{
	HeapTuple	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nspid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for schema %u", nspid);
	owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
	ReleaseSysCache(tup);

	if (owner != ROLE_PG_DATABASE_OWNER && !superuser_arg(owner))
	{
		why->role = GetUserNameFromId(owner, false);
		why->what = "owns it";
		return true;
	}
	return find_creating_role(nspid, why) ||
		find_foreign_object(ProcedureRelationId, nspid, why) ||
		find_foreign_object(OperatorRelationId, nspid, why);
}

/* pg_partman's schema, InvalidOid when it is not installed. */
static Oid
partman_namespace(void)
{
	Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			nspid = InvalidOid;

	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("pg_partman"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		nspid = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return nspid;
}

PG_FUNCTION_INFO_V1(machpay_partman_schema);
Datum
machpay_partman_schema(PG_FUNCTION_ARGS)
{
	Oid			nspid = partman_namespace();
	char	   *nspname;
	PartmanUnsafe why;

	if (!OidIsValid(nspid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"pg_partman\" is not installed"),
				 errhint("CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman;")));
	nspname = get_namespace_name(nspid);
	if (partman_schema_unsafe(nspid, &why))
	{
		stats_add(STAT_PARTMAN_CALLS_REFUSED, 1);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("refusing to call pg_partman: its schema \"%s\" is not safe", nspname),
				 errdetail("Role \"%s\", not a superuser, %s; pg_partman resolves unqualified names in that schema and runs as a superuser here.",
						   why.role, why.what),
				 errhint("Install pg_partman in a schema of its own that only superusers may create in "
						 "(CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman;), "
						 "or revoke CREATE on schema \"%s\" and drop what other roles own there.",
						 nspname)));
	}
	PG_RETURN_TEXT_P(cstring_to_text(nspname));
}
