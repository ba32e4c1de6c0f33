/*
 * include/eddy/fluss.h - native Apache Fluss client.
 *
 * Three layers, each usable alone:
 *   1. data model and codecs (pure functions, any thread): column types,
 *      table schemas from the server's table JSON, row values, CRC-32C,
 *      Fluss's Murmur3 bucket function, CompactedRow / IndexedRow, Arrow
 *      record batches, log and KV record batches;
 *   2. the client (one libuv loop, never blocks): connections, metadata,
 *      admin calls, producer, scanner, lookups;
 *   3. eddy's connectors on top (source, sink, lookup tool) - see connector.h.
 *
 * Byte order: RPC headers are big-endian, everything inside record batches is
 * little-endian (../shared/docs/fluss-protocol.md).
 */
#ifndef EDDY_FLUSS_H
#define EDDY_FLUSS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "eddy/buf.h"
#include "eddy/error.h"

/* -- data model ------------------------------------------------------------- */

typedef enum eddy_fluss_type {
    EDDY_FLUSS_BOOLEAN,
    EDDY_FLUSS_TINYINT,
    EDDY_FLUSS_SMALLINT,
    EDDY_FLUSS_INT,
    EDDY_FLUSS_BIGINT,
    EDDY_FLUSS_FLOAT,
    EDDY_FLUSS_DOUBLE,
    EDDY_FLUSS_STRING,
    EDDY_FLUSS_BYTES,
    EDDY_FLUSS_DATE,          /* days since 1970-01-01 */
    EDDY_FLUSS_TIMESTAMP,     /* zone-less local date-time */
    EDDY_FLUSS_TIMESTAMP_LTZ, /* an instant */
    EDDY_FLUSS_DECIMAL,
} eddy_fluss_type;

typedef struct eddy_fluss_column {
    char *name;
    eddy_fluss_type type;
    int nullable;
    int precision; /* DECIMAL (1..38), TIMESTAMP(_LTZ) (0..9) */
    int scale;     /* DECIMAL */
} eddy_fluss_column;

typedef struct eddy_fluss_schema {
    int ncols;
    eddy_fluss_column *cols;
    int npk;
    int *pk; /* column indexes of the primary key, in key order */
    int nbk;
    int *bk; /* bucket key (defaults to the primary key) */
} eddy_fluss_schema;

/* Log formats and Arrow compression codecs as the table properties name them. */
enum { EDDY_FLUSS_LOG_ARROW, EDDY_FLUSS_LOG_INDEXED, EDDY_FLUSS_LOG_COMPACTED };
enum { EDDY_FLUSS_CODEC_NONE, EDDY_FLUSS_CODEC_LZ4, EDDY_FLUSS_CODEC_ZSTD };

/* Change types of changelog records (byte values on the wire). */
enum {
    EDDY_FLUSS_APPEND = 0,
    EDDY_FLUSS_INSERT = 1,
    EDDY_FLUSS_UPDATE_BEFORE = 2,
    EDDY_FLUSS_UPDATE_AFTER = 3,
    EDDY_FLUSS_DELETE = 4,
};
/* "+A", "+I", "-U", "+U", "-D" (or "?"). */
const char *eddy_fluss_change_name(int change);

/* A table as the client knows it. */
typedef struct eddy_fluss_table {
    char *database;
    /* bucket -> leader tablet server id (-1 unknown); set by the client */
    int *leaders;
    char *name;
    int64_t table_id;
    int schema_id;
    int nbuckets;
    int log_format;
    int codec;
    int zstd_level;
    eddy_fluss_schema schema;
    json_t *json; /* the server's table JSON (owned) */
} eddy_fluss_table;

/* Parse the server's table JSON (TableDescriptor) of DATABASE.NAME. A column
 * of a type this client does not handle is an EDDY_ESCHEMA error naming it. */
int eddy_fluss_table_parse(const char *database, const char *name, const char *json, size_t len,
                           eddy_fluss_table **out, eddy_err *err);
void eddy_fluss_table_free(eddy_fluss_table *t);

/* Build the table JSON for CreateTable from eddy's own schema document:
 *   {"columns": [{"name": "id", "type": "BIGINT NOT NULL"}, ...],
 *    "primary_key": ["id"], "bucket_key": [...], "buckets": 3,
 *    "log_format": "arrow|indexed", "compression": "zstd|lz4|none",
 *    "properties": {...}, "comment": "..."}
 * Types: BOOLEAN TINYINT SMALLINT INT BIGINT FLOAT DOUBLE STRING BYTES DATE
 * TIMESTAMP(p) TIMESTAMP_LTZ(p) DECIMAL(p,s), optionally NOT NULL.
 * Returns a new reference in *OUT. */
int eddy_fluss_table_json_build(const json_t *doc, json_t **out, eddy_err *err);

/* Parse one type spelling ("DECIMAL(10,2) NOT NULL") into COL (name untouched). */
int eddy_fluss_type_parse(const char *text, eddy_fluss_column *col, eddy_err *err);
/* Spell COL's type ("DECIMAL(10,2)") into OUT. */
void eddy_fluss_type_name(const eddy_fluss_column *col, char *out, size_t cap);

/* One value of a row. Strings and bytes are borrowed from whatever buffer the
 * row was decoded from or built in. */
typedef struct eddy_fluss_value {
    int is_null;
    union {
        int64_t i; /* BOOLEAN (0/1), TINYINT..BIGINT, DATE */
        float f;
        double d;
        struct {
            const char *p;
            size_t n;
        } s; /* STRING (UTF-8), BYTES */
        struct {
            int64_t ms;
            int32_t nanos; /* nano of milli, 0..999999 */
        } ts;
        __int128 dec; /* unscaled DECIMAL */
    } v;
} eddy_fluss_value;

/* Memory for values built from JSON (decoded base64, serialized objects):
 * chunks freed together. Zero-initialize; eddy_fluss_arena_free releases. */
typedef struct eddy_fluss_arena {
    struct eddy__arena_chunk *head;
} eddy_fluss_arena;
void *eddy_fluss_arena_alloc(eddy_fluss_arena *a, size_t n);
void eddy_fluss_arena_free(eddy_fluss_arena *a);

/* Row values to a JSON object keyed by column name (new reference): BYTES
 * base64, DATE "YYYY-MM-DD", TIMESTAMP "YYYY-MM-DDTHH:MM:SS[.f...]" (as many
 * fraction digits as the precision), TIMESTAMP_LTZ the same with "Z",
 * DECIMAL a string. COLS (may be NULL = all) limits the columns written. */
json_t *eddy_fluss_row_to_json(const eddy_fluss_schema *s, const eddy_fluss_value *vals,
                               const int *cols, int ncols);

/* Fill VALS (s->ncols) from the JSON object OBJ, checking each field against
 * its column. Strings point into OBJ or into ARENA, so both must outlive
 * VALS. Missing fields are NULL. A missing NOT NULL column or a value of the
 * wrong type is EDDY_ESCHEMA naming the column; so is a field that is not a
 * column when STRICT. Objects and arrays given to a STRING column are
 * stored as their JSON text. Timestamps take epoch milliseconds or ISO-8601
 * text; decimals numbers or strings; bytes base64. */
int eddy_fluss_row_from_json(const eddy_fluss_schema *s, const json_t *obj, int strict,
                             eddy_fluss_value *vals, eddy_fluss_arena *arena, eddy_err *err);

/* Fill VALS (t->schema.ncols, zeroed) with the primary key (or, when PREFIX,
 * the bucket key) of T given as KEY: an object holding exactly the key
 * columns, or a plain value when the key has one column. Errors name the
 * table and the key columns. Strings point into KEY or ARENA. */
int eddy_fluss_key_from_json(const eddy_fluss_table *t, const json_t *key, int prefix,
                             eddy_fluss_value *vals, eddy_fluss_arena *arena, eddy_err *err);

/* Epoch milliseconds of TEXT: ISO-8601 "YYYY-MM-DD[THH:MM[:SS[.f]]][Z|+hh:mm]"
 * (no zone = UTC). Returns 0, or EDDY_EINVAL when TEXT is not such a time. */
int eddy_fluss_parse_time(const char *text, int64_t *ms);

/* Split "DATABASE.TABLE" into DB and TABLE (each EDDY_FLUSS_NAME_MAX bytes).
 * Returns 0 or EDDY_EINVAL with ERR quoting FULL. */
#define EDDY_FLUSS_NAME_MAX 128
int eddy_fluss_table_path(const char *full, char *db, char *table, eddy_err *err);

/* Index of column NAME in S, or -1. */
int eddy_fluss_column_index(const eddy_fluss_schema *s, const char *name);

/* -- codecs ----------------------------------------------------------------- */

/* CRC-32C (Castagnoli), continuing from CRC (start with 0). */
uint32_t eddy_fluss_crc32c(uint32_t crc, const void *data, size_t n);
/* Fluss/Flink Murmur3-32 with SEED (tail bytes sign-extended, as Java does). */
uint32_t eddy_fluss_murmur3(const void *data, size_t n, uint32_t seed);
/* Bucket of an encoded bucket key among NBUCKETS, as the Java server computes it. */
int eddy_fluss_bucket(const void *key, size_t n, int nbuckets);

/* Unsigned LEB128 varints. put returns bytes written (<= 10); get returns
 * bytes read, or 0 when the input ends or the varint is too long. */
size_t eddy_fluss_varint_put(uint8_t *out, uint64_t v);
size_t eddy_fluss_varint_get(const uint8_t *p, size_t n, uint64_t *out);

/* CompactedRow of all columns (null bitmap first) appended to OUT. */
int eddy_fluss_compacted_encode(const eddy_fluss_schema *s, const eddy_fluss_value *vals,
                                eddy_buf *out);
/* Decode a CompactedRow of exactly N bytes; strings borrow from P. */
int eddy_fluss_compacted_decode(const eddy_fluss_schema *s, const uint8_t *p, size_t n,
                                eddy_fluss_value *vals, eddy_err *err);
/* Key bytes: the columns COLS[0..ncols) compacted without a null bitmap. A
 * NULL key column is EDDY_EINVAL. */
int eddy_fluss_key_encode(const eddy_fluss_schema *s, const int *cols, int ncols,
                          const eddy_fluss_value *vals, eddy_buf *out, eddy_err *err);
/* IndexedRow of all columns appended to OUT / decoded from exactly N bytes. */
int eddy_fluss_indexed_encode(const eddy_fluss_schema *s, const eddy_fluss_value *vals,
                              eddy_buf *out);
int eddy_fluss_indexed_decode(const eddy_fluss_schema *s, const uint8_t *p, size_t n,
                              eddy_fluss_value *vals, eddy_err *err);

/* -- record batches ----------------------------------------------------------- */

/* A log batch under construction: rows are added one at a time, then the
 * batch is finished into wire bytes (header, CRC, body). */
typedef struct eddy_fluss_log_builder eddy_fluss_log_builder;

/* FORMAT EDDY_FLUSS_LOG_*, CODEC for Arrow, SCHEMA borrowed for the builder's life. */
int eddy_fluss_log_builder_new(const eddy_fluss_schema *schema, int schema_id, int format,
                               int codec, int zstd_level, eddy_fluss_log_builder **out,
                               eddy_err *err);
/* Append one row (values copied). CHANGE is used by INDEXED/COMPACTED only.
 * A value the batch cannot hold is EDDY_ERANGE with ERR naming the column:
 * a nano-of-millisecond outside 0..999999, or a timestamp its Arrow unit
 * cannot count (TIMESTAMP(7..9) covers only 1677-09-21 to 2262-04-11).
 * On any failure the builder is unchanged. */
int eddy_fluss_log_builder_add(eddy_fluss_log_builder *b, int change, const eddy_fluss_value *vals,
                               eddy_err *err);
size_t eddy_fluss_log_builder_rows(const eddy_fluss_log_builder *b);
/* Approximate size of the finished batch in bytes (before compression). */
size_t eddy_fluss_log_builder_size(const eddy_fluss_log_builder *b);
/* Write the batch to OUT (appended) and reset the builder for reuse. */
int eddy_fluss_log_builder_finish(eddy_fluss_log_builder *b, eddy_buf *out, eddy_err *err);
void eddy_fluss_log_builder_free(eddy_fluss_log_builder *b);

/* KV batch for PutKv: records of (key, CompactedRow value) or (key) = delete. */
typedef struct eddy_fluss_kv_builder eddy_fluss_kv_builder;
int eddy_fluss_kv_builder_new(int schema_id, eddy_fluss_kv_builder **out, eddy_err *err);
int eddy_fluss_kv_builder_add(eddy_fluss_kv_builder *b, const void *key, size_t klen,
                              const void *value, size_t vlen, int is_delete);
size_t eddy_fluss_kv_builder_rows(const eddy_fluss_kv_builder *b);
size_t eddy_fluss_kv_builder_size(const eddy_fluss_kv_builder *b);
int eddy_fluss_kv_builder_finish(eddy_fluss_kv_builder *b, eddy_buf *out, eddy_err *err);
void eddy_fluss_kv_builder_free(eddy_fluss_kv_builder *b);

/* Called for every decoded record: its log offset, commit timestamp, change
 * type and values (borrowed for the call). Return non-zero to stop. */
typedef int (*eddy_fluss_record_cb)(int64_t offset, int64_t timestamp, int change,
                                    const eddy_fluss_value *vals, void *ud);

/* Decode the log batches in DATA[0..N) (a fetch's records) with SCHEMA in
 * the table's log FORMAT (EDDY_FLUSS_LOG_*),
 * skipping records below FROM_OFFSET. PROJECTION (may be NULL) lists the
 * column indexes present in Arrow batches when the fetch was projected; the
 * callback then sees values only at those indexes. A truncated last batch
 * is not an error: *NEXT_OFFSET is the offset after the last complete batch
 * (FROM_OFFSET when none). Corrupt input is EDDY_ECORRUPT. */
int eddy_fluss_log_decode(const eddy_fluss_schema *schema, int format, const uint8_t *data,
                          size_t n, int64_t from_offset, const int *projection, int nproj,
                          eddy_fluss_record_cb cb, void *ud, int64_t *next_offset, eddy_err *err);

/* -- client ----------------------------------------------------------------- */

/* One client per loop: it owns the connections to the coordinator and the
 * tablet servers and caches tables and bucket leaders. Every function
 * below runs on the client's loop thread only. Start functions that return
 * 0 call their callback exactly once, never inside the call; one that
 * fails calls nothing. */
typedef struct eddy_fluss_client eddy_fluss_client;

typedef struct eddy_fluss_client_opts {
    const char *bootstrap; /* "host:port" of a coordinator (or any server) */
    const char *sasl_user; /* SASL PLAIN when both are set */
    const char *sasl_password;
    int request_timeout_ms; /* per RPC (default 30000) */
} eddy_fluss_client_opts;

int eddy_fluss_client_new(uv_loop_t *loop, const eddy_fluss_client_opts *opts,
                          eddy_fluss_client **out, eddy_err *err);
/* Close the client. Every callback still pending (requests on the wire or
 * queued, results deferred to the next tick, batched lookups, writer rows
 * and flushes, metadata retries) runs once, inside this call, with
 * EDDY_ECANCELED - except a flush whose rows were all done, which gets
 * their result. From then on start functions return EDDY_ECLOSING and call
 * nothing; writers and scanners of C stop and must still be freed. May be
 * called from any callback of C. The client, and the tables it handed out,
 * are freed once the loop has run the last close callback. */
void eddy_fluss_client_close(eddy_fluss_client *c);

typedef void (*eddy_fluss_done_cb)(int status, const eddy_err *err, void *ud);
/* NAMES borrowed for the call. */
typedef void (*eddy_fluss_names_cb)(int status, const eddy_err *err, char **names, size_t n,
                                    void *ud);
/* T is owned by the client's cache and stays valid until the client's
 * close has completed (a refresh keeps the old object alive). */
typedef void (*eddy_fluss_table_cb)(int status, const eddy_err *err, const eddy_fluss_table *t,
                                    void *ud);

int eddy_fluss_create_database(eddy_fluss_client *c, const char *db, int ignore_if_exists,
                               eddy_fluss_done_cb cb, void *ud);
int eddy_fluss_drop_database(eddy_fluss_client *c, const char *db, int ignore_if_missing,
                             int cascade, eddy_fluss_done_cb cb, void *ud);
int eddy_fluss_list_databases(eddy_fluss_client *c, eddy_fluss_names_cb cb, void *ud);
int eddy_fluss_list_tables(eddy_fluss_client *c, const char *db, eddy_fluss_names_cb cb, void *ud);
/* TABLE_JSON borrowed (see eddy_fluss_table_json_build). */
int eddy_fluss_create_table(eddy_fluss_client *c, const char *db, const char *table,
                            const json_t *table_json, int ignore_if_exists, eddy_fluss_done_cb cb,
                            void *ud);
int eddy_fluss_drop_table(eddy_fluss_client *c, const char *db, const char *table,
                          int ignore_if_missing, eddy_fluss_done_cb cb, void *ud);
/* Table info and bucket leaders of DB.TABLE (cached after the first call). */
int eddy_fluss_get_table(eddy_fluss_client *c, const char *db, const char *table,
                         eddy_fluss_table_cb cb, void *ud);

enum {
    EDDY_FLUSS_OFFSET_EARLIEST = 0,
    EDDY_FLUSS_OFFSET_LATEST = 1,
    EDDY_FLUSS_OFFSET_TIMESTAMP = 2
};
/* OFFSETS[bucket] for every bucket of T, borrowed for the call. */
typedef void (*eddy_fluss_offsets_cb)(int status, const eddy_err *err, const int64_t *offsets,
                                      int nbuckets, void *ud);
int eddy_fluss_list_offsets(eddy_fluss_client *c, const eddy_fluss_table *t, int type,
                            int64_t timestamp_ms, eddy_fluss_offsets_cb cb, void *ud);

/* -- writer: appends to log tables, upserts and deletes on PK tables -------- */

typedef struct eddy_fluss_writer eddy_fluss_writer;

typedef struct eddy_fluss_writer_opts {
    size_t batch_bytes; /* close a bucket's batch at this size (default 1 MiB) */
    int linger_ms;      /* send a partial batch after this long (default 5) */
    int acks;           /* -1 all (default), 0 none, 1 leader */
    int retry_ms;       /* give up on a batch after this long (default 120000) */
} eddy_fluss_writer_opts;

/* A writer for T (borrowed; from eddy_fluss_get_table). Batches are
 * idempotent (writer id + per-bucket sequence): a batch retried after a
 * lost answer is not stored twice, and one batch per bucket is in flight,
 * so retries never reorder a bucket. */
int eddy_fluss_writer_new(eddy_fluss_client *c, const eddy_fluss_table *t,
                          const eddy_fluss_writer_opts *opts, eddy_fluss_writer **out,
                          eddy_err *err);
/* Queue one row (copied). CB (may be NULL) is called once the row is
 * acknowledged or has failed for good. Log tables: append; PK tables:
 * upsert (all columns) or, with is_delete, delete by the key columns. */
int eddy_fluss_writer_write(eddy_fluss_writer *w, const eddy_fluss_value *vals, int is_delete,
                            eddy_fluss_done_cb cb, void *ud, eddy_err *err);
/* Bytes queued and not yet acknowledged (for backpressure). */
size_t eddy_fluss_writer_pending(const eddy_fluss_writer *w);
/* Send everything now; CB once all rows written so far are acknowledged
 * (status: the first failure, or 0). */
int eddy_fluss_writer_flush(eddy_fluss_writer *w, eddy_fluss_done_cb cb, void *ud);
/* Log tables: the log end offset the server reported after the last batch
 * of BUCKET it acknowledged to W (its base offset plus its rows), or -1
 * when none was yet (or the answer carried no offset, as after a retry the
 * server recognized as a duplicate). Batches of a bucket are acknowledged
 * in order, and this moves before their rows' callbacks run: inside one,
 * every row of the bucket acknowledged so far lies below it, and every row
 * not yet acknowledged at or above it. */
int64_t eddy_fluss_writer_acked_end(const eddy_fluss_writer *w, int bucket);
/* Rows acknowledged and rows failed so far. */
void eddy_fluss_writer_counts(const eddy_fluss_writer *w, long *acked, long *failed);
/* Free; rows not yet acknowledged fail with EDDY_ECANCELED. Also after the
 * client has closed (writes then return EDDY_ECLOSING). */
void eddy_fluss_writer_free(eddy_fluss_writer *w);

/* -- scanner: reads a table's log (a PK table's changelog) ---------------- */

typedef struct eddy_fluss_scanner eddy_fluss_scanner;

/* Per record: bucket, offset, commit timestamp, change type, values
 * (borrowed for the call; with a projection only those columns are set).
 * Return non-zero to pause the scanner after this fetch's records. */
typedef int (*eddy_fluss_scan_record_cb)(int bucket, int64_t offset, int64_t timestamp, int change,
                                         const eddy_fluss_value *vals, void *ud);
/* After each fetch answer of BUCKET: the next offset to read and the high
 * watermark; STATUS non-zero when the bucket failed for good. */
typedef void (*eddy_fluss_scan_progress_cb)(int status, const eddy_err *err, int bucket,
                                            int64_t next_offset, int64_t high_watermark, void *ud);

#define EDDY_FLUSS_EARLIEST (-2)
#define EDDY_FLUSS_LATEST (-1)

/* PROJECTION: ascending column indexes or NULL for all (ARROW tables only). */
int eddy_fluss_scanner_new(eddy_fluss_client *c, const eddy_fluss_table *t, const int *projection,
                           int nproj, eddy_fluss_scan_record_cb on_record,
                           eddy_fluss_scan_progress_cb on_progress, void *ud,
                           eddy_fluss_scanner **out, eddy_err *err);
/* Read BUCKET from OFFSET (or EDDY_FLUSS_EARLIEST / _LATEST, or a
 * timestamp through eddy_fluss_list_offsets first). */
int eddy_fluss_scanner_subscribe(eddy_fluss_scanner *s, int bucket, int64_t offset);
void eddy_fluss_scanner_pause(eddy_fluss_scanner *s);
void eddy_fluss_scanner_resume(eddy_fluss_scanner *s);
/* Free (also after the client has closed: the scanner stops then, and
 * subscribe returns EDDY_ECLOSING). */
void eddy_fluss_scanner_free(eddy_fluss_scanner *s);

/* -- lookups on PK tables --------------------------------------------------- */

/* VALS is the found row (borrowed for the call) or NULL when the key is absent. */
typedef void (*eddy_fluss_lookup_cb)(int status, const eddy_err *err, const eddy_fluss_value *vals,
                                     void *ud);
/* Look up the row whose primary key columns are set in KEY (a row array of
 * t->schema.ncols; other columns ignored). Lookups issued in the same loop
 * iteration are sent together, one request per bucket leader. */
int eddy_fluss_lookup(eddy_fluss_client *c, const eddy_fluss_table *t, const eddy_fluss_value *key,
                      eddy_fluss_lookup_cb cb, void *ud, eddy_err *err);
/* Rows whose bucket-key columns equal those set in PREFIX; CB once per row
 * with ROW index and total N (N = 0: one call with VALS NULL). */
typedef void (*eddy_fluss_prefix_cb)(int status, const eddy_err *err, const eddy_fluss_value *vals,
                                     size_t row, size_t n, void *ud);
int eddy_fluss_prefix_lookup(eddy_fluss_client *c, const eddy_fluss_table *t,
                             const eddy_fluss_value *prefix, eddy_fluss_prefix_cb cb, void *ud,
                             eddy_err *err);

/* Decode the SUCCESS payload of a response to API_KEY (1012 metadata,
 * 1015 fetch, 1017 lookup, 1021 list offsets, 1014 produce, 1016 put kv)
 * exactly as the client does, records and rows included (with SCHEMA and
 * FORMAT for fetch and lookup), without a connection; API_KEY 0 reads P as
 * a stream of response frames (lengths, types, error responses) the way a
 * connection splits it. For fuzzing and diagnostics; returns 0 or the first
 * decoding error. */
int eddy_fluss_response_check(int api_key, const uint8_t *p, size_t n,
                              const eddy_fluss_schema *schema, int format, eddy_err *err);

/* -- eddy connectors ---------------------------------------------------------- */

/* Register `fluss` sources and sinks with the runtime (connector.h). */
int eddy_fluss_register_connectors(void);
/* Register the fluss_lookup tool kind and eddy.fluss.lookup(table, key) /
 * eddy.fluss.prefix_lookup(table, key) for Lua tools (main, before jobs load). */
int eddy_fluss_register_tools(void);

#endif
