/*
 * agents/yaml.c - YAML to jansson, keeping positions; ${VAR} interpolation.
 *
 * Walks libyaml's event stream recursively. Each node's JSON-pointer path
 * maps to [value line, value col, key line, key col] (1-based) so validation
 * can name the exact place of a problem. Plain scalars get YAML 1.2 core
 * types (null, bool, int, float, string); quoted scalars stay strings.
 * Interpolation happens before typing, so `port: ${PORT:-80}` is an integer.
 * A scalar that is wholly one ${...} is typed after substitution whether it
 * is quoted or not, and its substituted text is kept as POS[path][4] for
 * settings that want a string. Before libyaml sees the text, each ${...} is
 * swapped for a placeholder of as many characters (private-use code points
 * U+E000, digits, U+E001...) that is harmless in flow context, so
 * `{ concurrency: ${CONC:-64} }` parses and every line:col stays right.
 * The text is checked first: a NUL byte or invalid UTF-8 is reported at its
 * own line:col, and a tab in indentation is named as the cause of a syntax
 * error. Anchors and aliases are rejected (a job file has no need for them).
 */
#include "eddy/agent.h"
#include "eddy/buf.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

void eddy_diag_init(eddy_diag *d)
{
    memset(d, 0, sizeof(*d));
}

void eddy_diag_free(eddy_diag *d)
{
    for (size_t i = 0; i < d->n; i++)
        eddy_free(d->msgs[i]);
    eddy_free(d->msgs);
    eddy_diag_init(d);
}

void eddy_diag_add(eddy_diag *d, const char *fmt, ...)
{
    char msg[EDDY_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        char **p = eddy_realloc(d->msgs, cap * sizeof(char *));
        if (!p)
            return;
        d->msgs = p;
        d->cap = cap;
    }
    if ((d->msgs[d->n] = eddy_strdup(msg)))
        d->n++;
}

int eddy_interpolate(const char *s, char **out, eddy_err *err)
{
    return eddy_interpolate_env(s, out, NULL, err);
}

int eddy_interpolate_env(const char *s, char **out, json_t *used, eddy_err *err)
{
    eddy_buf b;
    eddy_buf_init(&b);
    *out = NULL;
    while (*s) {
        const char *end, *def;
        char name[128];
        size_t n;
        if (s[0] != '$' || (s[1] != '{' && s[1] != '$')) {
            eddy_buf_putc(&b, *s++);
            continue;
        }
        if (s[1] == '$') {
            eddy_buf_putc(&b, '$');
            s += 2;
            continue;
        }
        end = strchr(s + 2, '}');
        if (!end) {
            eddy_buf_free(&b);
            return eddy_err_set(err, EDDY_EINVAL, "unclosed '${' (expected '}')");
        }
        def = strstr(s + 2, ":-");
        if (def && def > end)
            def = NULL;
        n = (size_t)((def ? def : end) - (s + 2));
        if (n == 0 || n >= sizeof(name)) {
            eddy_buf_free(&b);
            return eddy_err_set(err, EDDY_EINVAL, "bad variable name in '${...}'");
        }
        memcpy(name, s + 2, n);
        name[n] = '\0';
        for (size_t i = 0; i < n; i++) {
            if (!(isalnum((unsigned char)name[i]) || name[i] == '_')) {
                eddy_buf_free(&b);
                return eddy_err_set(err, EDDY_EINVAL, "bad variable name '%s' in '${...}'", name);
            }
        }
        {
            const char *val = getenv(name);
            if (val && (*val || !def)) {
                eddy_buf_puts(&b, val);
                if (used && *val && json_array_append_new(used, json_string_nocheck(val))) {
                    eddy_buf_free(&b);
                    return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
                }
            } else if (def) {
                eddy_buf_append(&b, def + 2, (size_t)(end - def - 2));
            } else {
                eddy_buf_free(&b);
                return eddy_err_set(err, EDDY_EINVAL,
                                    "environment variable %s is not set (write ${%s:-default} "
                                    "to give a default)",
                                    name, name);
            }
        }
        s = end + 1;
    }
    if (!(*out = eddy_buf_take(&b)))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    return 0;
}

typedef struct loader {
    yaml_parser_t parser;
    eddy_yaml_doc *doc;
    eddy_diag *diag;
    const char *text; /* what libyaml reads (placeholders in), for positions */
    size_t len;
    char **refs; /* the ${...} each placeholder stands for, by index */
    size_t nrefs;
    int failed;
    int flags; /* EDDY_YAML_* */
} loader;

/* -- positions in the text ------------------------------------------------- */

static int is_break(const char *s, size_t i, size_t n, size_t *width)
{
    if (s[i] == '\n') {
        *width = 1;
        return 1;
    }
    if (s[i] == '\r') {
        *width = i + 1 < n && s[i + 1] == '\n' ? 2 : 1;
        return 1;
    }
    return 0;
}

/* Line and column (1-based; columns count characters, as libyaml's do) of
 * byte OFF of TEXT. A UTF-8 byte order mark takes no column. */
static void text_pos(const char *text, size_t len, size_t off, int *line, int *col)
{
    size_t i = len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3) ? 3 : 0, w;
    *line = 1;
    *col = 1;
    while (i < off && i < len) {
        if (is_break(text, i, len, &w)) {
            ++*line;
            *col = 1;
            i += w;
            continue;
        }
        if (((unsigned char)text[i] & 0xC0) != 0x80)
            ++*col;
        i++;
    }
}

/* Byte offset of the start of 0-based line LINE of TEXT, or LEN. */
static size_t line_start(const char *text, size_t len, size_t line)
{
    size_t i = 0, w;
    while (line > 0 && i < len) {
        if (is_break(text, i, len, &w)) {
            line--;
            i += w;
        } else {
            i++;
        }
    }
    return i;
}

/* -- ${...} hidden from libyaml ---------------------------------------------- */

#define PH_START "\xEE\x80\x80" /* U+E000 */
#define PH_FILL "\xEE\x80\x81"  /* U+E001 */

static size_t utf8_chars(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

/* A copy of TEXT in which every ${...} (closed on its line; `$$` is a literal
 * `$`, as eddy_interpolate reads it) is a placeholder of the same number of
 * characters; LD->refs keeps the originals. One holding a quote or a
 * backslash is left as it is, and text that already holds the placeholder
 * code points is copied unchanged. NULL on OOM. */
static char *hide_refs(loader *ld, const char *text, size_t len)
{
    eddy_buf b;
    size_t i = 0;
    if (memmem(text, len, PH_START, 3) || memmem(text, len, PH_FILL, 3))
        return eddy_strndup(text, len);
    eddy_buf_init(&b);
    while (i < len) {
        size_t j, chars;
        char digits[24];
        int nd;
        if (text[i] != '$' || i + 1 >= len || (text[i + 1] != '{' && text[i + 1] != '$')) {
            eddy_buf_putc(&b, text[i++]);
            continue;
        }
        if (text[i + 1] == '$') {
            eddy_buf_append(&b, text + i, 2);
            i += 2;
            continue;
        }
        /* quotes and backslashes are left to libyaml: inside a quoted
         * scalar they are escapes that the placeholder would hide */
        for (j = i + 2; j < len && !strchr("}\n\r\\\"'", text[j]); j++)
            ;
        chars = j < len && text[j] == '}' ? utf8_chars(text + i, j + 1 - i) : 0;
        nd = snprintf(digits, sizeof(digits), "%zu", ld->nrefs);
        if (!chars || chars < 1 + (size_t)nd) { /* unclosed: eddy_interpolate says so */
            eddy_buf_putc(&b, text[i++]);
            continue;
        }
        char **grown = eddy_realloc(ld->refs, (ld->nrefs + 1) * sizeof(char *));
        if (!grown || !(grown[ld->nrefs] = eddy_strndup(text + i, j + 1 - i))) {
            if (grown)
                ld->refs = grown;
            eddy_buf_free(&b);
            return NULL;
        }
        ld->refs = grown;
        ld->nrefs++;
        eddy_buf_puts(&b, PH_START);
        eddy_buf_puts(&b, digits);
        for (size_t k = 1 + (size_t)nd; k < chars; k++)
            eddy_buf_puts(&b, PH_FILL);
        i = j + 1;
    }
    if (b.oom) {
        eddy_buf_free(&b);
        return NULL;
    }
    return eddy_buf_take(&b);
}

/* S with its placeholders replaced by the ${...} they stand for; new. */
static char *unhide(const loader *ld, const char *s)
{
    eddy_buf b;
    if (!ld->nrefs || !strstr(s, PH_START))
        return eddy_strdup(s);
    eddy_buf_init(&b);
    while (*s) {
        size_t idx = 0;
        const char *p;
        if (strncmp(s, PH_START, 3) || !isdigit((unsigned char)s[3])) {
            eddy_buf_putc(&b, *s++);
            continue;
        }
        for (p = s + 3; isdigit((unsigned char)*p); p++)
            idx = idx * 10 + (size_t)(*p - '0');
        while (!strncmp(p, PH_FILL, 3))
            p += 3;
        if (idx >= ld->nrefs) {
            eddy_buf_putc(&b, *s++);
            continue;
        }
        eddy_buf_puts(&b, ld->refs[idx]);
        s = p;
    }
    return eddy_buf_take(&b);
}

/* Whether S is exactly one ${...} and nothing else. */
static int whole_ref(const char *s)
{
    const char *end;
    if (strncmp(s, "${", 2))
        return 0;
    end = strchr(s + 2, '}');
    return end && end[1] == '\0';
}

static void put_pos(loader *ld, const char *path, yaml_mark_t v, const yaml_mark_t *k)
{
    json_t *a = json_pack("[iiii]", (int)v.line + 1, (int)v.column + 1,
                          k ? (int)k->line + 1 : (int)v.line + 1,
                          k ? (int)k->column + 1 : (int)v.column + 1);
    if (a)
        json_object_set_new(ld->doc->pos, path, a);
}

static regex_t re_int, re_float;
static pthread_once_t re_once = PTHREAD_ONCE_INIT;

static void compile_res(void)
{
    regcomp(&re_int, "^[-+]?[0-9]+$", REG_EXTENDED | REG_NOSUB);
    regcomp(&re_float, "^[-+]?([0-9]+\\.[0-9]*|\\.[0-9]+|[0-9]+)([eE][-+]?[0-9]+)?$",
            REG_EXTENDED | REG_NOSUB);
}

static json_t *plain_scalar(const char *s)
{
    pthread_once(&re_once, compile_res); /* any thread may load a job */
    if (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL"))
        return json_null();
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
        return json_true();
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
        return json_false();
    if (regexec(&re_int, s, 0, NULL, 0) == 0) {
        int64_t v;
        if (eddy_parse_i64(s, &v) == 0)
            return json_integer(v);
    }
    if (regexec(&re_float, s, 0, NULL, 0) == 0) {
        double d = strtod(s, NULL);
        if (isfinite(d))
            return json_real(d);
    }
    return json_string(s);
}

static json_t *parse_node(loader *ld, yaml_event_t *ev, const char *path);

static void oom(loader *ld)
{
    eddy_diag_add(ld->diag, "%s: out of memory", ld->doc->file);
    ld->failed = 1;
}

/* Column (1-based) of the first tab in the indentation of 0-based line
 * LINE, or 0 when its indentation has none. */
static int indent_tab(const loader *ld, size_t line)
{
    size_t i = line_start(ld->text, ld->len, line), start = i;
    for (; i < ld->len && (ld->text[i] == ' ' || ld->text[i] == '\t'); i++)
        if (ld->text[i] == '\t')
            return (int)(i - start) + 1;
    return 0;
}

static int next_event(loader *ld, yaml_event_t *ev)
{
    yaml_parser_t *p = &ld->parser;
    int line, col, tab;
    if (yaml_parser_parse(p, ev))
        return 0;
    line = (int)p->problem_mark.line + 1;
    col = (int)p->problem_mark.column + 1;
    ld->failed = 1;
    if (p->error == YAML_READER_ERROR) {
        /* the reader knows only a byte offset (its marks stay at 0:0) */
        text_pos(ld->text, ld->len, p->problem_offset, &line, &col);
        eddy_diag_add(ld->diag, "%s:%d:%d: invalid YAML: %s (byte 0x%02X)", ld->doc->file, line,
                      col, p->problem ? p->problem : "unreadable text",
                      (unsigned)p->problem_value & 0xFFu);
    } else if ((tab = indent_tab(ld, p->problem_mark.line)) &&
               (size_t)tab <= p->problem_mark.column + 1) {
        eddy_diag_add(ld->diag,
                      "%s:%d:%d: invalid YAML: tab character used for indentation (YAML "
                      "indents with spaces only)",
                      ld->doc->file, line, tab);
    } else {
        eddy_diag_add(ld->diag, "%s:%d:%d: invalid YAML: %s%s%s", ld->doc->file, line, col,
                      p->problem ? p->problem : "syntax error", p->context ? " " : "",
                      p->context ? p->context : "");
    }
    return -1;
}

static char *child_path(const char *path, const char *seg)
{
    eddy_buf b;
    eddy_buf_init(&b);
    eddy_buf_puts(&b, path);
    eddy_buf_putc(&b, '/');
    for (; *seg; seg++) {
        if (*seg == '~')
            eddy_buf_puts(&b, "~0");
        else if (*seg == '/')
            eddy_buf_puts(&b, "~1");
        else
            eddy_buf_putc(&b, *seg);
    }
    return eddy_buf_take(&b);
}

/* A mapping key at 1-based LINE:COL that is itself a flow mapping: when it
 * is the second brace of `{{` (an unquoted template, `user: {{event.text}}`,
 * which YAML reads as a mapping in a mapping), the hint to quote it, with
 * the value as it should be written; else "". New string, or NULL. */
static char *template_hint(const loader *ld, const char *path, int line, int col)
{
    size_t i = line_start(ld->text, ld->len, (size_t)line - 1), end;
    const char *key = strrchr(path, '/'), *close;
    char *snip, *text, *hint;
    for (int c = 1; c < col && i < ld->len && ld->text[i] != '\n'; i++)
        c += ((unsigned char)ld->text[i + 1] & 0xC0) != 0x80;
    if (i == 0 || i >= ld->len || ld->text[i] != '{' || ld->text[i - 1] != '{')
        return eddy_strdup("");
    end = strcspn(ld->text + i, "\r\n") + i;
    close = memmem(ld->text + i, end - i, "}}", 2);
    snip = close ? eddy_strndup(ld->text + i - 1, (size_t)(close + 2 - (ld->text + i - 1)))
                 : eddy_strdup("{{...}}");
    text = snip ? unhide(ld, snip) : NULL;
    hint = text ? eddy_aprintf(" (a value that starts with '{' is a YAML flow mapping: quote a "
                               "template, as in %s: \"%s\")",
                               key ? key + 1 : "key", text)
                : NULL;
    eddy_free(snip);
    eddy_free(text);
    return hint;
}

static json_t *parse_mapping(loader *ld, yaml_event_t *start, const char *path)
{
    json_t *obj = json_object();
    put_pos(ld, path, start->start_mark, NULL);
    for (;;) {
        yaml_event_t kev, vev;
        char *cpath = NULL, *key = NULL;
        json_t *val = NULL;
        int kline, kcol;
        if (next_event(ld, &kev))
            break;
        if (kev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&kev);
            return obj;
        }
        kline = (int)kev.start_mark.line + 1;
        kcol = (int)kev.start_mark.column + 1;
        if (kev.type != YAML_SCALAR_EVENT) {
            char *hint =
                kev.type == YAML_MAPPING_START_EVENT ? template_hint(ld, path, kline, kcol) : NULL;
            eddy_diag_add(ld->diag, "%s:%d:%d: mapping keys must be plain strings%s", ld->doc->file,
                          kline, kcol, hint ? hint : "");
            eddy_free(hint);
            ld->failed = 1;
            yaml_event_delete(&kev);
            break;
        }
        key = unhide(ld, (const char *)kev.data.scalar.value);
        yaml_event_delete(&kev);
        if (!key)
            oom(ld);
        if (key && json_object_get(obj, key)) {
            eddy_diag_add(ld->diag, "%s:%d:%d: duplicate key '%s'", ld->doc->file, kline, kcol,
                          key);
            ld->failed = 1;
        }
        if (key && (cpath = child_path(path, key)) && next_event(ld, &vev) == 0)
            val = parse_node(ld, &vev, cpath);
        if (val) {
            json_t *p = json_object_get(ld->doc->pos, cpath);
            if (p) { /* record where the key is, beside where the value is */
                json_array_set_new(p, 2, json_integer(kline));
                json_array_set_new(p, 3, json_integer(kcol));
            }
            json_object_set_new(obj, key, val);
        }
        eddy_free(cpath);
        eddy_free(key);
        if (!val)
            break;
    }
    json_decref(obj);
    return NULL;
}

static json_t *parse_sequence(loader *ld, yaml_event_t *start, const char *path)
{
    json_t *arr = json_array();
    put_pos(ld, path, start->start_mark, NULL);
    for (size_t i = 0;; i++) {
        yaml_event_t ev;
        char idx[32], *cpath;
        json_t *val;
        if (next_event(ld, &ev))
            break;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return arr;
        }
        snprintf(idx, sizeof(idx), "%zu", i);
        cpath = child_path(path, idx);
        val = cpath ? parse_node(ld, &ev, cpath) : NULL;
        eddy_free(cpath);
        if (!val)
            break;
        json_array_append_new(arr, val);
    }
    json_decref(arr);
    return NULL;
}

/* EDDY_YAML_LAX_ENV: MSG, at EV, is kept for whoever reads PATH. */
static void defer(loader *ld, const char *path, const yaml_event_t *ev, const char *msg)
{
    char *m = eddy_aprintf("%s:%d:%d: %s", ld->doc->file, (int)ev->start_mark.line + 1,
                           (int)ev->start_mark.column + 1, msg);
    if (!m || json_object_set_new(ld->doc->deferred, path, json_string(m)))
        oom(ld);
    eddy_free(m);
}

static json_t *parse_scalar(loader *ld, yaml_event_t *ev, const char *path)
{
    char *raw = unhide(ld, (const char *)ev->data.scalar.value), *text = NULL;
    eddy_err e;
    json_t *v, *pos, *used = json_array();
    int whole;
    put_pos(ld, path, ev->start_mark, NULL);
    if (!raw || !used) {
        eddy_free(raw);
        json_decref(used);
        oom(ld);
        return NULL;
    }
    if (eddy_interpolate_env(raw, &text, used, &e)) {
        json_decref(used);
        /* reported, but not a parse failure: validation goes on to find more */
        if (ld->flags & EDDY_YAML_LAX_ENV)
            defer(ld, path, ev, e.msg);
        else
            eddy_diag_add(ld->diag, "%s:%d:%d: %s", ld->doc->file, (int)ev->start_mark.line + 1,
                          (int)ev->start_mark.column + 1, e.msg);
        v = json_string(raw);
        eddy_free(raw);
        return v;
    }
    if (eddy_utf8_invalid(text, strlen(text)) < strlen(text)) {
        /* a job file is UTF-8, and so must be what the environment puts in it */
        size_t bad = eddy_utf8_invalid(text, strlen(text));
        eddy_diag_add(ld->diag,
                      "%s:%d:%d: invalid UTF-8 (byte 0x%02X) in the value of an environment "
                      "variable used here: a job file is UTF-8 text",
                      ld->doc->file, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
                      (unsigned char)text[bad]);
        v = json_string(raw);
        eddy_free(text);
        eddy_free(raw);
        json_decref(used);
        return v;
    }
    /* `"${CONC:-64}"` is as much an integer as `${CONC:-64}`; the setting
     * that wants a string takes the text kept beside the position */
    whole = whole_ref(raw);
    if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE || whole)
        v = plain_scalar(text);
    else
        v = json_string(text);
    /* the position's [4]: the text of a whole ${...}; [5]: what the
     * environment gave (eddy__job_env_values: secrets, for some settings) */
    if ((whole || json_array_size(used)) && (pos = json_object_get(ld->doc->pos, path))) {
        json_array_append_new(pos, whole ? json_string(text) : json_null());
        if (json_array_size(used))
            json_array_append(pos, used);
    }
    json_decref(used);
    eddy_free(text);
    eddy_free(raw);
    return v;
}

static json_t *parse_node(loader *ld, yaml_event_t *ev, const char *path)
{
    json_t *v = NULL;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        v = parse_scalar(ld, ev, path);
        break;
    case YAML_MAPPING_START_EVENT:
        v = parse_mapping(ld, ev, path);
        break;
    case YAML_SEQUENCE_START_EVENT:
        v = parse_sequence(ld, ev, path);
        break;
    case YAML_ALIAS_EVENT:
        eddy_diag_add(ld->diag, "%s:%d:%d: YAML aliases are not supported in job files",
                      ld->doc->file, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1);
        ld->failed = 1;
        break;
    default:
        eddy_diag_add(ld->diag, "%s:%d:%d: unexpected YAML event", ld->doc->file,
                      (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1);
        ld->failed = 1;
        break;
    }
    yaml_event_delete(ev);
    return v;
}

static int load(loader *ld, eddy_yaml_doc *doc)
{
    yaml_event_t ev;
    json_t *root = NULL;
    while (!ld->failed && next_event(ld, &ev) == 0) {
        yaml_event_type_t t = ev.type;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (t == YAML_STREAM_START_EVENT || t == YAML_DOCUMENT_START_EVENT ||
            t == YAML_DOCUMENT_END_EVENT) {
            yaml_event_delete(&ev);
            continue;
        }
        if (root) {
            eddy_diag_add(ld->diag, "%s:%d:%d: a job file holds one YAML document", doc->file,
                          (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1);
            yaml_event_delete(&ev);
            ld->failed = 1;
            break;
        }
        root = parse_node(ld, &ev, "");
        if (!root)
            break;
    }
    if (ld->failed && !root) {
        return EDDY_EPARSE;
    }
    doc->root = root ? root : json_null();
    return ld->failed ? EDDY_EPARSE : 0;
}

static int load_common(const char *name, int flags, eddy_yaml_doc *doc, eddy_diag *diag, loader *ld)
{
    memset(doc, 0, sizeof(*doc));
    memset(ld, 0, sizeof(*ld));
    ld->doc = doc;
    ld->diag = diag;
    ld->flags = flags;
    doc->file = eddy_strdup(name);
    doc->pos = json_object();
    doc->deferred = flags & EDDY_YAML_LAX_ENV ? json_object() : NULL;
    if (!doc->file || !doc->pos || ((flags & EDDY_YAML_LAX_ENV) && !doc->deferred) ||
        !yaml_parser_initialize(&ld->parser)) {
        eddy_diag_add(diag, "%s: out of memory", name);
        return EDDY_ENOMEM;
    }
    return 0;
}

/* Parse LEN bytes of TEXT (named NAME in messages) into DOC. */
static int load_text(const char *text, size_t len, const char *name, int flags, eddy_yaml_doc *doc,
                     eddy_diag *diag)
{
    loader ld;
    const char *nul;
    char *hidden = NULL;
    size_t bad;
    int rc = load_common(name, flags, doc, diag, &ld), line, col;
    if (rc)
        return rc;
    if ((nul = memchr(text, '\0', len))) {
        /* libyaml would stop reading there and parse half the file */
        text_pos(text, len, (size_t)(nul - text), &line, &col);
        eddy_diag_add(diag, "%s:%d:%d: NUL byte in the job file (a job file is UTF-8 text)", name,
                      line, col);
        rc = EDDY_EPARSE;
        goto out;
    }
    if ((bad = eddy_utf8_invalid(text, len)) < len) {
        text_pos(text, len, bad, &line, &col);
        eddy_diag_add(diag, "%s:%d:%d: invalid UTF-8 (byte 0x%02X): a job file is UTF-8 text", name,
                      line, col, (unsigned char)text[bad]);
        rc = EDDY_EPARSE;
        goto out;
    }
    if (!(hidden = hide_refs(&ld, text, len))) {
        eddy_diag_add(diag, "%s: out of memory", name);
        rc = EDDY_ENOMEM;
        goto out;
    }
    ld.text = hidden;
    ld.len = strlen(hidden);
    yaml_parser_set_input_string(&ld.parser, (const unsigned char *)hidden, ld.len);
    rc = load(&ld, doc);
out:
    yaml_parser_delete(&ld.parser);
    for (size_t i = 0; i < ld.nrefs; i++)
        eddy_free(ld.refs[i]);
    eddy_free(ld.refs);
    eddy_free(hidden);
    return rc;
}

int eddy_yaml_load_string(const char *text, const char *name, eddy_yaml_doc *doc, eddy_diag *diag)
{
    return load_text(text, strlen(text), name, 0, doc, diag);
}

int eddy_yaml_load(const char *file, eddy_yaml_doc *doc, eddy_diag *diag)
{
    return eddy_yaml_load_flags(file, 0, doc, diag);
}

int eddy_yaml_load_flags(const char *file, int flags, eddy_yaml_doc *doc, eddy_diag *diag)
{
    char *text = NULL;
    size_t len = 0;
    eddy_err e;
    int rc;
    if (eddy_read_file(file, &text, &len, &e)) {
        memset(doc, 0, sizeof(*doc));
        eddy_diag_add(diag, "%s", e.msg);
        return e.code;
    }
    rc = load_text(text, len, file, flags, doc, diag);
    eddy_free(text);
    return rc;
}

void eddy_yaml_doc_free(eddy_yaml_doc *doc)
{
    eddy_free(doc->file);
    json_decref(doc->root);
    json_decref(doc->pos);
    json_decref(doc->deferred);
    memset(doc, 0, sizeof(*doc));
}

const char *eddy_yaml_where(const eddy_yaml_doc *doc, const char *path, int key, char *buf,
                            size_t n)
{
    json_t *p = json_object_get(doc->pos, path);
    if (!p) {
        snprintf(buf, n, "%s", doc->file);
        return buf;
    }
    snprintf(buf, n, "%s:%d:%d", doc->file, (int)json_integer_value(json_array_get(p, key ? 2 : 0)),
             (int)json_integer_value(json_array_get(p, key ? 3 : 1)));
    return buf;
}
