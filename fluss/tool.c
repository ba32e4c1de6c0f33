/*
 * fluss/tool.c - Fluss lookups for agents: the fluss_lookup tool kind and
 * eddy.fluss.lookup / eddy.fluss.prefix_lookup for Lua tools.
 *
 * Both are a module of the tools host. Its state on one host keeps a client
 * per cluster (bootstrap + user) on the host's loop, opened at the first
 * lookup and closed by eddy_tools_close; the client caches table metadata,
 * batches the lookups of one loop tick per leader and retries on leader
 * moves, so a run waiting for a row never blocks the worker loop.
 *
 * The tool reads the table's schema once when it loads (a short blocking
 * metadata request on a private loop, at start-up only) so that the model
 * sees the key columns with their types as the tool's parameters.
 */
#include "fluss_int.h"

#include "eddy/tools.h"

#include <string.h>

/* the cluster a lookup goes to */
typedef struct cluster {
    char *bootstrap, *user, *password;
    eddy_fluss_client *client;
    struct cluster *next;
} cluster;

typedef struct mod_state {
    uv_loop_t *loop;
    json_t *cfg; /* the job's fluss: block, or NULL */
    cluster *clusters;
} mod_state;

/* What a listed fluss_lookup tool looks up. */
typedef struct tool_data {
    char *db, *table, *bootstrap, *user, *password;
    int prefix;
} tool_data;

/* One lookup in flight. */
typedef struct lookup_op {
    eddy_tool_wait *w;
    eddy_fluss_client *client;
    char db[EDDY_FLUSS_NAME_MAX], table[EDDY_FLUSS_NAME_MAX];
    const eddy_fluss_table *t;
    json_t *key;  /* the key as given (kept) */
    json_t *rows; /* prefix lookups: rows so far */
    int prefix, tool;
} lookup_op;

static const char *setting(const json_t *cfg, const json_t *modcfg, const char *k)
{
    const char *v = json_string_value(json_object_get(cfg, k));
    if (!v)
        v = json_string_value(json_object_get(modcfg, k));
    if (!v && !strcmp(k, "bootstrap"))
        v = getenv("FLUSS_BOOTSTRAP");
    if (!v && !strcmp(k, "bootstrap"))
        v = "127.0.0.1:9123";
    return v;
}

static int same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

/* The client for BOOTSTRAP (and USER) on this host, connecting on first use. */
static eddy_fluss_client *client_for(mod_state *s, const char *bootstrap, const char *user,
                                     const char *password, eddy_err *err)
{
    cluster *k;
    for (k = s->clusters; k; k = k->next)
        if (!strcmp(k->bootstrap, bootstrap) && same(k->user, user))
            return k->client;
    k = eddy_calloc(1, sizeof(*k));
    if (!k || !(k->bootstrap = eddy_strdup(bootstrap)) ||
        (user && !(k->user = eddy_strdup(user))) ||
        (password && !(k->password = eddy_strdup(password)))) {
        if (k) {
            eddy_free(k->bootstrap);
            eddy_free(k->user);
        }
        eddy_free(k);
        eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        return NULL;
    }
    eddy_fluss_client_opts o = {bootstrap, user, password, 0};
    if (eddy_fluss_client_new(s->loop, &o, &k->client, err)) {
        eddy_free(k->bootstrap);
        eddy_free(k->user);
        eddy_free(k->password);
        eddy_free(k);
        return NULL;
    }
    k->next = s->clusters;
    s->clusters = k;
    return k->client;
}

/* -- one lookup ------------------------------------------------------------------- */

static void op_free(lookup_op *o)
{
    json_decref(o->key);
    json_decref(o->rows);
    eddy_free(o);
}

static void op_fail(lookup_op *o, int status, const char *msg)
{
    char m[EDDY_ERR_MSG_MAX], full[300];
    snprintf(full, sizeof(full), "%s.%s", o->db, o->table);
    if (strstr(msg, full)) /* the message names the table already */
        snprintf(m, sizeof(m), "%s", msg);
    else
        snprintf(m, sizeof(m), "%s: %s", full, msg);
    eddy_tool_wait_done(o->w, status < 0 ? status : EDDY_EFLUSS, NULL, m);
    op_free(o);
}

/* Answer with RESULT (taken): Lua gets the row (nil when none) or the rows;
 * the tool {found, row} or {rows}. */
static void op_answer(lookup_op *o, json_t *result)
{
    if (o->tool && !o->prefix)
        result = result ? json_pack("{s:b, s:o}", "found", 1, "row", result)
                        : json_pack("{s:b}", "found", 0);
    else if (o->tool)
        result = json_pack("{s:o}", "rows", result);
    eddy_tool_wait_done(o->w, 0, result, NULL);
    op_free(o);
}

static void on_row(int status, const eddy_err *err, const eddy_fluss_value *vals, void *ud)
{
    lookup_op *o = ud;
    if (status)
        op_fail(o, status, err ? err->msg : "lookup failed");
    else
        op_answer(o, vals ? eddy_fluss_row_to_json(&o->t->schema, vals, NULL, 0) : NULL);
}

static void on_prefix_row(int status, const eddy_err *err, const eddy_fluss_value *vals, size_t row,
                          size_t n, void *ud)
{
    lookup_op *o = ud;
    if (status) {
        op_fail(o, status, err ? err->msg : "prefix lookup failed");
        return;
    }
    if (vals)
        json_array_append_new(o->rows, eddy_fluss_row_to_json(&o->t->schema, vals, NULL, 0));
    if (row + 1 >= n) {
        json_t *rows = o->rows;
        o->rows = NULL;
        op_answer(o, rows);
    }
}

static void on_table(int status, const eddy_err *err, const eddy_fluss_table *t, void *ud)
{
    lookup_op *o = ud;
    eddy_fluss_arena a = {0};
    eddy_fluss_value *vals;
    eddy_err e;
    int rc;
    if (status) {
        op_fail(o, status, err ? err->msg : "no such table");
        return;
    }
    o->t = t;
    if (!(vals = eddy_calloc((size_t)t->schema.ncols, sizeof(*vals)))) {
        op_fail(o, EDDY_ENOMEM, "out of memory");
        return;
    }
    rc = eddy_fluss_key_from_json(t, o->key, o->prefix, vals, &a, &e);
    if (!rc)
        rc = o->prefix ? eddy_fluss_prefix_lookup(o->client, t, vals, on_prefix_row, o, &e)
                       : eddy_fluss_lookup(o->client, t, vals, on_row, o, &e);
    eddy_fluss_arena_free(&a);
    eddy_free(vals);
    if (rc)
        op_fail(o, rc, e.msg);
}

/* Start a lookup of KEY in DB.TABLE on CLIENT; W is answered from the loop. */
static int start_lookup(eddy_fluss_client *client, const char *db, const char *table, json_t *key,
                        int prefix, int tool, eddy_tool_wait *w, eddy_err *err)
{
    lookup_op *o = eddy_calloc(1, sizeof(*o));
    if (!o || (prefix && !(o->rows = json_array()))) {
        eddy_free(o);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    o->w = w;
    o->client = client;
    o->key = json_incref(key);
    o->prefix = prefix;
    o->tool = tool;
    snprintf(o->db, sizeof(o->db), "%s", db);
    snprintf(o->table, sizeof(o->table), "%s", table);
    if (eddy_fluss_get_table(client, db, table, on_table, o)) {
        op_free(o);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    return 0;
}

/* -- eddy.fluss.lookup(table, key) and eddy.fluss.prefix_lookup(table, key) ---------- */

static int lua_lookup(mod_state *s, json_t *args, int prefix, eddy_tool_wait *w, eddy_err *err)
{
    char db[EDDY_FLUSS_NAME_MAX], table[EDDY_FLUSS_NAME_MAX];
    const char *full = json_string_value(json_array_get(args, 0));
    json_t *key = json_array_get(args, 1);
    eddy_fluss_client *c;
    int rc;
    if (json_array_size(args) != 2)
        return eddy_err_set(err, EDDY_EINVAL, "takes (table, key), got %zu argument(s)",
                            json_array_size(args));
    if ((rc = eddy_fluss_table_path(full, db, table, err)))
        return rc;
    if (!(c = client_for(s, setting(NULL, s->cfg, "bootstrap"), setting(NULL, s->cfg, "sasl_user"),
                         setting(NULL, s->cfg, "sasl_password"), err)))
        return err->code;
    return start_lookup(c, db, table, key, prefix, 0, w, err);
}

static int l_lookup(void *state, void *data, json_t *args, eddy_tool_wait *w, eddy_err *err)
{
    (void)data;
    return lua_lookup(state, args, 0, w, err);
}

static int l_prefix_lookup(void *state, void *data, json_t *args, eddy_tool_wait *w, eddy_err *err)
{
    (void)data;
    return lua_lookup(state, args, 1, w, err);
}

/* -- the fluss_lookup tool ---------------------------------------------------------- */

static int tool_call(void *state, void *data, json_t *args, eddy_tool_wait *w, eddy_err *err)
{
    tool_data *d = data;
    eddy_fluss_client *c = client_for(state, d->bootstrap, d->user, d->password, err);
    if (!c)
        return err->code;
    return start_lookup(c, d->db, d->table, args, d->prefix, 1, w, err);
}

static void tool_data_free(void *p)
{
    tool_data *d = p;
    if (!d)
        return;
    eddy_free(d->db);
    eddy_free(d->table);
    eddy_free(d->bootstrap);
    eddy_free(d->user);
    eddy_free(d->password);
    eddy_free(d);
}

/* The JSON-schema type a key column takes in a tool call. */
static json_t *column_schema(const eddy_fluss_column *col)
{
    char tn[64], desc[160];
    const char *type = "string", *how = "";
    eddy_fluss_type_name(col, tn, sizeof(tn));
    switch (col->type) {
    case EDDY_FLUSS_BOOLEAN:
        type = "boolean";
        break;
    case EDDY_FLUSS_TINYINT:
    case EDDY_FLUSS_SMALLINT:
    case EDDY_FLUSS_INT:
    case EDDY_FLUSS_BIGINT:
        type = "integer";
        break;
    case EDDY_FLUSS_FLOAT:
    case EDDY_FLUSS_DOUBLE:
        type = "number";
        break;
    case EDDY_FLUSS_DECIMAL:
        how = ", as a decimal string";
        break;
    case EDDY_FLUSS_BYTES:
        how = ", base64";
        break;
    case EDDY_FLUSS_DATE:
    case EDDY_FLUSS_TIMESTAMP:
    case EDDY_FLUSS_TIMESTAMP_LTZ:
        how = ", ISO-8601";
        break;
    default:
        break;
    }
    snprintf(desc, sizeof(desc), "%s (%s%s)", col->name, tn, how);
    return json_pack("{s:s, s:s}", "type", type, "description", desc);
}

typedef struct schema_fetch {
    eddy_fluss_client *c;
    int prefix, status;
    eddy_err err;
    json_t *params;
    char key[512];
} schema_fetch;

static void on_schema(int status, const eddy_err *err, const eddy_fluss_table *t, void *ud)
{
    schema_fetch *f = ud;
    f->status = status;
    if (status) {
        eddy_err_set(&f->err, status, "%s", err ? err->msg : "no such table");
    } else if (t->schema.npk == 0) {
        f->status = eddy_err_set(&f->err, EDDY_EINVAL,
                                 "%s.%s has no primary key: fluss_lookup needs a primary-key table",
                                 t->database, t->name);
    } else {
        const int *kc = f->prefix ? t->schema.bk : t->schema.pk;
        int nk = f->prefix ? t->schema.nbk : t->schema.npk;
        json_t *props = json_object(), *req = json_array();
        size_t n = 0;
        for (int i = 0; i < nk; i++) {
            const eddy_fluss_column *col = &t->schema.cols[kc[i]];
            json_object_set_new(props, col->name, column_schema(col));
            json_array_append_new(req, json_string(col->name));
            n += (size_t)snprintf(f->key + n, sizeof(f->key) - n, "%s%s", i ? ", " : "", col->name);
            if (n >= sizeof(f->key))
                n = sizeof(f->key) - 1;
        }
        f->params = json_pack("{s:s, s:o, s:o, s:b}", "type", "object", "properties", props,
                              "required", req, "additionalProperties", 0);
        if (!f->params)
            f->status = eddy_err_set(&f->err, EDDY_ENOMEM, "out of memory");
    }
    eddy_fluss_client_close(f->c);
}

/* Read the key columns of D's table from the cluster, on a private loop. */
static int fetch_params(const tool_data *d, schema_fetch *f, eddy_err *err)
{
    uv_loop_t loop;
    eddy_fluss_client_opts o = {d->bootstrap, d->user, d->password, 10000};
    int rc;
    if (uv_loop_init(&loop))
        return eddy_err_set(err, EDDY_EUV, "cannot start a loop");
    f->status = EDDY_EFLUSS;
    eddy_err_set(&f->err, EDDY_EFLUSS, "no answer");
    if ((rc = eddy_fluss_client_new(&loop, &o, &f->c, err)) == 0) {
        if (eddy_fluss_get_table(f->c, d->db, d->table, on_schema, f)) {
            eddy_fluss_client_close(f->c);
            eddy_err_set(&f->err, EDDY_ENOMEM, "out of memory");
        }
        uv_run(&loop, UV_RUN_DEFAULT);
        if (f->status)
            rc = eddy_err_set(err, f->status, "cannot read %s.%s from Fluss at %s: %s", d->db,
                              d->table, d->bootstrap, f->err.msg);
    }
    uv_loop_close(&loop);
    return rc;
}

static int tool_new(const json_t *modcfg, const json_t *cfg, eddy_native_tool *t, eddy_err *err)
{
    static const char *const keys[] = {"table",     "name",      "description",   "prefix",
                                       "bootstrap", "sasl_user", "sasl_password", NULL};
    const char *k, *name, *desc;
    json_t *v;
    char db[EDDY_FLUSS_NAME_MAX], table[EDDY_FLUSS_NAME_MAX], buf[1024];
    schema_fetch f = {0};
    tool_data *d;
    int rc;
    json_object_foreach((json_t *)cfg, k, v)
    {
        int known = 0;
        for (int i = 0; keys[i]; i++)
            known |= !strcmp(keys[i], k);
        if (!known)
            return eddy_err_set(err, EDDY_EINVAL,
                                "unknown key '%s' (known: table, name, description, prefix, "
                                "bootstrap, sasl_user, sasl_password)",
                                k);
        if (strcmp(k, "prefix") ? !json_is_string(v) : !json_is_boolean(v))
            return eddy_err_set(err, EDDY_EINVAL, "'%s' must be %s", k,
                                strcmp(k, "prefix") ? "a string" : "true or false");
    }
    if ((rc = eddy_fluss_table_path(json_string_value(json_object_get(cfg, "table")), db, table,
                                    err)))
        return rc;
    if (!(d = eddy_calloc(1, sizeof(*d))))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    d->prefix = json_is_true(json_object_get(cfg, "prefix"));
    d->db = eddy_strdup(db);
    d->table = eddy_strdup(table);
    d->bootstrap = eddy_strdup(setting(cfg, modcfg, "bootstrap"));
    if ((k = setting(cfg, modcfg, "sasl_user")))
        d->user = eddy_strdup(k);
    if ((k = setting(cfg, modcfg, "sasl_password")))
        d->password = eddy_strdup(k);
    if (!d->db || !d->table || !d->bootstrap) {
        tool_data_free(d);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    if ((rc = fetch_params(d, &f, err))) {
        tool_data_free(d);
        return rc;
    }
    name = json_string_value(json_object_get(cfg, "name"));
    snprintf(buf, sizeof(buf), "lookup_%s", table);
    t->name = eddy_strdup(name ? name : buf);
    desc = json_string_value(json_object_get(cfg, "description"));
    if (d->prefix)
        snprintf(buf, sizeof(buf),
                 "Rows of the table %s.%s whose %s match; answers {\"rows\": [...]}.", db, table,
                 f.key);
    else
        snprintf(buf, sizeof(buf),
                 "The row of the table %s.%s with the given %s; answers {\"found\": true, "
                 "\"row\": {...}} or {\"found\": false}.",
                 db, table, f.key);
    t->description = eddy_strdup(desc ? desc : buf);
    t->params = f.params;
    t->call = tool_call;
    t->data = d;
    t->free_data = tool_data_free;
    if (!t->name || !t->description)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    return 0;
}

/* -- the module --------------------------------------------------------------------- */

static int mod_open(uv_loop_t *loop, const json_t *cfg, void **state, eddy_err *err)
{
    mod_state *s = eddy_calloc(1, sizeof(*s));
    if (!s)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    s->loop = loop;
    s->cfg = json_incref((json_t *)cfg);
    *state = s;
    return 0;
}

static void mod_close(void *state)
{
    mod_state *s = state;
    while (s->clusters) {
        cluster *k = s->clusters;
        s->clusters = k->next;
        eddy_fluss_client_close(k->client); /* pending lookups end with EDDY_ECANCELED */
        eddy_free(k->bootstrap);
        eddy_free(k->user);
        eddy_free(k->password);
        eddy_free(k);
    }
    json_decref(s->cfg);
    eddy_free(s);
}

static const eddy_native_reg fluss_fns[] = {
    {"lookup", l_lookup}, {"prefix_lookup", l_prefix_lookup}, {NULL, NULL}};

static const eddy_tools_module fluss_module = {"fluss",   mod_open,       mod_close,
                                               fluss_fns, "fluss_lookup", tool_new};

int eddy_fluss_register_tools(void)
{
    return eddy_tools_register_module(&fluss_module);
}
