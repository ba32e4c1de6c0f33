/*
 * mcp/probe.c - what `eddy check` says about a job's MCP servers: start a
 * manager, give each server until the timeout to list its tools, report,
 * stop. Blocks the calling thread; the manager does the work on its own.
 */
#include "mcp_int.h"

#include <string.h>

int eddy_mcp_probe(const eddy_mcp_config *cfg, int64_t timeout_ms, json_t **report, eddy_err *err)
{
    eddy_mcp *m = NULL;
    eddy_mcp_catalog *cat = NULL;
    json_t *out = NULL;
    int rc;

    *report = NULL;
    if ((rc = eddy_mcp_new(cfg, &m, err)))
        goto out;
    m->quiet = 1;
    if ((rc = eddy_mcp_start(m, err)))
        goto out;
    eddy_mcp_wait_ready(m, timeout_ms);
    cat = eddy_mcp_catalog_get(m);
    out = json_object();
    if (!out) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < eddy_mcp_catalog_servers(cat); i++) {
        eddy_mcp_server_info si;
        json_t *o, *tools;
        eddy_mcp_catalog_server(cat, i, &si);
        o = json_pack("{s:s, s:b}", "transport", si.transport, "reachable", si.up);
        tools = json_array();
        if (!o || !tools || json_object_set_new(out, si.name, o)) {
            json_decref(tools);
            rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
            goto out;
        }
        if (si.up) {
            for (size_t k = 0; k < eddy_mcp_catalog_count(cat); k++) {
                const eddy_mcp_tool *t = eddy_mcp_catalog_tool(cat, k);
                if (!strcmp(t->server, si.name))
                    json_array_append_new(tools, json_string(t->name));
            }
            json_object_set_new(o, "tools", tools);
        } else {
            json_decref(tools);
            json_object_set_new(
                o, "error", json_string(si.error ? si.error : "no answer within the probe's time"));
        }
    }
    *report = out;
    out = NULL;
out:
    json_decref(out);
    eddy_mcp_catalog_release(cat);
    eddy_mcp_free(m);
    return rc;
}
