/*
 * tools/http_policy.c - what eddy.http and the http_request tool may reach.
 *
 * Pure functions over a tool's allow list ([{host, port}], as the job
 * normalizes `http: {allow: [...]}`): host and port matching, the class of
 * an address curl is about to connect to, request header checks, and URL
 * text (templates, percent-encoding, the form shown in messages and spans).
 * Nothing here does I/O or keeps state; any thread.
 *
 * The address rule exists because an allowed name can resolve anywhere
 * (DNS rebinding, a redirect to an allowed name that points inside): an
 * address that is not an ordinary public one is refused unless the allow
 * list names that very address, or the request's host is `localhost` itself
 * (listed, or the host check would have refused it) and the address is a
 * loopback one.
 */
#include "http_int.h"

#include "eddy/buf.h"
#include "eddy/json.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* -- hosts ------------------------------------------------------------------- */

static int host_matches(const char *pat, const char *host)
{
    size_t pl, hl;
    if (pat[0] == '*' && pat[1] == '.') { /* *.example.com: subdomains only */
        pl = strlen(pat + 1);
        hl = strlen(host);
        return hl > pl && !strcasecmp(host + hl - pl, pat + 1);
    }
    return !strcasecmp(pat, host);
}

int eddy__http_host_allowed(const json_t *allow, const char *host, int port)
{
    size_t i;
    json_t *e;
    int named = 0;
    json_array_foreach((json_t *)allow, i, e)
    {
        const char *h = json_string_value(json_object_get(e, "host"));
        json_int_t p = json_integer_value(json_object_get(e, "port"));
        if (!h || !host_matches(h, host))
            continue;
        named = 1;
        if (p == 0 || p == port)
            return 1;
    }
    return named ? -1 : 0;
}

/* -- addresses --------------------------------------------------------------- */

static const char *v4_class(const unsigned char *a)
{
    if (a[0] == 127)
        return "loopback";
    if (a[0] == 10 || (a[0] == 172 && (a[1] & 0xf0) == 16) || (a[0] == 192 && a[1] == 168))
        return "private";
    if (a[0] == 169 && a[1] == 254)
        return "link-local";
    if (a[0] == 0)
        return "unspecified";
    if (a[0] == 100 && (a[1] & 0xc0) == 64)
        return "shared (CGNAT)";
    if ((a[0] & 0xf0) == 224)
        return "multicast";
    if ((a[0] & 0xf0) == 240) /* and the broadcast address */
        return "reserved";
    if ((a[0] == 192 && a[1] == 0 && a[2] == 0) || (a[0] == 198 && (a[1] & 0xfe) == 18))
        return "reserved"; /* IETF protocol assignments, benchmarking */
    return NULL;
}

/* The IPv4 address inside an IPv6 one that carries it (mapped ::ffff:a.b.c.d,
 * compatible ::a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002:AABB:CCDD::/16), or NULL. */
static const unsigned char *embedded_v4(const unsigned char *a)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char zero[12] = {0};
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    if (!memcmp(a, mapped, 12) || !memcmp(a, nat64, 12))
        return a + 12;
    if (!memcmp(a, zero, 12) && (a[12] | a[13] | a[14] | a[15]) && !(a[12] == 0 && a[13] == 0))
        return a + 12; /* ::a.b.c.d (not ::1 and the like) */
    if (a[0] == 0x20 && a[1] == 0x02)
        return a + 2;
    return NULL;
}

static const char *v6_class(const unsigned char *a)
{
    static const unsigned char zero[16] = {0};
    const unsigned char *v4;
    if (!memcmp(a, zero, 15) && a[15] == 1)
        return "loopback";
    if (!memcmp(a, zero, 16))
        return "unspecified";
    if ((v4 = embedded_v4(a)))
        return v4_class(v4) ? v4_class(v4) : NULL;
    if ((a[0] & 0xfe) == 0xfc)
        return "private";
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
        return "link-local";
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0)
        return "private"; /* site-local, deprecated */
    if (a[0] == 0xff)
        return "multicast";
    return NULL;
}

const char *eddy__http_addr_class(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return v4_class((const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr);
    if (sa->sa_family == AF_INET6)
        return v6_class((const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return "reserved"; /* not an internet address */
}

/* The address bytes of SA as IPv4 when it is one (or a mapped one): 4 or 16
 * bytes into OUT; returns the length. */
static size_t addr_bytes(const struct sockaddr *sa, unsigned char out[16])
{
    if (sa->sa_family == AF_INET) {
        memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 4;
    }
    if (sa->sa_family == AF_INET6) {
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        const unsigned char *a =
            (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (!memcmp(a, mapped, 12)) {
            memcpy(out, a + 12, 4);
            return 4;
        }
        memcpy(out, a, 16);
        return 16;
    }
    return 0;
}

/* Whether ALLOW names the address A (LEN bytes) literally with PORT. */
static int listed_literally(const json_t *allow, const unsigned char *a, size_t len, int port)
{
    size_t i;
    json_t *e;
    json_array_foreach((json_t *)allow, i, e)
    {
        const char *h = json_string_value(json_object_get(e, "host"));
        json_int_t p = json_integer_value(json_object_get(e, "port"));
        unsigned char b[16];
        if (!h || (p && p != port))
            continue;
        if (len == 4 && inet_pton(AF_INET, h, b) == 1 && !memcmp(a, b, 4))
            return 1;
        if (len == 16 && inet_pton(AF_INET6, h, b) == 1 && !memcmp(a, b, 16))
            return 1;
        if (len == 4 && inet_pton(AF_INET6, h, b) == 1) { /* [::ffff:10.0.0.1] listed */
            static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
            if (!memcmp(b, mapped, 12) && !memcmp(b + 12, a, 4))
                return 1;
        }
    }
    return 0;
}

int eddy__http_addr_allowed(const json_t *allow, const char *url_host, const struct sockaddr *sa,
                            int port, char *why, size_t n)
{
    const char *cls = eddy__http_addr_class(sa);
    unsigned char a[16];
    size_t len;
    char text[INET6_ADDRSTRLEN] = "?";
    if (!cls)
        return 1;
    len = addr_bytes(sa, a);
    if (len && listed_literally(allow, a, len, port))
        return 1;
    if (!strcmp(cls, "loopback") && url_host && !strcasecmp(url_host, "localhost"))
        return 1;
    if (len)
        inet_ntop(len == 4 ? AF_INET : AF_INET6, a, text, sizeof(text));
    snprintf(why, n, "%s, a%s %s address", text, strchr("aeiou", cls[0]) ? "n" : "", cls);
    return 0;
}

int eddy__http_addr_text_allowed(const json_t *allow, const char *url_host, const char *ip,
                                 int port, char *why, size_t n)
{
    struct sockaddr_in6 s6;
    struct sockaddr_in s4;
    memset(&s6, 0, sizeof(s6));
    memset(&s4, 0, sizeof(s4));
    if (ip && inet_pton(AF_INET, ip, &s4.sin_addr) == 1) {
        s4.sin_family = AF_INET;
        return eddy__http_addr_allowed(allow, url_host, (struct sockaddr *)&s4, port, why, n);
    }
    if (ip && inet_pton(AF_INET6, ip, &s6.sin6_addr) == 1) {
        s6.sin6_family = AF_INET6;
        return eddy__http_addr_allowed(allow, url_host, (struct sockaddr *)&s6, port, why, n);
    }
    snprintf(why, n, "'%s', not an address eddy can check", ip ? ip : "");
    return 0;
}

/* -- requests ---------------------------------------------------------------- */

const char *eddy__http_method(const char *method)
{
    static const char *const kMethods[] = {"GET",   "HEAD",   "POST",    "PUT",
                                           "PATCH", "DELETE", "OPTIONS", NULL};
    for (int i = 0; method && kMethods[i]; i++)
        if (!strcasecmp(method, kMethods[i]))
            return kMethods[i];
    return NULL;
}

int eddy__http_check_header(const char *name, const char *value, size_t vlen, eddy_err *err)
{
    /* what curl or eddy set, or what would let a request say something else
     * about its framing or its target than curl does */
    static const char *const kReserved[] = {
        "host",    "content-length", "transfer-encoding", "connection",       "te",
        "upgrade", "trailer",        "keep-alive",        "proxy-connection", NULL};
    size_t i;
    if (!name || !*name)
        return eddy_err_set(err, EDDY_EINVAL, "a header name must not be empty");
    for (i = 0; name[i]; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!(isalnum(c) || strchr("!#$%&'*+-.^_`|~", c)) || i >= 256)
            return eddy_err_set(err, EDDY_EINVAL,
                                "header name '%.64s' is not a token (letters, digits and "
                                "!#$%%&'*+-.^_`|~ only)",
                                name);
    }
    for (i = 0; kReserved[i]; i++)
        if (!strcasecmp(name, kReserved[i]))
            return eddy_err_set(err, EDDY_EINVAL, "header '%s' is set by eddy, not by a tool",
                                name);
    for (i = 0; i < vlen; i++)
        if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
            return eddy_err_set(err, EDDY_EINVAL,
                                "the value of header '%s' holds a %s: refused (it would start "
                                "another header)",
                                name, value[i] ? "line break" : "NUL byte");
    return 0;
}

int eddy__http_pct_encode(eddy_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int rc;
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            rc = eddy_buf_putc(b, (char)c);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            rc = eddy_buf_append(b, e, 3);
        }
        if (rc)
            return EDDY_ENOMEM;
    }
    return 0;
}

char *eddy__http_expand(const char *tmpl, json_t *args, eddy_err *err)
{
    eddy_buf b;
    const char *p = tmpl;
    eddy_buf_init(&b);
    while (*p) {
        const char *open = strchr(p, '{'), *close;
        char name[128], *text;
        json_t *v;
        if (!open) {
            eddy_buf_puts(&b, p);
            break;
        }
        eddy_buf_append(&b, p, (size_t)(open - p));
        if (!(close = strchr(open, '}')) || close - open - 1 <= 0 ||
            (size_t)(close - open - 1) >= sizeof(name)) {
            eddy_buf_free(&b);
            eddy_err_set(err, EDDY_EINVAL, "the URL template has a '{' without a '{name}'");
            return NULL;
        }
        memcpy(name, open + 1, (size_t)(close - open - 1));
        name[close - open - 1] = '\0';
        v = json_object_get(args, name);
        if (!v || json_is_null(v) || json_is_object(v) || json_is_array(v)) {
            eddy_buf_free(&b);
            eddy_err_set(err, EDDY_EINVAL, "parameter '%s' %s", name,
                         v && !json_is_null(v) ? "must be a string, number or boolean"
                                               : "is needed by the URL but was not given");
            return NULL;
        }
        text = json_is_string(v) ? NULL : eddy_json_key_string(v);
        if (json_is_string(v))
            eddy__http_pct_encode(&b, json_string_value(v), json_string_length(v));
        else if (text)
            eddy__http_pct_encode(&b, text, strlen(text));
        eddy_free(text);
        p = close + 1;
    }
    if (b.oom || (!b.data && eddy_buf_putc(&b, '\0'))) {
        eddy_buf_free(&b);
        eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        return NULL;
    }
    return eddy_buf_take(&b);
}

const char *eddy__http_safe_url(const char *url, char *out, size_t n)
{
    const char *s = strstr(url, "://"), *host, *at, *end, *q;
    size_t len;
    if (!s) {
        snprintf(out, n, "(a URL without a scheme)");
        return out;
    }
    host = s + 3;
    end = host + strcspn(host, "/?#");
    at = memchr(host, '@', (size_t)(end - host));
    q = end + strcspn(end, "?#");
    len = (size_t)(s + 3 - url);
    snprintf(out, n, "%.*s%.*s%.*s%s", (int)len, url, (int)(end - (at ? at + 1 : host)),
             at ? at + 1 : host, (int)(q - end), end, *q == '?' ? "?[query]" : "");
    return out;
}

json_t *eddy_http_allow_entry(const char *s, eddy_err *err)
{
    char host[256];
    const char *colon = NULL;
    size_t hl;
    long port = 0;
    json_t *e;
    if (*s == '[') { /* [v6]:port */
        const char *end = strchr(s, ']');
        if (!end || (end[1] && end[1] != ':')) {
            eddy_err_set(err, EDDY_EINVAL, "allow entry '%s': write an IPv6 address as [::1]:8080",
                         s);
            return NULL;
        }
        hl = (size_t)(end - s - 1);
        if (hl && hl < sizeof(host))
            memcpy(host, s + 1, hl);
        colon = end[1] ? end + 1 : NULL;
    } else {
        colon = strrchr(s, ':');
        hl = colon ? (size_t)(colon - s) : strlen(s);
        if (colon && memchr(s, ':', hl)) {
            eddy_err_set(err, EDDY_EINVAL, "allow entry '%s': write an IPv6 address as [::1]:8080",
                         s);
            return NULL;
        }
        if (hl && hl < sizeof(host))
            memcpy(host, s, hl);
    }
    if (!hl || hl >= sizeof(host)) {
        eddy_err_set(err, EDDY_EINVAL, "allow entry '%s' has no host (or one of 256+ characters)",
                     s);
        return NULL;
    }
    host[hl] = '\0';
    for (size_t i = 0; i < hl; i++) {
        unsigned char ch = (unsigned char)host[i];
        if (!(isalnum(ch) || ch == '.' || ch == '-' || ch == '_' || (*s == '[' && ch == ':') ||
              (ch == '*' && i == 0 && host[1] == '.'))) {
            eddy_err_set(err, EDDY_EINVAL,
                         "allow entry '%s': '%c' cannot be in a host name ('*' only as "
                         "'*.example.com')",
                         s, ch);
            return NULL;
        }
        host[i] = (char)tolower(ch);
    }
    if (colon) {
        char *end;
        port = strtol(colon + 1, &end, 10);
        if (!colon[1] || *end || port < 1 || port > 65535) {
            eddy_err_set(err, EDDY_EINVAL, "allow entry '%s': the port must be 1 to 65535", s);
            return NULL;
        }
    }
    if (!(e = json_pack("{s:s, s:I}", "host", host, "port", (json_int_t)port)))
        eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    return e;
}
