/*
 * tools/http_int.h - private interface of eddy.http (http.c), its policy
 * (http_policy.c) and the built-in tools that use it (builtin.c).
 *
 * A policy says what one tool may reach: an allow list of {host, port}
 * (port 0: any port; host exact, "*.suffix" or an IPv4/IPv6 literal), the
 * number of redirects followed, the response cap and the timeout. Every URL
 * (the first and each redirect) is checked against it before it is
 * requested, and every address curl is about to connect to (or reuses a
 * connection to) is checked again: loopback, private, link-local and other
 * special addresses are refused unless the allow list names the address
 * literally (or the URL's host is `localhost`, listed, for loopback).
 */
#ifndef EDDY_HTTP_INT_H
#define EDDY_HTTP_INT_H

#include "eddy/tools.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define EDDY_HTTP_DEFAULT_REDIRECTS 5
#define EDDY_HTTP_DEFAULT_MAX_RESPONSE (10LL << 20)
#define EDDY_HTTP_DEFAULT_TIMEOUT_MS 30000LL
/* Response headers kept per response (bytes of header lines). */
#define EDDY_HTTP_MAX_HEADER_BYTES (64 * 1024)

/* What one tool's requests may do. Strings and ALLOW are borrowed from the
 * tool (they live as long as it). */
typedef struct eddy_http_policy {
    const char *tool;  /* the tool's name, for messages */
    const char *where; /* the list's name in messages: "tool 'x''s http.allow" */
    json_t *allow;     /* [{host, port}], borrowed; NULL: nothing is allowed */
    int max_redirects;
    int64_t max_response;
    int64_t timeout_ms;
} eddy_http_policy;

/* One request to start. All borrowed for the eddy__http_start call. */
typedef struct eddy_http_spec {
    const char *method; /* checked: GET HEAD POST PUT PATCH DELETE OPTIONS */
    const char *url;
    json_t *headers;  /* object name -> string, or NULL (checked) */
    const char *body; /* or NULL */
    size_t body_len;
    int json_body;      /* BODY is JSON: Content-Type: application/json unless given */
    int64_t timeout_ms; /* 0: the policy's; capped by it */
    int tool_result;    /* answer {status, json|body} (a tool's result) rather than
                         * {status, headers, body, json} (eddy.http in Lua) */
} eddy_http_spec;

/* The http module's state on one host (opaque outside http.c). */
typedef struct eddy_http_state eddy_http_state;

/* Start SPEC under POLICY on S's curl multi; W is answered once, later, from
 * the loop (with the response, or a message naming the URL's host, never its
 * query). A request refused before anything is sent (a bad method, URL or
 * header, a host off the allow list) returns the error here and W is never
 * answered. Loop thread. */
int eddy__http_start(eddy_http_state *s, const eddy_http_policy *policy, const eddy_http_spec *spec,
                     eddy_tool_wait *w, eddy_err *err);

/* -- policy (http_policy.c) ------------------------------------------------ */

/* Whether HOST (lowercase, no brackets) and PORT match one entry of ALLOW.
 * Returns 1 when they do, 0 when no entry names the host, -1 when the host
 * is listed but never with PORT. */
int eddy__http_host_allowed(const json_t *allow, const char *host, int port);

/* Classify the address SA: NULL for an ordinary public address, else what
 * it is ("loopback", "private", "link-local", "unspecified", "multicast",
 * "shared (CGNAT)", "reserved", "IPv4-mapped loopback" ...). */
const char *eddy__http_addr_class(const struct sockaddr *sa);

/* Whether a connection to SA (port PORT) for a request to URL_HOST may be
 * made under ALLOW. Returns 1, or 0 with WHY (size N) saying why not:
 * "127.0.0.1, a loopback address". */
int eddy__http_addr_allowed(const json_t *allow, const char *url_host, const struct sockaddr *sa,
                            int port, char *why, size_t n);
/* eddy__http_addr_allowed for the text form of an address ("10.0.0.1",
 * "::1"); an unparsable text is refused. */
int eddy__http_addr_text_allowed(const json_t *allow, const char *url_host, const char *ip,
                                 int port, char *why, size_t n);

/* Check a request header NAME: VALUE: a token name that is not one eddy sets
 * itself (Host, Content-Length, Transfer-Encoding, Connection ...), a value
 * without CR, LF or NUL. Returns 0 or EDDY_EINVAL with ERR. */
int eddy__http_check_header(const char *name, const char *value, size_t vlen, eddy_err *err);

/* Whether METHOD is one eddy.http sends; the canonical upper-case form or NULL. */
const char *eddy__http_method(const char *method);

/* Append S (N bytes) to B percent-encoded as RFC 3986 unreserved characters
 * allow (everything else %XX). Returns 0 or EDDY_ENOMEM. */
struct eddy_buf;
int eddy__http_pct_encode(struct eddy_buf *b, const char *s, size_t n);

/* Expand TEMPLATE ("https://x/orders/{id}") with ARGS (an object): each
 * {name} becomes the percent-encoded text of ARGS.name (strings as they are,
 * numbers and booleans as JSON writes them). A missing or non-scalar value
 * is an error. Returns a new string (eddy_free) or NULL with ERR. */
char *eddy__http_expand(const char *tmpl, json_t *args, eddy_err *err);

/* URL text safe to show: scheme://host[:port]/path, without user info, query
 * and fragment ("?..." replaced by "?[query]"). Into OUT (size N); OUT. */
const char *eddy__http_safe_url(const char *url, char *out, size_t n);

/* The http module (eddy.http.*, tool kind http_request), registered by
 * eddy_tools_register_builtins (builtin.c). */
const eddy_tools_module *eddy__http_module(void);
/* The http_request tool kind (builtin.c): its factory and its body, which
 * gets the http module's state. */
int eddy__http_tool_new(const json_t *modcfg, const json_t *cfg, eddy_native_tool *t,
                        eddy_err *err);

#endif
