/*-------------------------------------------------------------------------
 * archive.c
 *	  Export of an expired payment_intents partition to
 *	  <archive_directory>/<partition>.csv.gz plus <partition>.csv.gz.sha256
 *	  (sha256sum format), verified before the caller drops the partition.
 *
 * Written here with zlib and pg_cryptohash rather than COPY ... TO PROGRAM
 * 'gzip': COPY TO a file or program needs superuser (or
 * pg_execute_server_program) and a gzip binary on the server, and it gives
 * no handle on the bytes.  Here the CSV is hashed as it is written, the
 * file is re-read through zlib and must hash the same, and the digest of
 * the compressed file is computed from what is on disk.  Only then are
 * both files renamed into place (durably), so a crash leaves either the
 * partition or a complete, checked archive -- never neither.
 *
 * The CSV has a header line and follows COPY's CSV rules (NULL is an
 * empty unquoted field), so it restores with
 * COPY ... FROM PROGRAM 'gzip -dc <file>' WITH (FORMAT csv, HEADER).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "catalog/pg_authid.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#define ARCHIVE_FETCH_ROWS	1000
#define ARCHIVE_READ_CHUNK	65536

static void
hash_update(pg_cryptohash_ctx *ctx, const void *data, size_t len)
{
	if (pg_cryptohash_update(ctx, (const uint8 *) data, len) < 0)
		elog(ERROR, "could not compute sha256: %s", pg_cryptohash_error(ctx));
}

static void
hash_final_hex(pg_cryptohash_ctx *ctx, char *hex)
{
	uint8		digest[PG_SHA256_DIGEST_LENGTH];

	if (pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
		elog(ERROR, "could not compute sha256: %s", pg_cryptohash_error(ctx));
	hex_encode((const char *) digest, sizeof(digest), hex);
	hex[PG_SHA256_DIGEST_LENGTH * 2] = '\0';
}

/* One CSV field by COPY's rules: quoted when it could be misread. */
static void
append_csv_field(StringInfo buf, const char *value)
{
	const char *p;

	if (value == NULL)
		return;
	if (value[0] != '\0' && strpbrk(value, ",\"\r\n") == NULL && strcmp(value, "\\.") != 0)
	{
		appendStringInfoString(buf, value);
		return;
	}
	appendStringInfoChar(buf, '"');
	for (p = value; *p; p++)
	{
		if (*p == '"')
			appendStringInfoChar(buf, '"');
		appendStringInfoChar(buf, *p);
	}
	appendStringInfoChar(buf, '"');
}

static void
gz_put(gzFile gz, pg_cryptohash_ctx *plain, StringInfo line, const char *path)
{
	if (line->len > 0 && gzwrite(gz, line->data, line->len) != line->len)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write archive file \"%s\"", path)));
	hash_update(plain, line->data, line->len);
	resetStringInfo(line);
}

/* Write the CSV of relid to path (gzip); returns rows, fills plain_hex. */
static int64
write_csv_gz(Oid relid, const char *path, char *plain_hex)
{
	pg_cryptohash_ctx *plain = pg_cryptohash_create(PG_SHA256);
	MemoryContext batch_cxt;
	MemoryContext old;
	StringInfoData line;
	Portal		portal;
	SPIPlanPtr	plan;
	char	   *sql;
	int64		rows = 0;
	gzFile		gz;
	bool		header = true;

	if (plain == NULL || pg_cryptohash_init(plain) < 0)
		elog(ERROR, "could not initialise sha256");
	gz = gzopen(path, "wb6");
	if (gz == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create archive file \"%s\": %m", path)));

	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "machpay archive batch",
									  ALLOCSET_DEFAULT_SIZES);
	initStringInfo(&line);
	PG_TRY();
	{
		sql = psprintf("SELECT * FROM ONLY %s.%s",
					   quote_identifier(get_namespace_name(get_rel_namespace(relid))),
					   quote_identifier(get_rel_name(relid)));
		plan = SPI_prepare(sql, 0, NULL);
		if (plan == NULL)
			elog(ERROR, "could not read partition %s", sql);
		portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
		for (;;)
		{
			TupleDesc	desc;

			SPI_cursor_fetch(portal, true, ARCHIVE_FETCH_ROWS);
			desc = SPI_tuptable->tupdesc;
			old = MemoryContextSwitchTo(batch_cxt);
			if (header)
			{
				for (int c = 0; c < desc->natts; c++)
				{
					if (TupleDescAttr(desc, c)->attisdropped)
						continue;
					if (c > 0)
						appendStringInfoChar(&line, ',');
					append_csv_field(&line, NameStr(TupleDescAttr(desc, c)->attname));
				}
				appendStringInfoChar(&line, '\n');
				gz_put(gz, plain, &line, path);
				header = false;
			}
			for (uint64 r = 0; r < SPI_processed; r++)
			{
				for (int c = 0; c < desc->natts; c++)
				{
					if (TupleDescAttr(desc, c)->attisdropped)
						continue;
					if (c > 0)
						appendStringInfoChar(&line, ',');
					append_csv_field(&line, SPI_getvalue(SPI_tuptable->vals[r], desc, c + 1));
				}
				appendStringInfoChar(&line, '\n');
				if (line.len >= ARCHIVE_READ_CHUNK)
					gz_put(gz, plain, &line, path);
				rows++;
			}
			gz_put(gz, plain, &line, path);
			MemoryContextSwitchTo(old);
			MemoryContextReset(batch_cxt);
			if (SPI_processed == 0)
				break;
			SPI_freetuptable(SPI_tuptable);
			CHECK_FOR_INTERRUPTS();
		}
		SPI_cursor_close(portal);
	}
	PG_CATCH();
	{
		gzclose(gz);
		unlink(path);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (gzclose(gz) != Z_OK)
	{
		unlink(path);
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write archive file \"%s\"", path)));
	}
	hash_final_hex(plain, plain_hex);
	pg_cryptohash_free(plain);
	MemoryContextDelete(batch_cxt);
	return rows;
}

/* sha256 of a file as stored, or, with gunzip, of its decompressed content. */
static void
hash_file(const char *path, bool gunzip, char *hex)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);
	char	   *chunk = palloc(ARCHIVE_READ_CHUNK);
	int			n;

	if (ctx == NULL || pg_cryptohash_init(ctx) < 0)
		elog(ERROR, "could not initialise sha256");
	if (gunzip)
	{
		gzFile		gz = gzopen(path, "rb");

		if (gz == NULL)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not open archive file \"%s\": %m", path)));
		while ((n = gzread(gz, chunk, ARCHIVE_READ_CHUNK)) > 0)
			hash_update(ctx, chunk, n);
		if (n < 0 || gzclose(gz) != Z_OK)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("archive file \"%s\" does not decompress", path)));
	}
	else
	{
		int			fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);

		if (fd < 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not open archive file \"%s\": %m", path)));
		while ((n = read(fd, chunk, ARCHIVE_READ_CHUNK)) > 0)
			hash_update(ctx, chunk, n);
		if (n < 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not read archive file \"%s\": %m", path)));
		CloseTransientFile(fd);
	}
	hash_final_hex(ctx, hex);
	pg_cryptohash_free(ctx);
	pfree(chunk);
}

static void
write_text_file(const char *path, const char *text)
{
	int			fd = OpenTransientFile(path, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
	size_t		len = strlen(text);

	if (fd < 0 || write(fd, text, len) != (ssize_t) len || pg_fsync(fd) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", path)));
	CloseTransientFile(fd);
}

PG_FUNCTION_INFO_V1(machpay_archive_partition);
Datum
machpay_archive_partition(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *dir = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *relname = get_rel_name(relid);
	char	   *final_path;
	char	   *tmp_path;
	char	   *sum_path;
	char	   *sum_tmp;
	char		written_hex[PG_SHA256_DIGEST_LENGTH * 2 + 1];
	char		reread_hex[PG_SHA256_DIGEST_LENGTH * 2 + 1];
	char		file_hex[PG_SHA256_DIGEST_LENGTH * 2 + 1];
	int64		rows;
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (!superuser() && !has_privs_of_role(GetUserId(), ROLE_PG_WRITE_SERVER_FILES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to write archive files"),
				 errhint("Only superusers and members of pg_write_server_files may archive partitions.")));
	if (relname == NULL)
		elog(ERROR, "relation %u does not exist", relid);
	if (!is_absolute_path(dir))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("machpay.archive_directory must be an absolute path: \"%s\"", dir)));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (MakePGDirectory(dir) < 0 && errno != EEXIST)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create archive directory \"%s\": %m", dir)));

	final_path = psprintf("%s/%s.csv.gz", dir, relname);
	tmp_path = psprintf("%s.tmp", final_path);
	sum_path = psprintf("%s.sha256", final_path);
	sum_tmp = psprintf("%s.tmp", sum_path);

	SPI_connect();
	rows = write_csv_gz(relid, tmp_path, written_hex);
	SPI_finish();

	hash_file(tmp_path, true, reread_hex);
	if (strcmp(written_hex, reread_hex) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("archive file \"%s\" does not read back as written", tmp_path),
				 errdetail("sha256 of the CSV written %s, read back %s.", written_hex, reread_hex)));
	hash_file(tmp_path, false, file_hex);
	fsync_fname(tmp_path, false);
	write_text_file(sum_tmp, psprintf("%s  %s.csv.gz\n", file_hex, relname));

	if (durable_rename(tmp_path, final_path, ERROR) != 0 ||
		durable_rename(sum_tmp, sum_path, ERROR) != 0)
		elog(ERROR, "could not rename archive files into place");

	values[0] = Int64GetDatum(rows);
	values[1] = CStringGetTextDatum(file_hex);
	values[2] = CStringGetTextDatum(final_path);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
