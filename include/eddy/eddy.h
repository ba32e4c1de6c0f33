/*
 * include/eddy/eddy.h - umbrella header: the whole public C API of eddy.
 */
#ifndef EDDY_EDDY_H
#define EDDY_EDDY_H

#include "eddy/agent.h"
#include "eddy/bgq.h"
#include "eddy/buf.h"
#include "eddy/connector.h"
#include "eddy/error.h"
#include "eddy/fluss.h"
#include "eddy/json.h"
#include "eddy/jschema.h"
#include "eddy/llm.h"
#include "eddy/log.h"
#include "eddy/mcp.h"
#include "eddy/memory.h"
#include "eddy/prompt.h"
#include "eddy/runtime.h"
#include "eddy/state.h"
#include "eddy/tools.h"
#include "eddy/trace.h"
#include "eddy/version.h"

#endif
