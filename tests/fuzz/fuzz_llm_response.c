/* tests/fuzz/fuzz_llm_response.c - parsing answers of every provider, plain
 * and streamed (the input fed to each stream in two pieces). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "eddy/llm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const providers[] = {"openai", "anthropic", "ollama"};
    eddy_llm_request rq;
    memset(&rq, 0, sizeof(rq));
    for (int i = 0; i < 3; i++) {
        eddy_llm_model m;
        eddy_llm_response r;
        eddy_err e;
        memset(&m, 0, sizeof(m));
        m.provider = (char *)providers[i];
        m.prov = eddy_llm_provider_find(providers[i]);
        if (eddy_llm_parse(&m, &rq, (const char *)data, size, &r, &e) == 0)
            eddy_llm_response_clear(&r);
        eddy_llm_stream *st = eddy_llm_stream_new(m.prov, &rq);
        if (!st)
            continue;
        size_t cut = size / 2;
        if (eddy_llm_stream_feed(st, (const char *)data, cut, &e) == 0 &&
            eddy_llm_stream_feed(st, (const char *)data + cut, size - cut, &e) == 0 &&
            eddy_llm_stream_finish(st, &r, &e) == 0)
            eddy_llm_response_clear(&r);
        eddy_llm_stream_free(st);
    }
    return 0;
}
