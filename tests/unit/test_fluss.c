/* tests/unit/test_fluss.c - Fluss codecs with byte-level vectors, and the client against a fake
 * server on loopback. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "eddy/fluss.h"
/* Twice on purpose: the include guard must cover every declaration (it used
 * to close halfway, and a second inclusion redefined the API enums). The
 * internals let the client tests below drive the RPC layer directly. */
#include "../../fluss/fluss_int.h"
#include "../../fluss/fluss_int.h"

/* A schema of one column of every supported type. */
static eddy_fluss_column ALL_COLS[] = {
    {"b", EDDY_FLUSS_BOOLEAN, 1, 0, 0},          {"t", EDDY_FLUSS_TINYINT, 1, 0, 0},
    {"s", EDDY_FLUSS_SMALLINT, 1, 0, 0},         {"i", EDDY_FLUSS_INT, 1, 0, 0},
    {"l", EDDY_FLUSS_BIGINT, 1, 0, 0},           {"f", EDDY_FLUSS_FLOAT, 1, 0, 0},
    {"d", EDDY_FLUSS_DOUBLE, 1, 0, 0},           {"str", EDDY_FLUSS_STRING, 1, 0, 0},
    {"by", EDDY_FLUSS_BYTES, 1, 0, 0},           {"dt", EDDY_FLUSS_DATE, 1, 0, 0},
    {"ts3", EDDY_FLUSS_TIMESTAMP, 1, 3, 0},      {"ts6", EDDY_FLUSS_TIMESTAMP, 1, 6, 0},
    {"ltz3", EDDY_FLUSS_TIMESTAMP_LTZ, 1, 3, 0}, {"ltz9", EDDY_FLUSS_TIMESTAMP_LTZ, 1, 9, 0},
    {"dec", EDDY_FLUSS_DECIMAL, 1, 10, 2},       {"big", EDDY_FLUSS_DECIMAL, 1, 30, 4},
};
#define NALL ((int)(sizeof(ALL_COLS) / sizeof(ALL_COLS[0])))
static eddy_fluss_schema ALL = {NALL, ALL_COLS, 0, NULL, 0, NULL};

static void fill_row(eddy_fluss_value *v, int k)
{
    memset(v, 0, sizeof(*v) * NALL);
    v[0].v.i = k & 1;
    v[1].v.i = -100 + k;
    v[2].v.i = -30000 + k;
    v[3].v.i = -5 - k;
    v[4].v.i = (int64_t)1 << 40 | k;
    v[5].v.f = 1.5f * (float)k;
    v[6].v.d = -2.25 * k;
    v[7].v.s.p = "héllo";
    v[7].v.s.n = strlen("héllo") - (size_t)(k % 3);
    v[8].v.s.p = "\x00\x01\xff";
    v[8].v.s.n = 3;
    v[9].v.i = 20000 + k;
    v[10].v.ts.ms = 1700000000123LL + k;
    v[11].v.ts.ms = -1234;
    v[11].v.ts.nanos = 456000;
    v[12].v.ts.ms = 1;
    v[13].v.ts.ms = 1700000000000LL;
    v[13].v.ts.nanos = 999999;
    v[14].v.dec = -12345 - k;
    v[15].v.dec = (__int128)123456789012345LL * 1000000000LL + k;
    if (k % 4 == 3) /* some nulls */
        v[3].is_null = v[7].is_null = v[15].is_null = 1;
}

static void assert_rows_equal(const eddy_fluss_value *a, const eddy_fluss_value *b)
{
    for (int i = 0; i < NALL; i++) {
        assert_int_equal(a[i].is_null, b[i].is_null);
        if (a[i].is_null)
            continue;
        switch (ALL_COLS[i].type) {
        case EDDY_FLUSS_FLOAT:
            assert_true(a[i].v.f == b[i].v.f);
            break;
        case EDDY_FLUSS_DOUBLE:
            assert_true(a[i].v.d == b[i].v.d);
            break;
        case EDDY_FLUSS_STRING:
        case EDDY_FLUSS_BYTES:
            assert_int_equal(a[i].v.s.n, b[i].v.s.n);
            assert_memory_equal(a[i].v.s.p, b[i].v.s.p, a[i].v.s.n);
            break;
        case EDDY_FLUSS_TIMESTAMP:
        case EDDY_FLUSS_TIMESTAMP_LTZ:
            assert_int_equal(a[i].v.ts.ms, b[i].v.ts.ms);
            assert_int_equal(a[i].v.ts.nanos, b[i].v.ts.nanos);
            break;
        case EDDY_FLUSS_DECIMAL:
            assert_true(a[i].v.dec == b[i].v.dec);
            break;
        default:
            assert_int_equal(a[i].v.i, b[i].v.i);
        }
    }
}

static void test_crc32c(void **state)
{
    (void)state;
    assert_int_equal(eddy_fluss_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(eddy_fluss_crc32c(0, "", 0), 0);
    /* continuing a CRC equals one pass */
    const char *s = "The quick brown fox jumps over the lazy dog";
    uint32_t one = eddy_fluss_crc32c(0, s, strlen(s));
    assert_int_equal(eddy_fluss_crc32c(eddy_fluss_crc32c(0, s, 11), s + 11, strlen(s) - 11), one);
    assert_int_equal(one, 0x22620404u);
}

static void test_murmur_buckets(void **state)
{
    (void)state;
    /* vectors of the Rust/Java clients (fact sheet 3.5) */
    assert_int_equal(eddy_fluss_bucket("\x00\x0a", 2, 7), 1);
    assert_int_equal(eddy_fluss_bucket("\x00\x0a\x0a\x0a", 4, 12), 0);
    const char *fox = "The quick brown fox jumps over the lazy dog";
    assert_int_equal(eddy_fluss_bucket(fox, strlen(fox), 8), 6);
}

static void test_varint(void **state)
{
    uint8_t b[10];
    uint64_t v;
    (void)state;
    assert_int_equal(eddy_fluss_varint_put(b, 0), 1);
    assert_int_equal(eddy_fluss_varint_put(b, 300), 2);
    assert_memory_equal(b, "\xac\x02", 2);
    assert_int_equal(eddy_fluss_varint_get(b, 2, &v), 2);
    assert_int_equal(v, 300);
    /* negative int32 in a compacted row: unsigned 32-bit, 5 bytes */
    assert_int_equal(eddy_fluss_varint_put(b, (uint32_t)-1), 5);
    assert_memory_equal(b, "\xff\xff\xff\xff\x0f", 5);
    assert_int_equal(eddy_fluss_varint_put(b, UINT64_MAX), 10);
    assert_int_equal(eddy_fluss_varint_get(b, 10, &v), 10);
    assert_true(v == UINT64_MAX);
    /* truncated */
    assert_int_equal(eddy_fluss_varint_get(b, 3, &v), 0);
}

static void test_compacted_vectors(void **state)
{
    eddy_fluss_column cols[] = {{"id", EDDY_FLUSS_INT, 0, 0, 0}, {"n", EDDY_FLUSS_STRING, 1, 0, 0}};
    eddy_fluss_schema s = {2, cols, 0, NULL, 0, NULL};
    eddy_fluss_value v[2] = {{0}};
    eddy_buf b;
    int key = 0;
    (void)state;
    v[0].v.i = 5;
    v[1].v.s.p = "abc";
    v[1].v.s.n = 3;
    eddy_buf_init(&b);
    assert_int_equal(eddy_fluss_compacted_encode(&s, v, &b), 0);
    assert_int_equal(b.len, 6);
    assert_memory_equal(b.data,
                        "\x00\x05\x03"
                        "abc",
                        6);
    eddy_buf_reset(&b);
    /* keys: no null bitmap (fact sheet: INT 5 -> 05, "abc" -> 03 61 62 63) */
    assert_int_equal(eddy_fluss_key_encode(&s, &key, 1, v, &b, NULL), 0);
    assert_memory_equal(b.data, "\x05", 1);
    eddy_buf_reset(&b);
    key = 1;
    assert_int_equal(eddy_fluss_key_encode(&s, &key, 1, v, &b, NULL), 0);
    assert_memory_equal(b.data,
                        "\x03"
                        "abc",
                        4);
    eddy_buf_reset(&b);
    v[1].is_null = 1;
    v[0].v.i = -1;
    assert_int_equal(eddy_fluss_compacted_encode(&s, v, &b), 0);
    assert_memory_equal(b.data, "\x02\xff\xff\xff\xff\x0f", 6);
    eddy_buf_free(&b);
}

static void test_rows_roundtrip(void **state)
{
    eddy_fluss_value in[NALL], out[NALL];
    eddy_buf b;
    eddy_err e;
    (void)state;
    eddy_buf_init(&b);
    for (int k = 0; k < 8; k++) {
        fill_row(in, k);
        eddy_buf_reset(&b);
        assert_int_equal(eddy_fluss_compacted_encode(&ALL, in, &b), 0);
        assert_int_equal(eddy_fluss_compacted_decode(&ALL, (uint8_t *)b.data, b.len, out, &e), 0);
        assert_rows_equal(in, out);
        /* every truncation is rejected, never read past */
        for (size_t cut = 0; cut < b.len; cut++)
            assert_int_equal(eddy_fluss_compacted_decode(&ALL, (uint8_t *)b.data, cut, out, &e),
                             EDDY_ECORRUPT);
        eddy_buf_reset(&b);
        assert_int_equal(eddy_fluss_indexed_encode(&ALL, in, &b), 0);
        assert_int_equal(eddy_fluss_indexed_decode(&ALL, (uint8_t *)b.data, b.len, out, &e), 0);
        assert_rows_equal(in, out);
        for (size_t cut = 0; cut < b.len; cut++)
            assert_int_not_equal(eddy_fluss_indexed_decode(&ALL, (uint8_t *)b.data, cut, out, &e),
                                 0);
    }
    eddy_buf_free(&b);
}

static void test_indexed_vector(void **state)
{
    eddy_fluss_column cols[] = {{"id", EDDY_FLUSS_INT, 0, 0, 0},
                                {"n", EDDY_FLUSS_STRING, 1, 0, 0},
                                {"m", EDDY_FLUSS_STRING, 1, 0, 0}};
    eddy_fluss_schema s = {3, cols, 0, NULL, 0, NULL};
    eddy_fluss_value v[3] = {{0}};
    eddy_buf b;
    (void)state;
    v[0].v.i = 7;
    v[1].is_null = 1;
    v[2].v.s.p = "xy";
    v[2].v.s.n = 2;
    eddy_buf_init(&b);
    assert_int_equal(eddy_fluss_indexed_encode(&s, v, &b), 0);
    /* bitmap (col 1 null), two length slots filled by non-null columns only,
     * then INT LE and the bytes */
    assert_int_equal(b.len, 1 + 8 + 4 + 2);
    assert_memory_equal(b.data, "\x02\x02\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x00xy", 15);
    eddy_buf_free(&b);
}

typedef struct collected {
    int n;
    int64_t first, last;
    int changes[64];
    eddy_fluss_value rows[64][NALL];
    char strs[64][NALL][16];
} collected;

static int collect(int64_t off, int64_t ts, int change, const eddy_fluss_value *vals, void *ud)
{
    collected *c = ud;
    (void)ts;
    if (c->n == 0)
        c->first = off;
    c->last = off;
    c->changes[c->n] = change;
    memcpy(c->rows[c->n], vals, sizeof(eddy_fluss_value) * NALL);
    for (int i = 0; i < NALL; i++) /* strings are borrowed for the call only */
        if ((ALL_COLS[i].type == EDDY_FLUSS_STRING || ALL_COLS[i].type == EDDY_FLUSS_BYTES) &&
            !vals[i].is_null) {
            memcpy(c->strs[c->n][i], vals[i].v.s.p, vals[i].v.s.n);
            c->rows[c->n][i].v.s.p = c->strs[c->n][i];
        }
    c->n++;
    return 0;
}

static void log_roundtrip(int format, int codec)
{
    eddy_fluss_log_builder *lb;
    eddy_fluss_value in[NALL];
    eddy_buf b;
    eddy_err e;
    collected *c = calloc(1, sizeof(*c));
    int64_t next;
    eddy_buf_init(&b);
    assert_int_equal(eddy_fluss_log_builder_new(&ALL, 1, format, codec, 3, &lb, &e), 0);
    for (int k = 0; k < 20; k++) {
        fill_row(in, k);
        assert_int_equal(eddy_fluss_log_builder_add(lb, EDDY_FLUSS_APPEND, in, NULL), 0);
    }
    assert_int_equal(eddy_fluss_log_builder_finish(lb, &b, &e), 0);
    /* a second batch in the same buffer, base offset patched to 20 */
    size_t first_len = b.len;
    for (int k = 20; k < 30; k++) {
        fill_row(in, k);
        assert_int_equal(eddy_fluss_log_builder_add(lb, EDDY_FLUSS_APPEND, in, NULL), 0);
    }
    assert_int_equal(eddy_fluss_log_builder_finish(lb, &b, &e), 0);
    b.data[first_len] = 20; /* base_offset lies outside the CRC */
    assert_int_equal(eddy_fluss_log_decode(&ALL, format, (uint8_t *)b.data, b.len, 5, NULL, 0,
                                           collect, c, &next, &e),
                     0);
    assert_int_equal(next, 30);
    assert_int_equal(c->n, 25); /* records below offset 5 skipped */
    assert_int_equal(c->first, 5);
    for (int k = 5; k < 30; k++) {
        fill_row(in, k);
        assert_rows_equal(in, c->rows[k - 5]);
    }
    /* truncated tail batch: only the first batch is delivered */
    c->n = 0;
    assert_int_equal(eddy_fluss_log_decode(&ALL, format, (uint8_t *)b.data, b.len - 1, 0, NULL, 0,
                                           collect, c, &next, &e),
                     0);
    assert_int_equal(next, 20);
    assert_int_equal(c->n, 20);
    /* a flipped byte inside the CRC range is caught */
    b.data[60] ^= 0x40;
    assert_int_equal(eddy_fluss_log_decode(&ALL, format, (uint8_t *)b.data, b.len, 0, NULL, 0,
                                           collect, c, &next, &e),
                     EDDY_ECORRUPT);
    eddy_fluss_log_builder_free(lb);
    eddy_buf_free(&b);
    free(c);
}

static void test_log_arrow_plain(void **state)
{
    (void)state;
    log_roundtrip(EDDY_FLUSS_LOG_ARROW, EDDY_FLUSS_CODEC_NONE);
}

static void test_log_arrow_zstd(void **state)
{
    (void)state;
    log_roundtrip(EDDY_FLUSS_LOG_ARROW, EDDY_FLUSS_CODEC_ZSTD);
}

static void test_log_arrow_lz4(void **state)
{
    (void)state;
    log_roundtrip(EDDY_FLUSS_LOG_ARROW, EDDY_FLUSS_CODEC_LZ4);
}

static void test_log_indexed(void **state)
{
    (void)state;
    log_roundtrip(EDDY_FLUSS_LOG_INDEXED, EDDY_FLUSS_CODEC_NONE);
}

static void test_log_header_vector(void **state)
{
    eddy_fluss_column cols[] = {{"id", EDDY_FLUSS_INT, 0, 0, 0}};
    eddy_fluss_schema s = {1, cols, 0, NULL, 0, NULL};
    eddy_fluss_log_builder *lb;
    eddy_fluss_value v = {0};
    eddy_buf b;
    (void)state;
    eddy_buf_init(&b);
    assert_int_equal(eddy_fluss_log_builder_new(&s, 1, EDDY_FLUSS_LOG_INDEXED, 0, 0, &lb, NULL), 0);
    v.v.i = 1;
    assert_int_equal(eddy_fluss_log_builder_add(lb, EDDY_FLUSS_APPEND, &v, NULL), 0);
    assert_int_equal(eddy_fluss_log_builder_finish(lb, &b, NULL), 0);
    /* 48-byte header + record (len 6: attr, bitmap, INT32 LE) */
    assert_int_equal(b.len, 48 + 4 + 6);
    static const uint8_t head[] = {
        0,  0, 0, 0, 0, 0, 0, 0, /* base offset */
        46, 0, 0, 0,             /* length = total - 12 */
        0,                       /* magic */
        0,  0, 0, 0, 0, 0, 0, 0, /* commit timestamp */
    };
    assert_memory_equal(b.data, head, sizeof(head));
    uint32_t crc = eddy_fluss_crc32c(0, b.data + 25, b.len - 25);
    assert_memory_equal(b.data + 21, &crc, 4); /* little-endian host */
    assert_memory_equal(b.data + 25, "\x01\x00\x01\x00\x00\x00\x00",
                        7); /* schema 1, attrs, delta 0 */
    assert_memory_equal(b.data + 32,
                        "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01\x00\x00\x00", 16);
    assert_memory_equal(b.data + 48, "\x06\x00\x00\x00\x00\x00\x01\x00\x00\x00", 10);
    eddy_fluss_log_builder_free(lb);
    eddy_buf_free(&b);
}

static int count_rows(int64_t off, int64_t ts, int change, const eddy_fluss_value *vals, void *ud)
{
    (void)ts, (void)change, (void)vals;
    ((int64_t *)ud)[0]++;
    ((int64_t *)ud)[1] = off;
    return 0;
}

/* Decode a two-record batch of FORMAT whose base offset is BASE. */
static int decode_at(int format, int64_t base, int64_t *seen, int64_t *next, eddy_err *e)
{
    eddy_fluss_column cols[] = {{"id", EDDY_FLUSS_INT, 0, 0, 0}};
    eddy_fluss_schema s = {1, cols, 0, NULL, 0, NULL};
    eddy_fluss_log_builder *lb;
    eddy_fluss_value v = {0};
    eddy_buf b;
    eddy_buf_init(&b);
    assert_int_equal(eddy_fluss_log_builder_new(&s, 1, format, 0, 0, &lb, NULL), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(eddy_fluss_log_builder_add(lb, EDDY_FLUSS_APPEND, &v, NULL), 0);
    assert_int_equal(eddy_fluss_log_builder_finish(lb, &b, NULL), 0);
    wr_u64le((uint8_t *)b.data, (uint64_t)base); /* outside the CRC: still valid */
    seen[0] = seen[1] = -1;
    int rc = eddy_fluss_log_decode(&s, format, (const uint8_t *)b.data, b.len, 0, NULL, 0,
                                   count_rows, seen, next, e);
    seen[0]++;
    eddy_fluss_log_builder_free(lb);
    eddy_buf_free(&b);
    return rc;
}

/* A hostile base offset: the record offsets (base + i) and the next fetch
 * offset (base + last_offset_delta + 1) used to overflow int64 (UBSan
 * aborts); such a batch is corrupt, with a message that says so. The
 * largest base that still fits decodes. */
static void test_log_base_offset_overflow(void **state)
{
    static const int formats[] = {EDDY_FLUSS_LOG_INDEXED, EDDY_FLUSS_LOG_ARROW};
    int64_t seen[2], next;
    eddy_err e;
    (void)state;
    for (int f = 0; f < 2; f++) {
        assert_int_equal(decode_at(formats[f], INT64_MAX, seen, &next, &e), EDDY_ECORRUPT);
        assert_non_null(strstr(e.msg, "overflow the log offset range"));
        assert_int_equal(seen[0], 0);
        assert_int_equal(decode_at(formats[f], INT64_MAX - 1, seen, &next, &e), EDDY_ECORRUPT);
        assert_int_equal(decode_at(formats[f], -5, seen, &next, &e), EDDY_ECORRUPT);
        assert_non_null(strstr(e.msg, "negative base offset -5"));
        assert_int_equal(decode_at(formats[f], INT64_MAX - 2, seen, &next, &e), 0);
        assert_int_equal(seen[0], 2);
        assert_true(seen[1] == INT64_MAX - 1);
        assert_true(next == INT64_MAX);
    }
}

/* -- timestamps at the edges of their representations ----------------------- */

static eddy_fluss_column TS_COLS[] = {
    {"ts0", EDDY_FLUSS_TIMESTAMP, 1, 0, 0},      {"ts3", EDDY_FLUSS_TIMESTAMP, 1, 3, 0},
    {"ts6", EDDY_FLUSS_TIMESTAMP, 1, 6, 0},      {"ts9", EDDY_FLUSS_TIMESTAMP, 1, 9, 0},
    {"ltz9", EDDY_FLUSS_TIMESTAMP_LTZ, 1, 9, 0},
};
static eddy_fluss_schema TS = {5, TS_COLS, 0, NULL, 0, NULL};

typedef struct ts_rows {
    eddy_fluss_value got[8][5];
    int n, ncols;
} ts_rows;

static int keep_ts(int64_t off, int64_t ts, int change, const eddy_fluss_value *vals, void *ud)
{
    ts_rows *r = ud;
    (void)off, (void)ts, (void)change;
    memcpy(r->got[r->n++], vals, sizeof(*vals) * (size_t)(r->ncols ? r->ncols : 5));
    return 0;
}

/* Epoch ms and nano-of-milli of ISO TEXT, through the JSON row parser. */
static eddy_fluss_value ts_of(const char *text)
{
    eddy_fluss_value v[5];
    eddy_fluss_arena a = {0};
    eddy_err e;
    json_t *row = json_pack("{s:s}", "ts9", text);
    assert_int_equal(eddy_fluss_row_from_json(&TS, row, 0, v, &a, &e), 0);
    json_decref(row);
    eddy_fluss_arena_free(&a);
    return v[3];
}

/* One row with the instant X in every column (nulls where NULLS has a 1). */
static void ts_row(eddy_fluss_value *row, eddy_fluss_value x, const char *nulls)
{
    for (int i = 0; i < 5; i++) {
        row[i] = x;
        row[i].is_null = nulls[i] == '1';
    }
}

/* Arrow counts seconds, milli-, micro- or nanoseconds in an int64 by
 * precision: TIMESTAMP(9) ends in 1677 and 2262. Writing beyond is an error
 * naming the column (it used to overflow: UBSan aborts), the edges
 * themselves round-trip, and a failed row leaves the batch as it was.
 * Compacted and indexed rows hold millis + nanos: year 1 and 9999 exactly. */
static void test_timestamp_edges(void **state)
{
    static const int formats[] = {EDDY_FLUSS_LOG_ARROW, EDDY_FLUSS_LOG_INDEXED,
                                  EDDY_FLUSS_LOG_COMPACTED};
    eddy_fluss_value first = ts_of("0001-01-01T00:00:00.000000001");
    eddy_fluss_value last = ts_of("9999-12-31T23:59:59.999999999");
    eddy_fluss_value nano_max = ts_of("2262-04-11T23:47:16.854775807");
    eddy_fluss_value nano_min = ts_of("1677-09-21T00:12:43.145224192");
    eddy_fluss_value past = ts_of("2262-04-11T23:47:16.854775808");
    eddy_fluss_value row[5];
    eddy_err e;
    (void)state;
    assert_true(first.v.ts.ms == -62135596800000LL && first.v.ts.nanos == 1);
    assert_true(nano_max.v.ts.ms == 9223372036854LL && nano_max.v.ts.nanos == 775807);
    assert_true(nano_min.v.ts.ms == -9223372036855LL && nano_min.v.ts.nanos == 224192);
    for (int f = 0; f < 3; f++) {
        eddy_fluss_log_builder *lb;
        eddy_buf b;
        ts_rows got = {0};
        int64_t next;
        int arrow = formats[f] == EDDY_FLUSS_LOG_ARROW;
        eddy_buf_init(&b);
        assert_int_equal(eddy_fluss_log_builder_new(&TS, 1, formats[f], 0, 0, &lb, NULL), 0);
        ts_row(row, nano_max, "00000");
        assert_int_equal(eddy_fluss_log_builder_add(lb, EDDY_FLUSS_APPEND, row, &e), 0);
        ts_row(row, nano_min, "00000");
        assert_int_equal(eddy_fluss_log_builder_add(lb, EDDY_FLUSS_APPEND, row, &e), 0);
        /* year 1 and 9999 fit everything but nanoseconds in Arrow */
        ts_row(row, first, arrow ? "00011" : "00000");
        assert_int_equal(eddy_fluss_log_builder_add(lb, EDDY_FLUSS_APPEND, row, &e), 0);
        ts_row(row, last, arrow ? "00011" : "00000");
        assert_int_equal(eddy_fluss_log_builder_add(lb, EDDY_FLUSS_APPEND, row, &e), 0);
        if (arrow) {
            ts_row(row, past, "00000");
            assert_int_equal(eddy_fluss_log_builder_add(lb, EDDY_FLUSS_APPEND, row, &e),
                             EDDY_ERANGE);
            assert_non_null(strstr(e.msg, "column 'ts9' (TIMESTAMP(9))"));
            assert_non_null(strstr(e.msg, "1677 to 2262"));
            ts_row(row, first, "00001");
            assert_int_equal(eddy_fluss_log_builder_add(lb, EDDY_FLUSS_APPEND, row, &e),
                             EDDY_ERANGE);
            assert_non_null(strstr(e.msg, "'ts9'"));
            ts_row(row, last, "00010");
            assert_int_equal(eddy_fluss_log_builder_add(lb, EDDY_FLUSS_APPEND, row, &e),
                             EDDY_ERANGE);
            assert_non_null(strstr(e.msg, "'ltz9'"));
        }
        ts_row(row, first, "00000");
        row[2].v.ts.nanos = 1000000; /* not a nano-of-millisecond */
        row[3].is_null = row[4].is_null = 1;
        assert_int_equal(eddy_fluss_log_builder_add(lb, EDDY_FLUSS_APPEND, row, &e), EDDY_ERANGE);
        assert_non_null(strstr(e.msg, "'ts6'"));
        assert_int_equal(eddy_fluss_log_builder_rows(lb), 4);
        assert_int_equal(eddy_fluss_log_builder_finish(lb, &b, NULL), 0);
        assert_int_equal(eddy_fluss_log_decode(&TS, formats[f], (const uint8_t *)b.data, b.len, 0,
                                               NULL, 0, keep_ts, &got, &next, &e),
                         0);
        assert_int_equal(got.n, 4);
        const eddy_fluss_value *want[] = {&nano_max, &nano_min, &first, &last};
        for (int r = 0; r < 4; r++) {
            const eddy_fluss_value *g = got.got[r], *x = want[r];
            /* Arrow TIMESTAMP(0) counts whole seconds (floored) */
            int64_t sec_ms = x->v.ts.ms / 1000 * 1000 - (x->v.ts.ms % 1000 < 0 ? 1000 : 0);
            assert_true(g[0].v.ts.ms == (arrow ? sec_ms : x->v.ts.ms) && g[0].v.ts.nanos == 0);
            assert_true(g[1].v.ts.ms == x->v.ts.ms && g[1].v.ts.nanos == 0);
            assert_true(g[2].v.ts.ms == x->v.ts.ms);
            assert_int_equal(g[2].v.ts.nanos, arrow ? x->v.ts.nanos / 1000 * 1000 : x->v.ts.nanos);
            if (arrow && r >= 2) {
                assert_true(g[3].is_null && g[4].is_null);
                continue;
            }
            assert_true(g[3].v.ts.ms == x->v.ts.ms && g[3].v.ts.nanos == x->v.ts.nanos);
            assert_true(g[4].v.ts.ms == x->v.ts.ms && g[4].v.ts.nanos == x->v.ts.nanos);
        }
        eddy_fluss_log_builder_free(lb);
        eddy_buf_free(&b);
    }
    /* rows from the wire with a nano-of-millisecond that is none */
    eddy_buf b;
    eddy_buf_init(&b);
    ts_row(row, first, "00000");
    row[4].v.ts.nanos = 1000000;
    assert_int_equal(eddy_fluss_compacted_encode(&TS, row, &b), 0);
    assert_int_equal(eddy_fluss_compacted_decode(&TS, (const uint8_t *)b.data, b.len, row, &e),
                     EDDY_ECORRUPT);
    assert_non_null(strstr(e.msg, "'ltz9'"));
    eddy_buf_reset(&b);
    ts_row(row, first, "00000");
    row[3].v.ts.nanos = -1;
    assert_int_equal(eddy_fluss_indexed_encode(&TS, row, &b), 0);
    assert_int_equal(eddy_fluss_indexed_decode(&TS, (const uint8_t *)b.data, b.len, row, &e),
                     EDDY_ECORRUPT);
    assert_non_null(strstr(e.msg, "'ts9'"));
    eddy_buf_free(&b);
}

/* Read side: Arrow counts at the int64 edges. Micro- and nanoseconds at
 * INT64_MIN used to overflow while splitting into millis + nanos; seconds
 * beyond the millisecond range are corrupt, naming the column. */
static void test_timestamp_arrow_read_edges(void **state)
{
    static const int64_t counts[] = {INT64_MIN, INT64_MAX};
    eddy_fluss_log_builder *lb;
    eddy_fluss_value row[5];
    eddy_buf b;
    ts_rows got = {0};
    int64_t next;
    eddy_err e;
    (void)state;
    for (int k = 0; k < 2; k++) {
        /* one column at a time: its 8-byte value is the last of the batch */
        for (int c = 0; c < 5; c++) {
            eddy_fluss_schema one = {1, &TS_COLS[c], 0, NULL, 0, NULL};
            eddy_buf_init(&b);
            memset(row, 0, sizeof(row));
            assert_int_equal(
                eddy_fluss_log_builder_new(&one, 1, EDDY_FLUSS_LOG_ARROW, 0, 0, &lb, NULL), 0);
            assert_int_equal(eddy_fluss_log_builder_add(lb, EDDY_FLUSS_APPEND, row, &e), 0);
            assert_int_equal(eddy_fluss_log_builder_finish(lb, &b, NULL), 0);
            wr_u64le((uint8_t *)b.data + b.len - 8, (uint64_t)counts[k]);
            eddy__log_batch_set_writer((uint8_t *)b.data, b.len, -1, -1); /* new CRC */
            got.n = 0;
            got.ncols = 1;
            int rc = eddy_fluss_log_decode(&one, EDDY_FLUSS_LOG_ARROW, (const uint8_t *)b.data,
                                           b.len, 0, NULL, 0, keep_ts, &got, &next, &e);
            if (c == 0) {
                assert_int_equal(rc, EDDY_ECORRUPT);
                assert_non_null(strstr(e.msg, "column 'ts0'"));
            } else {
                int64_t per = c == 1 ? 1 : c == 2 ? 1000 : 1000000, x = counts[k];
                assert_int_equal(rc, 0);
                assert_int_equal(got.n, 1);
                const eddy_fluss_value *g = &got.got[0][0];
                int32_t want_nanos = (int32_t)((x % per + per) % per * (1000000 / per));
                assert_true(g->v.ts.ms == x / per - (x % per < 0));
                assert_int_equal(g->v.ts.nanos, want_nanos);
            }
            eddy_fluss_log_builder_free(lb);
            eddy_buf_free(&b);
        }
    }
}

/* Text: years 0000 to 9999, checked field by field (a year like 2147483647
 * used to overflow the millisecond arithmetic); any epoch millisecond,
 * INT64_MIN and INT64_MAX included, prints without overflow. */
static void test_timestamp_text_edges(void **state)
{
    static const char *good[] = {"0001-01-01T00:00:00.000000001", "9999-12-31T23:59:59.999999999",
                                 "2262-04-11T23:47:16.854775807", "1969-12-31T23:59:59.999999999",
                                 "0000-01-01T00:00:00.000000000", "2024-02-29T12:00:00.000000000"};
    static const char *bad[] = {"10000-01-01T00:00",
                                "2147483647-01-01T00:00",
                                "2023-02-29",
                                "2024-13-01",
                                "2024-01-01T24:00",
                                "2024-01-01T1:2:3x",
                                "2024-01-01T00:00+99:00"};
    eddy_fluss_value v[5];
    eddy_fluss_arena a = {0};
    eddy_err e;
    int64_t ms;
    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        json_t *row = json_pack("{s:s}", "ts9", good[i]);
        assert_int_equal(eddy_fluss_row_from_json(&TS, row, 0, v, &a, &e), 0);
        json_t *back = eddy_fluss_row_to_json(&TS, v, NULL, 0);
        assert_string_equal(json_string_value(json_object_get(back, "ts9")), good[i]);
        json_decref(back);
        json_decref(row);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *row = json_pack("{s:s}", "ts9", bad[i]);
        assert_int_equal(eddy_fluss_row_from_json(&TS, row, 0, v, &a, &e), EDDY_ESCHEMA);
        assert_non_null(strstr(e.msg, "'ts9'"));
        assert_int_equal(eddy_fluss_parse_time(bad[i], &ms), EDDY_EINVAL);
        json_decref(row);
    }
    eddy_fluss_arena_free(&a);
    memset(v, 0, sizeof(v));
    v[0].v.ts.ms = v[1].v.ts.ms = v[3].v.ts.ms = INT64_MIN;
    v[2].v.ts.ms = v[4].v.ts.ms = INT64_MAX;
    v[3].v.ts.nanos = v[4].v.ts.nanos = 999999;
    json_t *j = eddy_fluss_row_to_json(&TS, v, NULL, 0);
    assert_non_null(j);
    assert_non_null(
        strstr(json_string_value(json_object_get(j, "ts3")), "-292275055-05-16T16:47:04.192"));
    assert_non_null(strstr(json_string_value(json_object_get(j, "ltz9")),
                           "292278994-08-17T07:12:55.807999999Z"));
    json_decref(j);
}

static void test_kv_batch_vector(void **state)
{
    eddy_fluss_kv_builder *kb;
    eddy_buf b;
    (void)state;
    eddy_buf_init(&b);
    assert_int_equal(eddy_fluss_kv_builder_new(2, &kb, NULL), 0);
    assert_int_equal(eddy_fluss_kv_builder_add(kb, "\x05", 1, "\x00\x05\x01x", 4, 0), 0);
    assert_int_equal(eddy_fluss_kv_builder_add(kb, "\x06", 1, NULL, 0, 1), 0);
    assert_int_equal(eddy_fluss_kv_builder_finish(kb, &b, NULL), 0);
    assert_int_equal(b.len, 28 + 4 + 6 + 4 + 2);
    assert_memory_equal(b.data, "\x28\x00\x00\x00\x00", 5);
    uint32_t crc = eddy_fluss_crc32c(0, b.data + 9, b.len - 9);
    assert_memory_equal(b.data + 5, &crc, 4);
    assert_memory_equal(b.data + 9, "\x02\x00\x00", 3);
    assert_memory_equal(b.data + 24, "\x02\x00\x00\x00", 4);
    assert_memory_equal(b.data + 28, "\x06\x00\x00\x00\x01\x05\x00\x05\x01x", 10);
    assert_memory_equal(b.data + 38, "\x02\x00\x00\x00\x01\x06", 6);
    eddy_fluss_kv_builder_free(kb);
    eddy_buf_free(&b);
}

static void test_types_and_json(void **state)
{
    eddy_fluss_column c = {0};
    eddy_err e;
    char name[40];
    (void)state;
    assert_int_equal(eddy_fluss_type_parse("decimal(12, 3) NOT NULL", &c, &e), 0);
    assert_int_equal(c.type, EDDY_FLUSS_DECIMAL);
    assert_int_equal(c.precision, 12);
    assert_int_equal(c.scale, 3);
    assert_int_equal(c.nullable, 0);
    eddy_fluss_type_name(&c, name, sizeof(name));
    assert_string_equal(name, "DECIMAL(12,3)");
    assert_int_equal(eddy_fluss_type_parse("TIMESTAMP_LTZ(3)", &c, &e), 0);
    assert_int_equal(c.precision, 3);
    assert_int_equal(eddy_fluss_type_parse("ARRAY<INT>", &c, &e), EDDY_ESCHEMA);
    assert_non_null(strstr(e.msg, "ARRAY<INT>"));

    /* row <-> JSON for every type */
    eddy_fluss_value in[NALL], out[NALL];
    eddy_fluss_arena arena = {0};
    fill_row(in, 2);
    json_t *j = eddy_fluss_row_to_json(&ALL, in, NULL, 0);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "dec")), "-123.47");
    assert_string_equal(json_string_value(json_object_get(j, "by")), "AAH/");
    assert_string_equal(json_string_value(json_object_get(j, "ts6")), "1969-12-31T23:59:58.766456");
    assert_string_equal(json_string_value(json_object_get(j, "ltz9")),
                        "2023-11-14T22:13:20.000999999Z");
    assert_string_equal(json_string_value(json_object_get(j, "dt")), "2024-10-06");
    assert_int_equal(eddy_fluss_row_from_json(&ALL, j, 1, out, &arena, &e), 0);
    assert_rows_equal(in, out);
    json_decref(j);

    /* type errors name the column */
    j = json_pack("{s:s}", "i", "seven");
    assert_int_equal(eddy_fluss_row_from_json(&ALL, j, 1, out, &arena, &e), EDDY_ESCHEMA);
    assert_non_null(strstr(e.msg, "'i'"));
    json_decref(j);
    j = json_pack("{s:i}", "t", 300);
    assert_int_equal(eddy_fluss_row_from_json(&ALL, j, 1, out, &arena, &e), EDDY_ESCHEMA);
    json_decref(j);
    j = json_pack("{s:s}", "dec", "123456789.5");
    assert_int_equal(eddy_fluss_row_from_json(&ALL, j, 1, out, &arena, &e), EDDY_ESCHEMA);
    json_decref(j);
    j = json_pack("{s:i}", "nope", 1);
    assert_int_equal(eddy_fluss_row_from_json(&ALL, j, 1, out, &arena, &e), EDDY_ESCHEMA);
    assert_int_equal(eddy_fluss_row_from_json(&ALL, j, 0, out, &arena, &e), 0);
    json_decref(j);
    eddy_fluss_arena_free(&arena);
}

static void test_table_json(void **state)
{
    eddy_fluss_table *t = NULL;
    eddy_err e;
    json_t *out = NULL;
    (void)state;
    json_t *doc = json_loads("{\"columns\":[{\"name\":\"id\",\"type\":\"BIGINT NOT NULL\"},"
                             "{\"name\":\"body\",\"type\":\"STRING\"}],"
                             "\"primary_key\":[\"id\"],\"buckets\":3,\"compression\":\"lz4\"}",
                             0, NULL);
    assert_int_equal(eddy_fluss_table_json_build(doc, &out, &e), 0);
    char *text = json_dumps(out, JSON_COMPACT);
    assert_int_equal(eddy_fluss_table_parse("db", "t", text, strlen(text), &t, &e), 0);
    assert_int_equal(t->schema.ncols, 2);
    assert_int_equal(t->schema.npk, 1);
    assert_int_equal(t->schema.nbk, 1);
    assert_int_equal(t->nbuckets, 3);
    assert_int_equal(t->codec, EDDY_FLUSS_CODEC_LZ4);
    assert_int_equal(t->schema.cols[0].nullable, 0);
    eddy_fluss_table_free(t);
    free(text);
    json_decref(out);
    json_decref(doc);
    const char *arr = "{\"schema\":{\"columns\":[{\"name\":\"tags\",\"data_type\":"
                      "{\"type\":\"ARRAY\"}}]},\"partition_key\":[]}";
    assert_int_equal(eddy_fluss_table_parse("db", "x", arr, strlen(arr), &t, &e), EDDY_ESCHEMA);
    assert_non_null(strstr(e.msg, "'tags'"));
}

/* -- the client against a fake server --------------------------------------- */

/*
 * A fake Fluss server on loopback, on the test's own loop: it answers
 * ApiVersions, ListDatabases, InitWriter (writer ids 1, 2, ...) and Metadata
 * (one table, fluss.t, every bucket led by node 0 = itself), PutKv when
 * kv_answers is set, holds every other request unanswered (so requests are
 * in flight when a test closes the client), and can send raw bytes instead
 * of an answer. A "blackhole" is a listener whose accept queue is full: the
 * kernel drops further SYNs, so a connect to it stays pending.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct fake_srv fake_srv;

typedef struct fake_conn {
    struct fake_conn *next;
    fake_srv *srv;
    uv_tcp_t tcp;
    eddy_buf in;
} fake_conn;

struct fake_srv {
    uv_loop_t *loop;
    uv_tcp_t lis;
    int port;
    fake_conn *conns;
    int open;          /* handles not yet closed */
    int seen[64];      /* requests received, by api key - 1000 */
    int answer_all;    /* answer held APIs with an empty success too */
    const char *table; /* table JSON of fluss.t */
    int nbuckets;
    /* raw bytes to send instead of the answer to the next request of raw_api */
    int raw_api;
    const uint8_t *raw;
    size_t raw_len;
    int64_t writer_ids; /* InitWriter answers: the last id given */
    /* kv_answers: PutKv is answered, every bucket refused with OUT_OF_ORDER_SEQUENCE
     * while lost_writer > 0 (one less per request), else acknowledged; the writer
     * id and sequence of each bucket's last batch are kept */
    int kv_answers, lost_writer;
    int64_t kv_writer[8];
    int32_t kv_seq[8];
};

typedef struct fake_write {
    uv_write_t w;
    uv_buf_t b;
} fake_write;

static void fake_written(uv_write_t *w, int status)
{
    (void)status;
    free(((fake_write *)w)->b.base);
    free(w);
}

static void fake_send(fake_conn *fc, const void *p, size_t n)
{
    fake_write *fw = calloc(1, sizeof(*fw));
    fw->b = uv_buf_init(malloc(n ? n : 1), (unsigned)n);
    memcpy(fw->b.base, p, n);
    assert_int_equal(uv_write(&fw->w, (uv_stream_t *)&fc->tcp, &fw->b, 1, fake_written), 0);
}

/* A SUCCESS frame for request ID with M (NULL = empty) as the payload. */
static void fake_reply(fake_conn *fc, uint32_t id, const ProtobufCMessage *m)
{
    size_t n = m ? protobuf_c_message_get_packed_size(m) : 0;
    uint8_t *f = malloc(9 + n);
    wr_u32be(f, (uint32_t)(5 + n));
    f[4] = 0;
    wr_u32be(f + 5, id);
    if (m)
        protobuf_c_message_pack(m, f + 9);
    fake_send(fc, f, 9 + n);
    free(f);
}

static void fake_metadata(fake_conn *fc, uint32_t id)
{
    fake_srv *s = fc->srv;
    EddyFluss__MetadataResponse r = EDDY_FLUSS__METADATA_RESPONSE__INIT;
    EddyFluss__PbServerNode node = EDDY_FLUSS__PB_SERVER_NODE__INIT, *nodes[1] = {&node};
    EddyFluss__PbTableMetadata tm = EDDY_FLUSS__PB_TABLE_METADATA__INIT, *tms[1] = {&tm};
    EddyFluss__PbTablePath path = EDDY_FLUSS__PB_TABLE_PATH__INIT;
    EddyFluss__PbBucketMetadata bm[8], *bms[8];
    node.node_id = 0;
    node.host = "127.0.0.1";
    node.port = s->port;
    r.coordinator_server = &node;
    r.n_tablet_servers = 1;
    r.tablet_servers = nodes;
    path.database_name = "fluss";
    path.table_name = "t";
    tm.table_path = &path;
    tm.table_id = 7;
    tm.schema_id = 1;
    tm.table_json.data = (uint8_t *)s->table;
    tm.table_json.len = strlen(s->table);
    for (int b = 0; b < s->nbuckets; b++) {
        eddy_fluss__pb_bucket_metadata__init(&bm[b]);
        bm[b].bucket_id = b;
        bm[b].has_leader_id = 1;
        bm[b].leader_id = 0;
        bms[b] = &bm[b];
    }
    tm.n_bucket_metadata = (size_t)s->nbuckets;
    tm.bucket_metadata = bms;
    r.n_table_metadata = 1;
    r.table_metadata = tms;
    fake_reply(fc, id, &r.base);
}

static void fake_put_kv(fake_conn *fc, uint32_t id, const uint8_t *body, size_t n)
{
    fake_srv *s = fc->srv;
    EddyFluss__PutKvRequest *rq = eddy_fluss__put_kv_request__unpack(NULL, n, body);
    EddyFluss__PutKvResponse r = EDDY_FLUSS__PUT_KV_RESPONSE__INIT;
    EddyFluss__PbPutKvRespForBucket br[8], *brs[8];
    assert_non_null(rq);
    assert_true(rq->n_buckets_req <= 8);
    for (size_t i = 0; i < rq->n_buckets_req; i++) {
        const EddyFluss__PbPutKvReqForBucket *b = rq->buckets_req[i];
        assert_true(b->bucket_id >= 0 && b->bucket_id < 8 && b->records.len >= 24);
        s->kv_writer[b->bucket_id] = (int64_t)rd_u64le(b->records.data + 12);
        s->kv_seq[b->bucket_id] = (int32_t)rd_u32le(b->records.data + 20);
        eddy_fluss__pb_put_kv_resp_for_bucket__init(&br[i]);
        br[i].bucket_id = b->bucket_id;
        if (s->lost_writer > 0) {
            br[i].has_error_code = 1;
            br[i].error_code = FE_OUT_OF_ORDER_SEQUENCE;
            br[i].error_message = "Out of order batch sequence: -1 (current batch seq.)";
        }
        brs[i] = &br[i];
    }
    if (s->lost_writer > 0)
        s->lost_writer--;
    r.n_buckets_resp = rq->n_buckets_req;
    r.buckets_resp = brs;
    fake_reply(fc, id, &r.base);
    eddy_fluss__put_kv_request__free_unpacked(rq, NULL);
}

static void fake_request(fake_conn *fc, int api, uint32_t id, const uint8_t *body, size_t n)
{
    fake_srv *s = fc->srv;
    if (api >= 1000 && api < 1064)
        s->seen[api - 1000]++;
    if (s->raw && api == s->raw_api) {
        fake_send(fc, s->raw, s->raw_len);
        s->raw = NULL;
        return;
    }
    if (api == API_VERSIONS) {
        fake_reply(fc, id, NULL);
    } else if (api == API_LIST_DATABASES) {
        EddyFluss__ListDatabasesResponse r = EDDY_FLUSS__LIST_DATABASES_RESPONSE__INIT;
        char *names[] = {"fluss"};
        r.n_database_name = 1;
        r.database_name = names;
        fake_reply(fc, id, &r.base);
    } else if (api == API_METADATA) {
        fake_metadata(fc, id);
    } else if (api == API_INIT_WRITER) {
        EddyFluss__InitWriterResponse r = EDDY_FLUSS__INIT_WRITER_RESPONSE__INIT;
        r.writer_id = ++s->writer_ids;
        fake_reply(fc, id, &r.base);
    } else if (api == API_PUT_KV && s->kv_answers) {
        fake_put_kv(fc, id, body, n);
    } else if (s->answer_all) {
        fake_reply(fc, id, NULL);
    } /* else: held, never answered */
}

static void fake_alloc(uv_handle_t *h, size_t n, uv_buf_t *b)
{
    (void)h;
    b->base = malloc(n);
    b->len = n;
}

static void fake_closed(uv_handle_t *h)
{
    fake_conn *fc = h->data;
    fc->srv->open--;
    eddy_buf_free(&fc->in);
    free(fc);
}

static void fake_drop(fake_conn *fc)
{
    fake_conn **pp = &fc->srv->conns;
    while (*pp != fc)
        pp = &(*pp)->next;
    *pp = fc->next;
    uv_close((uv_handle_t *)&fc->tcp, fake_closed);
}

static void fake_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    fake_conn *fc = st->data;
    if (n < 0) {
        free(b->base);
        fake_drop(fc);
        return;
    }
    eddy_buf_append(&fc->in, b->base, (size_t)n);
    free(b->base);
    size_t at = 0;
    while (fc->in.len - at >= 12) {
        const uint8_t *p = (const uint8_t *)fc->in.data + at;
        uint32_t len = rd_u32be(p);
        if (fc->in.len - at - 4 < len)
            break;
        fake_request(fc, p[4] << 8 | p[5], rd_u32be(p + 8), p + 12, len - 8);
        at += 4 + len;
    }
    memmove(fc->in.data, fc->in.data + at, fc->in.len - at);
    fc->in.len -= at;
}

static void fake_accept(uv_stream_t *lis, int status)
{
    fake_srv *s = lis->data;
    assert_int_equal(status, 0);
    fake_conn *fc = calloc(1, sizeof(*fc));
    fc->srv = s;
    eddy_buf_init(&fc->in);
    uv_tcp_init(s->loop, &fc->tcp);
    fc->tcp.data = fc;
    s->open++;
    assert_int_equal(uv_accept(lis, (uv_stream_t *)&fc->tcp), 0);
    fc->next = s->conns;
    s->conns = fc;
    uv_read_start((uv_stream_t *)&fc->tcp, fake_alloc, fake_read);
}

static const char *PK_TABLE =
    "{\"version\":1,\"schema\":{\"version\":1,\"columns\":[{\"name\":\"id\",\"data_type\":"
    "{\"type\":\"INTEGER\",\"nullable\":false}},{\"name\":\"v\",\"data_type\":{\"type\":"
    "\"STRING\"}}],\"primary_key\":[\"id\"]},\"partition_key\":[],\"bucket_key\":[\"id\"],"
    "\"bucket_count\":2,\"properties\":{},\"custom_properties\":{}}";

static void fake_start(fake_srv *s, uv_loop_t *loop)
{
    struct sockaddr_in a;
    int len = sizeof(a);
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->table = PK_TABLE;
    s->nbuckets = 2;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(loop, &s->lis);
    s->lis.data = s;
    assert_int_equal(uv_tcp_bind(&s->lis, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->lis, 16, fake_accept), 0);
    uv_tcp_getsockname(&s->lis, (struct sockaddr *)&a, &len);
    s->port = ntohs(a.sin_port);
    s->open = 1;
}

static void fake_lis_closed(uv_handle_t *h)
{
    ((fake_srv *)h->data)->open--;
}

static void fake_stop(fake_srv *s)
{
    while (s->conns)
        fake_drop(s->conns);
    uv_close((uv_handle_t *)&s->lis, fake_lis_closed);
}

typedef struct blackhole {
    int lfd, fill[2], port;
} blackhole;

static void blackhole_open(blackhole *b)
{
    struct sockaddr_in a = {0};
    socklen_t len = sizeof(a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    b->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(b->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(b->lfd, 0), 0);
    getsockname(b->lfd, (struct sockaddr *)&a, &len);
    b->port = ntohs(a.sin_port);
    for (int i = 0; i < 2; i++) { /* fill the accept queue; never accepted */
        b->fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(b->fill[i], (struct sockaddr *)&a, sizeof(a));
    }
}

static void blackhole_close(blackhole *b)
{
    close(b->fill[0]);
    close(b->fill[1]);
    close(b->lfd);
}

static void tick(uv_timer_t *t)
{
    (void)t;
}

/* Run LOOP until *FLAG is non-zero or MS have passed; returns *FLAG. */
static int run_until(uv_loop_t *loop, const int *flag, int ms)
{
    uv_timer_t t;
    uint64_t end = eddy_now_ms() + (uint64_t)ms;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, tick, 5, 5);
    while (!(flag && *flag) && eddy_now_ms() < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return flag ? *flag : 0;
}

/* Close the client and the fake server, drain the loop and check that
 * nothing is left on it. */
static void finish(uv_loop_t *loop, eddy_fluss_client *c, fake_srv *s)
{
    eddy_fluss_client_close(c);
    if (s)
        fake_stop(s);
    for (int i = 0; i < 100 && uv_run(loop, UV_RUN_NOWAIT); i++)
        usleep(1000);
    if (s)
        assert_int_equal(s->open, 0);
    assert_int_equal(uv_loop_close(loop), 0);
}

static eddy_fluss_client *client_to(uv_loop_t *loop, int port, int timeout_ms)
{
    char boot[64];
    eddy_fluss_client *c;
    eddy_err e;
    snprintf(boot, sizeof(boot), "127.0.0.1:%d", port);
    eddy_fluss_client_opts o = {boot, NULL, NULL, timeout_ms};
    assert_int_equal(eddy_fluss_client_new(loop, &o, &c, &e), 0);
    return c;
}

/* Outcome of one start function: how often its callback ran, with what. */
typedef struct outcome {
    int calls, status;
    char msg[256];
    size_t n;
    const eddy_fluss_table *t;
} outcome;

static void note(outcome *o, int status, const eddy_err *err)
{
    o->calls++;
    o->status = status;
    snprintf(o->msg, sizeof(o->msg), "%s", status && err ? err->msg : "");
}

static void done(int status, const eddy_err *err, void *ud)
{
    note(ud, status, err);
}

static void names_done(int status, const eddy_err *err, char **names, size_t n, void *ud)
{
    (void)names;
    note(ud, status, err);
    ((outcome *)ud)->n = n;
}

/* A connect that hangs, then the server's address changes: the socket is
 * closed once (the connect callback's UV_ECANCELED used to tear the
 * connection down a second time, and uv_close asserted), and the queued
 * request goes to the new address. */
static void test_address_change_while_connecting(void **state)
{
    uv_loop_t loop;
    blackhole bh;
    fake_srv srv;
    outcome o = {0};
    (void)state;
    uv_loop_init(&loop);
    blackhole_open(&bh);
    fake_start(&srv, &loop);
    eddy_fluss_client *c = client_to(&loop, bh.port, 5000);
    assert_int_equal(eddy_fluss_list_databases(c, names_done, &o), 0);
    run_until(&loop, NULL, 60);
    assert_int_equal(o.calls, 0); /* the connect hangs */
    assert_int_equal(eddy__rpc_set_node(c, NODE_BOOTSTRAP, "127.0.0.1", srv.port), 0);
    assert_true(run_until(&loop, &o.calls, 3000));
    run_until(&loop, NULL, 20);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, 0);
    assert_int_equal(o.n, 1);
    finish(&loop, c, &srv);
    blackhole_close(&bh);
}

/* An address change while a request is in flight: that request fails once
 * with EDDY_ENET (its answer is lost), the next one goes to the new server. */
static void test_address_change_while_in_flight(void **state)
{
    uv_loop_t loop;
    fake_srv old, moved;
    outcome held = {0}, next = {0};
    (void)state;
    uv_loop_init(&loop);
    fake_start(&old, &loop);
    fake_start(&moved, &loop);
    eddy_fluss_client *c = client_to(&loop, old.port, 5000);
    assert_int_equal(eddy_fluss_create_database(c, "db", 1, done, &held), 0);
    /* sent; the fake holds it */
    assert_true(run_until(&loop, &old.seen[API_CREATE_DATABASE - 1000], 3000));
    assert_int_equal(eddy__rpc_set_node(c, NODE_BOOTSTRAP, "127.0.0.1", moved.port), 0);
    /* and again, to the same address: nothing happens twice */
    assert_int_equal(eddy__rpc_set_node(c, NODE_BOOTSTRAP, "127.0.0.1", moved.port), 0);
    assert_int_equal(eddy_fluss_list_databases(c, names_done, &next), 0);
    assert_true(run_until(&loop, &next.calls, 3000));
    run_until(&loop, NULL, 20);
    assert_int_equal(held.calls, 1);
    assert_int_equal(held.status, EDDY_ENET);
    assert_non_null(strstr(held.msg, "address changed"));
    assert_int_equal(next.calls, 1);
    assert_int_equal(next.status, 0);
    fake_stop(&old);
    finish(&loop, c, &moved);
    assert_int_equal(old.open, 0);
}

/* Closing the client while its connect hangs: the request ends once with
 * EDDY_ECANCELED and the loop is left empty. */
static void test_close_while_connecting(void **state)
{
    uv_loop_t loop;
    blackhole bh;
    outcome o = {0};
    (void)state;
    uv_loop_init(&loop);
    blackhole_open(&bh);
    eddy_fluss_client *c = client_to(&loop, bh.port, 5000);
    assert_int_equal(eddy_fluss_list_databases(c, names_done, &o), 0);
    run_until(&loop, NULL, 40);
    assert_int_equal(o.calls, 0);
    eddy_fluss_client_close(c);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, EDDY_ECANCELED);
    finish(&loop, NULL, NULL);
    assert_int_equal(o.calls, 1);
    blackhole_close(&bh);
}

/* A connect that never completes is given up at the request timeout: the
 * socket is closed while connecting (once), and the request learns why. */
static void test_connect_timeout(void **state)
{
    uv_loop_t loop;
    blackhole bh;
    outcome o = {0}, again = {0};
    (void)state;
    uv_loop_init(&loop);
    blackhole_open(&bh);
    eddy_fluss_client *c = client_to(&loop, bh.port, 100);
    assert_int_equal(eddy_fluss_list_databases(c, names_done, &o), 0);
    assert_true(run_until(&loop, &o.calls, 3000));
    assert_int_equal(o.status, EDDY_ENET);
    assert_non_null(strstr(o.msg, "no connection within 100 ms"));
    run_until(&loop, NULL, 120); /* past the backoff: the next request connects again */
    assert_int_equal(eddy_fluss_list_databases(c, names_done, &again), 0);
    run_until(&loop, NULL, 30);
    assert_int_equal(o.calls, 1);
    finish(&loop, c, NULL);
    assert_int_equal(again.calls, 1); /* canceled, or given up too on a slow machine */
    assert_true(again.status == EDDY_ECANCELED || again.status == EDDY_ENET);
    blackhole_close(&bh);
}

static void table_done(int status, const eddy_err *err, const eddy_fluss_table *t, void *ud)
{
    note(ud, status, err);
    ((outcome *)ud)->t = t;
}

static void lookup_done(int status, const eddy_err *err, const eddy_fluss_value *vals, void *ud)
{
    (void)vals;
    note(ud, status, err);
}

static void prefix_done(int status, const eddy_err *err, const eddy_fluss_value *vals, size_t row,
                        size_t n, void *ud)
{
    (void)vals, (void)row, (void)n;
    note(ud, status, err);
}

static void offsets_done(int status, const eddy_err *err, const int64_t *offs, int n, void *ud)
{
    (void)offs, (void)n;
    note(ud, status, err);
}

static void rpc_done(int status, const uint8_t *p, size_t n, const eddy_err *err, void *ud)
{
    (void)p, (void)n;
    note(ud, status, err);
}

static int scan_record(int bucket, int64_t off, int64_t ts, int change,
                       const eddy_fluss_value *vals, void *ud)
{
    (void)bucket, (void)off, (void)ts, (void)change, (void)vals, (void)ud;
    return 0;
}

static void scan_progress(int status, const eddy_err *err, int bucket, int64_t next, int64_t hw,
                          void *ud)
{
    (void)status, (void)err, (void)bucket, (void)next, (void)hw;
    ++*(int *)ud;
}

/* Every callback ran exactly once, with STATUS. */
static void all_once(const outcome *o, int n, int status)
{
    for (int i = 0; i < n; i++) {
        assert_int_equal(o[i].calls, 1);
        assert_int_equal(o[i].status, status);
    }
}

static const eddy_fluss_table *open_table(uv_loop_t *loop, eddy_fluss_client *c)
{
    outcome o = {0};
    assert_int_equal(eddy_fluss_get_table(c, "fluss", "t", table_done, &o), 0);
    assert_true(run_until(loop, &o.calls, 3000));
    assert_int_equal(o.status, 0);
    return o.t;
}

/* Close the client with work in every place it can wait: on the wire
 * (admin call, list offsets, lookups, a fetch, a writer's PutKv), queued
 * for the next tick (cached tables, lookups batched per tick, a request for
 * a server not in the metadata), in a writer (open and queued batches, a
 * flush), and in a metadata retry. Every callback runs once, during the
 * close, with EDDY_ECANCELED (deferred calls used to be dropped, and a
 * writer's unsent rows were never answered); a flush with nothing to wait
 * for gets its real result. Freeing the writer and the scanner afterwards
 * touches nothing of the closed client, and the loop closes empty. */
static void test_close_cancels_everything(void **state)
{
    uv_loop_t loop;
    fake_srv srv;
    outcome wire_lk[2] = {{0}}, admin = {0}, offs = {0}, missing = {0};
    outcome cached[3] = {{0}}, tick_lk[3] = {{0}}, tick_pre = {0}, unknown = {0};
    outcome sent_rows[4] = {{0}}, later_rows[4] = {{0}}, flushed = {0}, empty_flush = {0};
    eddy_fluss_value row[2];
    eddy_fluss_writer *w, *idle_w;
    eddy_fluss_scanner *sc;
    eddy_err e;
    int progress = 0;
    (void)state;
    uv_loop_init(&loop);
    fake_start(&srv, &loop);
    eddy_fluss_client *c = client_to(&loop, srv.port, 5000);
    const eddy_fluss_table *t = open_table(&loop, c);
    memset(row, 0, sizeof(row));
    row[1].v.s.p = "x";
    row[1].v.s.n = 1;

    /* on the wire, held by the fake */
    for (int i = 0; i < 2; i++) {
        row[0].v.i = i;
        assert_int_equal(eddy_fluss_lookup(c, t, row, lookup_done, &wire_lk[i], &e), 0);
    }
    assert_true(run_until(&loop, &srv.seen[API_LOOKUP - 1000], 3000));
    assert_int_equal(
        eddy_fluss_scanner_new(c, t, NULL, 0, scan_record, scan_progress, &progress, &sc, &e), 0);
    assert_int_equal(eddy_fluss_scanner_subscribe(sc, 0, 0), 0);
    assert_true(run_until(&loop, &srv.seen[API_FETCH_LOG - 1000], 3000));
    assert_int_equal(eddy_fluss_writer_new(c, t, NULL, &w, &e), 0);
    for (int i = 0; i < 4; i++) {
        row[0].v.i = i;
        assert_int_equal(eddy_fluss_writer_write(w, row, 0, done, &sent_rows[i], &e), 0);
    }
    assert_int_equal(eddy_fluss_writer_flush(w, done, &flushed), 0);
    assert_true(run_until(&loop, &srv.seen[API_PUT_KV - 1000], 3000));
    /* a table the metadata does not list: retried every 200 ms */
    int asked = srv.seen[API_METADATA - 1000];
    assert_int_equal(eddy_fluss_get_table(c, "fluss", "missing", table_done, &missing), 0);
    while (srv.seen[API_METADATA - 1000] == asked)
        uv_run(&loop, UV_RUN_ONCE);
    run_until(&loop, NULL, 50);
    assert_int_equal(missing.calls, 0);
    assert_int_equal(eddy_fluss_create_database(c, "db", 1, done, &admin), 0);
    assert_int_equal(
        eddy_fluss_list_offsets(c, t, EDDY_FLUSS_OFFSET_LATEST, 0, offsets_done, &offs), 0);

    /* for the next tick, and in the writer */
    for (int i = 0; i < 3; i++)
        assert_int_equal(eddy_fluss_get_table(c, "fluss", "t", table_done, &cached[i]), 0);
    for (int i = 0; i < 3; i++) {
        row[0].v.i = 10 + i;
        assert_int_equal(eddy_fluss_lookup(c, t, row, lookup_done, &tick_lk[i], &e), 0);
    }
    assert_int_equal(eddy_fluss_prefix_lookup(c, t, row, prefix_done, &tick_pre, &e), 0);
    EddyFluss__ListDatabasesRequest ld = EDDY_FLUSS__LIST_DATABASES_REQUEST__INIT;
    assert_int_equal(eddy__rpc_send(c, 99, API_LIST_DATABASES, 0, &ld.base, rpc_done, &unknown), 0);
    for (int i = 0; i < 4; i++) {
        row[0].v.i = 20 + i;
        assert_int_equal(eddy_fluss_writer_write(w, row, 0, done, &later_rows[i], &e), 0);
    }
    assert_int_equal(eddy_fluss_writer_new(c, t, NULL, &idle_w, &e), 0);
    assert_int_equal(eddy_fluss_writer_flush(idle_w, done, &empty_flush), 0);

    eddy_fluss_client_close(c);
    all_once(wire_lk, 2, EDDY_ECANCELED);
    all_once(&admin, 1, EDDY_ECANCELED);
    all_once(&offs, 1, EDDY_ECANCELED);
    all_once(&missing, 1, EDDY_ECANCELED);
    all_once(cached, 3, EDDY_ECANCELED);
    assert_null(cached[0].t);
    all_once(tick_lk, 3, EDDY_ECANCELED);
    all_once(&tick_pre, 1, EDDY_ECANCELED);
    all_once(&unknown, 1, EDDY_ECANCELED);
    all_once(sent_rows, 4, EDDY_ECANCELED);
    all_once(later_rows, 4, EDDY_ECANCELED);
    all_once(&flushed, 1, EDDY_ECANCELED);
    all_once(&empty_flush, 1, 0);

    /* a closed client starts nothing, and calls nothing (T went with it) */
    outcome refused = {0};
    assert_int_equal(eddy_fluss_get_table(c, "fluss", "t", table_done, &refused), EDDY_ECLOSING);
    assert_int_equal(eddy_fluss_list_databases(c, names_done, &refused), EDDY_ECLOSING);
    assert_int_equal(eddy_fluss_writer_write(w, row, 0, done, &refused, &e), EDDY_ECLOSING);
    assert_int_equal(eddy_fluss_writer_flush(w, done, &refused), EDDY_ECLOSING);
    assert_int_equal(eddy_fluss_scanner_subscribe(sc, 1, 0), EDDY_ECLOSING);
    long acked, failed;
    eddy_fluss_writer_counts(w, &acked, &failed);
    assert_int_equal(acked, 0);
    assert_int_equal(failed, 8);
    eddy_fluss_writer_free(w);
    eddy_fluss_writer_free(idle_w);
    eddy_fluss_scanner_free(sc);
    finish(&loop, NULL, &srv);
    /* nothing ran twice while the loop drained */
    all_once(sent_rows, 4, EDDY_ECANCELED);
    all_once(later_rows, 4, EDDY_ECANCELED);
    all_once(cached, 3, EDDY_ECANCELED);
    all_once(tick_lk, 3, EDDY_ECANCELED);
    assert_int_equal(refused.calls, 0);
    assert_int_equal(progress, 0);
}

/* Write rows FIRST..FIRST+N-1 (both buckets) and flush; wait for the flush. */
static void write_and_flush(uv_loop_t *loop, eddy_fluss_writer *w, int first, int n, outcome *rows,
                            outcome *flushed)
{
    eddy_fluss_value row[2];
    eddy_err e;
    memset(row, 0, sizeof(row));
    row[1].v.s.p = "x";
    row[1].v.s.n = 1;
    for (int i = 0; i < n; i++) {
        row[0].v.i = first + i;
        assert_int_equal(eddy_fluss_writer_write(w, row, 0, done, &rows[i], &e), 0);
    }
    assert_int_equal(eddy_fluss_writer_flush(w, done, flushed), 0);
    assert_true(run_until(loop, &flushed->calls, 5000));
}

/* The server lost the writer's state (a tablet server restarted without it,
 * or it expired): it refuses the next batch of every bucket with
 * OUT_OF_ORDER_SEQUENCE. The writer asks for a new writer id and sends the
 * batches again under it, from sequence 0, and the rows are acknowledged.
 * It used to fail them, and every later batch of those buckets as well (the
 * server kept refusing the old id's next sequences): in a job, every output
 * after a tablet server restart went to the dead letters. */
static void test_writer_renews_a_lost_writer_id(void **state)
{
    uv_loop_t loop;
    fake_srv srv;
    outcome before[4] = {{0}}, lost[4] = {{0}}, after[4] = {{0}}, f1 = {0}, f2 = {0}, f3 = {0};
    eddy_fluss_writer *w;
    eddy_err e;
    (void)state;
    uv_loop_init(&loop);
    fake_start(&srv, &loop);
    srv.kv_answers = 1;
    eddy_fluss_client *c = client_to(&loop, srv.port, 5000);
    const eddy_fluss_table *t = open_table(&loop, c);
    assert_int_equal(eddy_fluss_writer_new(c, t, NULL, &w, &e), 0);
    write_and_flush(&loop, w, 0, 4, before, &f1);
    all_once(before, 4, 0);
    assert_int_equal(f1.status, 0);
    for (int b = 0; b < 2; b++) {
        assert_int_equal(srv.kv_writer[b], 1);
        assert_int_equal(srv.kv_seq[b], 0);
    }
    srv.lost_writer = 1;
    write_and_flush(&loop, w, 4, 4, lost, &f2);
    all_once(lost, 4, 0);
    assert_int_equal(f2.status, 0);
    assert_int_equal(srv.seen[API_INIT_WRITER - 1000], 2);
    for (int b = 0; b < 2; b++) {
        assert_int_equal(srv.kv_writer[b], 2);
        assert_int_equal(srv.kv_seq[b], 0);
    }
    write_and_flush(&loop, w, 8, 4, after, &f3);
    all_once(after, 4, 0);
    for (int b = 0; b < 2; b++) {
        assert_int_equal(srv.kv_writer[b], 2);
        assert_int_equal(srv.kv_seq[b], 1);
    }
    long acked, failed;
    eddy_fluss_writer_counts(w, &acked, &failed);
    assert_int_equal(acked, 12);
    assert_int_equal(failed, 0);
    eddy_fluss_writer_free(w);
    finish(&loop, c, &srv);
}

typedef struct closer {
    eddy_fluss_client *c;
    outcome o;
} closer;

static void close_in_callback(int status, const eddy_err *err, const eddy_fluss_table *t, void *ud)
{
    closer *k = ud;
    table_done(status, err, t, &k->o);
    eddy_fluss_client_close(k->c);
}

/* The client closed from inside a deferred callback (as the lookup tool
 * does once it has the table): the calls deferred after it end with
 * EDDY_ECANCELED, once, instead of running on a closed client. */
static void test_close_inside_deferred_callback(void **state)
{
    uv_loop_t loop;
    fake_srv srv;
    closer k = {0};
    outcome rest[3] = {{0}};
    (void)state;
    uv_loop_init(&loop);
    fake_start(&srv, &loop);
    k.c = client_to(&loop, srv.port, 5000);
    open_table(&loop, k.c);
    assert_int_equal(eddy_fluss_get_table(k.c, "fluss", "t", close_in_callback, &k), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(eddy_fluss_get_table(k.c, "fluss", "t", table_done, &rest[i]), 0);
    assert_true(run_until(&loop, &k.o.calls, 3000));
    assert_int_equal(k.o.status, 0);
    assert_non_null(k.o.t);
    all_once(rest, 3, EDDY_ECANCELED);
    finish(&loop, NULL, &srv);
    all_once(rest, 3, EDDY_ECANCELED);
    assert_int_equal(k.o.calls, 1);
}

/* -- lengths from the wire --------------------------------------------------- */

/* A response frame claiming 512 MiB (over the limit, under the old 1 GiB
 * one): the connection ends at once with a protocol error naming the size,
 * instead of buffering toward it until the request times out. */
static void test_hostile_frame_length(void **state)
{
    static const uint8_t huge[] = {0x20, 0, 0, 0, 0, 0, 0, 0, 1};
    uv_loop_t loop;
    fake_srv srv;
    outcome o = {0};
    (void)state;
    uv_loop_init(&loop);
    fake_start(&srv, &loop);
    srv.raw_api = API_LIST_DATABASES;
    srv.raw = huge;
    srv.raw_len = sizeof(huge);
    eddy_fluss_client *c = client_to(&loop, srv.port, 5000);
    assert_int_equal(eddy_fluss_list_databases(c, names_done, &o), 0);
    assert_true(run_until(&loop, &o.calls, 2000));
    assert_int_equal(o.status, EDDY_ENET);
    assert_non_null(strstr(o.msg, "response frame of 536870912 bytes (the limit is 134217728)"));
    finish(&loop, c, &srv);
    assert_int_equal(o.calls, 1);
}

/* The frame splitter the fuzzer reaches through eddy_fluss_response_check(0). */
static void test_frame_stream_check(void **state)
{
    eddy_err e;
    (void)state;
    /* a success frame, an error frame (ErrorResponse{1: 7}), then a partial one */
    static const uint8_t ok[] = {0, 0, 0, 5, 0, 0, 0, 0, 1, 0, 0, 0, 7,
                                 1, 0, 0, 0, 2, 8, 7, 0, 0, 0, 9, 0};
    assert_int_equal(eddy_fluss_response_check(0, ok, sizeof(ok), NULL, 0, &e), 0);
    static const uint8_t zero[] = {0, 0, 0, 0, 0};
    assert_int_equal(eddy_fluss_response_check(0, zero, sizeof(zero), NULL, 0, &e), EDDY_ECORRUPT);
    static const uint8_t big[] = {0x7f, 0xff, 0xff, 0xff, 0};
    assert_int_equal(eddy_fluss_response_check(0, big, sizeof(big), NULL, 0, &e), EDDY_ECORRUPT);
    assert_non_null(strstr(e.msg, "2147483647 bytes"));
    static const uint8_t type3[] = {0, 0, 0, 5, 3, 0, 0, 0, 1};
    assert_int_equal(eddy_fluss_response_check(0, type3, sizeof(type3), NULL, 0, &e),
                     EDDY_ECORRUPT);
    /* FetchLogResponse whose records field claims 2 GiB: protobuf-c refuses */
    static const uint8_t fetch[] = {0x0a, 0x0c, 0x08, 0x07, 0x12, 0x08, 0x10,
                                    0x00, 0x42, 0x80, 0x80, 0x80, 0x80, 0x08};
    assert_int_equal(eddy_fluss_response_check(1015, fetch, sizeof(fetch), &ALL, 0, &e),
                     EDDY_ECORRUPT);
}

/* A lookup answer of 2 million empty values: 4 MiB on the wire, over 100
 * MiB once unpacked (each a struct and a pointer). Unpacking stops at its
 * budget (it used to allocate all of it); a modest answer still unpacks. */
static void test_hostile_protobuf_amplification(void **state)
{
    size_t n = 2u << 20, at = 0;
    uint8_t *p = malloc(16 + 2 * n);
    eddy_err e;
    (void)state;
    /* LookupResponse{1: PbLookupRespForBucket{2: bucket 0, 5: PbValue{} x n}} */
    size_t inner = 2 + 2 * n;
    p[at++] = 0x0a;
    at += eddy_fluss_varint_put(p + at, inner);
    p[at++] = 0x10;
    p[at++] = 0x00;
    for (size_t i = 0; i < n; i++) {
        p[at++] = 0x2a;
        p[at++] = 0x00;
    }
    assert_int_equal(eddy_fluss_response_check(1017, p, at, &ALL, 0, &e), EDDY_ECORRUPT);
    assert_non_null(strstr(e.msg, "unreadable lookup response"));
    /* 100 thousand: fine */
    at = 0;
    n = 100000;
    inner = 2 + 2 * n;
    p[at++] = 0x0a;
    at += eddy_fluss_varint_put(p + at, inner);
    p[at++] = 0x10;
    p[at++] = 0x00;
    for (size_t i = 0; i < n; i++) {
        p[at++] = 0x2a;
        p[at++] = 0x00;
    }
    assert_int_equal(eddy_fluss_response_check(1017, p, at, &ALL, 0, &e), 0);
    free(p);
}

/* A batch length beyond any response is corrupt; one beyond what this fetch
 * brought is a partial batch at its end (fetched again), not an error. */
static void test_hostile_batch_length(void **state)
{
    eddy_fluss_column cols[] = {{"id", EDDY_FLUSS_INT, 0, 0, 0}};
    eddy_fluss_schema sc = {1, cols, 0, NULL, 0, NULL};
    eddy_fluss_log_builder *lb;
    eddy_fluss_value v = {0};
    int64_t rows[2] = {0}, next;
    eddy_buf b;
    eddy_err e;
    (void)state;
    eddy_buf_init(&b);
    assert_int_equal(eddy_fluss_log_builder_new(&sc, 1, EDDY_FLUSS_LOG_INDEXED, 0, 0, &lb, NULL),
                     0);
    assert_int_equal(eddy_fluss_log_builder_add(lb, EDDY_FLUSS_APPEND, &v, NULL), 0);
    assert_int_equal(eddy_fluss_log_builder_finish(lb, &b, NULL), 0);
    eddy_fluss_log_builder_free(lb);
    wr_u32le((uint8_t *)b.data + 8, 0x7fffffff);
    assert_int_equal(eddy_fluss_log_decode(&sc, EDDY_FLUSS_LOG_INDEXED, (const uint8_t *)b.data,
                                           b.len, 3, NULL, 0, count_rows, rows, &next, &e),
                     EDDY_ECORRUPT);
    assert_non_null(strstr(e.msg, "claims 2147483647 bytes"));
    wr_u32le((uint8_t *)b.data + 8, (uint32_t)(b.len - 12 + 1));
    assert_int_equal(eddy_fluss_log_decode(&sc, EDDY_FLUSS_LOG_INDEXED, (const uint8_t *)b.data,
                                           b.len, 3, NULL, 0, count_rows, rows, &next, &e),
                     0);
    assert_int_equal(rows[0], 0);
    assert_int_equal(next, 3);
    eddy_buf_free(&b);
}

/* Offset of the 8-byte uncompressed-length prefix WANT of a ZSTD buffer. */
static size_t zstd_prefix(const eddy_buf *b, uint64_t want)
{
    size_t found = 0;
    for (size_t at = 56; at + 12 <= b->len; at++)
        if (rd_u64le((const uint8_t *)b->data + at) == want &&
            rd_u32le((const uint8_t *)b->data + at + 8) == 0xFD2FB528u) {
            assert_int_equal(found, 0);
            found = at;
        }
    assert_true(found > 0);
    return found;
}

/* Compressed Arrow buffers claiming more bytes than their rows can use, or
 * than one batch may decompress to: corrupt, refused before allocating (a
 * 2 GiB claim used to be a 2 GiB malloc). */
static void test_hostile_arrow_lengths(void **state)
{
    eddy_fluss_column cols[] = {{"n", EDDY_FLUSS_INT, 1, 0, 0}, {"s", EDDY_FLUSS_STRING, 1, 0, 0}};
    eddy_fluss_schema sc = {2, cols, 0, NULL, 0, NULL};
    eddy_fluss_value v[2] = {{0}};
    eddy_fluss_log_builder *lb;
    eddy_buf good, b;
    int64_t next, rows[2] = {0};
    eddy_err e;
    (void)state;
    eddy_buf_init(&good);
    eddy_buf_init(&b);
    v[0].v.i = 7;
    v[1].v.s.p = "aaa";
    v[1].v.s.n = 3;
    assert_int_equal(eddy_fluss_log_builder_new(&sc, 1, EDDY_FLUSS_LOG_ARROW, EDDY_FLUSS_CODEC_ZSTD,
                                                3, &lb, NULL),
                     0);
    for (int r = 0; r < 1000; r++)
        assert_int_equal(eddy_fluss_log_builder_add(lb, EDDY_FLUSS_APPEND, v, NULL), 0);
    assert_int_equal(eddy_fluss_log_builder_finish(lb, &good, NULL), 0);
    eddy_fluss_log_builder_free(lb);
    assert_int_equal(eddy_fluss_log_decode(&sc, EDDY_FLUSS_LOG_ARROW, (const uint8_t *)good.data,
                                           good.len, 0, NULL, 0, count_rows, rows, &next, &e),
                     0);
    assert_int_equal(rows[0], 1000);
    size_t ints = zstd_prefix(&good, 4000), text = zstd_prefix(&good, 3000);
    struct {
        size_t at;
        uint64_t claim;
        uint64_t rows; /* 0: unchanged */
        const char *msg;
    } cases[] = {
        {0, (uint64_t)1 << 31, 0, "claims 2147483648 bytes, more than 1000 rows can use (4064)"},
        {0, 4065, 0, "claims 4065 bytes"},
        {1, 3065, 0, "claims 3065 bytes, more than 1000 rows can use (3064)"},
        {0, 400000000, 100000000, "of the 256 MiB one batch may decompress to"},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        eddy_buf_reset(&b);
        eddy_buf_append(&b, good.data, good.len);
        uint8_t *p = (uint8_t *)b.data;
        wr_u64le(p + (cases[k].at ? text : ints), cases[k].claim);
        if (cases[k].rows) { /* RecordBatch.length and both field nodes */
            wr_u64le(p + 56 + 72, cases[k].rows);
            wr_u64le(p + 56 + 104, cases[k].rows);
            wr_u64le(p + 56 + 120, cases[k].rows);
        }
        eddy__log_batch_set_writer(p, b.len, -1, -1); /* a valid CRC again */
        rows[0] = 0;
        assert_int_equal(eddy_fluss_log_decode(&sc, EDDY_FLUSS_LOG_ARROW, p, b.len, 0, NULL, 0,
                                               count_rows, rows, &next, &e),
                         EDDY_ECORRUPT);
        assert_non_null(strstr(e.msg, cases[k].msg));
        assert_non_null(strstr(e.msg, cases[k].at ? "column 's'" : "column 'n'"));
        assert_int_equal(rows[0], 0);
    }
    eddy_buf_free(&good);
    eddy_buf_free(&b);
}

/* Sizes in the table JSON from the server: a bucket count that per-bucket
 * arrays would be allocated by, and precisions and scales that index
 * fixed buffers when values are printed. */
static void test_hostile_table_json(void **state)
{
    static const char *cases[][2] = {
        {"{\"type\":\"INTEGER\"}", "\"bucket_count\":2147483647"},
        {"{\"type\":\"INTEGER\"}", "\"bucket_count\":131073"},
        {"{\"type\":\"TIMESTAMP_WITHOUT_TIME_ZONE\",\"precision\":100}", "\"bucket_count\":1"},
        {"{\"type\":\"TIMESTAMP_WITH_LOCAL_TIME_ZONE\",\"precision\":-1}", "\"bucket_count\":1"},
        {"{\"type\":\"DECIMAL\",\"precision\":100,\"scale\":200}", "\"bucket_count\":1"},
        {"{\"type\":\"DECIMAL\",\"precision\":10,\"scale\":11}", "\"bucket_count\":1"},
        {"{\"type\":\"INTEGER\"}", "\"bucket_count\":131072"},
    };
    char js[512];
    eddy_fluss_table *t;
    eddy_err e;
    (void)state;
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        snprintf(js, sizeof(js),
                 "{\"schema\":{\"columns\":[{\"name\":\"x\",\"data_type\":%s}]},"
                 "\"partition_key\":[],%s}",
                 cases[k][0], cases[k][1]);
        int rc = eddy_fluss_table_parse("db", "t", js, strlen(js), &t, &e);
        if (k == sizeof(cases) / sizeof(cases[0]) - 1) {
            assert_int_equal(rc, 0);
            assert_int_equal(t->nbuckets, 131072);
            eddy_fluss_table_free(t);
            continue;
        }
        assert_true(rc == EDDY_ECORRUPT || rc == EDDY_ESCHEMA);
        assert_non_null(strstr(e.msg, k < 2 ? "buckets (the limit is 131072)" : "column 'x'"));
    }
}

/* Metadata naming ever more servers: connections stop at a limit. */
static void test_node_limit(void **state)
{
    uv_loop_t loop;
    (void)state;
    uv_loop_init(&loop);
    eddy_fluss_client *c = client_to(&loop, 9, 1000); /* the bootstrap is node 1 of 4096 */
    for (int i = 0; i < 4095; i++)
        assert_int_equal(eddy__rpc_set_node(c, i, "127.0.0.1", 1000 + i % 60000), 0);
    assert_int_equal(eddy__rpc_set_node(c, 5000, "127.0.0.1", 1000), EDDY_ERANGE);
    assert_int_equal(eddy__rpc_set_node(c, 10, "127.0.0.2", 1000), 0); /* known: moves */
    finish(&loop, c, NULL);
}

/* -- a slow resolver --------------------------------------------------------- */

/* The tests below run in a child of this binary with tests/shim/slowdns.so
 * preloaded (build-dev/tests/slowdns.so next to it): its getaddrinfo sleeps
 * *eddy_slowdns_ms, then asks the real one; *eddy_slowdns_calls counts. */
#include <dlfcn.h>
#include <spawn.h>
#include <stdatomic.h>
#include <sys/wait.h>

extern char **environ;

static atomic_int *slowdns_var(const char *name)
{
    atomic_int *v = dlsym(RTLD_DEFAULT, name);
    if (!v)
        fail_msg("%s not found: slowdns.so is not preloaded", name);
    return v;
}

/* Close C (when given) and S (when given), run LOOP until nothing is left
 * on it (a lookup the client let go of still ends on the thread pool, up to
 * its delay later) and close it. */
static void finish_slow(uv_loop_t *loop, eddy_fluss_client *c, fake_srv *s)
{
    uint64_t end = eddy_now_ms() + 3000;
    eddy_fluss_client_close(c);
    if (s)
        fake_stop(s);
    while (uv_run(loop, UV_RUN_NOWAIT) && eddy_now_ms() < end)
        usleep(1000);
    if (s)
        assert_int_equal(s->open, 0);
    assert_int_equal(uv_loop_close(loop), 0);
}

static eddy_fluss_client *client_at(uv_loop_t *loop, const char *boot, int timeout_ms)
{
    eddy_fluss_client *c;
    eddy_err e;
    eddy_fluss_client_opts o = {boot, NULL, NULL, timeout_ms};
    assert_int_equal(eddy_fluss_client_new(loop, &o, &c, &e), 0);
    return c;
}

typedef struct ticker {
    uv_timer_t t;
    uint64_t last_ns, max_gap_ns, call_ns;
    int ticks;
    eddy_fluss_client *c;
    outcome o;
} ticker;

/* Every 10 ms; on the 5th tick, ask the client something (which must look
 * up "localhost" first). Notes the longest time between two ticks. */
static void on_tick(uv_timer_t *t)
{
    ticker *k = (ticker *)t;
    uint64_t now = uv_hrtime();
    if (k->last_ns && now - k->last_ns > k->max_gap_ns)
        k->max_gap_ns = now - k->last_ns;
    k->last_ns = now;
    if (++k->ticks == 5) {
        k->call_ns = now;
        assert_int_equal(eddy_fluss_list_databases(k->c, names_done, &k->o), 0);
        k->last_ns = uv_hrtime(); /* the call itself counts as a gap */
        if (k->last_ns - now > k->max_gap_ns)
            k->max_gap_ns = k->last_ns - now;
    }
}

/* A host name that takes 600 ms to resolve: the loop goes on meanwhile
 * (its 10 ms timer never waits much longer; it used to wait the whole
 * 600 ms, as uv_getaddrinfo without a callback resolves on the loop), and
 * the connect (nothing listens on port 1) then fails the request once,
 * naming the server. */
static void slowdns_lookup_off_the_loop(void **state)
{
    uv_loop_t loop;
    ticker k = {0};
    (void)state;
    atomic_store(slowdns_var("eddy_slowdns_ms"), 600);
    int calls0 = atomic_load(slowdns_var("eddy_slowdns_calls"));
    uv_loop_init(&loop);
    k.c = client_at(&loop, "localhost:1", 5000);
    uv_timer_init(&loop, &k.t);
    uv_timer_start(&k.t, on_tick, 10, 10);
    uint64_t end = eddy_now_ms() + 5000;
    while (!k.o.calls && eddy_now_ms() < end)
        uv_run(&loop, UV_RUN_ONCE);
    uint64_t took_ms = (uv_hrtime() - k.call_ns) / 1000000;
    uv_close((uv_handle_t *)&k.t, NULL);
    print_message("lookup and connect took %llu ms; longest gap between 10 ms ticks: %llu ms\n",
                  (unsigned long long)took_ms, (unsigned long long)(k.max_gap_ns / 1000000));
    assert_true(k.max_gap_ns < 200000000ull); /* the loop never waited for the lookup... */
    assert_true(took_ms >= 550);              /* ...which was slow */
    assert_int_equal(atomic_load(slowdns_var("eddy_slowdns_calls")) - calls0, 1);
    assert_int_equal(k.o.calls, 1);
    assert_int_equal(k.o.status, EDDY_ENET);
    assert_non_null(strstr(k.o.msg, "localhost:1"));
    finish_slow(&loop, k.c, NULL);
    assert_int_equal(k.o.calls, 1);
}

/* The client closed while the lookup is under way: the request ends once
 * with EDDY_ECANCELED, and the lookup ending later (after the client is
 * freed) touches nothing of it. */
static void slowdns_close_while_resolving(void **state)
{
    uv_loop_t loop;
    outcome o = {0};
    (void)state;
    atomic_store(slowdns_var("eddy_slowdns_ms"), 150);
    int calls0 = atomic_load(slowdns_var("eddy_slowdns_calls"));
    uv_loop_init(&loop);
    eddy_fluss_client *c = client_at(&loop, "localhost:1", 5000);
    assert_int_equal(eddy_fluss_list_databases(c, names_done, &o), 0);
    run_until(&loop, NULL, 30);
    assert_int_equal(o.calls, 0);
    eddy_fluss_client_close(c);
    assert_int_equal(o.calls, 1);
    assert_int_equal(o.status, EDDY_ECANCELED);
    finish_slow(&loop, NULL, NULL);
    assert_int_equal(o.calls, 1);
    assert_int_equal(atomic_load(slowdns_var("eddy_slowdns_calls")) - calls0, 1);
}

/* A lookup slower than the request timeout: the attempt is given up at the
 * timeout like a hanging connect; the lookup's late answer is dropped. */
static void slowdns_timeout_while_resolving(void **state)
{
    uv_loop_t loop;
    outcome o = {0};
    (void)state;
    atomic_store(slowdns_var("eddy_slowdns_ms"), 300);
    uv_loop_init(&loop);
    eddy_fluss_client *c = client_at(&loop, "localhost:1", 100);
    assert_int_equal(eddy_fluss_list_databases(c, names_done, &o), 0);
    assert_true(run_until(&loop, &o.calls, 3000));
    assert_int_equal(o.status, EDDY_ENET);
    assert_non_null(strstr(o.msg, "no connection within 100 ms"));
    run_until(&loop, NULL, 100); /* the lookup ends meanwhile (at 300 ms) */
    assert_int_equal(o.calls, 1);
    finish_slow(&loop, c, NULL);
    assert_int_equal(o.calls, 1);
}

/* The server moves while its name is being looked up, first to another
 * name (a second lookup starts while the first still runs), then to an IP
 * literal: the queued request goes to the new address at once (it used to
 * wait for its timeout, nothing reconnecting a connection that had no
 * socket yet), and the two stale lookups end on their own. */
static void slowdns_address_change_while_resolving(void **state)
{
    uv_loop_t loop;
    fake_srv srv;
    outcome o = {0};
    (void)state;
    atomic_store(slowdns_var("eddy_slowdns_ms"), 150);
    int calls0 = atomic_load(slowdns_var("eddy_slowdns_calls"));
    uv_loop_init(&loop);
    fake_start(&srv, &loop);
    eddy_fluss_client *c = client_at(&loop, "localhost:1", 5000);
    assert_int_equal(eddy_fluss_list_databases(c, names_done, &o), 0);
    run_until(&loop, NULL, 20);
    assert_int_equal(eddy__rpc_set_node(c, NODE_BOOTSTRAP, "localhost", 2), 0);
    run_until(&loop, NULL, 20);
    assert_int_equal(o.calls, 0);
    assert_int_equal(eddy__rpc_set_node(c, NODE_BOOTSTRAP, "127.0.0.1", srv.port), 0);
    assert_true(run_until(&loop, &o.calls, 3000));
    assert_int_equal(o.status, 0);
    assert_int_equal(o.n, 1);
    assert_int_equal(atomic_load(slowdns_var("eddy_slowdns_calls")) - calls0, 2);
    finish_slow(&loop, c, &srv);
    assert_int_equal(o.calls, 1);
}

/* Run the slowdns_* tests in a child of this binary with slowdns.so (next
 * to it) preloaded; they pass when the child exits 0. */
static void test_slow_resolver(void **state)
{
    char exe[4096], shim[4200], preload[8400], asan[4200];
    const char *old_preload = getenv("LD_PRELOAD"), *old_asan = getenv("ASAN_OPTIONS");
    char *argv[] = {exe, NULL}, *envp[512];
    int n = 0, status;
    pid_t pid;
    (void)state;
    ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    assert_true(len > 0);
    exe[len] = 0;
    snprintf(shim, sizeof(shim), "%.*s/slowdns.so", (int)(strrchr(exe, '/') - exe), exe);
    if (access(shim, R_OK))
        fail_msg("%s is missing: make BUILD=<dir> <dir>/tests/slowdns.so", shim);
    snprintf(preload, sizeof(preload), "LD_PRELOAD=%s%s%s", shim, old_preload ? ":" : "",
             old_preload ? old_preload : "");
    /* under AddressSanitizer the shim is loaded before its runtime */
    snprintf(asan, sizeof(asan), "ASAN_OPTIONS=%s%sverify_asan_link_order=0",
             old_asan ? old_asan : "", old_asan ? ":" : "");
    for (char **e = environ; *e && n < 500; e++)
        if (strncmp(*e, "LD_PRELOAD=", 11) && strncmp(*e, "ASAN_OPTIONS=", 13) &&
            strncmp(*e, "EDDY_TEST_FILTER=", 17))
            envp[n++] = *e;
    envp[n++] = preload;
    envp[n++] = asan;
    envp[n++] = "EDDY_SLOWDNS_CHILD=1";
    envp[n] = NULL;
    fflush(stdout);
    assert_int_equal(posix_spawn(&pid, exe, NULL, NULL, argv, envp), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* -- a log sink's checkpointed offsets (fluss/sinkpos.c) ------------------- */

/* What a checkpoint keeps reads back as the plan of the next start: read
 * each bucket from its committed offset; nothing kept: nothing to read; a
 * table created again or an offset outside the log: from its start, with
 * a warning; rows gone below the log's start (retention): refused, naming
 * the bucket and the offsets. */
static void test_sink_offsets_plan(void **state)
{
    (void)state;
    int64_t offs[] = {5, 0, 12}, from[3];
    int64_t earliest[] = {0, 0, 0}, latest[] = {9, 0, 12};
    char why[512];
    char *txt = eddy__fluss_sink_state(77, offs, 3);
    assert_non_null(txt);
    assert_string_equal(txt, "{\"table_id\":77,\"offsets\":[5,0,12]}");
    json_t *st = json_loads(txt, 0, NULL);
    eddy_free(txt);
    assert_non_null(st);
    assert_int_equal(eddy__fluss_sink_plan(st, 77, 3, earliest, latest, from, why, sizeof(why)), 0);
    assert_int_equal(from[0], 5);
    assert_int_equal(from[1], 0);
    assert_int_equal(from[2], 12);
    assert_string_equal(why, "");
    /* nothing kept (a first start): from the end, nothing to read */
    assert_int_equal(eddy__fluss_sink_plan(NULL, 77, 3, earliest, latest, from, why, sizeof(why)),
                     0);
    assert_int_equal(from[0], 9);
    assert_int_equal(from[2], 12);
    /* the table was dropped and created again: all of it */
    latest[0] = 3;
    assert_int_equal(eddy__fluss_sink_plan(st, 78, 3, earliest, latest, from, why, sizeof(why)), 1);
    assert_non_null(strstr(why, "of another table (id 77, 3 buckets"));
    assert_int_equal(from[0], 0);
    assert_int_equal(from[2], 0);
    assert_int_equal(eddy__fluss_sink_plan(st, 77, 2, earliest, latest, from, why, sizeof(why)), 1);
    /* an offset past the end of the log (the same table id): that bucket from its start */
    assert_int_equal(eddy__fluss_sink_plan(st, 77, 3, earliest, latest, from, why, sizeof(why)), 1);
    assert_non_null(strstr(why, "bucket 0: the last checkpoint's offset 5 is not in the log"));
    assert_int_equal(from[0], 0);
    assert_int_equal(from[1], 0);
    assert_int_equal(from[2], 12);
    /* retention removed rows the checkpoint's offset points into */
    latest[0] = 9;
    earliest[2] = 10;
    assert_int_equal(eddy__fluss_sink_plan(st, 77, 3, earliest, latest, from, why, sizeof(why)), 0);
    earliest[2] = 13;
    latest[2] = 20;
    assert_int_equal(eddy__fluss_sink_plan(st, 77, 3, earliest, latest, from, why, sizeof(why)),
                     -1);
    assert_non_null(strstr(why, "bucket 2: the rows from offset 12 (the last checkpoint's) to 13"));
    assert_non_null(strstr(why, "retention"));
    /* a malformed state is not this table's */
    json_t *bad = json_pack("{s:I, s:[s]}", "table_id", (json_int_t)77, "offsets", "x");
    earliest[2] = 0;
    assert_int_equal(eddy__fluss_sink_plan(bad, 77, 1, earliest, latest, from, why, sizeof(why)),
                     1);
    assert_int_equal(from[0], 0);
    json_decref(bad);
    json_decref(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_sink_offsets_plan),
        cmocka_unit_test(test_murmur_buckets),
        cmocka_unit_test(test_varint),
        cmocka_unit_test(test_compacted_vectors),
        cmocka_unit_test(test_rows_roundtrip),
        cmocka_unit_test(test_indexed_vector),
        cmocka_unit_test(test_log_arrow_plain),
        cmocka_unit_test(test_log_arrow_zstd),
        cmocka_unit_test(test_log_arrow_lz4),
        cmocka_unit_test(test_log_indexed),
        cmocka_unit_test(test_log_header_vector),
        cmocka_unit_test(test_log_base_offset_overflow),
        cmocka_unit_test(test_timestamp_edges),
        cmocka_unit_test(test_timestamp_arrow_read_edges),
        cmocka_unit_test(test_timestamp_text_edges),
        cmocka_unit_test(test_kv_batch_vector),
        cmocka_unit_test(test_types_and_json),
        cmocka_unit_test(test_table_json),
        cmocka_unit_test(test_address_change_while_connecting),
        cmocka_unit_test(test_address_change_while_in_flight),
        cmocka_unit_test(test_close_while_connecting),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_close_cancels_everything),
        cmocka_unit_test(test_writer_renews_a_lost_writer_id),
        cmocka_unit_test(test_close_inside_deferred_callback),
        cmocka_unit_test(test_hostile_frame_length),
        cmocka_unit_test(test_frame_stream_check),
        cmocka_unit_test(test_hostile_batch_length),
        cmocka_unit_test(test_hostile_protobuf_amplification),
        cmocka_unit_test(test_hostile_arrow_lengths),
        cmocka_unit_test(test_hostile_table_json),
        cmocka_unit_test(test_node_limit),
        cmocka_unit_test(test_slow_resolver),
    };
    const struct CMUnitTest slowdns[] = {
        cmocka_unit_test(slowdns_lookup_off_the_loop),
        cmocka_unit_test(slowdns_close_while_resolving),
        cmocka_unit_test(slowdns_timeout_while_resolving),
        cmocka_unit_test(slowdns_address_change_while_resolving),
    };
    eddy_alloc_install();
    if (getenv("EDDY_TEST_FILTER")) /* e.g. EDDY_TEST_FILTER='test_close*' */
        cmocka_set_test_filter(getenv("EDDY_TEST_FILTER"));
    if (getenv("EDDY_SLOWDNS_CHILD")) /* test_slow_resolver's child */
        return cmocka_run_group_tests_name("fluss, slow resolver", slowdns, NULL, NULL);
    return cmocka_run_group_tests_name("fluss", tests, NULL, NULL);
}
