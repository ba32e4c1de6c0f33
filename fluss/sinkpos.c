/*
 * fluss/sinkpos.c - what a Fluss log sink keeps with a checkpoint, and
 * where a restart reads the sink's own log from.
 *
 * With delivery: exactly_once a checkpoint keeps, per bucket, the log end
 * offset after the last batch the server acknowledged before it: every
 * output not marked delivered by that checkpoint lies at or above it. A
 * restart reads each bucket from there to the end it sees at the start and
 * collects the output_ids found, so those outputs are not appended again.
 * This file only computes: no I/O, no loop (tests/unit/test_fluss.c).
 */
#include "fluss_int.h"

#include <stdio.h>

#include "eddy/json.h"

char *eddy__fluss_sink_state(int64_t table_id, const int64_t *offsets, int n)
{
    json_t *a = json_array(), *o = NULL;
    char *s = NULL;
    for (int b = 0; a && b < n; b++)
        if (json_array_append_new(a, json_integer(offsets[b])))
            goto out;
    o = json_pack("{s:I, s:O}", "table_id", (json_int_t)table_id, "offsets", a);
    if (o)
        s = eddy_json_dumps_flags(o, JSON_COMPACT);
out:
    json_decref(a);
    json_decref(o);
    return s;
}

/* The committed offset of BUCKET in STATE's "offsets", or -1. */
static int64_t committed(const json_t *offs, int bucket)
{
    const json_t *v = json_array_get(offs, (size_t)bucket);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? json_integer_value(v) : -1;
}

int eddy__fluss_sink_plan(const json_t *state, int64_t table_id, int n, const int64_t *earliest,
                          const int64_t *latest, int64_t *from, char *why, size_t cap)
{
    const json_t *offs = json_object_get(state, "offsets");
    const json_t *id = json_object_get(state, "table_id");
    int rc = 0;
    if (cap)
        why[0] = '\0';
    if (!state) {
        for (int b = 0; b < n; b++)
            from[b] = latest[b];
        return 0;
    }
    if (!json_is_integer(id) || json_integer_value(id) != table_id || !json_is_array(offs) ||
        json_array_size(offs) != (size_t)n) {
        snprintf(why, cap,
                 "the last checkpoint's offsets are of another table (id %lld, %zu buckets; "
                 "the table now: id %lld, %d buckets): it was dropped and created again; "
                 "reading all of it",
                 json_is_integer(id) ? (long long)json_integer_value(id) : -1LL,
                 json_array_size(offs), (long long)table_id, n);
        for (int b = 0; b < n; b++)
            from[b] = earliest[b];
        return 1;
    }
    for (int b = 0; b < n; b++) {
        int64_t c = committed(offs, b);
        if (c >= 0 && c < earliest[b]) {
            snprintf(why, cap,
                     "bucket %d: the rows from offset %lld (the last checkpoint's) to %lld are "
                     "no longer in the log (retention removed them; it now starts at %lld), "
                     "so eddy cannot tell which outputs of the runs after that checkpoint are "
                     "already in the table",
                     b, (long long)c, (long long)earliest[b], (long long)earliest[b]);
            return -1;
        }
        if (c < 0 || c > latest[b]) {
            if (!rc)
                snprintf(why, cap,
                         "bucket %d: the last checkpoint's offset %lld is not in the log "
                         "(%lld to %lld); reading the bucket from its start",
                         b, (long long)c, (long long)earliest[b], (long long)latest[b]);
            from[b] = earliest[b];
            rc = 1;
            continue;
        }
        from[b] = c;
    }
    return rc;
}
