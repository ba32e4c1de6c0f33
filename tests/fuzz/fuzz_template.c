/* tests/fuzz/fuzz_template.c - compiling and rendering prompt templates. */
#include <stdint.h>
#include <stdlib.h>

#include "eddy/buf.h"
#include "eddy/prompt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static json_t *ctx;
    char *text = eddy_strndup((const char *)data, size), *out;
    eddy_template *t;
    eddy_err e;
    if (!ctx)
        ctx = json_loads("{\"event\":{\"text\":\"hi\",\"a\":{\"b\":[1,2]}},\"key\":\"k\","
                         "\"memory\":{\"x\":null}}",
                         0, NULL);
    if (!text)
        return 0;
    if (eddy_template_new(text, "fuzz", 1, 1, &t, &e) == 0) {
        if (eddy_template_render(t, ctx, &out, &e) == 0)
            eddy_free(out);
        eddy_template_free(t);
    }
    eddy_free(text);
    return 0;
}
