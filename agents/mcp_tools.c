/*
 * agents/mcp_tools.c - an agent's `mcp: SERVER` and `mcp: SERVER/TOOL`
 * entries as tools of its runs.
 *
 * When a worker builds its agents (at start, at a reload, and whenever the
 * MCP catalog's version changed), each such entry becomes the tools the
 * catalog lists for it now: native tools of the worker's Lua host whose body
 * calls the server through the worker's port (include/eddy/mcp.h). The
 * model sees the server's name for each tool when it is a valid function
 * name ([A-Za-z0-9_-], at most 64), else the name with each other character
 * replaced by '_'; the server's description and input schema. A call is
 * traced like any tool (execute_tool NAME, with eddy.mcp.server and the
 * server's own name of the tool on the span), and its arguments are checked
 * against the server's schema first.
 */
#include "run_int.h"

#include <ctype.h>
#include <string.h>

#include "eddy/buf.h"
#include "eddy/log.h"

typedef struct mcp_tool {
    eddy_mcp_port *port;
    char *server, *tool;
} mcp_tool;

static void free_data(void *p)
{
    mcp_tool *d = p;
    if (!d)
        return;
    eddy_free(d->server);
    eddy_free(d->tool);
    eddy_free(d);
}

static void on_answer(eddy_mcp_result *res, void *ud)
{
    eddy_tool_wait *w = ud;
    if (res->status)
        eddy_tool_wait_done(w, res->status, NULL, res->err.msg);
    else
        eddy_tool_wait_done(w, 0, json_incref(res->result ? res->result : json_null()), NULL);
}

static int call(void *state, void *data, json_t *args, eddy_tool_wait *w, eddy_err *err)
{
    mcp_tool *d = data;
    (void)state;
    return eddy_mcp_call(d->port, d->server, d->tool, args, 0, on_answer, w, err);
}

/* Whether catalog tool T is one REF lists. */
static int listed(const eddy_tool_ref *ref, const eddy_mcp_tool *t)
{
    return !strcmp(t->server, ref->mcp_server) &&
           (!ref->mcp_tool || !strcmp(t->name, ref->mcp_tool));
}

size_t eddy__mcp_tools_count(const eddy_mcp_catalog *cat, const eddy_tool_ref *ref)
{
    size_t n = 0;
    for (size_t i = 0; cat && i < eddy_mcp_catalog_count(cat); i++)
        n += listed(ref, eddy_mcp_catalog_tool(cat, i));
    return n;
}

/* The name the model sees for the server's tool NAME, into BUF. */
static const char *model_name(const char *name, char *buf, size_t n)
{
    size_t i = 0;
    for (; name[i] && i + 1 < n && i < 64; i++) {
        unsigned char ch = (unsigned char)name[i];
        buf[i] = isalnum(ch) || ch == '_' || ch == '-' ? (char)ch : '_';
    }
    buf[i] = '\0';
    return buf;
}

int eddy__mcp_tools_add(const eddy_agent_def *def, const eddy_agent_env *env,
                        const eddy_tool_ref *ref, eddy_tool **tools, size_t *ntools, size_t cap,
                        eddy_err *err)
{
    const eddy_mcp_catalog *cat = env->mcp_catalog;
    size_t found = 0;
    for (size_t i = 0; cat && i < eddy_mcp_catalog_count(cat); i++) {
        const eddy_mcp_tool *mt = eddy_mcp_catalog_tool(cat, i);
        eddy_native_tool nt;
        mcp_tool *d;
        char name[80], what[200];
        int clash = 0, rc;
        if (!listed(ref, mt))
            continue;
        found++;
        model_name(mt->name, name, sizeof(name));
        for (size_t j = 0; j < *ntools && !clash; j++)
            clash = !strcmp(eddy_tool_name(tools[j]), name);
        if (clash || !strcmp(name, EDDY_LLM_OUTPUT_TOOL) || !*name) {
            EDDY_WARN("mcp",
                      "agent '%s': %s: tool '%s' of MCP server '%s' is left out: the agent has "
                      "a tool named '%s' already",
                      def->name, ref->where ? ref->where : "?", mt->name, mt->server, name);
            continue;
        }
        if (*ntools >= cap)
            break;
        memset(&nt, 0, sizeof(nt));
        d = eddy_calloc(1, sizeof(*d));
        if (d) {
            d->port = env->mcp_port;
            d->server = eddy_strdup(mt->server);
            d->tool = eddy_strdup(mt->name);
        }
        nt.name = eddy_strdup(name);
        nt.description = eddy_strdup(mt->description);
        nt.params = json_deep_copy(mt->input_schema); /* the catalog's is read by other threads */
        nt.call = call;
        nt.data = d;
        nt.free_data = free_data;
        if (!d || !d->server || !d->tool || !nt.name || !nt.description || !nt.params) {
            free_data(d);
            eddy_free(nt.name);
            eddy_free(nt.description);
            json_decref(nt.params);
            return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        }
        if (!json_is_string(json_object_get(nt.params, "type")))
            json_object_set_new(nt.params, "type", json_string("object"));
        snprintf(what, sizeof(what), "tool '%s' of MCP server '%s'", mt->name, mt->server);
        if ((rc = eddy_tools_add_native(env->tools, &nt, what, &tools[*ntools], err)))
            return rc;
        (*ntools)++;
    }
    if (!found && ref->mcp_tool && cat)
        EDDY_DEBUG("mcp", "agent '%s': %s: MCP server '%s' lists no tool '%s' (yet)", def->name,
                   ref->where ? ref->where : "?", ref->mcp_server, ref->mcp_tool);
    return 0;
}

const char *eddy__mcp_tool_server(const eddy_tool *t, const char **tool)
{
    /* native tools of this file carry their server in their data */
    const mcp_tool *d = eddy_tool_native_data(t, call);
    if (tool)
        *tool = d ? d->tool : NULL;
    return d ? d->server : NULL;
}
