/* tests/fuzz/fuzz_fluss_rpc.c - RPC responses as the client decodes them.
 * The first byte picks the API (252..255: a stream of response frames, as
 * a connection splits it); fetch and lookup answers decode their records
 * with the all-types schema. */
#include <stdint.h>
#include <stdlib.h>

#include "fluss_schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int apis[] = {1012, 1015, 1017, 1021, 1014, 1016};
    eddy_err e;
    if (size < 1)
        return 0;
    if (data[0] >= 252) {
        eddy_fluss_response_check(0, data + 1, size - 1, &fuzz_schema, 0, &e);
        return 0;
    }
    int api = apis[data[0] % 6];
    int format = (data[0] / 6) % 3;
    eddy_fluss_response_check(api, data + 1, size - 1, &fuzz_schema, format, &e);
    return 0;
}
