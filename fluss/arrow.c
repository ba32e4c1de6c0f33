/*
 * fluss/arrow.c - the Arrow IPC record batches inside Fluss ARROW log batches.
 *
 * Fluss sends one encapsulated RecordBatch message per log batch and no
 * Schema message: the column types come from the table schema. The writer
 * accumulates rows column by column and lays out the flatbuffer metadata by
 * hand, front to back (every uoffset points forward, as flatbuffers allows).
 * The reader checks every offset and length against the input before use:
 * corrupt or truncated bytes give EDDY_ECORRUPT, never a read out of bounds.
 * Buffers are 8-aligned in the body; with BodyCompression each buffer is an
 * int64 uncompressed length (-1 = stored raw) followed by a ZSTD or LZ4 frame.
 * Timestamps are int64 counts of the unit their precision implies (second,
 * milli, micro, nano); eddy holds epoch milliseconds + nano-of-millisecond.
 * Every conversion checks its range: an instant the unit cannot count (Arrow
 * TIMESTAMP(7..9) ends in 2262) is an error naming the column on write, and
 * a count of seconds beyond the millisecond range is corrupt on read.
 */
#include "eddy/fluss.h"

#include <lz4frame.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "fluss_int.h"

enum { ARROW_LZ4_FRAME = 0, ARROW_ZSTD = 1 };

/* Bytes a buffer may exceed what its rows need by (writers pad to 8 or 64). */
#define ARROW_SLACK 64

static int var_width(const eddy_fluss_column *c)
{
    return c->type == EDDY_FLUSS_STRING || c->type == EDDY_FLUSS_BYTES;
}

/* Bytes per value of a fixed-width column (0 for bool bitmaps and var). */
static size_t arrow_width(const eddy_fluss_column *c)
{
    switch (c->type) {
    case EDDY_FLUSS_TINYINT:
        return 1;
    case EDDY_FLUSS_SMALLINT:
        return 2;
    case EDDY_FLUSS_INT:
    case EDDY_FLUSS_DATE:
    case EDDY_FLUSS_FLOAT:
        return 4;
    case EDDY_FLUSS_BIGINT:
    case EDDY_FLUSS_DOUBLE:
    case EDDY_FLUSS_TIMESTAMP:
    case EDDY_FLUSS_TIMESTAMP_LTZ:
        return 8;
    case EDDY_FLUSS_DECIMAL:
        return 16;
    default:
        return 0;
    }
}

/* Floor quotient and the remainder in [0, B) of A / B (B > 0), without
 * overflow for any A (A - remainder may not fit: INT64_MIN / 1000). */
static int64_t floor_divmod(int64_t a, int64_t b, int64_t *rem)
{
    int64_t q = a / b, r = a % b;
    if (r < 0) {
        q--;
        r += b;
    }
    *rem = r;
    return q;
}

/* Arrow units per millisecond for a timestamp of precision P (0: seconds). */
static int64_t per_ms(int p)
{
    return p <= 3 ? 1 : p <= 6 ? 1000 : 1000000;
}

/* V of timestamp column C in the Arrow unit its precision implies, into
 * *OUT. Returns 0, or EDDY_ERANGE with ERR naming the column. */
static int ts_to_unit(const eddy_fluss_column *c, const eddy_fluss_value *v, int64_t *out,
                      eddy_err *err)
{
    int64_t rem, x;
    int rc = eddy__fluss_ts_check(c, v, err);
    if (rc)
        return rc;
    if (c->precision == 0) {
        *out = floor_divmod(v->v.ts.ms, 1000, &rem);
        return 0;
    }
    int64_t k = per_ms(c->precision), ms = v->v.ts.ms, sub = 0;
    if (k > 1) {
        sub = v->v.ts.nanos / (1000000 / k); /* 0 <= sub < k */
        if (ms < 0) { /* the same sum; ms * k alone may fall below INT64_MIN */
            ms++;
            sub -= k;
        }
    }
    if (__builtin_mul_overflow(ms, k, &x) || __builtin_add_overflow(x, sub, out))
        return eddy_err_set(err, EDDY_ERANGE,
                            "column '%s' (TIMESTAMP(%d)): %lld ms since 1970 is outside what "
                            "an Arrow timestamp in %s holds (years %s)",
                            c->name, c->precision, (long long)v->v.ts.ms,
                            k == 1000 ? "microseconds" : "nanoseconds",
                            k == 1000 ? "-290308 to 294247" : "1677 to 2262");
    return 0;
}

/* Arrow count X of timestamp column C to milliseconds + nano-of-milli.
 * Seconds (precision 0) must be checked first (check_column). */
static void ts_from_unit(const eddy_fluss_column *c, int64_t x, eddy_fluss_value *v)
{
    int64_t rem;
    v->v.ts.nanos = 0;
    if (c->precision == 0) {
        v->v.ts.ms = x * 1000;
    } else if (c->precision <= 3) {
        v->v.ts.ms = x;
    } else {
        int64_t k = per_ms(c->precision);
        v->v.ts.ms = floor_divmod(x, k, &rem);
        v->v.ts.nanos = (int32_t)(rem * (1000000 / k));
    }
}

int eddy__fluss_ts_check(const eddy_fluss_column *c, const eddy_fluss_value *v, eddy_err *err)
{
    if (c->precision > 3 && (v->v.ts.nanos < 0 || v->v.ts.nanos > 999999))
        return eddy_err_set(err, EDDY_ERANGE,
                            "column '%s' (TIMESTAMP(%d)): nano-of-millisecond %d is not in "
                            "0..999999",
                            c->name, c->precision, (int)v->v.ts.nanos);
    return 0;
}

/* -- writer ----------------------------------------------------------------- */

int eddy__arrow_writer_init(eddy__arrow_writer *w, const eddy_fluss_schema *s)
{
    memset(w, 0, sizeof(*w));
    w->schema = s;
    w->cols = eddy_calloc((size_t)s->ncols, sizeof(*w->cols));
    if (!w->cols)
        return EDDY_ENOMEM;
    for (int i = 0; i < s->ncols; i++) {
        eddy_buf_init(&w->cols[i].validity);
        eddy_buf_init(&w->cols[i].data);
        eddy_buf_init(&w->cols[i].offsets);
    }
    return 0;
}

void eddy__arrow_writer_close(eddy__arrow_writer *w)
{
    if (!w->cols)
        return;
    for (int i = 0; i < w->schema->ncols; i++) {
        eddy_buf_free(&w->cols[i].validity);
        eddy_buf_free(&w->cols[i].data);
        eddy_buf_free(&w->cols[i].offsets);
    }
    eddy_free(w->cols);
    w->cols = NULL;
}

/* Set bit I of B to ON (cleared explicitly: a row may be written again
 * after a failed add). */
static int set_bit(eddy_buf *b, size_t i, int on)
{
    if (i % 8 == 0 && eddy_buf_putc(b, 0))
        return EDDY_ENOMEM;
    if (on)
        b->data[i / 8] |= (char)(1 << (i % 8));
    else
        b->data[i / 8] &= (char)~(1 << (i % 8));
    return 0;
}

static int append_row(eddy__arrow_writer *w, const eddy_fluss_value *vals, const int64_t *units);

int eddy__arrow_writer_add(eddy__arrow_writer *w, const eddy_fluss_value *vals, eddy_err *err)
{
    const eddy_fluss_schema *s = w->schema;
    int64_t *units = eddy_calloc((size_t)s->ncols + 1, sizeof(*units));
    int rc = 0;
    if (!units)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    /* Convert first: a row that cannot be written changes nothing. */
    for (int i = 0; i < s->ncols && !rc; i++)
        if ((s->cols[i].type == EDDY_FLUSS_TIMESTAMP ||
             s->cols[i].type == EDDY_FLUSS_TIMESTAMP_LTZ) &&
            !vals[i].is_null)
            rc = ts_to_unit(&s->cols[i], &vals[i], &units[i], err);
    if (!rc) {
        size_t *lens = eddy_calloc(3 * (size_t)s->ncols + 1, sizeof(*lens));
        size_t *nulls = eddy_calloc((size_t)s->ncols + 1, sizeof(*nulls));
        size_t bytes = w->bytes;
        for (int i = 0; lens && nulls && i < s->ncols; i++) {
            lens[3 * i] = w->cols[i].validity.len;
            lens[3 * i + 1] = w->cols[i].data.len;
            lens[3 * i + 2] = w->cols[i].offsets.len;
            nulls[i] = w->cols[i].nulls;
        }
        rc = lens && nulls ? append_row(w, vals, units) : EDDY_ENOMEM;
        if (rc && lens && nulls) { /* out of memory halfway: undo the row */
            for (int i = 0; i < s->ncols; i++) {
                w->cols[i].validity.len = lens[3 * i];
                w->cols[i].data.len = lens[3 * i + 1];
                w->cols[i].offsets.len = lens[3 * i + 2];
                w->cols[i].validity.oom = w->cols[i].data.oom = w->cols[i].offsets.oom = 0;
                w->cols[i].nulls = nulls[i];
            }
            w->bytes = bytes;
        }
        if (rc)
            eddy_err_set(err, rc, "out of memory");
        eddy_free(lens);
        eddy_free(nulls);
    }
    eddy_free(units);
    return rc;
}

/* Append row VALS (timestamps already converted into UNITS) to W's columns. */
static int append_row(eddy__arrow_writer *w, const eddy_fluss_value *vals, const int64_t *units)
{
    const eddy_fluss_schema *s = w->schema;
    size_t r = w->rows;
    for (int i = 0; i < s->ncols; i++) {
        const eddy_fluss_column *c = &s->cols[i];
        const eddy_fluss_value *v = &vals[i];
        eddy__arrow_col *col = &w->cols[i];
        uint8_t tmp[16] = {0};
        size_t wd = arrow_width(c);
        if (set_bit(&col->validity, r, !v->is_null))
            return EDDY_ENOMEM;
        col->nulls += v->is_null != 0;
        if (c->type == EDDY_FLUSS_BOOLEAN) {
            if (set_bit(&col->data, r, !v->is_null && v->v.i))
                return EDDY_ENOMEM;
            continue;
        }
        if (var_width(c)) {
            if (r == 0 && eddy_buf_append(&col->offsets, tmp, 4))
                return EDDY_ENOMEM;
            if (!v->is_null && eddy_buf_append(&col->data, v->v.s.p, v->v.s.n))
                return EDDY_ENOMEM;
            wr_u32le(tmp, (uint32_t)col->data.len);
            if (eddy_buf_append(&col->offsets, tmp, 4))
                return EDDY_ENOMEM;
            w->bytes += v->is_null ? 4 : v->v.s.n + 4;
            continue;
        }
        if (!v->is_null) {
            switch (c->type) {
            case EDDY_FLUSS_FLOAT:
                memcpy(tmp, &v->v.f, 4);
                break;
            case EDDY_FLUSS_DOUBLE:
                memcpy(tmp, &v->v.d, 8);
                break;
            case EDDY_FLUSS_TIMESTAMP:
            case EDDY_FLUSS_TIMESTAMP_LTZ:
                wr_u64le(tmp, (uint64_t)units[i]);
                break;
            case EDDY_FLUSS_DECIMAL: {
                unsigned __int128 u = (unsigned __int128)v->v.dec;
                wr_u64le(tmp, (uint64_t)u);
                wr_u64le(tmp + 8, (uint64_t)(u >> 64));
                break;
            }
            default:
                wr_u64le(tmp, (uint64_t)v->v.i); /* little-endian: low bytes first */
            }
        }
        if (eddy_buf_append(&col->data, tmp, wd))
            return EDDY_ENOMEM;
        w->bytes += wd;
    }
    w->rows++;
    return 0;
}

/* Append one body buffer (compressed when CODEC says so), padded to 8. */
static int put_body_buffer(eddy_buf *body, const void *p, size_t n, int codec, int level,
                           uint8_t *meta)
{
    size_t at = body->len;
    if (codec == EDDY_FLUSS_CODEC_NONE) {
        if (eddy_buf_append(body, p, n))
            return EDDY_ENOMEM;
    } else if (n == 0) {
        uint8_t z[8] = {0};
        if (eddy_buf_append(body, z, 8))
            return EDDY_ENOMEM;
    } else {
        size_t bound = codec == EDDY_FLUSS_CODEC_ZSTD ? ZSTD_compressBound(n)
                                                      : LZ4F_compressFrameBound(n, NULL);
        if (eddy_buf_reserve(body, 8 + bound))
            return EDDY_ENOMEM;
        uint8_t *dst = (uint8_t *)body->data + at + 8;
        size_t got;
        if (codec == EDDY_FLUSS_CODEC_ZSTD) {
            got = ZSTD_compress(dst, bound, p, n, level);
            if (ZSTD_isError(got))
                got = SIZE_MAX;
        } else {
            got = LZ4F_compressFrame(dst, bound, p, n, NULL);
            if (LZ4F_isError(got))
                got = SIZE_MAX;
        }
        if (got >= n) { /* no gain: store raw, as Java does */
            wr_u64le((uint8_t *)body->data + at, UINT64_MAX);
            memcpy(dst, p, n);
            got = n;
        } else {
            wr_u64le((uint8_t *)body->data + at, n);
        }
        body->len = at + 8 + got;
        body->data[body->len] = 0;
    }
    wr_u64le(meta, at);
    wr_u64le(meta + 8, body->len - at);
    while (body->len % 8)
        if (eddy_buf_putc(body, 0))
            return EDDY_ENOMEM;
    return 0;
}

/* Flatbuffer metadata of the RecordBatch message, laid out front to back.
 * NODES and BUFS are the 16-byte structs already filled in. */
static int put_metadata(eddy_buf *m, int64_t rows, const uint8_t *nodes, size_t nnodes,
                        const uint8_t *bufs, size_t nbufs, int codec, int64_t body_len)
{
    size_t nodes_at, bufs_at, end;
    uint8_t h[112] = {0};
    /* 0: root -> Message table at 16; 4: Message vtable (4 fields) */
    wr_u32le(h, 16);
    wr_u16le(h + 4, 12), wr_u16le(h + 6, 24);
    wr_u16le(h + 8, 4), wr_u16le(h + 10, 6), wr_u16le(h + 12, 8), wr_u16le(h + 14, 16);
    /* 16: Message: soffset, version V5 (4), header_type RecordBatch (3), header, bodyLength */
    wr_u32le(h + 16, 12);
    wr_u16le(h + 20, 4);
    h[22] = 3;
    wr_u32le(h + 24, 56 - 24);
    wr_u64le(h + 32, (uint64_t)body_len);
    /* 40: RecordBatch vtable; 56: RecordBatch table */
    wr_u16le(h + 40, 12), wr_u16le(h + 42, 24);
    wr_u16le(h + 44, 16), wr_u16le(h + 46, 4), wr_u16le(h + 48, 8);
    wr_u16le(h + 50, codec != EDDY_FLUSS_CODEC_NONE ? 12 : 0);
    wr_u32le(h + 56, 16);
    wr_u64le(h + 72, (uint64_t)rows);
    /* 80: BodyCompression vtable; 88: its table (codec, method BUFFER) */
    wr_u16le(h + 80, 8), wr_u16le(h + 82, 8), wr_u16le(h + 84, 4), wr_u16le(h + 86, 5);
    wr_u32le(h + 88, 8);
    h[92] = codec == EDDY_FLUSS_CODEC_ZSTD ? ARROW_ZSTD : ARROW_LZ4_FRAME;
    if (codec != EDDY_FLUSS_CODEC_NONE)
        wr_u32le(h + 68, 88 - 68);
    nodes_at = 100; /* length word at 100, structs 8-aligned at 104 */
    bufs_at = nodes_at + 4 + nnodes * 16 + 4;
    end = bufs_at + 4 + nbufs * 16;
    wr_u32le(h + 60, (uint32_t)(nodes_at - 60));
    wr_u32le(h + 64, (uint32_t)(bufs_at - 64));
    if (eddy_buf_append(m, h, 100))
        return EDDY_ENOMEM;
    uint8_t w4[4];
    wr_u32le(w4, (uint32_t)nnodes);
    eddy_buf_append(m, w4, 4);
    eddy_buf_append(m, nodes, nnodes * 16);
    eddy_buf_append(m, h + 104, 4); /* padding: keeps the buffer structs 8-aligned */
    wr_u32le(w4, (uint32_t)nbufs);
    eddy_buf_append(m, w4, 4);
    eddy_buf_append(m, bufs, nbufs * 16);
    (void)end;
    while (m->len % 8)
        eddy_buf_putc(m, 0);
    return m->oom ? EDDY_ENOMEM : 0;
}

int eddy__arrow_writer_finish(eddy__arrow_writer *w, int codec, int zstd_level, eddy_buf *out,
                              eddy_err *err)
{
    const eddy_fluss_schema *s = w->schema;
    size_t nbufs = 0, bi = 0;
    int rc = EDDY_ENOMEM;
    eddy_buf body, meta;
    eddy_buf_init(&body);
    eddy_buf_init(&meta);
    for (int i = 0; i < s->ncols; i++)
        nbufs += var_width(&s->cols[i]) ? 3 : 2;
    uint8_t *nodes = eddy_calloc((size_t)s->ncols + 1, 16);
    uint8_t *bufs = eddy_calloc(nbufs + 1, 16);
    if (!nodes || !bufs)
        goto out;
    for (int i = 0; i < s->ncols; i++) {
        eddy__arrow_col *c = &w->cols[i];
        wr_u64le(nodes + 16 * i, w->rows);
        wr_u64le(nodes + 16 * i + 8, c->nulls);
        if (put_body_buffer(&body, c->validity.data, c->validity.len, codec, zstd_level,
                            bufs + 16 * bi++))
            goto out;
        if (var_width(&s->cols[i]) && put_body_buffer(&body, c->offsets.data, c->offsets.len, codec,
                                                      zstd_level, bufs + 16 * bi++))
            goto out;
        if (put_body_buffer(&body, c->data.data, c->data.len, codec, zstd_level, bufs + 16 * bi++))
            goto out;
    }
    if (put_metadata(&meta, (int64_t)w->rows, nodes, (size_t)s->ncols, bufs, nbufs, codec,
                     (int64_t)body.len))
        goto out;
    uint8_t pre[8];
    wr_u32le(pre, 0xFFFFFFFFu);
    wr_u32le(pre + 4, (uint32_t)meta.len);
    if (eddy_buf_append(out, pre, 8) || eddy_buf_append(out, meta.data, meta.len) ||
        eddy_buf_append(out, body.data, body.len))
        goto out;
    for (int i = 0; i < s->ncols; i++) {
        eddy_buf_reset(&w->cols[i].validity);
        eddy_buf_reset(&w->cols[i].data);
        eddy_buf_reset(&w->cols[i].offsets);
        w->cols[i].nulls = 0;
    }
    w->rows = w->bytes = 0;
    rc = 0;
out:
    if (rc)
        eddy_err_set(err, rc, "out of memory building an Arrow batch");
    eddy_free(nodes);
    eddy_free(bufs);
    eddy_buf_free(&body);
    eddy_buf_free(&meta);
    return rc;
}

/* -- reader ----------------------------------------------------------------- */

typedef struct fb {
    const uint8_t *p;
    size_t n;
} fb;

/* Absolute position of field IDX of the table at T, or 0 when absent/bad. */
static size_t fb_field(const fb *f, size_t t, int idx, size_t width)
{
    if (t + 4 > f->n)
        return 0;
    int32_t so = (int32_t)rd_u32le(f->p + t);
    int64_t vt = (int64_t)t - so;
    if (vt < 0 || (size_t)vt + 4 > f->n)
        return 0;
    uint16_t vtsize = rd_u16le(f->p + vt);
    size_t slot = 4 + 2 * (size_t)idx;
    if (slot + 2 > vtsize || (size_t)vt + slot + 2 > f->n)
        return 0;
    uint16_t off = rd_u16le(f->p + vt + slot);
    if (!off || t + off + width > f->n)
        return 0;
    return t + off;
}

/* Follow the uoffset stored at field position AT. Returns 0 when bad. */
static size_t fb_deref(const fb *f, size_t at)
{
    if (!at || at + 4 > f->n)
        return 0;
    uint64_t to = (uint64_t)at + rd_u32le(f->p + at);
    return to < f->n ? (size_t)to : 0;
}

/* Vector of 16-byte structs at field IDX of T: its element pointer and count. */
static const uint8_t *fb_vec16(const fb *f, size_t t, int idx, size_t *count)
{
    size_t v = fb_deref(f, fb_field(f, t, idx, 4));
    if (!v || v + 4 > f->n)
        return NULL;
    uint64_t k = rd_u32le(f->p + v);
    if (k > (f->n - v - 4) / 16)
        return NULL;
    *count = (size_t)k;
    return f->p + v + 4;
}

/* What reading a buffer can come to besides success. */
enum { BUF_CORRUPT = -1, BUF_NOMEM = -2, BUF_TOO_LARGE = -3 };

/* Decompress the buffer SRC[0..N): an int64 uncompressed length, then a
 * ZSTD or LZ4 frame. The claimed length is checked before anything is
 * allocated: against MAX (what the column's rows can use), against *BUDGET
 * (what is left of the batch's EDDY__FLUSS_MAX_DECOMPRESSED), and against
 * the content size a ZSTD frame header declares. *CLAIM gets the claimed
 * length. Returns 1 when the bytes are stored raw after the prefix, 0 with
 * *OUT (owned) decompressed, or BUF_*. */
static int decompress(int codec, const uint8_t *src, size_t n, size_t max, size_t *budget,
                      uint8_t **out, size_t *out_len, uint64_t *claim)
{
    if (n < 8)
        return BUF_CORRUPT;
    int64_t raw = (int64_t)rd_u64le(src);
    *out = NULL;
    *claim = (uint64_t)raw;
    if (raw == -1 || raw == 0) {
        *out_len = raw == 0 ? 0 : n - 8;
        return 1; /* stored raw after the prefix (or empty) */
    }
    if (raw < 0)
        return BUF_CORRUPT;
    if ((uint64_t)raw > max || (uint64_t)raw > *budget)
        return BUF_TOO_LARGE;
    if (codec == ARROW_ZSTD) {
        unsigned long long declared = ZSTD_getFrameContentSize(src + 8, n - 8);
        if (declared == ZSTD_CONTENTSIZE_ERROR ||
            (declared != ZSTD_CONTENTSIZE_UNKNOWN && declared != (unsigned long long)raw))
            return BUF_CORRUPT;
    }
    uint8_t *dst = eddy_malloc((size_t)raw + 1);
    if (!dst)
        return BUF_NOMEM;
    size_t got;
    if (codec == ARROW_ZSTD) {
        got = ZSTD_decompress(dst, (size_t)raw, src + 8, n - 8);
        if (ZSTD_isError(got))
            got = SIZE_MAX;
    } else {
        LZ4F_dctx *d = NULL;
        got = SIZE_MAX;
        if (!LZ4F_isError(LZ4F_createDecompressionContext(&d, LZ4F_VERSION))) {
            size_t dl = (size_t)raw, sl = n - 8;
            size_t r = LZ4F_decompress(d, dst, &dl, src + 8, &sl, NULL);
            if (!LZ4F_isError(r) && r == 0)
                got = dl;
            LZ4F_freeDecompressionContext(d);
        }
    }
    if (got != (size_t)raw) {
        eddy_free(dst);
        return BUF_CORRUPT;
    }
    *budget -= got;
    *out = dst;
    *out_len = got;
    return 0;
}

/* One body buffer described at META (offset, length, both checked against
 * the body) into *P / *LEN, decompressed when CODEC says so (MAX, BUDGET
 * and CLAIM as for decompress). Returns 0 or BUF_*. */
static int read_buffer(eddy__arrow_batch *b, const uint8_t *body, size_t body_len,
                       const uint8_t *meta, int codec, size_t max, size_t *budget,
                       const uint8_t **p, size_t *len, uint64_t *claim)
{
    uint64_t off = rd_u64le(meta), n = rd_u64le(meta + 8);
    if (off > body_len || n > body_len - off)
        return BUF_CORRUPT;
    *p = body + off;
    *len = (size_t)n;
    if (codec < 0 || n == 0)
        return 0;
    uint8_t *owned;
    int rc = decompress(codec, body + off, (size_t)n, max, budget, &owned, len, claim);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        *p = body + off + 8;
        return 0;
    }
    uint8_t **grown = eddy_realloc(b->owned, sizeof(*grown) * (size_t)(b->nowned + 1));
    if (!grown) {
        eddy_free(owned);
        return BUF_NOMEM;
    }
    b->owned = grown;
    b->owned[b->nowned++] = owned;
    *p = owned;
    return 0;
}

/* Whether every non-null second count of V (a TIMESTAMP(0) column) is a
 * whole number of milliseconds an int64 holds. */
static int seconds_fit(int64_t rows, const eddy__arrow_colview *v)
{
    for (int64_t r = 0; r < rows; r++) {
        int64_t x = (int64_t)rd_u64le(v->data + 8 * r);
        if ((!v->validity || (v->validity[r / 8] & (1 << (r % 8)))) &&
            (x > INT64_MAX / 1000 || x < INT64_MIN / 1000))
            return 0;
    }
    return 1;
}

static int check_column(const eddy_fluss_column *c, int64_t rows, eddy__arrow_colview *v)
{
    size_t need_bits = (size_t)(rows + 7) / 8;
    if (rows == 0)
        return 0;
    if (v->validity && v->validity_len < need_bits)
        return -1;
    if (c->type == EDDY_FLUSS_BOOLEAN)
        return v->data_len < need_bits ? -1 : 0;
    if (!var_width(c)) {
        if (v->data_len / arrow_width(c) < (size_t)rows)
            return -1;
        if ((c->type == EDDY_FLUSS_TIMESTAMP || c->type == EDDY_FLUSS_TIMESTAMP_LTZ) &&
            c->precision == 0 && !seconds_fit(rows, v))
            return -2;
        return 0;
    }
    if (v->offsets_len / 4 < (size_t)rows + 1)
        return -1;
    uint32_t prev = rd_u32le(v->offsets);
    for (int64_t r = 1; r <= rows; r++) {
        uint32_t o = rd_u32le(v->offsets + 4 * r);
        if (o < prev || o > v->data_len)
            return -1;
        prev = o;
    }
    return 0;
}

int eddy__arrow_read(const eddy_fluss_column *const *cols, int ncols, const uint8_t *p, size_t n,
                     eddy__arrow_batch *b, eddy_err *err)
{
    memset(b, 0, sizeof(*b));
    size_t at = 0, nnodes = 0, nbufs = 0;
    if (n < 8)
        goto corrupt;
    uint32_t mlen = rd_u32le(p);
    if (mlen == 0xFFFFFFFFu) {
        mlen = rd_u32le(p + 4);
        at = 8;
    } else {
        at = 4;
    }
    if (mlen > n - at)
        goto corrupt;
    fb f = {p + at, mlen};
    const uint8_t *body = p + at + mlen;
    size_t body_len = n - at - mlen;
    size_t msg = mlen >= 4 && rd_u32le(f.p) < mlen ? rd_u32le(f.p) : 0;
    size_t ht = fb_field(&f, msg, 1, 1);
    if (!msg || !ht || f.p[ht] != 3)
        goto corrupt;
    size_t rb = fb_deref(&f, fb_field(&f, msg, 2, 4));
    size_t lenf = fb_field(&f, rb, 0, 8);
    if (!rb)
        goto corrupt;
    b->rows = lenf ? (int64_t)rd_u64le(f.p + lenf) : 0;
    const uint8_t *nodes = fb_vec16(&f, rb, 1, &nnodes);
    const uint8_t *bufs = fb_vec16(&f, rb, 2, &nbufs);
    int codec = -1;
    size_t comp = fb_deref(&f, fb_field(&f, rb, 3, 4));
    if (comp) {
        size_t cf = fb_field(&f, comp, 0, 1);
        codec = cf ? f.p[cf] : ARROW_LZ4_FRAME;
        if (codec != ARROW_ZSTD && codec != ARROW_LZ4_FRAME)
            goto corrupt;
    }
    if (b->rows < 0 || b->rows > INT32_MAX || !nodes || !bufs || nnodes < (size_t)ncols)
        goto corrupt;
    b->ncols = ncols;
    b->cols = eddy_calloc((size_t)ncols + 1, sizeof(*b->cols));
    if (!b->cols)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory reading an Arrow batch");
    size_t bi = 0, budget = EDDY__FLUSS_MAX_DECOMPRESSED;
    size_t rows = (size_t)b->rows, bits = (rows + 7) / 8;
    for (int i = 0; i < ncols; i++) {
        eddy__arrow_colview *v = &b->cols[i];
        size_t need = var_width(cols[i]) ? 3 : 2, max;
        uint64_t claim = 0;
        int rc;
        if (bi + need > nbufs || (int64_t)rd_u64le(nodes + 16 * i) != b->rows)
            goto corrupt;
        int64_t nulls = (int64_t)rd_u64le(nodes + 16 * i + 8);
        /* The most bytes each buffer can use for ROWS (+ padding): a
         * compressed buffer claiming more is refused before allocating. */
        max = bits + ARROW_SLACK;
        rc = read_buffer(b, body, body_len, bufs + 16 * bi++, codec, max, &budget, &v->validity,
                         &v->validity_len, &claim);
        if (!rc && nulls == 0)
            v->validity = NULL;
        if (!rc && need == 3) {
            max = 4 * (rows + 1) + ARROW_SLACK;
            rc = read_buffer(b, body, body_len, bufs + 16 * bi++, codec, max, &budget, &v->offsets,
                             &v->offsets_len, &claim);
        }
        if (!rc) {
            if (cols[i]->type == EDDY_FLUSS_BOOLEAN)
                max = bits + ARROW_SLACK;
            else if (!var_width(cols[i]))
                max = arrow_width(cols[i]) * rows + ARROW_SLACK;
            else /* the last offset says how many bytes the values take */
                max = (v->offsets_len >= 4 * (rows + 1) ? rd_u32le(v->offsets + 4 * rows) : 0) +
                      (size_t)ARROW_SLACK;
            rc = read_buffer(b, body, body_len, bufs + 16 * bi++, codec, max, &budget, &v->data,
                             &v->data_len, &claim);
        }
        if (rc == BUF_TOO_LARGE) {
            eddy__arrow_batch_free(b);
            return eddy_err_set(err, EDDY_ECORRUPT,
                                "Arrow record batch: a compressed buffer of column '%s' claims "
                                "%llu bytes, more than %zu rows can use (%zu) or what is left "
                                "of the %u MiB one batch may decompress to (%zu)",
                                cols[i]->name, (unsigned long long)claim, rows, max,
                                EDDY__FLUSS_MAX_DECOMPRESSED >> 20, budget);
        }
        if (rc == BUF_NOMEM) {
            eddy__arrow_batch_free(b);
            return eddy_err_set(err, EDDY_ENOMEM, "out of memory reading an Arrow batch");
        }
        if (rc)
            goto corrupt;
        int bad = check_column(cols[i], b->rows, v);
        if (bad == -2) {
            eddy__arrow_batch_free(b);
            return eddy_err_set(err, EDDY_ECORRUPT,
                                "Arrow record batch: column '%s' (TIMESTAMP(0)) holds seconds "
                                "beyond the millisecond range",
                                cols[i]->name);
        }
        if (bad)
            goto corrupt;
    }
    return 0;
corrupt:
    eddy__arrow_batch_free(b);
    return eddy_err_set(err, EDDY_ECORRUPT, "corrupt Arrow record batch");
}

void eddy__arrow_get(const eddy__arrow_batch *b, const eddy_fluss_column *col, int c, int64_t r,
                     eddy_fluss_value *v)
{
    const eddy__arrow_colview *cv = &b->cols[c];
    memset(v, 0, sizeof(*v));
    if (cv->validity && !(cv->validity[r / 8] & (1 << (r % 8)))) {
        v->is_null = 1;
        return;
    }
    const uint8_t *d = cv->data;
    switch (col->type) {
    case EDDY_FLUSS_BOOLEAN:
        v->v.i = (d[r / 8] >> (r % 8)) & 1;
        break;
    case EDDY_FLUSS_TINYINT:
        v->v.i = (int8_t)d[r];
        break;
    case EDDY_FLUSS_SMALLINT:
        v->v.i = (int16_t)rd_u16le(d + 2 * r);
        break;
    case EDDY_FLUSS_INT:
    case EDDY_FLUSS_DATE:
        v->v.i = (int32_t)rd_u32le(d + 4 * r);
        break;
    case EDDY_FLUSS_BIGINT:
        v->v.i = (int64_t)rd_u64le(d + 8 * r);
        break;
    case EDDY_FLUSS_FLOAT:
        memcpy(&v->v.f, d + 4 * r, 4);
        break;
    case EDDY_FLUSS_DOUBLE:
        memcpy(&v->v.d, d + 8 * r, 8);
        break;
    case EDDY_FLUSS_TIMESTAMP:
    case EDDY_FLUSS_TIMESTAMP_LTZ:
        ts_from_unit(col, (int64_t)rd_u64le(d + 8 * r), v);
        break;
    case EDDY_FLUSS_DECIMAL: {
        unsigned __int128 u = rd_u64le(d + 16 * r + 8);
        v->v.dec = (__int128)((u << 64) | rd_u64le(d + 16 * r));
        break;
    }
    case EDDY_FLUSS_STRING:
    case EDDY_FLUSS_BYTES: {
        uint32_t o0 = rd_u32le(cv->offsets + 4 * r), o1 = rd_u32le(cv->offsets + 4 * r + 4);
        v->v.s.p = (const char *)d + o0;
        v->v.s.n = o1 - o0;
        break;
    }
    }
}

void eddy__arrow_batch_free(eddy__arrow_batch *b)
{
    for (int i = 0; i < b->nowned; i++)
        eddy_free(b->owned[i]);
    eddy_free(b->owned);
    eddy_free(b->cols);
    memset(b, 0, sizeof(*b));
}
