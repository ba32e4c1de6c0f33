/*
 * prompts/template.c - compile and render {{path}} templates.
 *
 * A compiled template is a list of parts: literal text or a variable path,
 * each carrying its line and column in the origin so errors point at the
 * placeholder (columns count characters, as the job file's do). The text
 * must be UTF-8: a prompt that is not could not be sent to a model (its JSON
 * string would be refused), so compiling names the first bad byte. Rendering
 * never mutates the template; one template may be rendered by any number of
 * runs.
 */
#include "eddy/prompt.h"
#include "eddy/buf.h"
#include "eddy/json.h"

#include <ctype.h>
#include <string.h>

typedef struct part {
    char *text; /* literal, or the variable path */
    int is_var;
    int optional;
    int line, col;
} part;

struct eddy_template {
    char *origin;
    part *parts;
    size_t nparts;
    size_t nvars;
};

static int add_part(eddy_template *t, const char *s, size_t n, int is_var, int line, int col)
{
    part *p = eddy_realloc(t->parts, (t->nparts + 1) * sizeof(part));
    if (!p)
        return EDDY_ENOMEM;
    t->parts = p;
    p = &t->parts[t->nparts];
    memset(p, 0, sizeof(*p));
    if (!(p->text = eddy_strndup(s, n)))
        return EDDY_ENOMEM;
    p->is_var = is_var;
    p->line = line;
    p->col = col;
    t->nparts++;
    t->nvars += is_var;
    return 0;
}

static int valid_path(const char *s)
{
    if (!*s || *s == '.')
        return 0;
    for (; *s; s++) {
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '-' ||
              (*s == '.' && s[1] && s[1] != '.')))
            return 0;
    }
    return 1;
}

static void advance(const char *from, const char *to, int *line, int *col)
{
    for (; from < to; from++) {
        if (*from == '\n') {
            (*line)++;
            *col = 1;
        } else if (((unsigned char)*from & 0xC0) != 0x80) { /* not a continuation byte */
            (*col)++;
        }
    }
}

int eddy_template_new(const char *text, const char *origin, int line0, int col0,
                      eddy_template **out, eddy_err *err)
{
    eddy_template *t = eddy_calloc(1, sizeof(*t));
    eddy_buf lit;
    const char *p = text;
    int line = line0, col = col0, rc = 0, lit_line = line0, lit_col = col0;
    size_t len = strlen(text), bad;

    eddy_buf_init(&lit);
    if (!t || !(t->origin = eddy_strdup(origin))) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    if ((bad = eddy_utf8_invalid(text, len)) < len) {
        advance(text, text + bad, &line, &col);
        rc = eddy_err_set(err, EDDY_ETEMPLATE,
                          "%s:%d:%d: invalid UTF-8 (byte 0x%02X): a prompt is UTF-8 text", origin,
                          line, col, (unsigned char)text[bad]);
        goto out;
    }
    while (*p) {
        const char *open = strstr(p, "{{"), *close, *b, *e;
        char path[256];
        int vline, vcol, optional = 0;
        size_t n;
        if (!open) {
            eddy_buf_puts(&lit, p);
            break;
        }
        eddy_buf_append(&lit, p, (size_t)(open - p));
        advance(p, open, &line, &col);
        if (strncmp(open, "{{{{", 4) == 0) {
            eddy_buf_puts(&lit, "{{");
            advance(open, open + 4, &line, &col);
            p = open + 4;
            continue;
        }
        vline = line;
        vcol = col;
        close = strstr(open + 2, "}}");
        if (!close || memchr(open + 2, '\n', (size_t)(close - open - 2))) {
            rc = eddy_err_set(err, EDDY_ETEMPLATE, "%s:%d:%d: unclosed '{{' (expected '}}')",
                              origin, vline, vcol);
            goto out;
        }
        for (b = open + 2; b < close && isspace((unsigned char)*b); b++)
            ;
        for (e = close; e > b && isspace((unsigned char)e[-1]); e--)
            ;
        if (e > b && e[-1] == '?') {
            optional = 1;
            e--;
        }
        n = (size_t)(e - b);
        if (n >= sizeof(path)) {
            rc = eddy_err_set(err, EDDY_ETEMPLATE, "%s:%d:%d: variable name too long", origin,
                              vline, vcol);
            goto out;
        }
        memcpy(path, b, n);
        path[n] = '\0';
        if (!valid_path(path)) {
            rc = eddy_err_set(err, EDDY_ETEMPLATE,
                              "%s:%d:%d: '{{%s}}' is not a variable (expected a dotted path "
                              "such as event.text, memory.name or key)",
                              origin, vline, vcol, path);
            goto out;
        }
        if (lit.len && add_part(t, lit.data, lit.len, 0, lit_line, lit_col)) {
            rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
            goto out;
        }
        eddy_buf_reset(&lit);
        if (add_part(t, path, n, 1, vline, vcol)) {
            rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
            goto out;
        }
        t->parts[t->nparts - 1].optional = optional;
        advance(open, close + 2, &line, &col);
        lit_line = line;
        lit_col = col;
        p = close + 2;
    }
    if (lit.oom || (lit.len && add_part(t, lit.data, lit.len, 0, lit_line, lit_col)))
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
out:
    eddy_buf_free(&lit);
    if (rc) {
        eddy_template_free(t);
        t = NULL;
    }
    *out = t;
    return rc;
}

void eddy_template_free(eddy_template *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nparts; i++)
        eddy_free(t->parts[i].text);
    eddy_free(t->parts);
    eddy_free(t->origin);
    eddy_free(t);
}

size_t eddy_template_nvars(const eddy_template *t)
{
    return t->nvars;
}

const char *eddy_template_origin(const eddy_template *t)
{
    return t->origin;
}

const char *eddy_template_var(const eddy_template *t, size_t i, int *optional, int *line, int *col)
{
    for (size_t k = 0; k < t->nparts; k++) {
        if (!t->parts[k].is_var)
            continue;
        if (i-- == 0) {
            if (optional)
                *optional = t->parts[k].optional;
            if (line)
                *line = t->parts[k].line;
            if (col)
                *col = t->parts[k].col;
            return t->parts[k].text;
        }
    }
    return NULL;
}

int eddy_template_render(const eddy_template *t, json_t *ctx, char **out, eddy_err *err)
{
    eddy_buf b;
    eddy_buf_init(&b);
    *out = NULL;
    for (size_t i = 0; i < t->nparts; i++) {
        const part *p = &t->parts[i];
        json_t *v;
        if (!p->is_var) {
            eddy_buf_puts(&b, p->text);
            continue;
        }
        v = eddy_json_path(ctx, p->text);
        if (!v || json_is_null(v)) {
            if (p->optional)
                continue;
            eddy_buf_free(&b);
            return eddy_err_set(err, EDDY_ETEMPLATE,
                                "%s:%d:%d: template variable '%s' has no value (write "
                                "{{%s?}} to allow it to be empty)",
                                t->origin, p->line, p->col, p->text, p->text);
        }
        if (json_is_string(v)) {
            eddy_buf_append(&b, json_string_value(v), json_string_length(v));
        } else if (eddy_json_dump_buf(&b, v, JSON_COMPACT | JSON_ENCODE_ANY) &&
                   !b.oom) { /* numbers as written: 71.1; objects as compact JSON */
            eddy_buf_free(&b);
            return eddy_err_set(err, EDDY_ETEMPLATE,
                                "%s:%d:%d: template variable '%s' cannot be written as JSON "
                                "(invalid UTF-8, or nested too deep)",
                                t->origin, p->line, p->col, p->text);
        }
    }
    if (!(*out = eddy_buf_take(&b)))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory rendering %s", t->origin);
    return 0;
}
