/*
 * fluss/fluss_int.h - internals shared by the files of the fluss module:
 * byte-order helpers and the Arrow record batch codec. No other module
 * includes this file.
 */
#ifndef EDDY_FLUSS_INT_H
#define EDDY_FLUSS_INT_H

#include <stdint.h>
#include <string.h>

#include "eddy/fluss.h"

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
int eddy__arrow_writer_add(eddy__arrow_writer *w, const eddy_fluss_value *vals);
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

#endif
