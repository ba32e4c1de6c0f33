/*
 * include/eddy/buf.h - allocation family, growable buffer, small utilities.
 *
 * All allocations of eddy and of the libraries it hands an allocator to
 * (jansson, libuv, curl, Lua) go through eddy_malloc/eddy_realloc/eddy_free so
 * tests can count them and fail the n-th on purpose.
 */
#ifndef EDDY_BUF_H
#define EDDY_BUF_H

#include <stddef.h>
#include <stdint.h>

void *eddy_malloc(size_t n);
void *eddy_calloc(size_t n, size_t size);
void *eddy_realloc(void *p, size_t n);
void eddy_free(void *p);
/* Copy of S (NULL when S is NULL or on failure); caller frees. */
char *eddy_strdup(const char *s);
/* A copy of exactly the first N bytes of S (which must hold them: not
 * strndup, it does not stop at a NUL), NUL-terminated. */
char *eddy_strndup(const char *s, size_t n);
/* Formatted new string; NULL on failure. Caller frees. */
char *eddy_aprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Install the eddy allocator into jansson, libuv and curl. Call once at start,
 * before any of them allocates. */
void eddy_alloc_install(void);

/* Give this thread's freed memory back to the system where the allocator
 * keeps it (mimalloc: mi_collect); nothing with glibc. Any thread; costs
 * about as much as a walk of the thread's heap pages (workers call it once
 * a second). */
void eddy_alloc_collect(void);

/* Test hook: fail the allocation after N more succeed (-1 = never). */
void eddy_alloc_fail_after(long n);
/* Give this thread's eddy_malloc family BYTES to allocate (counted, not net
 * of frees) until eddy_alloc_budget_end; past it they return NULL. For
 * bounding what a library builds on a caller's behalf (jansson's tree while
 * a tool decodes JSON). _end returns whether the budget was exceeded. */
void eddy_alloc_budget_begin(long long bytes);
int eddy_alloc_budget_end(void);

/* Length of the UTF-8 sequence at S (N bytes available), or 0 when none
 * starts there (no overlong forms, surrogates or code points above
 * U+10FFFF). */
size_t eddy_utf8_seq_len(const char *s, size_t n);
/* Offset of the first byte of S that is not part of valid UTF-8, or N. */
size_t eddy_utf8_invalid(const char *s, size_t n);
/* The longest prefix of S (N bytes) of at most MAX bytes that does not end
 * inside a UTF-8 sequence. */
size_t eddy_utf8_cut(const char *s, size_t n, size_t max);

/* The earliest of the N strings SECRETS (empty ones count for nothing) in
 * T[FROM..LEN), and at that place the longest (a secret may start another):
 * its start in *AT and its end returned; 0 when none is there. For the
 * redaction of secrets (tool messages, the trace store). Any thread. */
size_t eddy_secret_find(const char *const *secrets, size_t n, const char *t, size_t len,
                        size_t from, size_t *at);

/* Growable byte buffer, always NUL-terminated when len > 0 or after any append. */
typedef struct eddy_buf {
    char *data;
    size_t len;
    size_t cap;
    int oom; /* sticky: an append failed; the content is incomplete */
} eddy_buf;

void eddy_buf_init(eddy_buf *b);
void eddy_buf_free(eddy_buf *b);
void eddy_buf_reset(eddy_buf *b);
int eddy_buf_reserve(eddy_buf *b, size_t extra);
int eddy_buf_append(eddy_buf *b, const void *data, size_t n);
int eddy_buf_puts(eddy_buf *b, const char *s);
int eddy_buf_putc(eddy_buf *b, char c);
int eddy_buf_printf(eddy_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hand the buffer's string to the caller (NUL-terminated, "" when empty);
 * the buffer is reset. NULL on failure. */
char *eddy_buf_take(eddy_buf *b);

/* Monotonic milliseconds and wall-clock nanoseconds since the epoch. */
uint64_t eddy_now_ms(void);
uint64_t eddy_wall_ns(void);
struct timespec;
/* *TS := MS milliseconds from now on CLOCK_MONOTONIC (for a condition
 * variable made with pthread_condattr_setclock(CLOCK_MONOTONIC)). */
void eddy_deadline_in(struct timespec *ts, uint64_t ms);

/* 64-bit FNV-1a of N bytes; stable across runs and machines. */
uint64_t eddy_hash64(const void *data, size_t n);

/* Random bytes from the OS into OUT (falls back to a seeded PRNG). */
void eddy_random_bytes(void *out, size_t n);
/* Uniform double in [0, 1). */
double eddy_random_unit(void);

/* A duration as written in job files ("250ms", "2s", "1.5m", "2h", "30d", or
 * a bare number of seconds) into milliseconds, unbounded and possibly
 * negative or infinite (the caller checks the range). Returns 0 or -1. */
int eddy_parse_duration(const char *s, double *ms);
/* The same, as a whole number of milliseconds in [0, 2^63): returns 0 or
 * EDDY_EINVAL (negative, out of range, or not a duration). */
int eddy_parse_duration_ms(const char *s, int64_t *out_ms);

/* Strict integer parse of the whole string; returns 0 or EDDY_EINVAL. */
int eddy_parse_i64(const char *s, int64_t *out);

/* Read a whole file into a new NUL-terminated string; *LEN gets its length.
 * Returns 0, EDDY_ENOENT, EDDY_EIO or EDDY_ENOMEM with ERR set. */
struct eddy_err;
int eddy_read_file(const char *path, char **out, size_t *len, struct eddy_err *err);

/* Create the folders above the file PATH ("a/b/c.db" -> a, a/b) as needed.
 * Returns 0 or EDDY_EIO with ERR naming the folder. */
int eddy_mkdirs_for(const char *path, struct eddy_err *err);

/* Edit distance between A and B, an adjacent swap counting as one edit
 * (for "did you mean"). */
size_t eddy_levenshtein(const char *a, const char *b);

#endif
