/* tests/fuzz/fuzz_yaml.c - the job YAML loader (positions, interpolation). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "eddy/agent.h"
#include "eddy/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = eddy_strndup((const char *)data, size);
    eddy_yaml_doc doc;
    eddy_diag d;
    char where[512];
    if (!text)
        return 0;
    eddy_diag_init(&d);
    if (eddy_yaml_load_string(text, "fuzz.yaml", &doc, &d) == 0) {
        const char *k;
        json_t *v;
        json_object_foreach(doc.pos, k, v) eddy_yaml_where(&doc, k, 1, where, sizeof(where));
    }
    eddy_yaml_doc_free(&doc);
    eddy_diag_free(&d);
    eddy_free(text);
    return 0;
}
