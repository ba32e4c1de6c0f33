/*
 * trace/dash_int.h - the dashboard's pieces that trace/http.c serves: the
 * page's static assets (embedded at build time from trace/assets/ by
 * trace/assets/embed.sh into BUILD/gen/dash_assets.c) and the live tail
 * (/api/tail, server-sent events). Private to the trace module.
 */
#ifndef EDDY_TRACE_DASH_INT_H
#define EDDY_TRACE_DASH_INT_H

#include <microhttpd.h>

#include "eddy/trace.h"
#include <stddef.h>

typedef struct eddy__dash_asset {
    const char *name; /* file name under trace/assets/ ("app.js") */
    const unsigned char *data;
    size_t len;
} eddy__dash_asset;

/* Every asset, then one with name NULL (generated). */
extern const eddy__dash_asset eddy__dash_assets[];

/* The asset URL names ("/" is index.html, "/app.js" ...), with its Content-Type
 * in *TYPE; NULL when URL names none. */
const eddy__dash_asset *eddy__dash_find(const char *url, const char **type);

/* The tail's state shared by its clients: the store and a stop flag. */
typedef struct eddy__dash_tail eddy__dash_tail;

enum { EDDY__DASH_TAIL_CLIENTS = 16 };

/* New state for the store at PATH (borrowed: outlives it); NULL when out of memory. */
eddy__dash_tail *eddy__dash_tail_new(const char *path);
/* Make every open stream end within ~50 ms; call before MHD_stop_daemon. */
void eddy__dash_tail_stop(eddy__dash_tail *t);
/* Free, once no stream is open (after MHD_stop_daemon). NULL-safe. */
void eddy__dash_tail_free(eddy__dash_tail *t);
/* A streaming response of the runs stored after LAST_ID (a decimal row id,
 * the client's Last-Event-ID or ?after; NULL or invalid: from now on) that
 * F selects (its agent, key, event_id, status, model, tool and search, copied;
 * NULL: every run). Its callback blocks between polls, so the daemon must run
 * a thread per connection. NULL with *STATUS (503: too many clients, 500: no
 * memory). */
struct MHD_Response *eddy__dash_tail_response(eddy__dash_tail *t, const char *last_id,
                                              const eddy_trace_filter *f, unsigned *status);

#endif
