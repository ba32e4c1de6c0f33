/*
 * fluss/fluss_int.h - internals shared by the files of the fluss module:
 * byte-order helpers, the Arrow record batch codec and the client's
 * internal interfaces (RPC, metadata, lookups). No other module includes
 * this file; the unit tests do, to drive the internals directly.
 */
#ifndef EDDY_FLUSS_INT_H
#define EDDY_FLUSS_INT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>

#include "eddy/fluss.h"
#include "fluss_rpc.pb-c.h"

/* Limits on sizes read from the wire, checked before anything is sized by
 * them: a hostile length is a protocol error, never a huge allocation. */
/* One response frame. The largest answer the client asks for is a fetch of
 * 16 MiB (4 MiB per bucket; the server may exceed it by one batch). */
#define EDDY__FLUSS_MAX_FRAME (128u << 20)
/* What the compressed buffers of one Arrow batch may decompress to. */
#define EDDY__FLUSS_MAX_DECOMPRESSED (256u << 20)
/* Buckets of one table (per-bucket state is allocated by this count; the
 * server's own limit, max.bucket.num, defaults to 128000 or less). */
#define EDDY__FLUSS_MAX_BUCKETS (1 << 17)
/* Servers (connections) one client learns of from metadata. */
#define EDDY__FLUSS_MAX_NODES 4096
/* What unpacking one protobuf payload of N bytes may allocate in all:
 * 8 * N + 32 MiB, at most 256 MiB (real answers need 1-2 times N for
 * records, up to ~28 times N only for very many tiny sub-messages). */
#define EDDY__FLUSS_UNPACK_SLACK (32u << 20)
#define EDDY__FLUSS_MAX_UNPACK (256u << 20)

static inline uint16_t rd_u16le(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}
static inline uint32_t rd_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t rd_u64le(const uint8_t *p)
{
    return (uint64_t)rd_u32le(p) | (uint64_t)rd_u32le(p + 4) << 32;
}
static inline void wr_u16le(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void wr_u32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void wr_u64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t rd_u32be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}
static inline void wr_u32be(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static inline void wr_u16be(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* -- Arrow (fluss/arrow.c) -------------------------------------------------- */

/* Columnar accumulation of rows for one Arrow record batch. */
typedef struct eddy__arrow_col {
    eddy_buf validity; /* bitmap, 1 = valid */
    eddy_buf data;     /* fixed-width values or var-width bytes (or bool bitmap) */
    eddy_buf offsets;  /* int32 offsets for STRING / BYTES */
    size_t nulls;
} eddy__arrow_col;

typedef struct eddy__arrow_writer {
    const eddy_fluss_schema *schema;
    eddy__arrow_col *cols;
    size_t rows;
    size_t bytes;
} eddy__arrow_writer;

int eddy__arrow_writer_init(eddy__arrow_writer *w, const eddy_fluss_schema *s);
/* Append one row. A timestamp the column's Arrow unit cannot count is
 * EDDY_ERANGE naming the column; on any failure W is unchanged. */
int eddy__arrow_writer_add(eddy__arrow_writer *w, const eddy_fluss_value *vals, eddy_err *err);
/* Whether V is a valid value of timestamp column C in every format
 * (nano-of-millisecond in 0..999999 when the precision is above 3).
 * Returns 0 or EDDY_ERANGE with ERR naming the column. */
int eddy__fluss_ts_check(const eddy_fluss_column *c, const eddy_fluss_value *v, eddy_err *err);
/* Append the encapsulated IPC RecordBatch message to OUT and reset W. */
int eddy__arrow_writer_finish(eddy__arrow_writer *w, int codec, int zstd_level, eddy_buf *out,
                              eddy_err *err);
void eddy__arrow_writer_close(eddy__arrow_writer *w);

/* A decoded Arrow record batch: per column, pointers into the (possibly
 * decompressed) buffers. Decompressed buffers are owned by the batch. */
typedef struct eddy__arrow_colview {
    const uint8_t *validity; /* NULL = no nulls */
    const uint8_t *data;
    const uint8_t *offsets;
    size_t data_len, offsets_len, validity_len;
} eddy__arrow_colview;

typedef struct eddy__arrow_batch {
    int64_t rows;
    int ncols;
    eddy__arrow_colview *cols;
    uint8_t **owned;
    int nowned;
} eddy__arrow_batch;

/* Decode the IPC message at P[0..N) whose columns are COLS (the schema's, or
 * the projected subset) into B. Returns 0 or EDDY_ECORRUPT/ENOMEM. */
int eddy__arrow_read(const eddy_fluss_column *const *cols, int ncols, const uint8_t *p, size_t n,
                     eddy__arrow_batch *b, eddy_err *err);
/* Value of row R, column C of B into V (strings borrow from B). */
void eddy__arrow_get(const eddy__arrow_batch *b, const eddy_fluss_column *col, int c, int64_t r,
                     eddy_fluss_value *v);
void eddy__arrow_batch_free(eddy__arrow_batch *b);

/* A server error message made readable: the Java exception text's root
 * cause ("TableNotExistException: Table 'db.t' does not exist.") without
 * package names or stack frames, into BUF; returns BUF ("" for NULL). */
const char *eddy__fluss_brief(const char *msg, char *buf, size_t cap);

/* -- client internals (fluss/rpc.c, fluss/meta.c) ---------------------------- */

/* API keys. */
enum {
    API_VERSIONS = 1000,
    API_CREATE_DATABASE = 1001,
    API_DROP_DATABASE = 1002,
    API_LIST_DATABASES = 1003,
    API_CREATE_TABLE = 1005,
    API_DROP_TABLE = 1006,
    API_GET_TABLE_INFO = 1007,
    API_LIST_TABLES = 1008,
    API_METADATA = 1012,
    API_PRODUCE_LOG = 1014,
    API_FETCH_LOG = 1015,
    API_PUT_KV = 1016,
    API_LOOKUP = 1017,
    API_LIST_OFFSETS = 1021,
    API_INIT_WRITER = 1026,
    API_PREFIX_LOOKUP = 1034,
    API_AUTHENTICATE = 1038,
};

/* Fluss error codes the client acts on. */
enum {
    FE_NETWORK = 1,
    FE_DATABASE_NOT_EXIST = 4,
    FE_TABLE_NOT_EXIST = 7,
    FE_TABLE_ALREADY_EXIST = 8,
    FE_LOG_STORAGE = 10,
    FE_KV_STORAGE = 11,
    FE_NOT_LEADER = 12,
    FE_CORRUPT_RECORD = 14,
    FE_OFFSET_OUT_OF_RANGE = 19,
    FE_UNKNOWN_TABLE_OR_BUCKET = 21,
    FE_REQUEST_TIME_OUT = 25,
    FE_NOT_ENOUGH_REPLICAS = 29,
    FE_OUT_OF_ORDER_SEQUENCE = 31,
    FE_DUPLICATE_SEQUENCE = 32,
    FE_UNKNOWN_WRITER_ID = 33,
    FE_LEADER_NOT_AVAILABLE = 44,
    FE_RETRIABLE_AUTHENTICATE = 51,
};

/* Whether a per-bucket Fluss error is worth a metadata refresh and a retry. */
int eddy__fluss_retriable(int code);

/* Completion of one RPC: STATUS 0 with the response payload, or an error
 * (EDDY_EFLUSS with err->cause = Fluss code, EDDY_ENET, EDDY_ETIMEDOUT,
 * EDDY_ECANCELED). The payload is borrowed for the call. */
typedef void (*eddy__rpc_cb)(int status, const uint8_t *payload, size_t n, const eddy_err *err,
                             void *ud);

/* Node ids: tablet servers >= 0; these two name the other endpoints. */
#define NODE_BOOTSTRAP (-100)
#define NODE_COORDINATOR (-101)

/* Send MSG as API_KEY (version 0 unless VERSION) to NODE. Never calls CB
 * inside this call; calls it exactly once. */
int eddy__rpc_send(eddy_fluss_client *c, int node, int api_key, int version,
                   const ProtobufCMessage *msg, eddy__rpc_cb cb, void *ud);
/* The response frame at the start of P[0..N): 1 with *LEN (bytes after the
 * length word) when it has arrived whole, 0 when more bytes are needed, -1
 * with WHY when its length is impossible (0, or over EDDY__FLUSS_MAX_FRAME). */
int eddy__rpc_frame_next(const uint8_t *p, size_t n, size_t *len, char *why, size_t cap);
/* Type (0 success, 1 error, 2 server failure) and request id (-1 for 2) of
 * the frame P[0..N) after its length; -1 when malformed. */
int eddy__rpc_frame_head(const uint8_t *p, size_t n, int *type, int32_t *id);
/* Unpack PAYLOAD as DESC with the eddy allocator; NULL when it does not
 * parse or would allocate more than its size allows (EDDY__FLUSS_MAX_UNPACK). */
void *eddy__rpc_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t n);
void eddy__rpc_free_unpacked(void *msg);
/* Record host:port of tablet server NODE (from metadata). */
int eddy__rpc_set_node(eddy_fluss_client *c, int node, const char *host, int port);
/* Whether the client knows an address for NODE. */
int eddy__rpc_has_node(eddy_fluss_client *c, int node);
uv_loop_t *eddy__rpc_loop(eddy_fluss_client *c);
int eddy__rpc_timeout_ms(eddy_fluss_client *c);

/* Patch writer id and batch sequence into a finished log / KV batch and
 * recompute its CRC. */
void eddy__log_batch_set_writer(uint8_t *batch, size_t n, int64_t writer_id, int32_t seq);
void eddy__kv_batch_set_writer(uint8_t *batch, size_t n, int64_t writer_id, int32_t seq);

/* Call FN(0, UD) on a later loop tick (results served from a cache still
 * arrive asynchronously), or FN(EDDY_ECANCELED, UD) when the client closes
 * first; exactly once either way. EDDY_ECLOSING once the client is closing. */
int eddy__rpc_defer(eddy_fluss_client *c, void (*fn)(int status, void *ud), void *ud);

/* Whether eddy_fluss_client_close has been called: start functions then
 * refuse with EDDY_ECLOSING (and call nothing). */
int eddy__rpc_closing(const eddy_fluss_client *c);

/* Something that lives on a client and holds work the client does not see
 * (writers, scanners, metadata operations waiting for a retry). When the
 * client closes, after every request has been answered or canceled, it
 * unlinks each child and calls CLOSING, which must end that work (calling
 * its callbacks with EDDY_ECANCELED) and never use the client or its tables
 * again. */
typedef struct eddy__fluss_child {
    struct eddy__fluss_child *prev, *next;
    void (*closing)(struct eddy__fluss_child *ch);
    int linked;
} eddy__fluss_child;
void eddy__rpc_attach(eddy_fluss_client *c, eddy__fluss_child *ch,
                      void (*closing)(eddy__fluss_child *ch));
/* Unlink CH (no-op when it is not linked, e.g. during the close). */
void eddy__rpc_detach(eddy_fluss_client *c, eddy__fluss_child *ch);

/* The object that embeds MEMBER at P. */
#define EDDY__CONTAINER(p, type, member) ((type *)(void *)((char *)(p)-offsetof(type, member)))
/* The metadata module's per-client state, and its release at close. */
void **eddy__fluss_meta_slot(eddy_fluss_client *c);
void eddy__fluss_meta_free(eddy_fluss_client *c);
/* Refresh the bucket leaders of T (a cached table); CB when done. */
int eddy__fluss_refresh(eddy_fluss_client *c, const eddy_fluss_table *t, eddy_fluss_done_cb cb,
                        void *ud);
/* Mark T's leaders stale so the next eddy__fluss_refresh asks the server. */
void eddy__fluss_invalidate(eddy_fluss_client *c, const eddy_fluss_table *t);
void **eddy__fluss_lookup_slot(eddy_fluss_client *c);
/* Fail queued and retrying lookups with EDDY_ECANCELED (client closing). */
void eddy__fluss_lookup_cancel(eddy_fluss_client *c);

/* -- a log sink's checkpointed offsets (fluss/sinkpos.c) --------------------- */

/* {"table_id": TABLE_ID, "offsets": [OFFSETS[0], ...]} as new JSON text
 * (eddy_free), NULL on OOM: what a checkpoint keeps for a log sink. */
char *eddy__fluss_sink_state(int64_t table_id, const int64_t *offsets, int n);
/* Where a restart reads each of the N buckets of the sink's table (now
 * TABLE_ID, with EARLIEST and LATEST offsets) from to find outputs appended
 * after the last checkpoint, whose STATE (borrowed; NULL: none) the store
 * kept: FROM[b] (FROM[b] == LATEST[b]: nothing to read). Returns 0; 1 when
 * STATE does not fit the table (dropped and created again, or an offset
 * outside its log): FROM is then its start and WHY says so (a warning);
 * -1 when rows after a committed offset are gone (retention), so what they
 * held cannot be known: WHY names the bucket and the offsets. */
int eddy__fluss_sink_plan(const json_t *state, int64_t table_id, int n, const int64_t *earliest,
                          const int64_t *latest, int64_t *from, char *why, size_t cap);

#endif
