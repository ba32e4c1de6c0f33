/*
 * fluss/batch.c - log record batches (ProduceLog, FetchLog) and KV record
 * batches (PutKv).
 *
 * Writers produce magic 0 batches (48-byte log header, 28-byte KV header)
 * with a CRC-32C over everything from schema_id to the end. The log decoder
 * walks concatenated batches, parses magics 0, 1 and 2, verifies each CRC,
 * stops quietly at a truncated last batch (a fetch may end mid-batch) and
 * skips records below the requested offset (a fetch may start mid-batch).
 * Offsets come from the wire: a batch whose base offset is negative, or
 * whose records would go past INT64_MAX, is corrupt, so that every record
 * offset and the next fetch offset are computed without overflow.
 */
#include "eddy/fluss.h"

#include <string.h>

#include "fluss_int.h"

#define LOG_HEADER_V0 48
#define KV_HEADER 28

struct eddy_fluss_log_builder {
    const eddy_fluss_schema *schema;
    int schema_id, format, codec, zstd_level;
    int append_only;
    eddy__arrow_writer arrow;
    eddy_buf records; /* INDEXED / COMPACTED records */
    size_t rows;
};

int eddy_fluss_log_builder_new(const eddy_fluss_schema *schema, int schema_id, int format,
                               int codec, int zstd_level, eddy_fluss_log_builder **out,
                               eddy_err *err)
{
    eddy_fluss_log_builder *b = eddy_calloc(1, sizeof(*b));
    if (!b)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    b->schema = schema;
    b->schema_id = schema_id;
    b->format = format;
    b->codec = codec;
    b->zstd_level = zstd_level > 0 ? zstd_level : 3;
    b->append_only = 1;
    eddy_buf_init(&b->records);
    if (format == EDDY_FLUSS_LOG_ARROW && eddy__arrow_writer_init(&b->arrow, schema)) {
        eddy_free(b);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    *out = b;
    return 0;
}

void eddy_fluss_log_builder_free(eddy_fluss_log_builder *b)
{
    if (!b)
        return;
    if (b->format == EDDY_FLUSS_LOG_ARROW)
        eddy__arrow_writer_close(&b->arrow);
    eddy_buf_free(&b->records);
    eddy_free(b);
}

int eddy_fluss_log_builder_add(eddy_fluss_log_builder *b, int change, const eddy_fluss_value *vals,
                               eddy_err *err)
{
    if (b->format == EDDY_FLUSS_LOG_ARROW) {
        int rc = eddy__arrow_writer_add(&b->arrow, vals, err);
        if (!rc)
            b->rows++;
        return rc;
    }
    for (int i = 0; i < b->schema->ncols; i++) {
        const eddy_fluss_column *c = &b->schema->cols[i];
        int rc;
        if ((c->type == EDDY_FLUSS_TIMESTAMP || c->type == EDDY_FLUSS_TIMESTAMP_LTZ) &&
            !vals[i].is_null && (rc = eddy__fluss_ts_check(c, &vals[i], err)))
            return rc;
    }
    size_t at = b->records.len;
    uint8_t head[5] = {0, 0, 0, 0, (uint8_t)change};
    if (eddy_buf_append(&b->records, head, 5))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    int rc = b->format == EDDY_FLUSS_LOG_INDEXED
                 ? eddy_fluss_indexed_encode(b->schema, vals, &b->records)
                 : eddy_fluss_compacted_encode(b->schema, vals, &b->records);
    if (rc) {
        b->records.len = at;
        b->records.oom = 0;
        return eddy_err_set(err, rc, "out of memory");
    }
    wr_u32le((uint8_t *)b->records.data + at, (uint32_t)(b->records.len - at - 4));
    b->append_only &= change == EDDY_FLUSS_APPEND;
    b->rows++;
    return 0;
}

size_t eddy_fluss_log_builder_rows(const eddy_fluss_log_builder *b)
{
    return b->rows;
}

size_t eddy_fluss_log_builder_size(const eddy_fluss_log_builder *b)
{
    return LOG_HEADER_V0 +
           (b->format == EDDY_FLUSS_LOG_ARROW ? b->arrow.bytes + b->rows / 4 : b->records.len);
}

/* Fill the 48-byte magic-0 header at H for a batch of TOTAL bytes and set its CRC. */
static void seal_log_batch(uint8_t *h, size_t total, int schema_id, int attributes, size_t rows)
{
    memset(h, 0, LOG_HEADER_V0);
    wr_u32le(h + 8, (uint32_t)(total - 12));
    h[12] = 0;
    wr_u16le(h + 25, (uint16_t)schema_id);
    h[27] = (uint8_t)attributes;
    wr_u32le(h + 28, rows ? (uint32_t)(rows - 1) : 0);
    wr_u64le(h + 32, UINT64_MAX); /* writer id -1 */
    wr_u32le(h + 40, UINT32_MAX); /* batch sequence -1 */
    wr_u32le(h + 44, (uint32_t)rows);
    wr_u32le(h + 21, eddy_fluss_crc32c(0, h + 25, total - 25));
}

int eddy_fluss_log_builder_finish(eddy_fluss_log_builder *b, eddy_buf *out, eddy_err *err)
{
    size_t at = out->len;
    uint8_t zero[LOG_HEADER_V0] = {0};
    int attributes = b->append_only ? 1 : 0;
    if (eddy_buf_append(out, zero, LOG_HEADER_V0))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if (b->format == EDDY_FLUSS_LOG_ARROW) {
        attributes = 1; /* log tables: append-only, no change-type vector */
        int rc = eddy__arrow_writer_finish(&b->arrow, b->codec, b->zstd_level, out, err);
        if (rc)
            return rc;
    } else if (eddy_buf_append(out, b->records.data, b->records.len)) {
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    /* The CRC covers the header tail too, so it is written last. */
    uint8_t *h = (uint8_t *)out->data + at;
    size_t total = out->len - at;
    seal_log_batch(h, total, b->schema_id, attributes, b->rows);
    eddy_buf_reset(&b->records);
    b->rows = 0;
    b->append_only = 1;
    return 0;
}

/* -- KV batches ------------------------------------------------------------- */

struct eddy_fluss_kv_builder {
    int schema_id;
    eddy_buf records;
    size_t rows;
};

int eddy_fluss_kv_builder_new(int schema_id, eddy_fluss_kv_builder **out, eddy_err *err)
{
    eddy_fluss_kv_builder *b = eddy_calloc(1, sizeof(*b));
    if (!b)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    b->schema_id = schema_id;
    eddy_buf_init(&b->records);
    *out = b;
    return 0;
}

void eddy_fluss_kv_builder_free(eddy_fluss_kv_builder *b)
{
    if (!b)
        return;
    eddy_buf_free(&b->records);
    eddy_free(b);
}

int eddy_fluss_kv_builder_add(eddy_fluss_kv_builder *b, const void *key, size_t klen,
                              const void *value, size_t vlen, int is_delete)
{
    uint8_t head[14];
    size_t vn = eddy_fluss_varint_put(head + 4, klen);
    size_t len = vn + klen + (is_delete ? 0 : vlen);
    wr_u32le(head, (uint32_t)len);
    if (eddy_buf_append(&b->records, head, 4 + vn) || eddy_buf_append(&b->records, key, klen) ||
        (!is_delete && eddy_buf_append(&b->records, value, vlen)))
        return EDDY_ENOMEM;
    b->rows++;
    return 0;
}

size_t eddy_fluss_kv_builder_rows(const eddy_fluss_kv_builder *b)
{
    return b->rows;
}

size_t eddy_fluss_kv_builder_size(const eddy_fluss_kv_builder *b)
{
    return KV_HEADER + b->records.len;
}

int eddy_fluss_kv_builder_finish(eddy_fluss_kv_builder *b, eddy_buf *out, eddy_err *err)
{
    size_t at = out->len;
    uint8_t h[KV_HEADER] = {0};
    if (eddy_buf_append(out, h, KV_HEADER) || eddy_buf_append(out, b->records.data, b->records.len))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    uint8_t *p = (uint8_t *)out->data + at;
    size_t total = out->len - at;
    wr_u32le(p, (uint32_t)(total - 4));
    p[4] = 0;
    wr_u16le(p + 9, (uint16_t)b->schema_id);
    p[11] = 0;
    wr_u64le(p + 12, UINT64_MAX);
    wr_u32le(p + 20, UINT32_MAX);
    wr_u32le(p + 24, (uint32_t)b->rows);
    wr_u32le(p + 5, eddy_fluss_crc32c(0, p + 9, total - 9));
    eddy_buf_reset(&b->records);
    b->rows = 0;
    return 0;
}

/* -- decoding --------------------------------------------------------------- */

typedef struct batch_view {
    int64_t base_offset, timestamp;
    int attributes, last_delta, count;
    const uint8_t *records;
    size_t records_len;
} batch_view;

/* Parse the header of the complete batch at P[0..N) by its magic. */
static int parse_header(const uint8_t *p, size_t n, int check_crc, batch_view *bv, eddy_err *err)
{
    int magic = p[12];
    size_t crc_at, attr_at, delta_at, count_at, head;
    bv->base_offset = (int64_t)rd_u64le(p);
    if (magic == 0 || magic == 1) {
        crc_at = 21, attr_at = 27, delta_at = 28, count_at = 44, head = 48;
    } else if (magic == 2) {
        crc_at = 25, attr_at = 31, delta_at = 32, count_at = 48, head = 52;
    } else {
        return eddy_err_set(err, EDDY_ECORRUPT, "log batch at offset %lld: unknown magic %d",
                            (long long)bv->base_offset, magic);
    }
    if (n < head + (magic ? 4u : 0u))
        return eddy_err_set(err, EDDY_ECORRUPT, "log batch at offset %lld: short header",
                            (long long)bv->base_offset);
    bv->timestamp = (int64_t)rd_u64le(p + 13);
    if (magic) { /* statistics follow the header */
        uint32_t stats = rd_u32le(p + head);
        if (stats > n - head - 4)
            return eddy_err_set(err, EDDY_ECORRUPT, "log batch: statistics run past the batch");
        head += 4 + stats;
    }
    uint32_t want = rd_u32le(p + crc_at);
    if (check_crc && eddy_fluss_crc32c(0, p + crc_at + 4, n - crc_at - 4) != want)
        return eddy_err_set(err, EDDY_ECORRUPT, "log batch at offset %lld: CRC mismatch",
                            (long long)bv->base_offset);
    bv->attributes = p[attr_at];
    bv->last_delta = (int32_t)rd_u32le(p + delta_at);
    bv->count = (int32_t)rd_u32le(p + count_at);
    bv->records = p + head;
    bv->records_len = n - head;
    if (bv->count < 0 || bv->last_delta < 0)
        return eddy_err_set(err, EDDY_ECORRUPT, "log batch: negative record count");
    /* Record offsets run up to base + max(last_delta, count - 1), and the
     * next fetch starts at base + last_delta + 1: all must fit an int64. */
    int64_t span = bv->last_delta > bv->count - 1 ? bv->last_delta : bv->count - 1;
    if (bv->base_offset < 0)
        return eddy_err_set(err, EDDY_ECORRUPT, "log batch: negative base offset %lld",
                            (long long)bv->base_offset);
    if (bv->base_offset > INT64_MAX - 1 - span)
        return eddy_err_set(err, EDDY_ECORRUPT,
                            "log batch at offset %lld: %lld more offsets overflow the log "
                            "offset range",
                            (long long)bv->base_offset, (long long)span + 1);
    return 0;
}

typedef struct decode_ctx {
    const eddy_fluss_schema *schema;
    const int *proj;
    int nproj;
    eddy_fluss_value *vals;
    eddy_fluss_record_cb cb;
    void *ud;
    int64_t from;
} decode_ctx;

static int decode_arrow(decode_ctx *x, const batch_view *bv, int *stop, eddy_err *err)
{
    const eddy_fluss_schema *s = x->schema;
    const uint8_t *changes = NULL, *p = bv->records;
    size_t n = bv->records_len;
    const eddy_fluss_column *cols[256];
    int ncols = x->proj ? x->nproj : s->ncols;
    if (bv->count == 0)
        return 0;
    if (!(bv->attributes & 1)) {
        if (n < (size_t)bv->count)
            return eddy_err_set(err, EDDY_ECORRUPT, "log batch: change types run past the batch");
        changes = p;
        p += bv->count;
        n -= (size_t)bv->count;
    }
    if (ncols > 256)
        return eddy_err_set(err, EDDY_ESCHEMA, "more than 256 columns");
    for (int i = 0; i < ncols; i++)
        cols[i] = &s->cols[x->proj ? x->proj[i] : i];
    eddy__arrow_batch ab;
    int rc = eddy__arrow_read(cols, ncols, p, n, &ab, err);
    if (rc)
        return rc;
    if (ab.rows != bv->count) {
        eddy__arrow_batch_free(&ab);
        return eddy_err_set(err, EDDY_ECORRUPT, "log batch: %lld Arrow rows for %d records",
                            (long long)ab.rows, bv->count);
    }
    for (int64_t r = 0; r < ab.rows && !*stop; r++) {
        int64_t off = bv->base_offset + r;
        if (off < x->from)
            continue;
        for (int i = 0; i < s->ncols; i++)
            x->vals[i].is_null = 1;
        for (int i = 0; i < ncols; i++)
            eddy__arrow_get(&ab, cols[i], i, r, &x->vals[x->proj ? x->proj[i] : i]);
        *stop = x->cb(off, bv->timestamp, changes ? changes[r] : EDDY_FLUSS_APPEND, x->vals, x->ud);
    }
    eddy__arrow_batch_free(&ab);
    return 0;
}

static int decode_rows(decode_ctx *x, const batch_view *bv, int compacted, int *stop, eddy_err *err)
{
    const uint8_t *p = bv->records;
    size_t n = bv->records_len, at = 0;
    for (int r = 0; r < bv->count && !*stop; r++) {
        if (n - at < 5)
            return eddy_err_set(err, EDDY_ECORRUPT, "log batch: record %d runs past the batch", r);
        uint32_t len = rd_u32le(p + at);
        if (len < 1 || len > n - at - 4)
            return eddy_err_set(err, EDDY_ECORRUPT, "log batch: record %d runs past the batch", r);
        int change = p[at + 4];
        const uint8_t *row = p + at + 5;
        at += 4 + len;
        if (bv->base_offset + r < x->from)
            continue;
        int rc = compacted ? eddy_fluss_compacted_decode(x->schema, row, len - 1, x->vals, err)
                           : eddy_fluss_indexed_decode(x->schema, row, len - 1, x->vals, err);
        if (rc)
            return rc;
        *stop = x->cb(bv->base_offset + r, bv->timestamp, change, x->vals, x->ud);
    }
    return 0;
}

int eddy_fluss_log_decode(const eddy_fluss_schema *schema, int format, const uint8_t *data,
                          size_t n, int64_t from_offset, const int *projection, int nproj,
                          eddy_fluss_record_cb cb, void *ud, int64_t *next_offset, eddy_err *err)
{
    decode_ctx x = {schema, projection, nproj, NULL, cb, ud, from_offset};
    size_t at = 0;
    int stop = 0, rc = 0;
    *next_offset = from_offset;
    x.vals = eddy_calloc((size_t)schema->ncols + 1, sizeof(*x.vals));
    if (!x.vals)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    while (!stop && n - at >= 12 + 1) {
        uint32_t len = rd_u32le(data + at + 8);
        if (len > EDDY__FLUSS_MAX_FRAME) { /* could never arrive whole */
            rc = eddy_err_set(err, EDDY_ECORRUPT,
                              "log batch at byte %zu claims %u bytes, more than a response "
                              "can hold",
                              at, len);
            break;
        }
        if (len > n - at - 12)
            break; /* partial batch at the end of the fetch */
        batch_view bv;
        /* A projected fetch rewrites the Arrow body but keeps the stored
         * header, CRC included: only whole batches can be checked. */
        if ((rc = parse_header(data + at, (size_t)len + 12, projection == NULL, &bv, err)))
            break;
        if (format == EDDY_FLUSS_LOG_ARROW)
            rc = decode_arrow(&x, &bv, &stop, err);
        else
            rc = decode_rows(&x, &bv, format == EDDY_FLUSS_LOG_COMPACTED, &stop, err);
        if (rc)
            break;
        int64_t next = bv.base_offset + bv.last_delta + 1;
        if (next > *next_offset)
            *next_offset = next;
        at += (size_t)len + 12;
    }
    eddy_free(x.vals);
    return rc;
}

void eddy__log_batch_set_writer(uint8_t *batch, size_t n, int64_t writer_id, int32_t seq)
{
    wr_u64le(batch + 32, (uint64_t)writer_id);
    wr_u32le(batch + 40, (uint32_t)seq);
    wr_u32le(batch + 21, eddy_fluss_crc32c(0, batch + 25, n - 25));
}

void eddy__kv_batch_set_writer(uint8_t *batch, size_t n, int64_t writer_id, int32_t seq)
{
    wr_u64le(batch + 12, (uint64_t)writer_id);
    wr_u32le(batch + 20, (uint32_t)seq);
    wr_u32le(batch + 5, eddy_fluss_crc32c(0, batch + 9, n - 9));
}
