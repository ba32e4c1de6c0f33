/*
 * llm/conv.c - the neutral conversation: messages and parts, their JSON
 * form (history format 2), and the upgrade from format 1 (OpenAI chat
 * messages, what eddy stored before the neutral layer).
 */
#include "eddy/llm.h"
#include "eddy/buf.h"
#include "eddy/json.h"
#include "llm_int.h"

#include <string.h>

static const char *const kRoles[] = {"system", "user", "assistant", "tool"};

const char *eddy_llm_role_name(eddy_llm_role r)
{
    return (unsigned)r < 4 ? kRoles[r] : "?";
}

static void part_clear(eddy_llm_part *p)
{
    eddy_free(p->text);
    eddy_free(p->id);
    eddy_free(p->name);
    eddy_free(p->args);
    memset(p, 0, sizeof(*p));
}

json_t *eddy_llm_msg_wire(const eddy_llm_msg *m, const void *p)
{
    return m->wire && m->wire_for == p ? m->wire : NULL;
}

json_t *eddy_llm_msg_set_wire(const eddy_llm_msg *m, const void *p, json_t *w)
{
    eddy_llm_msg *mm = (eddy_llm_msg *)m; /* a cache: what M says does not change */
    json_decref(mm->wire);
    mm->wire = w;
    mm->wire_for = w ? p : NULL;
    return w;
}

void eddy_llm_msg_clear(eddy_llm_msg *m)
{
    json_decref(m->wire);
    for (size_t i = 0; i < m->nparts; i++)
        part_clear(&m->parts[i]);
    eddy_free(m->parts);
    memset(m, 0, sizeof(*m));
}

static eddy_llm_part *add_part(eddy_llm_msg *m)
{
    eddy_llm_msg_set_wire(m, NULL, NULL); /* the message changes */
    if (m->nparts == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 2;
        eddy_llm_part *p = eddy_realloc(m->parts, cap * sizeof(*p));
        if (!p)
            return NULL;
        m->parts = p;
        m->cap = cap;
    }
    eddy_llm_part *p = &m->parts[m->nparts];
    memset(p, 0, sizeof(*p));
    return p;
}

/* Copy S into *OUT (NULL stays NULL); 0 or -1 on OOM. */
static int dup_into(char **out, const char *s)
{
    *out = NULL;
    if (!s)
        return 0;
    *out = eddy_strdup(s);
    return *out ? 0 : -1;
}

int eddy_llm_msg_text_n(eddy_llm_msg *m, const char *text, size_t n)
{
    eddy_llm_part *p = add_part(m);
    if (!p || !(p->text = eddy_strndup(text ? text : "", text ? n : 0)))
        return EDDY_ENOMEM;
    p->kind = EDDY_PART_TEXT;
    m->nparts++;
    return 0;
}

int eddy_llm_msg_text(eddy_llm_msg *m, const char *text)
{
    return eddy_llm_msg_text_n(m, text, text ? strlen(text) : 0);
}

int eddy_llm_msg_tool_call(eddy_llm_msg *m, const char *id, const char *name, const char *args)
{
    eddy_llm_part *p = add_part(m);
    if (!p)
        return EDDY_ENOMEM;
    p->kind = EDDY_PART_TOOL_CALL;
    if (dup_into(&p->id, id) || dup_into(&p->name, name) ||
        dup_into(&p->args, args && *args ? args : "{}")) {
        part_clear(p);
        return EDDY_ENOMEM;
    }
    m->nparts++;
    return 0;
}

int eddy_llm_msg_tool_result(eddy_llm_msg *m, const char *id, const char *name, const char *text,
                             int is_error)
{
    eddy_llm_part *p = add_part(m);
    if (!p)
        return EDDY_ENOMEM;
    p->kind = EDDY_PART_TOOL_RESULT;
    p->is_error = is_error != 0;
    if (dup_into(&p->id, id) || dup_into(&p->name, name) || dup_into(&p->text, text ? text : "")) {
        part_clear(p);
        return EDDY_ENOMEM;
    }
    m->nparts++;
    return 0;
}

char *eddy_llm_msg_join_text(const eddy_llm_msg *m)
{
    eddy_buf b;
    eddy_buf_init(&b);
    for (size_t i = 0; i < m->nparts; i++)
        if (m->parts[i].kind == EDDY_PART_TEXT)
            eddy_buf_puts(&b, m->parts[i].text);
    if (b.oom) {
        eddy_buf_free(&b);
        return NULL;
    }
    return eddy_buf_take(&b);
}

size_t eddy_llm_msg_count(const eddy_llm_msg *m, eddy_llm_part_kind kind)
{
    size_t n = 0;
    for (size_t i = 0; i < m->nparts; i++)
        n += m->parts[i].kind == kind;
    return n;
}

eddy_llm_msg *eddy_llm_conv_add(eddy_llm_conv *c, eddy_llm_role role)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        eddy_llm_msg *m = eddy_realloc(c->msgs, cap * sizeof(*m));
        if (!m)
            return NULL;
        c->msgs = m;
        c->cap = cap;
    }
    eddy_llm_msg *m = &c->msgs[c->n++];
    memset(m, 0, sizeof(*m));
    m->role = role;
    return m;
}

int eddy_llm_conv_add_copy(eddy_llm_conv *c, const eddy_llm_msg *src)
{
    eddy_llm_msg *m = eddy_llm_conv_add(c, src->role);
    int rc = m ? 0 : EDDY_ENOMEM;
    for (size_t i = 0; m && !rc && i < src->nparts; i++) {
        const eddy_llm_part *p = &src->parts[i];
        switch (p->kind) {
        case EDDY_PART_TEXT:
            rc = eddy_llm_msg_text(m, p->text);
            break;
        case EDDY_PART_TOOL_CALL:
            rc = eddy_llm_msg_tool_call(m, p->id, p->name, p->args);
            break;
        case EDDY_PART_TOOL_RESULT:
            rc = eddy_llm_msg_tool_result(m, p->id, p->name, p->text, p->is_error);
            break;
        }
    }
    if (rc && m)
        eddy_llm_conv_truncate(c, c->n - 1);
    return rc;
}

void eddy_llm_conv_truncate(eddy_llm_conv *c, size_t n)
{
    while (c->n > n)
        eddy_llm_msg_clear(&c->msgs[--c->n]);
}

void eddy_llm_conv_clear(eddy_llm_conv *c)
{
    eddy_llm_conv_truncate(c, 0);
    eddy_free(c->msgs);
    memset(c, 0, sizeof(*c));
}

/* -- JSON (history format 2) -------------------------------------------------- */

int eddy__llm_set_str(json_t *o, const char *k, const char *s)
{
    if (!s)
        return 0;
    return json_object_set_new_nocheck(o, k, json_string_nocheck(s));
}

json_t *eddy_llm_msg_to_json(const eddy_llm_msg *m)
{
    json_t *parts = json_array(), *msg = json_object(), *o;
    int rc = !parts || !msg || eddy__llm_set_str(msg, "role", eddy_llm_role_name(m->role));
    for (size_t i = 0; !rc && i < m->nparts; i++) {
        const eddy_llm_part *p = &m->parts[i];
        rc = !(o = json_object()) || json_array_append_new(parts, o);
        if (rc)
            break;
        switch (p->kind) {
        case EDDY_PART_TEXT:
            rc = eddy__llm_set_str(o, "type", "text") ||
                 eddy__llm_set_str(o, "text", p->text ? p->text : "");
            break;
        case EDDY_PART_TOOL_CALL:
            rc = eddy__llm_set_str(o, "type", "tool_call") || eddy__llm_set_str(o, "id", p->id) ||
                 eddy__llm_set_str(o, "name", p->name) ||
                 eddy__llm_set_str(o, "arguments", p->args ? p->args : "{}");
            break;
        default:
            rc = eddy__llm_set_str(o, "type", "tool_result") || eddy__llm_set_str(o, "id", p->id) ||
                 eddy__llm_set_str(o, "name", p->name) ||
                 eddy__llm_set_str(o, "content", p->text ? p->text : "") ||
                 json_object_set_new_nocheck(o, "is_error", json_boolean(p->is_error));
            break;
        }
    }
    if (!rc)
        rc = json_object_set_new_nocheck(msg, "parts", parts);
    else
        json_decref(parts);
    if (rc) {
        json_decref(msg);
        return NULL;
    }
    return msg;
}

/* ,"KEY":V for V a string (nothing for NULL: as eddy__llm_set_str leaves it out). */
static int put_field(eddy_buf *b, const char *key, const char *v)
{
    if (!v)
        return 0;
    eddy_buf_puts(b, key);
    return eddy_json_put_string(b, v, strlen(v));
}

int eddy_llm_msg_write(eddy_buf *b, const eddy_llm_msg *m)
{
    size_t start = b->len;
    const char *role = eddy_llm_role_name(m->role);
    int rc;
    eddy_buf_puts(b, "{\"role\":");
    rc = eddy_json_put_string(b, role, strlen(role));
    eddy_buf_puts(b, ",\"parts\":[");
    for (size_t i = 0; !rc && i < m->nparts; i++) {
        const eddy_llm_part *p = &m->parts[i];
        if (i)
            eddy_buf_putc(b, ',');
        switch (p->kind) {
        case EDDY_PART_TEXT:
            rc = put_field(b, "{\"type\":\"text\",\"text\":", p->text ? p->text : "");
            break;
        case EDDY_PART_TOOL_CALL:
            eddy_buf_puts(b, "{\"type\":\"tool_call\"");
            rc = put_field(b, ",\"id\":", p->id) || put_field(b, ",\"name\":", p->name) ||
                 put_field(b, ",\"arguments\":", p->args ? p->args : "{}");
            break;
        default:
            eddy_buf_puts(b, "{\"type\":\"tool_result\"");
            rc = put_field(b, ",\"id\":", p->id) || put_field(b, ",\"name\":", p->name) ||
                 put_field(b, ",\"content\":", p->text ? p->text : "");
            eddy_buf_puts(b, p->is_error ? ",\"is_error\":true" : ",\"is_error\":false");
        }
        eddy_buf_putc(b, '}');
    }
    eddy_buf_puts(b, "]}");
    if (!rc && b->oom)
        rc = EDDY_ENOMEM;
    if (rc && !b->oom) {
        b->len = start;
        if (b->data)
            b->data[start] = '\0';
    }
    return rc;
}

/* ,"KEY":V for a string V, null for NULL (json_pack's "s?"). 0 or what
 * eddy_json_put_string says: a string that is not UTF-8 must fail the whole
 * text (json_pack refused it), not leave ,"KEY": with no value. */
static int put_opt(eddy_buf *b, const char *key, const char *v)
{
    if (v)
        return put_field(b, key, v);
    eddy_buf_puts(b, key);
    eddy_buf_puts(b, "null");
    return 0;
}

static void put_count(eddy_buf *b, const char *key, long v)
{
    char num[EDDY_JSON_NUMBER_MAX];
    eddy_buf_puts(b, key);
    eddy_buf_append(b, num, eddy_json_integer_text((json_int_t)v, num));
}

char *eddy_llm_result_text(const eddy_llm_result *res)
{
    const eddy_llm_response *resp = &res->resp;
    const eddy_llm_usage *u = &resp->usage;
    const char *finish = eddy_llm_finish_name(resp->finish);
    eddy_buf b;
    int rc;
    eddy_buf_init(&b);
    eddy_buf_puts(&b, "{\"message\":");
    rc = eddy_llm_msg_write(&b, &resp->message);
    eddy_buf_puts(&b, ",\"finish\":");
    rc = rc || eddy_json_put_string(&b, finish, strlen(finish));
    rc = rc || put_opt(&b, ",\"finish_raw\":", resp->finish_raw);
    rc = rc || put_opt(&b, ",\"id\":", resp->id);
    rc = rc || put_opt(&b, ",\"model\":", resp->model);
    rc = rc || put_opt(&b, ",\"by\":", res->model ? res->model->name : NULL);
    put_count(&b, ",\"usage\":{\"input\":", u->input_tokens);
    put_count(&b, ",\"output\":", u->output_tokens);
    put_count(&b, ",\"cached\":", u->cached_input_tokens);
    put_count(&b, ",\"cache_write\":", u->cache_write_tokens);
    put_count(&b, ",\"reasoning\":", u->reasoning_tokens);
    eddy_buf_puts(&b, u->estimated ? ",\"estimated\":true}}" : ",\"estimated\":false}}");
    if (rc || b.oom) {
        eddy_buf_free(&b);
        return NULL;
    }
    return eddy_buf_take(&b);
}

static int role_from(const char *s, eddy_llm_role *out)
{
    for (int i = 0; i < 4; i++)
        if (s && !strcmp(s, kRoles[i])) {
            *out = (eddy_llm_role)i;
            return 0;
        }
    return -1;
}

int eddy_llm_conv_from_json(eddy_llm_conv *c, json_t *arr, eddy_err *err)
{
    size_t n0 = c->n, i, j;
    json_t *mj, *pj;
    if (!json_is_array(arr))
        return eddy_err_set(err, EDDY_ECORRUPT, "history is not a JSON array");
    json_array_foreach(arr, i, mj)
    {
        eddy_llm_role role;
        json_t *parts = json_object_get(mj, "parts");
        if (role_from(eddy_json_str(mj, "role", NULL), &role) || !json_is_array(parts)) {
            eddy_llm_conv_truncate(c, n0);
            return eddy_err_set(err, EDDY_ECORRUPT,
                                "history message %zu is not a {role, parts} message", i);
        }
        eddy_llm_msg *m = eddy_llm_conv_add(c, role);
        if (!m)
            goto oom;
        json_array_foreach(parts, j, pj)
        {
            const char *type = eddy_json_str(pj, "type", "");
            int rc;
            if (!strcmp(type, "text"))
                rc = eddy_llm_msg_text(m, eddy_json_str(pj, "text", ""));
            else if (!strcmp(type, "tool_call"))
                rc = eddy_llm_msg_tool_call(m, eddy_json_str(pj, "id", NULL),
                                            eddy_json_str(pj, "name", NULL),
                                            eddy_json_str(pj, "arguments", NULL));
            else if (!strcmp(type, "tool_result"))
                rc = eddy_llm_msg_tool_result(m, eddy_json_str(pj, "id", NULL),
                                              eddy_json_str(pj, "name", NULL),
                                              eddy_json_str(pj, "content", ""),
                                              json_is_true(json_object_get(pj, "is_error")));
            else {
                eddy_llm_conv_truncate(c, n0);
                return eddy_err_set(err, EDDY_ECORRUPT,
                                    "history message %zu part %zu has unknown type '%.40s'", i, j,
                                    type);
            }
            if (rc)
                goto oom;
        }
    }
    return 0;
oom:
    eddy_llm_conv_truncate(c, n0);
    return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
}

/* -- format 1 -> 2 -------------------------------------------------------------- */

/* Text of an OpenAI content: a string, or an array of {type:"text", text}. */
static char *v1_text(json_t *content)
{
    if (json_is_string(content))
        return eddy_strdup(json_string_value(content));
    eddy_buf b;
    eddy_buf_init(&b);
    size_t i;
    json_t *x;
    json_array_foreach(content, i, x) eddy_buf_puts(&b, eddy_json_str(x, "text", ""));
    return b.oom ? (eddy_buf_free(&b), NULL) : eddy_buf_take(&b);
}

/* The name of the call ID among the tool calls of the messages before I. */
static const char *v1_call_name(json_t *arr, size_t i, const char *id)
{
    while (id && i-- > 0) {
        json_t *calls = json_object_get(json_array_get(arr, i), "tool_calls"), *tc;
        size_t k;
        json_array_foreach(calls, k, tc)
        {
            if (!strcmp(eddy_json_str(tc, "id", ""), id))
                return eddy_json_str(json_object_get(tc, "function"), "name", NULL);
        }
    }
    return NULL;
}

json_t *eddy_llm_history_upgrade(json_t *arr, eddy_err *err)
{
    eddy_llm_conv c = {0};
    json_t *out = NULL, *mj;
    size_t i;
    int rc = 0;
    if (!json_is_array(arr)) {
        eddy_err_set(err, EDDY_ECORRUPT, "format-1 history is not a JSON array");
        return NULL;
    }
    json_array_foreach(arr, i, mj)
    {
        eddy_llm_role role;
        const char *rs = eddy_json_str(mj, "role", NULL);
        char *text;
        if (rs && !strcmp(rs, "developer"))
            rs = "system";
        if (role_from(rs, &role)) {
            rc = eddy_err_set(err, EDDY_ECORRUPT, "format-1 history message %zu has role '%.40s'",
                              i, rs ? rs : "(none)");
            goto out;
        }
        eddy_llm_msg *m = eddy_llm_conv_add(&c, role);
        if (!m)
            goto oom;
        json_t *content = json_object_get(mj, "content");
        if (role == EDDY_ROLE_TOOL) {
            const char *id = eddy_json_str(mj, "tool_call_id", NULL);
            text = v1_text(content);
            if (!text)
                goto oom;
            /* eddy 1 wrote a failed tool's result as "error: <message>" */
            int is_error = !strncmp(text, "error: ", 7);
            rc = eddy_llm_msg_tool_result(m, id, v1_call_name(arr, i, id), text, is_error);
            eddy_free(text);
            if (rc)
                goto oom;
            continue;
        }
        if (content && !json_is_null(content)) {
            if (!(text = v1_text(content)))
                goto oom;
            rc = *text ? eddy_llm_msg_text(m, text) : 0;
            eddy_free(text);
            if (rc)
                goto oom;
        }
        json_t *calls = json_object_get(mj, "tool_calls"), *tc;
        size_t k;
        json_array_foreach(calls, k, tc)
        {
            json_t *fn = json_object_get(tc, "function"), *a = json_object_get(fn, "arguments");
            char *args = json_is_string(a) ? eddy_strdup(json_string_value(a))
                         : a               ? eddy_json_dumps(a)
                                           : eddy_strdup("{}");
            rc = args ? eddy_llm_msg_tool_call(m, eddy_json_str(tc, "id", NULL),
                                               eddy_json_str(fn, "name", NULL), args)
                      : EDDY_ENOMEM;
            eddy_free(args);
            if (rc)
                goto oom;
        }
    }
    out = json_array();
    for (size_t k = 0; out && k < c.n; k++)
        if (json_array_append_new(out, eddy_llm_msg_to_json(&c.msgs[k]))) {
            json_decref(out);
            out = NULL;
        }
    if (!out)
        goto oom;
out:
    eddy_llm_conv_clear(&c);
    return rc ? NULL : out;
oom:
    rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    goto out;
}
