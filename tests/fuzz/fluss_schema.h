/* tests/fuzz/fluss_schema.h - the schema the Fluss fuzz targets decode with:
 * one column of every supported type. */
#ifndef EDDY_FUZZ_FLUSS_SCHEMA_H
#define EDDY_FUZZ_FLUSS_SCHEMA_H

#include "eddy/fluss.h"

static eddy_fluss_column fuzz_cols[] = {
    {"b", EDDY_FLUSS_BOOLEAN, 1, 0, 0},    {"t", EDDY_FLUSS_TINYINT, 1, 0, 0},
    {"s", EDDY_FLUSS_SMALLINT, 1, 0, 0},   {"i", EDDY_FLUSS_INT, 1, 0, 0},
    {"l", EDDY_FLUSS_BIGINT, 1, 0, 0},     {"f", EDDY_FLUSS_FLOAT, 1, 0, 0},
    {"d", EDDY_FLUSS_DOUBLE, 1, 0, 0},     {"str", EDDY_FLUSS_STRING, 1, 0, 0},
    {"by", EDDY_FLUSS_BYTES, 1, 0, 0},     {"dt", EDDY_FLUSS_DATE, 1, 0, 0},
    {"ts", EDDY_FLUSS_TIMESTAMP, 1, 6, 0}, {"ltz", EDDY_FLUSS_TIMESTAMP_LTZ, 1, 3, 0},
    {"dec", EDDY_FLUSS_DECIMAL, 1, 10, 2}, {"big", EDDY_FLUSS_DECIMAL, 1, 30, 4},
};
static eddy_fluss_schema fuzz_schema = {14, fuzz_cols, 0, NULL, 0, NULL};

#endif
