/*
 * agents/run_int.h - what the run executor shares with agents/mcp_tools.c.
 * No other module includes this.
 */
#ifndef EDDY_RUN_INT_H
#define EDDY_RUN_INT_H

#include "eddy/agent.h"
#include "eddy/mcp.h"

/* How many tools of ENV's MCP catalog the entry REF (mcp_server set) names
 * now (0 without a catalog). */
size_t eddy__mcp_tools_count(const eddy_mcp_catalog *cat, const eddy_tool_ref *ref);
/* Add those tools to ENV->tools and append them to TOOLS (holding *NTOOLS,
 * room for CAP); a tool whose name the agent has already is left out with a
 * warning (a server's list must not stop a worker). Returns 0 or
 * EDDY_ENOMEM. Loop thread. */
int eddy__mcp_tools_add(const eddy_agent_def *def, const eddy_agent_env *env,
                        const eddy_tool_ref *ref, eddy_tool **tools, size_t *ntools, size_t cap,
                        eddy_err *err);
/* The MCP server of tool T (and in *TOOL the server's name for it), or NULL
 * when T is not an MCP tool. Borrowed from T. */
const char *eddy__mcp_tool_server(const eddy_tool *t, const char **tool);

#endif
