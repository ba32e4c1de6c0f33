/*
 * trace/store.c - spans and their SQLite store.
 *
 * A span lives on one thread while open; eddy_span_end hands it to the
 * store's writer thread (an eddy_bgq), which inserts spans in batches inside
 * one transaction and commits at the batch's bounds (see eddy_trace_store_open). A root span may
 * carry a summary that becomes the trace's row in `traces` (what `eddy trace list` reads without
 * touching spans). Ids are lowercase hex, 32 and 16 characters as OpenTelemetry wants them, never
 * all zeros, drawn from a per-thread generator (no lock, no syscall per span); a trace id starts
 * with the time in milliseconds (see trace_id). With OTLP export configured,
 * the writer also hands every span it writes to the exporter (trace/otlp.c),
 * which copies it and never blocks the writer.
 */
#include "eddy/trace.h"
#include "trace_int.h"
#include "eddy/bgq.h"
#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/log.h"
#include "otlp_int.h"

#include <regex.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

/* Version 2: rowid tables (spans are large rows: a WITHOUT ROWID b-tree keyed
 * by two hex texts split a page every few inserts), the trace row with what
 * the list filters on and a full-text index over its input and output. */
#define TRACES_DEF                                                                                 \
    "(id INTEGER PRIMARY KEY, trace_id TEXT NOT NULL UNIQUE, name TEXT, agent TEXT NOT NULL,"      \
    " key TEXT NOT NULL, event_id TEXT NOT NULL, status TEXT NOT NULL, error TEXT,"                \
    " start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, input_tokens INTEGER NOT NULL,"          \
    " output_tokens INTEGER NOT NULL, cost REAL, llm_calls INTEGER NOT NULL,"                      \
    " tool_calls INTEGER NOT NULL, turns INTEGER NOT NULL, models TEXT NOT NULL,"                  \
    " tools TEXT NOT NULL, input TEXT NOT NULL, output TEXT NOT NULL, summary TEXT NOT NULL)"
#define SPANS_DEF                                                                                  \
    "(id INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_id TEXT,"      \
    " name TEXT NOT NULL, kind INTEGER NOT NULL, start_ns INTEGER NOT NULL,"                       \
    " end_ns INTEGER NOT NULL, status TEXT NOT NULL, error TEXT, attributes TEXT NOT NULL)"

static const char *const kPragmas = "PRAGMA journal_mode=WAL;"
                                    "PRAGMA synchronous=NORMAL;"
                                    "PRAGMA auto_vacuum=INCREMENTAL;"; /* new files only */

static const char *const kSchema =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS traces" TRACES_DEF ";"
    "CREATE INDEX IF NOT EXISTS traces_by_start ON traces(start_ns);"
    "CREATE INDEX IF NOT EXISTS traces_by_agent ON traces(agent, start_ns);"
    "CREATE INDEX IF NOT EXISTS traces_by_key ON traces(key, start_ns);"
    "CREATE INDEX IF NOT EXISTS traces_by_event ON traces(event_id);"
    "CREATE INDEX IF NOT EXISTS traces_by_status ON traces(status, start_ns);"
    "CREATE TABLE IF NOT EXISTS spans" SPANS_DEF ";"
    "CREATE INDEX IF NOT EXISTS spans_by_trace ON spans(trace_id);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS trace_text USING fts5(input, output, content='traces',"
    "  content_rowid='id', tokenize='unicode61 remove_diacritics 2');"
    /* rows are indexed once per commit, by index_texts (not by an insert
     * trigger: with FTS5 in a transaction, every later statement of it
     * flushed FTS5's pending terms, which tripled the writer's work) */
    "CREATE TRIGGER IF NOT EXISTS traces_text_del AFTER DELETE ON traces BEGIN"
    "  INSERT INTO trace_text(trace_text, rowid, input, output)"
    "  VALUES('delete', old.id, old.input, old.output); END;"
    "INSERT OR IGNORE INTO meta VALUES('schema_version', '2');";

/* One attribute: its `"key":value` text in the span's buffer. A later set of
 * the same key makes the earlier one dead (len 0). */
typedef struct attr {
    size_t off, len, klen; /* klen: the quoted key's length */
} attr;

/* Attributes are written as JSON text when they are set (no jansson tree to
 * build on the worker, to dump and free on the writer). */
struct eddy_span {
    eddy_trace_store *store;
    char trace_id[33], span_id[17], parent_id[17];
    char *name, *error;
    int kind;
    uint64_t start_ns, end_ns;
    eddy_buf text; /* the attributes' pairs, one after the other, no separators */
    attr *attrs;
    size_t nattrs, cap;
    json_t *summary; /* root spans: the trace row */
    eddy_span *next; /* while held (writer thread) */
};

/* The spans of a trace that sampling would not keep, held (writer thread)
 * until its root span ends: kept after all if any of them failed. Once the
 * root ended, the entry stays as a tombstone (RELEASED, no spans) with the
 * decision in FAILED, for children that end after their root (a tool call
 * still running when its run failed): they follow the decision instead of
 * being held for ever. The last RELEASED_MAX tombstones are kept. */
typedef struct held {
    char trace_id[33];
    eddy_span *first, *last;
    int failed, released;
    struct held *next;
} held;

#define HELD_BUCKETS 1024
#define HELD_MAX_SPANS 100000 /* beyond, the spans of unsampled traces are dropped */
#define RELEASED_MAX 4096
#define RETAIN_EVERY_NS (10ull * 1000000000ull)
#define RETAIN_CHUNK 2000

struct eddy_trace_store {
    char *path;
    /* what text attributes go through (eddy_trace_text): set at open, then read-only */
    char **secrets;
    size_t nsecrets;
    regex_t *redact;
    size_t nredact;
    size_t max_payload;
    sqlite3 *db;
    sqlite3_stmt *ins_span, *ins_trace, *ins_text, *set_indexed; /* writer thread only */
    int64_t indexed; /* the last traces.id in the search index */
    eddy_bgq *q;
    int in_txn;
    eddy_trace_opts opts; /* its otlp_* pointers are not kept: NULL */
    eddy__otlp *otlp;     /* NULL: no export */
    /* writer thread only */
    uint64_t next_retain_ns;
    held *held[HELD_BUCKETS];
    size_t nheld;
    held *released[RELEASED_MAX]; /* a ring of the tombstones, the oldest at next_released */
    size_t next_released;
};

/*
 * Ids come from a per-thread xoshiro256** generator, seeded once per thread
 * with 256 bits from the OS (eddy_random_bytes: one getrandom). Spans are
 * started on worker loops and on any other thread; a thread-local state
 * needs no lock, and after the seed no id costs a syscall. Not fork-safe: a
 * child that starts spans without exec repeats its parent's ids (eddy does
 * not fork workers).
 */
typedef struct id_rng {
    uint64_t s[4];
    int seeded;
} id_rng;

static _Thread_local id_rng tl_rng;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(void)
{
    id_rng *r = &tl_rng;
    if (!r->seeded) {
        eddy_random_bytes(r->s, sizeof(r->s));
        if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3]))
            r->s[0] = 1; /* all zeros is the one state xoshiro never leaves */
        r->seeded = 1;
    }
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* WORDS random 64-bit words as 16*WORDS lowercase hex digits into OUT,
 * NUL-terminated; never all zeros (OpenTelemetry reads them as "no id"). */
static void random_id(char *out, int words)
{
    static const char digits[] = "0123456789abcdef";
    uint64_t w[2], any;
    do {
        any = 0;
        for (int i = 0; i < words; i++)
            any |= w[i] = rng_next();
    } while (!any);
    for (int i = 0; i < words; i++)
        for (int d = 0; d < 16; d++)
            out[16 * i + d] = digits[(w[i] >> (60 - 4 * d)) & 15];
    out[16 * words] = '\0';
}

/* A trace id: the wall clock in milliseconds (48 bits) then 80 random bits,
 * as 32 hex digits. Ids that grow with time are inserted at the right edge of
 * the store's b-trees (traces, spans) instead of at random pages: a batch
 * dirties a few pages, not one per span (bench/runtime's workload: the
 * process's pwrite64 per event 21 -> 12). W3C Trace Context asks only the right-most 7 bytes
 * to be random; these are 10. */
static void trace_id(char *out)
{
    static const char digits[] = "0123456789abcdef";
    uint64_t ms = eddy_wall_ns() / 1000000u, r = rng_next(), r2 = rng_next();
    uint64_t hi = (ms << 16) | (r >> 48), lo = r2;
    for (int d = 0; d < 16; d++) {
        out[d] = digits[(hi >> (60 - 4 * d)) & 15];
        out[16 + d] = digits[(lo >> (60 - 4 * d)) & 15];
    }
    out[32] = '\0';
}

/* -- text: redaction and the payload bound ---------------------------------------- */

#define REDACTED "[REDACTED]"

/* The end of the earliest secret or pattern match in T[from..n) and its
 * start in *AT; 0 when there is none. */
static size_t next_match(const eddy_trace_store *s, const char *t, size_t n, size_t from,
                         size_t *at)
{
    size_t best,
        end = eddy_secret_find((const char *const *)s->secrets, s->nsecrets, t, n, from, &best);
    for (size_t i = 0; i < s->nredact; i++) {
        regmatch_t m = {(regoff_t)from, (regoff_t)n};
        if (regexec(&s->redact[i], t, 1, &m, REG_STARTEND) == 0 && m.rm_eo > m.rm_so &&
            (size_t)m.rm_so < best) {
            best = (size_t)m.rm_so;
            end = (size_t)m.rm_eo;
        }
    }
    *at = best;
    return best <= n ? end : 0;
}

int eddy_trace_keeps_content(const eddy_trace_store *s)
{
    return s && !s->opts.no_content;
}

/* TEXT (LEN bytes) as the store keeps it: redacted, cut at max_payload.
 * *OUT and *OUT_LEN point at TEXT when nothing changed, else into BUF
 * (the caller frees BUF either way). Returns 0 or -1 (out of memory). */
static int clean_text(const eddy_trace_store *s, const char *text, size_t len, eddy_buf *buf,
                      const char **out, size_t *out_len)
{
    size_t max = s && s->max_payload ? s->max_payload : EDDY_TRACE_DEFAULT_MAX_PAYLOAD;
    eddy_buf red;
    eddy_buf_init(&red);
    if (s && (s->nsecrets || s->nredact)) {
        size_t from = 0, at, end;
        /* a copy that ends in a NUL (regexec wants one), NULs within kept:
         * REG_STARTEND bounds the match by length, memmem finds secrets past
         * them (a text with a NUL before a secret was kept unredacted) */
        char *z = eddy_malloc(len + 1);
        if (!z)
            return -1;
        memcpy(z, text, len);
        z[len] = '\0';
        while (from < len && (end = next_match(s, z, len, from, &at))) {
            eddy_buf_append(&red, z + from, at - from);
            eddy_buf_puts(&red, REDACTED);
            from = end;
        }
        if (red.len || from) {
            eddy_buf_append(&red, z + from, len - from);
            text = red.data;
            len = red.len;
        }
        eddy_free(z);
        if (red.oom) {
            eddy_buf_free(&red);
            return -1;
        }
    }
    if (len > max) {
        size_t keep = eddy_utf8_cut(text, len, max);
        eddy_buf_append(buf, text, keep);
        eddy_buf_printf(buf, "\xe2\x80\xa6 [%zu more bytes not kept]", len - keep);
    } else if (red.len) {
        eddy_buf_append(buf, text, len);
    }
    eddy_buf_free(&red);
    if (buf->oom)
        return -1;
    *out = buf->len ? buf->data : text;
    *out_len = buf->len ? buf->len : len;
    return 0;
}

int eddy_trace_text(const eddy_trace_store *s, eddy_buf *b, const char *text, size_t len)
{
    eddy_buf tmp;
    const char *t;
    size_t n;
    eddy_buf_init(&tmp);
    int rc = clean_text(s, text, len, &tmp, &t, &n) ? -1 : eddy_json_put_string(b, t, n);
    eddy_buf_free(&tmp);
    return rc;
}

static void free_text_rules(eddy_trace_store *s)
{
    for (size_t i = 0; i < s->nsecrets; i++)
        eddy_free(s->secrets[i]);
    eddy_free(s->secrets);
    for (size_t i = 0; i < s->nredact; i++)
        regfree(&s->redact[i]);
    eddy_free(s->redact);
    s->secrets = NULL;
    s->redact = NULL;
    s->nsecrets = s->nredact = 0;
}

/* Copy the secrets (empty ones are no secret) and compile the patterns of O. */
static int text_rules(eddy_trace_store *s, const eddy_trace_opts *o, eddy_err *err)
{
    s->max_payload = o->max_payload > 0 ? (size_t)o->max_payload : EDDY_TRACE_DEFAULT_MAX_PAYLOAD;
    if (o->nsecrets && !(s->secrets = eddy_calloc(o->nsecrets, sizeof(char *))))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    for (size_t i = 0; i < o->nsecrets; i++)
        if (o->secrets[i] && *o->secrets[i] &&
            !(s->secrets[s->nsecrets++] = eddy_strdup(o->secrets[i])))
            return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if (o->nredact && !(s->redact = eddy_calloc(o->nredact, sizeof(regex_t))))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    for (size_t i = 0; i < o->nredact; i++) {
        int rc = regcomp(&s->redact[i], o->redact[i], REG_EXTENDED);
        if (rc) {
            char why[200];
            regerror(rc, &s->redact[i], why, sizeof(why));
            return eddy_err_set(err, EDDY_EINVAL, "trace.redact pattern '%s': %s", o->redact[i],
                                why);
        }
        s->nredact++;
    }
    return 0;
}

static void span_free(eddy_span *sp)
{
    if (!sp)
        return;
    eddy_free(sp->name);
    eddy_free(sp->error);
    eddy_buf_free(&sp->text);
    eddy_free(sp->attrs);
    json_decref(sp->summary);
    eddy_free(sp);
}

static void step_reset(eddy_trace_store *s, sqlite3_stmt *st, const char *what, const char *id)
{
    if (sqlite3_step(st) != SQLITE_DONE)
        EDDY_WARN("trace", "cannot store %s %s: %s", what, id, sqlite3_errmsg(s->db));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* The attributes as one JSON object into OUT, in the order they were set (a
 * key set again: its last value, at the place of its last set); NULL when
 * out of memory. */
static const char *attrs_text(eddy_span *sp, eddy_buf *out)
{
    eddy_buf_putc(out, '{');
    for (size_t i = 0, n = 0; i < sp->nattrs; i++) {
        if (!sp->attrs[i].len)
            continue;
        if (n++)
            eddy_buf_putc(out, ',');
        eddy_buf_append(out, sp->text.data + sp->attrs[i].off, sp->attrs[i].len);
    }
    eddy_buf_putc(out, '}');
    return out->oom ? NULL : out->data;
}

/* A JSON array of strings in M at KEY as "a,b,c" into OUT (for LIKE filters). */
static const char *names_text(json_t *m, const char *key, eddy_buf *out)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(m, key), i, v)
    {
        if (!json_is_string(v))
            continue;
        if (out->len)
            eddy_buf_putc(out, ',');
        eddy_buf_puts(out, json_string_value(v));
    }
    return out->oom || !out->data ? "" : out->data;
}

/* Bind TEXT, redacted and cut (BUF holds the copy until the statement ran). */
static void bind_clean(eddy_trace_store *s, sqlite3_stmt *st, int i, const char *text,
                       eddy_buf *buf)
{
    const char *t;
    size_t n;
    if (clean_text(s, text, strlen(text), buf, &t, &n))
        sqlite3_bind_text(st, i, "", 0, SQLITE_STATIC);
    else
        sqlite3_bind_text(st, i, t, (int)n, SQLITE_STATIC);
}

static void write_trace(eddy_trace_store *s, eddy_span *sp)
{
    sqlite3_stmt *st = s->ins_trace;
    json_t *m = sp->summary, *cost = json_object_get(m, "cost");
    eddy_buf models, tools, in, out;
    json_t *rest = json_copy(m); /* the summary column: what has no column of its own */
    static const char *const own[] = {"input", "output", "models", "tools"};
    for (size_t i = 0; rest && i < sizeof(own) / sizeof(own[0]); i++)
        json_object_del(rest, own[i]);
    char *sum = rest ? eddy_json_dumps_flags(rest, JSON_COMPACT) : NULL;
    json_decref(rest);
    eddy_buf_init(&models);
    eddy_buf_init(&tools);
    eddy_buf_init(&in);
    eddy_buf_init(&out);
    sqlite3_bind_text(st, 1, sp->trace_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sp->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, eddy_json_str(m, "agent", ""), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, eddy_json_str(m, "key", ""), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, eddy_json_str(m, "event_id", ""), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, sp->error ? "error" : "ok", -1, SQLITE_STATIC);
    if (sp->error)
        sqlite3_bind_text(st, 7, sp->error, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)sp->start_ns);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)sp->end_ns);
    sqlite3_bind_int64(st, 10, eddy_json_int(m, "input_tokens", 0));
    sqlite3_bind_int64(st, 11, eddy_json_int(m, "output_tokens", 0));
    if (json_is_number(cost))
        sqlite3_bind_double(st, 12, json_number_value(cost));
    sqlite3_bind_int64(st, 13, eddy_json_int(m, "llm_calls", 0));
    sqlite3_bind_int64(st, 14, eddy_json_int(m, "tool_calls", 0));
    sqlite3_bind_int64(st, 15, eddy_json_int(m, "turns", 0));
    sqlite3_bind_text(st, 16, names_text(m, "models", &models), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 17, names_text(m, "tools", &tools), -1, SQLITE_STATIC);
    bind_clean(s, st, 18, eddy_json_str(m, "input", ""), &in);
    bind_clean(s, st, 19, eddy_json_str(m, "output", ""), &out);
    sqlite3_bind_text(st, 20, sum ? sum : "{}", -1, SQLITE_STATIC);
    step_reset(s, st, "trace", sp->trace_id);
    eddy_free(sum);
    eddy_buf_free(&models);
    eddy_buf_free(&tools);
    eddy_buf_free(&in);
    eddy_buf_free(&out);
}

static void write_span(eddy_trace_store *s, eddy_span *sp)
{
    sqlite3_stmt *st = s->ins_span;
    eddy_buf ab;
    eddy_buf_init(&ab);
    const char *attrs = attrs_text(sp, &ab);
    sqlite3_bind_text(st, 1, sp->trace_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sp->span_id, -1, SQLITE_STATIC);
    if (sp->parent_id[0])
        sqlite3_bind_text(st, 3, sp->parent_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, sp->name, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, sp->kind);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)sp->start_ns);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)sp->end_ns);
    sqlite3_bind_text(st, 8, sp->error ? "error" : "ok", -1, SQLITE_STATIC);
    if (sp->error)
        sqlite3_bind_text(st, 9, sp->error, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 10, attrs ? attrs : "{}", -1, SQLITE_STATIC);
    step_reset(s, st, "span", sp->span_id);
    if (s->otlp) {
        eddy__otlp_span o = {
            sp->trace_id, sp->span_id, sp->parent_id,        sp->name,          sp->error, sp->kind,
            sp->start_ns, sp->end_ns,  attrs ? attrs : "{}", attrs ? ab.len : 2};
        eddy__otlp_add(s->otlp, &o);
    }
    eddy_buf_free(&ab);
    if (sp->summary)
        write_trace(s, sp);
}

/* -- sampling ------------------------------------------------------------------ */

/* Whether sampling keeps the trace (its successful runs): from the random
 * last 8 hex digits of its id, so the same trace is kept on every read. */
static int sampled(const eddy_trace_store *s, const char *trace_id)
{
    if (s->opts.sample >= 1)
        return 1;
    uint32_t r = (uint32_t)strtoul(trace_id + 24, NULL, 16);
    return (double)r < s->opts.sample * 4294967296.0;
}

static held **held_slot(eddy_trace_store *s, const char *trace_id)
{
    uint64_t h = eddy_hash64(trace_id, 32) & (HELD_BUCKETS - 1);
    held **p = &s->held[h];
    while (*p && memcmp((*p)->trace_id, trace_id, 32))
        p = &(*p)->next;
    return p;
}

/* SP, a child span of a trace sampling does not keep: held until its root. */
static void hold(eddy_trace_store *s, eddy_span *sp)
{
    held **p = held_slot(s, sp->trace_id), *h = *p;
    if (h && h->released) { /* its root ended before it */
        if (h->failed)
            write_span(s, sp);
        span_free(sp);
        return;
    }
    if (s->nheld >= HELD_MAX_SPANS || (!h && !(h = eddy_calloc(1, sizeof(*h))))) {
        span_free(sp);
        return;
    }
    if (!*p) {
        memcpy(h->trace_id, sp->trace_id, 33);
        *p = h;
    }
    sp->next = NULL;
    if (h->last)
        h->last->next = sp;
    else
        h->first = sp;
    h->last = sp;
    h->failed |= sp->error != NULL;
    s->nheld++;
}

/* ROOT of an unsampled trace ended: write it and its held spans if any of
 * them failed, else drop them all; its entry stays as a tombstone. */
static void release(eddy_trace_store *s, eddy_span *root)
{
    char root_id[33];
    memcpy(root_id, root->trace_id, 33);
    held **p = held_slot(s, root->trace_id), *h = *p;
    int keep = root->error != NULL || (h && h->failed);
    for (eddy_span *sp = h ? h->first : NULL, *nx; sp; sp = nx) {
        nx = sp->next;
        if (keep)
            write_span(s, sp);
        span_free(sp);
        s->nheld--;
    }
    if (keep)
        write_span(s, root);
    span_free(root);
    if (!h && (h = eddy_calloc(1, sizeof(*h)))) { /* no tombstone without memory: late ones go */
        memcpy(h->trace_id, root_id, 33);
        *p = h;
    }
    if (!h)
        return;
    h->first = h->last = NULL;
    h->failed = keep;
    h->released = 1;
    held *old = s->released[s->next_released];
    if (old) { /* the oldest tombstone goes */
        held **q = held_slot(s, old->trace_id);
        *q = old->next;
        eddy_free(old);
    }
    s->released[s->next_released] = h;
    s->next_released = (s->next_released + 1) % RELEASED_MAX;
}

static void free_held(eddy_trace_store *s)
{
    for (size_t i = 0; i < HELD_BUCKETS; i++)
        while (s->held[i]) {
            held *h = s->held[i];
            s->held[i] = h->next;
            for (eddy_span *sp = h->first, *nx; sp; sp = nx) {
                nx = sp->next;
                span_free(sp);
            }
            eddy_free(h);
        }
    s->nheld = 0;
    memset(s->released, 0, sizeof(s->released));
}

static void on_span(void *job, void *ctx)
{
    eddy_trace_store *s = ctx;
    eddy_span *sp = job;
    if (!s->in_txn && sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK)
        s->in_txn = 1;
    if (sampled(s, sp->trace_id)) {
        write_span(s, sp);
        span_free(sp);
    } else if (sp->parent_id[0]) {
        hold(s, sp);
    } else {
        release(s, sp);
    }
}

/* -- retention ---------------------------------------------------------------- */

static int64_t exec_changes(eddy_trace_store *s, const char *sql, int64_t arg, int64_t limit)
{
    sqlite3_stmt *st;
    int64_t n = 0;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        EDDY_WARN("trace", "%s: retention: %s", s->path, sqlite3_errmsg(s->db));
        return 0;
    }
    sqlite3_bind_int64(st, 1, arg);
    sqlite3_bind_int64(st, 2, limit);
    if (sqlite3_step(st) == SQLITE_DONE)
        n = sqlite3_changes64(s->db);
    else
        EDDY_WARN("trace", "%s: retention: %s", s->path, sqlite3_errmsg(s->db));
    sqlite3_finalize(st);
    return n;
}

static int64_t pragma_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Bytes the store's pages hold (free pages not counted). */
static int64_t used_bytes(sqlite3 *db)
{
    return (pragma_int(db, "PRAGMA page_count") - pragma_int(db, "PRAGMA freelist_count")) *
           pragma_int(db, "PRAGMA page_size");
}

/* Delete the oldest N traces that began before CUTOFF (ns), with their
 * spans, and the spans at the head of the table (in time order by rowid)
 * older than CUTOFF whose trace never got a row (a run cut short). Returns
 * the traces deleted. */
static int64_t delete_before(eddy_trace_store *s, int64_t cutoff, int64_t n)
{
    exec_changes(s,
                 "DELETE FROM spans WHERE trace_id IN (SELECT trace_id FROM traces WHERE "
                 "start_ns < ?1 ORDER BY id LIMIT ?2)",
                 cutoff, n);
    int64_t gone = exec_changes(s,
                                "DELETE FROM traces WHERE id IN (SELECT id FROM traces WHERE "
                                "start_ns < ?1 ORDER BY id LIMIT ?2)",
                                cutoff, n);
    exec_changes(s,
                 "DELETE FROM spans WHERE id IN (SELECT id FROM spans ORDER BY id LIMIT ?2) AND "
                 "start_ns < ?1 AND trace_id NOT IN (SELECT trace_id FROM traces)",
                 cutoff, n);
    return gone;
}

/* Writer thread, between batches, every RETAIN_EVERY_NS: traces older than
 * max_age go, then the oldest ones while the store holds more than
 * max_size. Each pass deletes a bounded number of rows (one transaction of
 * a few chunks), so a large backlog goes over several passes. */
static void retain(eddy_trace_store *s, int force)
{
    uint64_t now = eddy_wall_ns();
    if (!force && now < s->next_retain_ns)
        return;
    s->next_retain_ns = now + RETAIN_EVERY_NS;
    if (!s->opts.max_age_ms && !s->opts.max_bytes)
        return;
    if (sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return;
    int64_t deleted = 0, used;
    if (s->opts.max_age_ms) {
        int64_t cutoff = (int64_t)now - s->opts.max_age_ms * 1000000, n = 1;
        for (int i = 0; i < 10 && n; i++)
            deleted += n = delete_before(s, cutoff, RETAIN_CHUNK);
    }
    for (int i = 0; s->opts.max_bytes && i < 10 && (used = used_bytes(s->db)) > s->opts.max_bytes;
         i++) {
        /* the oldest traces, as many as the excess holds (at an average
         * trace's size) down to 90 % of the bound, at most a chunk a step */
        int64_t traces = pragma_int(s->db, "SELECT count(*) FROM traces");
        if (!traces)
            break;
        double per = (double)used / (double)traces;
        int64_t n = (int64_t)((double)(used - s->opts.max_bytes * 9 / 10) / per) + 1;
        n = n > RETAIN_CHUNK ? RETAIN_CHUNK : n;
        int64_t gone = delete_before(s, INT64_MAX, n);
        deleted += gone;
        if (!gone)
            break;
    }
    /* rowids are max(id) + 1 (no AUTOINCREMENT): once the highest rows are
     * gone, new rows take their ids again, so the mark of what the search
     * index holds comes down to the highest id left (every row up to it is
     * indexed, the trigger took the rest out). Else those rows would never
     * be indexed, and their delete would corrupt the index. */
    if (deleted) /* (exec_changes binds ?1 and ?2: this statement has neither) */
        exec_changes(s,
                     "UPDATE meta SET value = (SELECT coalesce(max(id), 0) FROM traces) WHERE "
                     "key = 'search_indexed' AND CAST(value AS INTEGER) > "
                     "(SELECT coalesce(max(id), 0) FROM traces)",
                     0, 0);
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        EDDY_WARN("trace", "%s: retention: %s", s->path, sqlite3_errmsg(s->db));
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return;
    }
    if (deleted) {
        sqlite3_exec(s->db, "PRAGMA incremental_vacuum", NULL, NULL, NULL);
        EDDY_DEBUG("trace", "%s: retention deleted %lld rows", s->path, (long long)deleted);
    }
}

/* The trace rows this transaction added, into the search index with one
 * statement (one flush of FTS5's terms); the last row indexed is kept in
 * meta in the same transaction. */
static void index_texts(eddy_trace_store *s)
{
    sqlite3_stmt *st = s->ins_text;
    /* the mark as this transaction sees it: retention lowers it, and another
     * process writing the same store moves it */
    s->indexed = pragma_int(s->db, "SELECT value FROM meta WHERE key='search_indexed'");
    sqlite3_bind_int64(st, 1, s->indexed);
    if (sqlite3_step(st) != SQLITE_DONE)
        EDDY_WARN("trace", "%s: cannot index traces for search: %s", s->path,
                  sqlite3_errmsg(s->db));
    sqlite3_reset(st);
    int64_t last = pragma_int(s->db, "SELECT max(id) FROM traces");
    if (last > s->indexed) {
        st = s->set_indexed;
        sqlite3_bind_int64(st, 1, last);
        if (sqlite3_step(st) == SQLITE_DONE)
            s->indexed = last;
        sqlite3_reset(st);
    }
}

static void on_idle(void *ctx)
{
    eddy_trace_store *s = ctx;
    if (s->in_txn)
        index_texts(s);
    if (s->in_txn && sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        EDDY_WARN("trace", "cannot commit spans: %s", sqlite3_errmsg(s->db));
    s->in_txn = 0;
    retain(s, 0);
}

static int open_store_db(const char *path, int rw, sqlite3 **db, eddy_err *err)
{
    int rc = sqlite3_open_v2(
        path, db, rw ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        rc = eddy_err_setc(err, rw ? EDDY_ESQLITE : EDDY_ENOENT, rc,
                           "%s: cannot open the trace store: %s", path,
                           *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
        sqlite3_close(*db);
        *db = NULL;
        return rc;
    }
    sqlite3_busy_timeout(*db, 10000);
    return 0;
}

/* Version 1 (no meta table; spans WITHOUT ROWID) into version 2, in one
 * transaction: the rows are copied in time order, the old tables dropped. */
static const char *const kMigrate1 = "ALTER TABLE traces RENAME TO traces_v1;"
                                     "ALTER TABLE spans RENAME TO spans_v1;"
                                     "DROP INDEX IF EXISTS traces_by_start;";
static const char *const kMigrate1Copy =
    "INSERT OR IGNORE INTO traces(trace_id, name, agent, key, event_id, status, error, start_ns,"
    " end_ns, input_tokens, output_tokens, cost, llm_calls, tool_calls, turns, models, tools,"
    " input, output, summary)"
    " SELECT trace_id, name, coalesce(agent, ''), coalesce(key, ''), coalesce(event_id, ''),"
    " coalesce(status, 'ok'), error, coalesce(start_ns, 0), coalesce(end_ns, 0),"
    " coalesce(input_tokens, 0), coalesce(output_tokens, 0),"
    " CASE WHEN json_valid(summary) THEN json_extract(summary, '$.cost') END,"
    " coalesce(llm_calls, 0), coalesce(tool_calls, 0), coalesce(turns, 0), '', '', '', '',"
    " coalesce(summary, '{}') FROM traces_v1 ORDER BY start_ns;"
    "INSERT INTO spans(trace_id, span_id, parent_id, name, kind, start_ns, end_ns, status, error,"
    " attributes) SELECT trace_id, span_id, parent_id, name, kind, start_ns, end_ns, status,"
    " error, attributes FROM spans_v1 ORDER BY start_ns;"
    "DROP TABLE traces_v1;"
    "DROP TABLE spans_v1;";

int eddy__trace_has_table(sqlite3 *db, const char *name)
{
    sqlite3_stmt *st;
    int yes = 0;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?1", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        yes = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    return yes;
}

static int create_schema(sqlite3 *db, const char *path, eddy_err *err)
{
    char *e = NULL;
    int v1 = eddy__trace_has_table(db, "spans") && !eddy__trace_has_table(db, "meta");
    if (v1)
        EDDY_INFO("trace", "%s: migrating the trace store from version 1 to 2", path);
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &e) != SQLITE_OK ||
        (v1 && sqlite3_exec(db, kMigrate1, NULL, NULL, &e) != SQLITE_OK) ||
        sqlite3_exec(db, kSchema, NULL, NULL, &e) != SQLITE_OK ||
        (v1 && sqlite3_exec(db, kMigrate1Copy, NULL, NULL, &e) != SQLITE_OK) ||
        sqlite3_exec(db, "COMMIT", NULL, NULL, &e) != SQLITE_OK) {
        int rc = eddy_err_set(err, EDDY_ESQLITE, "%s: cannot %s the trace store: %s", path,
                              v1 ? "migrate" : "create", e ? e : sqlite3_errmsg(db));
        sqlite3_free(e);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    /* a store made while rows were indexed by a trigger: they are all indexed */
    if (pragma_int(db, "SELECT count(*) FROM sqlite_master WHERE name='traces_text_ins'"))
        sqlite3_exec(db,
                     "DROP TRIGGER traces_text_ins; INSERT OR REPLACE INTO meta "
                     "SELECT 'search_indexed', coalesce(max(id), 0) FROM traces",
                     NULL, NULL, NULL);
    int64_t version = pragma_int(db, "SELECT value FROM meta WHERE key='schema_version'");
    if (version != EDDY_TRACE_SCHEMA_VERSION)
        return eddy_err_set(err, EDDY_ECORRUPT,
                            "%s: trace store version %lld, this eddy reads version %d (a newer "
                            "eddy wrote it)",
                            path, (long long)version, EDDY_TRACE_SCHEMA_VERSION);
    return 0;
}

int eddy_trace_store_upgrade(const char *path, eddy_err *err)
{
    sqlite3 *db;
    char *e = NULL;
    int rc = open_store_db(path, 1, &db, err);
    if (rc)
        return rc;
    if (sqlite3_exec(db, kPragmas, NULL, NULL, &e) != SQLITE_OK) {
        rc = eddy_err_set(err, EDDY_ESQLITE, "%s: cannot open the trace store: %s", path, e);
        sqlite3_free(e);
    } else {
        rc = create_schema(db, path, err);
    }
    sqlite3_close(db);
    return rc;
}

/* The exporter, when OPTS or the environment names an endpoint. A bad
 * setting is logged and leaves the store without export (the job loader
 * reports the job's own); only running out of memory fails the open. */
static int open_otlp(eddy_trace_store *s, const eddy_trace_opts *opts, eddy_err *err)
{
    eddy__otlp_config c;
    eddy_err e = {0};
    int rc = eddy__otlp_config_load(opts, &c, &e);
    if (!rc && c.url)
        rc = eddy__otlp_new_take(&c, &s->otlp, &e);
    eddy__otlp_config_free(&c);
    if (rc == EDDY_ENOMEM)
        return eddy_err_set(err, rc, "%s", e.msg);
    if (rc)
        EDDY_WARN("trace", "OTLP export is off: %s", e.msg);
    return 0;
}

int eddy_trace_store_open(const char *path, const eddy_trace_opts *opts, eddy_trace_store **out,
                          eddy_err *err)
{
    eddy_trace_store *s = eddy_calloc(1, sizeof(*s));
    char *e = NULL;
    int rc;
    *out = NULL;
    if (!s || !(s->path = eddy_strdup(path))) {
        eddy_free(s);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    if (opts)
        s->opts = *opts;
    else
        s->opts = (eddy_trace_opts){.max_age_ms = EDDY_TRACE_DEFAULT_MAX_AGE_MS,
                                    .max_bytes = EDDY_TRACE_DEFAULT_MAX_BYTES,
                                    .sample = 1};
    s->opts.secrets = s->opts.redact = NULL; /* borrowed: the copies are the store's */
    s->opts.nsecrets = s->opts.nredact = 0;
    if ((rc = text_rules(s, opts ? opts : &s->opts, err)))
        goto fail;
    if ((rc = open_otlp(s, opts, err)))
        goto fail;
    s->opts.otlp_endpoint = NULL;
    s->opts.otlp_headers = NULL;
    if ((rc = eddy_mkdirs_for(path, err)))
        goto fail;
    if ((rc = open_store_db(path, 1, &s->db, err)))
        goto fail;
    if (sqlite3_exec(s->db, kPragmas, NULL, NULL, &e) != SQLITE_OK) {
        rc = eddy_err_set(err, EDDY_ESQLITE, "%s: cannot open the trace store: %s", path, e);
        sqlite3_free(e);
        goto fail;
    }
    if ((rc = create_schema(s->db, path, err)))
        goto fail;
    if (sqlite3_prepare_v3(s->db,
                           "INSERT INTO spans(trace_id, span_id, parent_id, name, kind, start_ns,"
                           " end_ns, status, error, attributes) VALUES(?,?,?,?,?,?,?,?,?,?)",
                           -1, SQLITE_PREPARE_PERSISTENT, &s->ins_span, NULL) ||
        sqlite3_prepare_v3(s->db,
                           "INSERT OR IGNORE INTO traces(trace_id, name, agent, key, event_id,"
                           " status, error, start_ns, end_ns, input_tokens, output_tokens, cost,"
                           " llm_calls, tool_calls, turns, models, tools, input, output, summary)"
                           " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           -1, SQLITE_PREPARE_PERSISTENT, &s->ins_trace, NULL) ||
        sqlite3_prepare_v3(s->db,
                           "INSERT INTO trace_text(rowid, input, output) SELECT id, input, output"
                           " FROM traces WHERE id > ?1 ORDER BY id",
                           -1, SQLITE_PREPARE_PERSISTENT, &s->ins_text, NULL) ||
        sqlite3_prepare_v3(s->db, "INSERT OR REPLACE INTO meta VALUES('search_indexed', ?1)", -1,
                           SQLITE_PREPARE_PERSISTENT, &s->set_indexed, NULL)) {
        rc = eddy_err_set(err, EDDY_ESQLITE, "%s: cannot prepare: %s", path, sqlite3_errmsg(s->db));
        goto fail;
    }
    s->indexed = pragma_int(s->db, "SELECT value FROM meta WHERE key='search_indexed'");
    retain(s, 1); /* what expired while nothing ran */
    /* bounded batches: a commit every 200 ms or 4096 spans under load, 100 ms
     * after the first span of a quiet moment. Nothing waits for a trace's
     * commit, and each commit rewrites the pages at the b-trees' right edge:
     * fewer, larger commits write fewer pages (bench/runtime). */
    eddy_bgq_limits lim = {4096, 200, 100, "eddy-traces"};
    if ((rc = eddy_bgq_new(on_span, on_idle, s, &lim, &s->q, err)))
        goto fail;
    *out = s;
    return 0;
fail:
    eddy__otlp_free(s->otlp);
    sqlite3_finalize(s->ins_span);
    sqlite3_finalize(s->ins_trace);
    sqlite3_finalize(s->ins_text);
    sqlite3_finalize(s->set_indexed);
    sqlite3_close(s->db);
    free_text_rules(s);
    eddy_free(s->path);
    eddy_free(s);
    return rc;
}

void eddy_trace_store_close(eddy_trace_store *s)
{
    if (!s)
        return;
    eddy_bgq_free(s->q);
    eddy__otlp_free(s->otlp); /* after the writer: it has handed over every span */
    free_held(s);             /* runs that never ended: their spans are not kept */
    sqlite3_finalize(s->ins_span);
    sqlite3_finalize(s->ins_trace);
    sqlite3_finalize(s->ins_text);
    sqlite3_finalize(s->set_indexed);
    sqlite3_close(s->db);
    free_text_rules(s);
    eddy_free(s->path);
    eddy_free(s);
}

void eddy_trace_otlp_stats(const eddy_trace_store *s, eddy_otlp_stats *out)
{
    eddy__otlp_stats(s ? s->otlp : NULL, out);
}

eddy_trace_store *eddy_span_store(const eddy_span *sp)
{
    return sp ? sp->store : NULL;
}

eddy_span *eddy_span_start(eddy_trace_store *s, eddy_span *parent, const char *name, int kind)
{
    eddy_span *sp = eddy_calloc(1, sizeof(*sp));
    if (!sp)
        return NULL;
    sp->store = s;
    if (!(sp->name = eddy_strdup(name))) {
        span_free(sp);
        return NULL;
    }
    if (parent) {
        memcpy(sp->trace_id, parent->trace_id, sizeof(sp->trace_id));
        memcpy(sp->parent_id, parent->span_id, sizeof(sp->parent_id));
    } else {
        trace_id(sp->trace_id);
    }
    random_id(sp->span_id, 1);
    sp->kind = kind;
    sp->start_ns = eddy_wall_ns();
    return sp;
}

/* Start the pair of KEY: its quoted key and ':' at the end of the text.
 * Returns the pair's offset, or (size_t)-1 (nothing appended). */
static size_t pair_begin(eddy_span *sp, const char *key)
{
    size_t off = sp->text.len;
    if (sp->nattrs == sp->cap) {
        size_t cap = sp->cap ? sp->cap * 2 : 16;
        attr *a = eddy_realloc(sp->attrs, cap * sizeof(*a));
        if (!a)
            return (size_t)-1;
        sp->attrs = a;
        sp->cap = cap;
    }
    if (eddy_json_put_string(&sp->text, key, strlen(key)) || eddy_buf_putc(&sp->text, ':')) {
        sp->text.len = off;
        return (size_t)-1;
    }
    return off;
}

/* End the pair begun at OFF (RC: how writing its value went): record it, and
 * make an earlier pair of the same key dead. */
static void pair_end(eddy_span *sp, size_t off, size_t klen, int rc)
{
    if (rc || sp->text.oom) {
        sp->text.len = off; /* the attribute is dropped, as a NULL value is */
        sp->text.oom = 0;
        if (sp->text.data)
            sp->text.data[off] = '\0';
        return;
    }
    const char *k = sp->text.data + off;
    for (size_t i = 0; i < sp->nattrs; i++)
        if (sp->attrs[i].len && sp->attrs[i].klen == klen &&
            !memcmp(sp->text.data + sp->attrs[i].off, k, klen)) {
            sp->attrs[i].len = 0;
        }
    sp->attrs[sp->nattrs++] = (attr){off, sp->text.len - off, klen};
}

void eddy_span_set(eddy_span *sp, const char *key, json_t *v)
{
    size_t off;
    if (!sp || !v || (off = pair_begin(sp, key)) == (size_t)-1) {
        json_decref(v);
        return;
    }
    size_t klen = sp->text.len - off - 1;
    pair_end(sp, off, klen, eddy_json_dump_buf(&sp->text, v, JSON_COMPACT | JSON_ENCODE_ANY));
    json_decref(v);
}

void eddy_span_set_str(eddy_span *sp, const char *key, const char *v)
{
    size_t off;
    if (!sp || !v || (off = pair_begin(sp, key)) == (size_t)-1)
        return;
    size_t klen = sp->text.len - off - 1;
    pair_end(sp, off, klen, eddy_trace_text(sp->store, &sp->text, v, strlen(v)));
}

void eddy_span_set_raw(eddy_span *sp, const char *key, const char *text, size_t len)
{
    size_t off;
    if (!sp || !text || (off = pair_begin(sp, key)) == (size_t)-1)
        return;
    size_t klen = sp->text.len - off - 1;
    pair_end(sp, off, klen, eddy_buf_append(&sp->text, text, len));
}

void eddy_span_set_start(eddy_span *sp, uint64_t start_ns)
{
    if (sp)
        sp->start_ns = start_ns;
}

void eddy_span_set_int(eddy_span *sp, const char *key, long long v)
{
    char num[EDDY_JSON_NUMBER_MAX];
    size_t off;
    if (!sp || (off = pair_begin(sp, key)) == (size_t)-1)
        return;
    size_t klen = sp->text.len - off - 1;
    pair_end(sp, off, klen, eddy_buf_append(&sp->text, num, eddy_json_integer_text(v, num)));
}

void eddy_span_error(eddy_span *sp, const char *type, const char *msg)
{
    if (!sp)
        return;
    /* redacted and bounded as text attributes are: a failed tool's result,
     * an API's error body end up here */
    eddy_buf b;
    const char *t;
    size_t n;
    msg = msg ? msg : "error";
    eddy_buf_init(&b);
    eddy_free(sp->error);
    sp->error = clean_text(sp->store, msg, strlen(msg), &b, &t, &n) ? eddy_strdup("error")
                                                                    : eddy_strndup(t, n);
    eddy_buf_free(&b);
    eddy_span_set_str(sp, "error.type", type ? type : "error");
}

const char *eddy_span_trace_id(const eddy_span *sp)
{
    return sp ? sp->trace_id : "";
}

const char *eddy_span_id(const eddy_span *sp)
{
    return sp ? sp->span_id : "";
}

void eddy_span_discard(eddy_span *sp)
{
    span_free(sp);
}

void eddy_span_end(eddy_span *sp, json_t *summary)
{
    if (!sp)
        return;
    sp->end_ns = eddy_wall_ns();
    if (summary)
        sp->summary = json_deep_copy(summary);
    if (!sp->store || eddy_bgq_post(sp->store->q, sp))
        span_free(sp);
}
