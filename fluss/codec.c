/*
 * fluss/codec.c - the byte-level codecs of Fluss rows and keys.
 *
 * CRC-32C (hardware instruction when the CPU has SSE4.2, slicing-by-8
 * tables otherwise), Fluss's Murmur3 bucket function, unsigned LEB128
 * varints, CompactedRow (KV values, lookup results, keys) and IndexedRow
 * (indexed log format). Everything is little-endian. Decoders check every
 * length against the input and return EDDY_ECORRUPT, never read past it.
 * Pure functions; any thread.
 */
#include "eddy/fluss.h"

#include <pthread.h>
#include <string.h>

#include "fluss_int.h"

/* -- CRC-32C ---------------------------------------------------------------- */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_hw;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
        crc_table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
#if defined(__x86_64__)
    crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t c, const uint8_t *p, size_t n)
{
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = __builtin_ia32_crc32di(c64, w);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--)
        c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

uint32_t eddy_fluss_crc32c(uint32_t crc, const void *data, size_t n)
{
    const uint8_t *p = data;
    uint32_t c = ~crc;
    pthread_once(&crc_once, crc_init);
#if defined(__x86_64__)
    if (crc_hw)
        return ~crc_sse42(c, p, n);
#endif
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^
            crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return ~c;
}

/* -- Murmur3 as Fluss computes buckets ------------------------------------- */

#define C1 0xcc9e2d51u
#define C2 0x1b873593u

static uint32_t rotl32(uint32_t x, int r)
{
    return (x << r) | (x >> (32 - r));
}

static uint32_t mix_k1(uint32_t k)
{
    return rotl32(k * C1, 15) * C2;
}

static uint32_t mix_h1(uint32_t h, uint32_t k)
{
    return rotl32(h ^ k, 13) * 5 + 0xe6546b64u;
}

static uint32_t fmix(uint32_t h, uint32_t len)
{
    h ^= len;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

uint32_t eddy_fluss_murmur3(const void *data, size_t n, uint32_t seed)
{
    const uint8_t *p = data;
    uint32_t h = seed;
    size_t body = n & ~(size_t)3;
    for (size_t i = 0; i < body; i += 4)
        h = mix_h1(h, mix_k1(rd_u32le(p + i)));
    /* Java mixes each tail byte on its own, widened as a signed byte. */
    for (size_t i = body; i < n; i++)
        h = mix_h1(h, mix_k1((uint32_t)(int32_t)(int8_t)p[i]));
    return fmix(h, (uint32_t)n);
}

int eddy_fluss_bucket(const void *key, size_t n, int nbuckets)
{
    uint32_t h = eddy_fluss_murmur3(key, n, 42);
    /* Fluss hashes the hash once more (MurmurHashUtils.fmix of an int). */
    h = fmix(mix_h1(0, mix_k1(h)), 4);
    int32_t s = (int32_t)h;
    int32_t a = s == INT32_MIN ? 0 : (s < 0 ? -s : s);
    return nbuckets > 0 ? a % nbuckets : 0;
}

/* -- varints ---------------------------------------------------------------- */

size_t eddy_fluss_varint_put(uint8_t *out, uint64_t v)
{
    size_t i = 0;
    while (v >= 0x80) {
        out[i++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[i++] = (uint8_t)v;
    return i;
}

size_t eddy_fluss_varint_get(const uint8_t *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n && i < 10; i++) {
        v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (p[i] < 0x80) {
            *out = v;
            return i + 1;
        }
    }
    return 0;
}

static int put_varint(eddy_buf *b, uint64_t v)
{
    uint8_t tmp[10];
    return eddy_buf_append(b, tmp, eddy_fluss_varint_put(tmp, v));
}

/* -- CompactedRow ----------------------------------------------------------- */

/* Big-endian two's complement of an unscaled decimal, shortest form (as
 * Java's BigInteger.toByteArray). Returns the byte count. */
static size_t dec_to_be(__int128 v, uint8_t out[16])
{
    uint8_t full[16];
    unsigned __int128 u = (unsigned __int128)v;
    for (int i = 15; i >= 0; i--) {
        full[i] = (uint8_t)u;
        u >>= 8;
    }
    size_t start = 0;
    while (start < 15 && ((full[start] == 0x00 && !(full[start + 1] & 0x80)) ||
                          (full[start] == 0xff && (full[start + 1] & 0x80))))
        start++;
    memcpy(out, full + start, 16 - start);
    return 16 - start;
}

static int dec_from_be(const uint8_t *p, size_t n, __int128 *out)
{
    if (n == 0 || n > 16)
        return -1;
    unsigned __int128 u = (p[0] & 0x80) ? ~(unsigned __int128)0 : 0;
    for (size_t i = 0; i < n; i++)
        u = (u << 8) | p[i];
    *out = (__int128)u;
    return 0;
}

/* Append the compacted encoding of one non-null value. */
static int compact_value(const eddy_fluss_column *c, const eddy_fluss_value *v, eddy_buf *b)
{
    uint8_t tmp[16];
    switch (c->type) {
    case EDDY_FLUSS_BOOLEAN:
    case EDDY_FLUSS_TINYINT:
        return eddy_buf_putc(b, (char)(uint8_t)v->v.i);
    case EDDY_FLUSS_SMALLINT:
        wr_u16le(tmp, (uint16_t)v->v.i);
        return eddy_buf_append(b, tmp, 2);
    case EDDY_FLUSS_INT:
    case EDDY_FLUSS_DATE:
        return put_varint(b, (uint32_t)(int32_t)v->v.i);
    case EDDY_FLUSS_BIGINT:
        return put_varint(b, (uint64_t)v->v.i);
    case EDDY_FLUSS_FLOAT:
        memcpy(tmp, &v->v.f, 4);
        return eddy_buf_append(b, tmp, 4);
    case EDDY_FLUSS_DOUBLE:
        memcpy(tmp, &v->v.d, 8);
        return eddy_buf_append(b, tmp, 8);
    case EDDY_FLUSS_STRING:
    case EDDY_FLUSS_BYTES:
        if (put_varint(b, v->v.s.n))
            return EDDY_ENOMEM;
        return eddy_buf_append(b, v->v.s.p, v->v.s.n);
    case EDDY_FLUSS_TIMESTAMP:
    case EDDY_FLUSS_TIMESTAMP_LTZ:
        if (put_varint(b, (uint64_t)v->v.ts.ms))
            return EDDY_ENOMEM;
        return c->precision <= 3 ? 0 : put_varint(b, (uint32_t)v->v.ts.nanos);
    case EDDY_FLUSS_DECIMAL:
        if (c->precision <= 18)
            return put_varint(b, (uint64_t)(int64_t)v->v.dec);
        {
            size_t n = dec_to_be(v->v.dec, tmp);
            if (put_varint(b, n))
                return EDDY_ENOMEM;
            return eddy_buf_append(b, tmp, n);
        }
    }
    return EDDY_EINVAL;
}

int eddy_fluss_compacted_encode(const eddy_fluss_schema *s, const eddy_fluss_value *vals,
                                eddy_buf *out)
{
    size_t nb = ((size_t)s->ncols + 7) / 8;
    size_t at = out->len;
    if (eddy_buf_reserve(out, nb + (size_t)s->ncols * 9))
        return EDDY_ENOMEM;
    memset(out->data + at, 0, nb);
    out->len += nb;
    for (int i = 0; i < s->ncols; i++) {
        if (vals[i].is_null) {
            out->data[at + (size_t)(i >> 3)] |= (char)(1 << (i & 7));
            continue;
        }
        int rc = compact_value(&s->cols[i], &vals[i], out);
        if (rc)
            return rc;
    }
    return out->oom ? EDDY_ENOMEM : 0;
}

int eddy_fluss_key_encode(const eddy_fluss_schema *s, const int *cols, int ncols,
                          const eddy_fluss_value *vals, eddy_buf *out, eddy_err *err)
{
    for (int k = 0; k < ncols; k++) {
        int i = cols[k];
        if (vals[i].is_null)
            return eddy_err_set(err, EDDY_EINVAL, "key column '%s' is null", s->cols[i].name);
        int rc = compact_value(&s->cols[i], &vals[i], out);
        if (rc)
            return eddy_err_set(err, rc, "out of memory encoding a key");
    }
    return 0;
}

typedef struct reader {
    const uint8_t *p;
    size_t n, at;
} reader;

static int rd_bytes(reader *r, size_t k, const uint8_t **out)
{
    if (r->n - r->at < k)
        return -1;
    *out = r->p + r->at;
    r->at += k;
    return 0;
}

static int rd_varint(reader *r, uint64_t *v)
{
    size_t k = eddy_fluss_varint_get(r->p + r->at, r->n - r->at, v);
    if (!k)
        return -1;
    r->at += k;
    return 0;
}

static int uncompact_value(const eddy_fluss_column *c, reader *r, eddy_fluss_value *v)
{
    const uint8_t *q;
    uint64_t u, len;
    switch (c->type) {
    case EDDY_FLUSS_BOOLEAN:
    case EDDY_FLUSS_TINYINT:
        if (rd_bytes(r, 1, &q))
            return -1;
        v->v.i = c->type == EDDY_FLUSS_BOOLEAN ? (q[0] != 0) : (int8_t)q[0];
        return 0;
    case EDDY_FLUSS_SMALLINT:
        if (rd_bytes(r, 2, &q))
            return -1;
        v->v.i = (int16_t)rd_u16le(q);
        return 0;
    case EDDY_FLUSS_INT:
    case EDDY_FLUSS_DATE:
        if (rd_varint(r, &u))
            return -1;
        v->v.i = (int32_t)(uint32_t)u;
        return 0;
    case EDDY_FLUSS_BIGINT:
        if (rd_varint(r, &u))
            return -1;
        v->v.i = (int64_t)u;
        return 0;
    case EDDY_FLUSS_FLOAT:
        if (rd_bytes(r, 4, &q))
            return -1;
        memcpy(&v->v.f, q, 4);
        return 0;
    case EDDY_FLUSS_DOUBLE:
        if (rd_bytes(r, 8, &q))
            return -1;
        memcpy(&v->v.d, q, 8);
        return 0;
    case EDDY_FLUSS_STRING:
    case EDDY_FLUSS_BYTES:
        if (rd_varint(r, &len) || len > r->n - r->at || rd_bytes(r, (size_t)len, &q))
            return -1;
        v->v.s.p = (const char *)q;
        v->v.s.n = (size_t)len;
        return 0;
    case EDDY_FLUSS_TIMESTAMP:
    case EDDY_FLUSS_TIMESTAMP_LTZ:
        if (rd_varint(r, &u))
            return -1;
        v->v.ts.ms = (int64_t)u;
        v->v.ts.nanos = 0;
        if (c->precision > 3) {
            if (rd_varint(r, &u))
                return -1;
            if (u > 999999)
                return -2; /* not a nano-of-millisecond */
            v->v.ts.nanos = (int32_t)u;
        }
        return 0;
    case EDDY_FLUSS_DECIMAL:
        if (c->precision <= 18) {
            if (rd_varint(r, &u))
                return -1;
            v->v.dec = (int64_t)u;
            return 0;
        }
        if (rd_varint(r, &len) || len > r->n - r->at || rd_bytes(r, (size_t)len, &q))
            return -1;
        return dec_from_be(q, (size_t)len, &v->v.dec);
    }
    return -1;
}

int eddy_fluss_compacted_decode(const eddy_fluss_schema *s, const uint8_t *p, size_t n,
                                eddy_fluss_value *vals, eddy_err *err)
{
    size_t nb = ((size_t)s->ncols + 7) / 8;
    reader r = {p, n, nb};
    if (n < nb)
        return eddy_err_set(err, EDDY_ECORRUPT,
                            "compacted row: %zu bytes, shorter than its null "
                            "bitmap",
                            n);
    for (int i = 0; i < s->ncols; i++) {
        memset(&vals[i], 0, sizeof(vals[i]));
        if (p[i >> 3] & (1 << (i & 7))) {
            vals[i].is_null = 1;
            continue;
        }
        int bad = uncompact_value(&s->cols[i], &r, &vals[i]);
        if (bad == -2)
            return eddy_err_set(err, EDDY_ECORRUPT,
                                "compacted row: column '%s' has a nano-of-millisecond beyond "
                                "999999",
                                s->cols[i].name);
        if (bad)
            return eddy_err_set(err, EDDY_ECORRUPT, "compacted row: column '%s' runs past the row",
                                s->cols[i].name);
    }
    if (r.at != n)
        return eddy_err_set(err, EDDY_ECORRUPT,
                            "compacted row: %zu bytes left after the last column", n - r.at);
    return 0;
}

/* -- IndexedRow ------------------------------------------------------------- */

static int is_var_indexed(const eddy_fluss_column *c)
{
    return c->type == EDDY_FLUSS_STRING || c->type == EDDY_FLUSS_BYTES ||
           (c->type == EDDY_FLUSS_DECIMAL && c->precision > 18);
}

static size_t fixed_width(const eddy_fluss_column *c)
{
    switch (c->type) {
    case EDDY_FLUSS_BOOLEAN:
    case EDDY_FLUSS_TINYINT:
        return 1;
    case EDDY_FLUSS_SMALLINT:
        return 2;
    case EDDY_FLUSS_INT:
    case EDDY_FLUSS_DATE:
    case EDDY_FLUSS_FLOAT:
        return 4;
    case EDDY_FLUSS_TIMESTAMP:
    case EDDY_FLUSS_TIMESTAMP_LTZ:
        return c->precision <= 3 ? 8 : 12;
    default:
        return 8;
    }
}

int eddy_fluss_indexed_encode(const eddy_fluss_schema *s, const eddy_fluss_value *vals,
                              eddy_buf *out)
{
    size_t nb = ((size_t)s->ncols + 7) / 8, nvar = 0;
    for (int i = 0; i < s->ncols; i++)
        nvar += is_var_indexed(&s->cols[i]);
    size_t head = nb + 4 * nvar, at = out->len, slot = 0;
    if (eddy_buf_reserve(out, head + (size_t)s->ncols * 12))
        return EDDY_ENOMEM;
    memset(out->data + at, 0, head);
    out->len += head;
    for (int i = 0; i < s->ncols; i++) {
        const eddy_fluss_column *c = &s->cols[i];
        const eddy_fluss_value *v = &vals[i];
        uint8_t tmp[16];
        size_t w = 0;
        if (v->is_null) {
            out->data[at + (size_t)(i >> 3)] |= (char)(1 << (i & 7));
            continue;
        }
        if (is_var_indexed(c)) {
            const void *src = tmp;
            if (c->type == EDDY_FLUSS_DECIMAL) {
                w = dec_to_be(v->v.dec, tmp);
            } else {
                src = v->v.s.p;
                w = v->v.s.n;
            }
            wr_u32le((uint8_t *)out->data + at + nb + 4 * slot++, (uint32_t)w);
            if (eddy_buf_append(out, src, w))
                return EDDY_ENOMEM;
            continue;
        }
        switch (c->type) {
        case EDDY_FLUSS_BOOLEAN:
        case EDDY_FLUSS_TINYINT:
            tmp[0] = (uint8_t)v->v.i;
            w = 1;
            break;
        case EDDY_FLUSS_SMALLINT:
            wr_u16le(tmp, (uint16_t)v->v.i);
            w = 2;
            break;
        case EDDY_FLUSS_INT:
        case EDDY_FLUSS_DATE:
            wr_u32le(tmp, (uint32_t)v->v.i);
            w = 4;
            break;
        case EDDY_FLUSS_FLOAT:
            memcpy(tmp, &v->v.f, 4);
            w = 4;
            break;
        case EDDY_FLUSS_DOUBLE:
            memcpy(tmp, &v->v.d, 8);
            w = 8;
            break;
        case EDDY_FLUSS_TIMESTAMP:
        case EDDY_FLUSS_TIMESTAMP_LTZ:
            wr_u64le(tmp, (uint64_t)v->v.ts.ms);
            w = 8;
            if (c->precision > 3) {
                wr_u32le(tmp + 8, (uint32_t)v->v.ts.nanos);
                w = 12;
            }
            break;
        case EDDY_FLUSS_DECIMAL:
            wr_u64le(tmp, (uint64_t)(int64_t)v->v.dec);
            w = 8;
            break;
        default:
            wr_u64le(tmp, (uint64_t)v->v.i);
            w = 8;
        }
        if (eddy_buf_append(out, tmp, w))
            return EDDY_ENOMEM;
    }
    return 0;
}

int eddy_fluss_indexed_decode(const eddy_fluss_schema *s, const uint8_t *p, size_t n,
                              eddy_fluss_value *vals, eddy_err *err)
{
    size_t nb = ((size_t)s->ncols + 7) / 8, nvar = 0, slot = 0;
    for (int i = 0; i < s->ncols; i++)
        nvar += is_var_indexed(&s->cols[i]);
    if (n < nb + 4 * nvar)
        return eddy_err_set(err, EDDY_ECORRUPT, "indexed row: %zu bytes, shorter than its header",
                            n);
    reader r = {p, n, nb + 4 * nvar};
    for (int i = 0; i < s->ncols; i++) {
        const eddy_fluss_column *c = &s->cols[i];
        eddy_fluss_value *v = &vals[i];
        const uint8_t *q;
        memset(v, 0, sizeof(*v));
        if (p[i >> 3] & (1 << (i & 7))) {
            v->is_null = 1;
            continue;
        }
        size_t w = is_var_indexed(c) ? rd_u32le(p + nb + 4 * slot++) : fixed_width(c);
        if (rd_bytes(&r, w, &q))
            return eddy_err_set(err, EDDY_ECORRUPT, "indexed row: column '%s' runs past the row",
                                c->name);
        switch (c->type) {
        case EDDY_FLUSS_BOOLEAN:
            v->v.i = q[0] != 0;
            break;
        case EDDY_FLUSS_TINYINT:
            v->v.i = (int8_t)q[0];
            break;
        case EDDY_FLUSS_SMALLINT:
            v->v.i = (int16_t)rd_u16le(q);
            break;
        case EDDY_FLUSS_INT:
        case EDDY_FLUSS_DATE:
            v->v.i = (int32_t)rd_u32le(q);
            break;
        case EDDY_FLUSS_BIGINT:
            v->v.i = (int64_t)rd_u64le(q);
            break;
        case EDDY_FLUSS_FLOAT:
            memcpy(&v->v.f, q, 4);
            break;
        case EDDY_FLUSS_DOUBLE:
            memcpy(&v->v.d, q, 8);
            break;
        case EDDY_FLUSS_STRING:
        case EDDY_FLUSS_BYTES:
            v->v.s.p = (const char *)q;
            v->v.s.n = w;
            break;
        case EDDY_FLUSS_TIMESTAMP:
        case EDDY_FLUSS_TIMESTAMP_LTZ:
            v->v.ts.ms = (int64_t)rd_u64le(q);
            v->v.ts.nanos = w == 12 ? (int32_t)rd_u32le(q + 8) : 0;
            if (v->v.ts.nanos < 0 || v->v.ts.nanos > 999999)
                return eddy_err_set(err, EDDY_ECORRUPT,
                                    "indexed row: column '%s' has a nano-of-millisecond "
                                    "outside 0..999999",
                                    c->name);
            break;
        case EDDY_FLUSS_DECIMAL:
            if (c->precision <= 18)
                v->v.dec = (int64_t)rd_u64le(q);
            else if (dec_from_be(q, w, &v->v.dec))
                return eddy_err_set(err, EDDY_ECORRUPT, "indexed row: bad decimal in '%s'",
                                    c->name);
            break;
        }
    }
    return 0;
}

const char *eddy_fluss_change_name(int change)
{
    static const char *names[] = {"+A", "+I", "-U", "+U", "-D"};
    return change >= 0 && change <= 4 ? names[change] : "?";
}
