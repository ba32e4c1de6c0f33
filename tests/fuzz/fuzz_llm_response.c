/* tests/fuzz/fuzz_llm_response.c - parsing chat-completions response bodies. */
#include <stdint.h>
#include <stdlib.h>

#include "eddy/llm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    eddy_llm_response r;
    eddy_err e;
    if (eddy_llm_parse_openai((const char *)data, size, &r, &e) == 0)
        eddy_llm_response_clear(&r);
    return 0;
}
