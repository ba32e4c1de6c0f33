/* tests/fuzz/fuzz_fluss_batch.c - log record batches (ARROW, INDEXED,
 * COMPACTED) and single rows. The first byte picks the format. */
#include <stdint.h>
#include <stdlib.h>

#include "fluss_schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int sink(int64_t off, int64_t ts, int change, const eddy_fluss_value *vals, void *ud)
{
    (void)off, (void)ts, (void)change;
    json_t *j = eddy_fluss_row_to_json(&fuzz_schema, vals, NULL, 0);
    json_decref(j);
    ++*(long *)ud;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eddy_err e;
    eddy_fluss_value vals[14];
    long rows = 0;
    int64_t next;
    static const int proj[] = {1, 7, 12};
    if (size < 1)
        return 0;
    int mode = data[0] % 6;
    data++, size--;
    switch (mode) {
    case 0:
    case 1:
    case 2:
        eddy_fluss_log_decode(&fuzz_schema, mode, data, size, 0, NULL, 0, sink, &rows, &next, &e);
        break;
    case 3: /* projected Arrow */
        eddy_fluss_log_decode(&fuzz_schema, EDDY_FLUSS_LOG_ARROW, data, size, 0, proj, 3, sink,
                              &rows, &next, &e);
        break;
    case 4:
        eddy_fluss_compacted_decode(&fuzz_schema, data, size, vals, &e);
        break;
    default:
        eddy_fluss_indexed_decode(&fuzz_schema, data, size, vals, &e);
    }
    return 0;
}
