/* tests/unit/test_core.c - errors, buffers, parsing helpers, allocation failures. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eddy/agent.h"
#include "eddy/bgq.h"
#include "eddy/buf.h"
#include "eddy/error.h"
#include "eddy/json.h"
#include "eddy/prompt.h"

static void test_error_table(void **state)
{
    eddy_err e;
    (void)state;
    assert_string_equal(eddy_err_name(EDDY_ENOMEM), "EDDY_ENOMEM");
    assert_string_equal(eddy_strerror(EDDY_ETIMEDOUT), "timed out");
    assert_string_equal(eddy_err_name(12345), "EDDY_EUNKNOWN");
    assert_int_equal(eddy_err_set(&e, EDDY_EPARSE, "line %d", 7), EDDY_EPARSE);
    assert_string_equal(e.msg, "line 7");
    eddy_err_prefix(&e, "%s: ", "f.yaml");
    assert_string_equal(e.msg, "f.yaml: line 7");
    assert_int_equal(eddy_err_set(NULL, EDDY_EIO, "x"), EDDY_EIO);
}

static void test_buf(void **state)
{
    eddy_buf b;
    char *s;
    (void)state;
    eddy_buf_init(&b);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(eddy_buf_printf(&b, "%d,", i), 0);
    assert_int_equal(strncmp(b.data, "0,1,2,", 6), 0);
    s = eddy_buf_take(&b);
    assert_non_null(s);
    assert_null(b.data);
    assert_int_equal(strlen(s), 3890);
    eddy_free(s);
    s = eddy_buf_take(&b); /* empty buffer gives "" */
    assert_string_equal(s, "");
    eddy_free(s);
}

static void test_buf_oom_is_sticky(void **state)
{
    eddy_buf b;
    (void)state;
    eddy_buf_init(&b);
    eddy_alloc_fail_after(0);
    assert_int_equal(eddy_buf_puts(&b, "abc"), EDDY_ENOMEM);
    eddy_alloc_fail_after(-1);
    assert_int_equal(eddy_buf_puts(&b, "def"), EDDY_ENOMEM);
    assert_null(eddy_buf_take(&b));
}

static void test_durations(void **state)
{
    int64_t ms;
    (void)state;
    assert_int_equal(eddy_parse_duration_ms("250ms", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(eddy_parse_duration_ms("2s", &ms), 0);
    assert_int_equal(ms, 2000);
    assert_int_equal(eddy_parse_duration_ms("1.5m", &ms), 0);
    assert_int_equal(ms, 90000);
    assert_int_equal(eddy_parse_duration_ms("30d", &ms), 0);
    assert_int_equal(ms, 30LL * 86400000);
    assert_int_equal(eddy_parse_duration_ms("3", &ms), 0);
    assert_int_equal(ms, 3000);
    assert_int_equal(eddy_parse_duration_ms("3 parsecs", &ms), EDDY_EINVAL);
    assert_int_equal(eddy_parse_duration_ms("-1s", &ms), EDDY_EINVAL);
    assert_int_equal(eddy_parse_duration_ms("", &ms), EDDY_EINVAL);
}

static void test_interpolate(void **state)
{
    char *out;
    eddy_err e;
    (void)state;
    setenv("EDDY_T_A", "alpha", 1);
    unsetenv("EDDY_T_NONE");
    setenv("EDDY_T_EMPTY", "", 1);
    assert_int_equal(eddy_interpolate("x ${EDDY_T_A} $$y", &out, &e), 0);
    assert_string_equal(out, "x alpha $y");
    eddy_free(out);
    assert_int_equal(eddy_interpolate("${EDDY_T_NONE:-dflt}/${EDDY_T_EMPTY:-e}", &out, &e), 0);
    assert_string_equal(out, "dflt/e");
    eddy_free(out);
    assert_int_equal(eddy_interpolate("${EDDY_T_NONE}", &out, &e), EDDY_EINVAL);
    assert_non_null(strstr(e.msg, "EDDY_T_NONE is not set"));
    assert_int_equal(eddy_interpolate("${EDDY_T_A", &out, &e), EDDY_EINVAL);
}

static void test_json_helpers(void **state)
{
    json_t *v = json_loads("{\"a\":{\"b\":[10,{\"c\":\"x\"}]},\"n\":42,\"f\":1.5}", 0, NULL);
    char *s;
    (void)state;
    assert_int_equal(json_integer_value(eddy_json_path(v, "a.b.0")), 10);
    assert_string_equal(json_string_value(eddy_json_path(v, "a.b.1.c")), "x");
    assert_null(eddy_json_path(v, "a.zz"));
    assert_null(eddy_json_path(v, "n.x"));
    s = eddy_json_key_string(json_object_get(v, "n"));
    assert_string_equal(s, "42");
    eddy_free(s);
    assert_null(eddy_json_key_string(NULL)); /* regression: crashed on a missing id */
    assert_null(eddy_json_key_string(json_object_get(v, "a")));
    s = eddy_json_key_string(json_object_get(v, "f"));
    assert_string_equal(s, "1.5");
    eddy_free(s);
    json_decref(v);
    /* regression: reals were keys as %.17g, 71.1 as "71.099999999999994" */
    v = json_pack("[f, f, I]", 71.1, 1.0, (json_int_t)INT64_MIN);
    s = eddy_json_key_string(json_array_get(v, 0));
    assert_string_equal(s, "71.1");
    eddy_free(s);
    s = eddy_json_key_string(json_array_get(v, 1));
    assert_string_equal(s, "1.0");
    eddy_free(s);
    s = eddy_json_key_string(json_array_get(v, 2));
    assert_string_equal(s, "-9223372036854775808");
    eddy_free(s);
    json_decref(v);
}

/* Numbers render as written (regression: {{event.temp}} gave
 * 71.099999999999994); a value that cannot be JSON is an error naming it. */
static void test_template_numbers(void **state)
{
    json_t *ctx = json_loads("{\"event\":{\"temp\":71.1,\"one\":1.0,\"z\":-0.0,\"big\":1e300,"
                             "\"n\":9007199254740993,\"o\":{\"a\":[0.1,2]}}}",
                             0, NULL);
    eddy_template *t;
    eddy_err e;
    char *out;
    (void)state;
    assert_non_null(ctx);
    assert_int_equal(eddy_template_new("{{event.temp}} {{event.one}} {{event.z}} {{event.big}} "
                                       "{{event.n}} {{event.o}} {{event.o.a.0}}",
                                       "t.md", 1, 1, &t, &e),
                     0);
    assert_int_equal(eddy_template_render(t, ctx, &out, &e), 0);
    assert_string_equal(out, "71.1 1.0 -0.0 1e+300 9007199254740993 {\"a\":[0.1,2]} 0.1");
    eddy_free(out);
    json_object_set_new(json_object_get(json_object_get(ctx, "event"), "o"), "bad",
                        json_string_nocheck("\xff"));
    assert_int_equal(eddy_template_render(t, ctx, &out, &e), EDDY_ETEMPLATE);
    assert_null(out);
    assert_non_null(strstr(e.msg, "t.md:1:"));
    assert_non_null(strstr(e.msg, "'event.o' cannot be written as JSON"));
    eddy_template_free(t);
    json_decref(ctx);
}

/* A prompt with invalid UTF-8 compiled, and its message was left out of the
 * model request at run time (a JSON string must be UTF-8): it is an error at
 * the first bad byte; columns count characters. */
static void test_template_invalid_utf8(void **state)
{
    eddy_template *t = NULL;
    eddy_err e;
    (void)state;
    assert_int_equal(
        eddy_template_new("Hello {{key}}\n  caf\xc3\xa9 \xe9t\xc3\xa9", "p.md", 1, 1, &t, &e),
        EDDY_ETEMPLATE);
    assert_null(t);
    assert_string_equal(e.msg, "p.md:2:8: invalid UTF-8 (byte 0xE9): a prompt is UTF-8 text");
    assert_int_equal(eddy_template_new("ab \xc3(", "job.yaml", 7, 11, &t, &e), EDDY_ETEMPLATE);
    assert_string_equal(e.msg, "job.yaml:7:14: invalid UTF-8 (byte 0xC3): a prompt is UTF-8 text");
    /* overlong forms and surrogates are not UTF-8 either */
    assert_int_equal(eddy_template_new("\xc0\xaf", "t", 1, 1, &t, &e), EDDY_ETEMPLATE);
    assert_int_equal(eddy_template_new("\xed\xa0\x80", "t", 1, 1, &t, &e), EDDY_ETEMPLATE);
    /* other errors after non-ASCII text are at the character too */
    assert_int_equal(eddy_template_new("\xc3\xa9\xc3\xa9 {{bad path}}", "t", 1, 1, &t, &e),
                     EDDY_ETEMPLATE);
    assert_non_null(strstr(e.msg, "t:1:4: '{{bad path}}' is not a variable"));
    assert_int_equal(eddy_template_new("\xf0\x9f\x99\x82 {{key}}", "t", 1, 1, &t, &e), 0);
    eddy_template_free(t);
}

static void test_levenshtein(void **state)
{
    (void)state;
    assert_int_equal(eddy_levenshtein("model", "modle"), 1);
    assert_int_equal(eddy_levenshtein("key", "kye"), 1);
    assert_int_equal(eddy_levenshtein("kitten", "sitting"), 3);
    assert_int_equal(eddy_levenshtein("prompt", "promt"), 1);
    assert_int_equal(eddy_levenshtein("", "abc"), 3);
}

/* Every allocation of compiling a template may fail: each failure gives
 * EDDY_ENOMEM and leaks nothing (checked under ASan/valgrind). */
static void test_template_alloc_failures(void **state)
{
    int ok = 0;
    (void)state;
    for (long n = 0; n < 200 && !ok; n++) {
        eddy_template *t = NULL;
        eddy_err e;
        int rc;
        eddy_alloc_fail_after(n);
        rc = eddy_template_new("Hello {{event.name}}, you are {{key}}{{memory.x?}}!", "t", 1, 1, &t,
                               &e);
        eddy_alloc_fail_after(-1);
        if (rc == 0) {
            ok = 1;
            assert_int_equal(eddy_template_nvars(t), 3);
        } else {
            assert_int_equal(rc, EDDY_ENOMEM);
            assert_null(t);
        }
        eddy_template_free(t);
    }
    assert_true(ok);
}

/* -- eddy_bgq ----------------------------------------------------------------- */

enum { BGQ_POSTERS = 3, BGQ_JOBS = 20000 };

typedef struct bgq_seen {
    long next[BGQ_POSTERS]; /* per poster: the job number expected next */
    long ran, batch, max_batch, flushes, disorder;
    pthread_mutex_t mu; /* guards flushes for the waiting test */
} bgq_seen;

typedef struct bgq_poster {
    eddy_bgq *q;
    int who;
} bgq_poster;

/* Jobs are pointers into the posters' arrays: poster*BGQ_JOBS + number. */
static long g_bgq_jobs[BGQ_POSTERS][BGQ_JOBS];

static void bgq_job(void *job, void *ctx)
{
    bgq_seen *s = ctx;
    long v = *(long *)job;
    int who = (int)(v / BGQ_JOBS);
    if (v % BGQ_JOBS != s->next[who])
        s->disorder++;
    s->next[who] = v % BGQ_JOBS + 1;
    s->ran++;
    if (++s->batch > s->max_batch)
        s->max_batch = s->batch;
}

static void bgq_flush(void *ctx)
{
    bgq_seen *s = ctx;
    assert_true(s->batch > 0); /* never an empty batch */
    s->batch = 0;
    pthread_mutex_lock(&s->mu);
    s->flushes++;
    pthread_mutex_unlock(&s->mu);
}

static void *bgq_post_all(void *arg)
{
    bgq_poster *p = arg;
    for (long i = 0; i < BGQ_JOBS; i++) {
        g_bgq_jobs[p->who][i] = p->who * (long)BGQ_JOBS + i;
        assert_int_equal(eddy_bgq_post(p->q, &g_bgq_jobs[p->who][i]), 0);
    }
    return NULL;
}

/* Posts from three threads: every job runs once, in each poster's order; no
 * batch is larger than max_jobs; freeing runs what is queued; a post after
 * that is refused. */
static void test_bgq_order_and_bounds(void **state)
{
    (void)state;
    for (int lim_case = 0; lim_case < 3; lim_case++) {
        bgq_seen s = {0};
        pthread_mutex_init(&s.mu, NULL);
        eddy_bgq_limits lims[] = {{8, 0, 0, "test-bgq"}, {512, 2, 1, NULL}, {0, 0, 0, NULL}};
        eddy_bgq *q;
        eddy_err err = {0};
        assert_int_equal(eddy_bgq_new(bgq_job, bgq_flush, &s, &lims[lim_case], &q, &err), 0);
        static bgq_poster p[BGQ_POSTERS];
        pthread_t t[BGQ_POSTERS];
        for (int i = 0; i < BGQ_POSTERS; i++) {
            p[i].q = q;
            p[i].who = i;
            assert_int_equal(pthread_create(&t[i], NULL, bgq_post_all, &p[i]), 0);
        }
        for (int i = 0; i < BGQ_POSTERS; i++)
            pthread_join(t[i], NULL);
        eddy_bgq_free(q);
        assert_int_equal(s.ran, (long)BGQ_POSTERS * BGQ_JOBS);
        assert_int_equal(s.disorder, 0);
        assert_int_equal(s.batch, 0); /* the last batch was flushed */
        assert_true(s.flushes >= 1);
        if (lims[lim_case].max_jobs)
            assert_true(s.max_batch <= lims[lim_case].max_jobs);
        pthread_mutex_destroy(&s.mu);
    }
}

/* Wait up to 5 s for the queue to have flushed N times; the flush count. */
static long bgq_wait_flushes(bgq_seen *s, long n)
{
    long f = 0;
    for (int i = 0; i < 5000; i++) {
        pthread_mutex_lock(&s->mu);
        f = s->flushes;
        pthread_mutex_unlock(&s->mu);
        if (f >= n)
            break;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    return f;
}

/* One job and nothing after it: the batch is flushed after its linger,
 * without waiting for more jobs or for the queue's end. */
static void test_bgq_lingers_then_flushes(void **state)
{
    (void)state;
    bgq_seen s = {0};
    pthread_mutex_init(&s.mu, NULL);
    eddy_bgq_limits lim = {1024, 50, 5, NULL};
    eddy_bgq *q;
    eddy_err err = {0};
    assert_int_equal(eddy_bgq_new(bgq_job, bgq_flush, &s, &lim, &q, &err), 0);
    for (int round = 1; round <= 3; round++) {
        g_bgq_jobs[0][round] = round;
        s.next[0] = round;
        assert_int_equal(eddy_bgq_post(q, &g_bgq_jobs[0][round]), 0);
        assert_int_equal(bgq_wait_flushes(&s, round), round);
    }
    eddy_bgq_free(q);
    assert_int_equal(s.ran, 3);
    assert_int_equal(s.flushes, 3);
    pthread_mutex_destroy(&s.mu);
}

/* The bounds hold while the thread lingers over a batch: max_age flushes a
 * batch whose linger is far longer (10 s), and a post that brings the open
 * batch and the queue to max_jobs wakes it. Each flush must come well before
 * the linger would end it. */
static void test_bgq_bounds_while_lingering(void **state)
{
    (void)state;
    for (int round = 0; round < 2; round++) {
        bgq_seen s = {0};
        pthread_mutex_init(&s.mu, NULL);
        eddy_bgq_limits lim = round == 0 ? (eddy_bgq_limits){0, 20, 10000, NULL}
                                         : (eddy_bgq_limits){10, 0, 10000, NULL};
        eddy_bgq *q;
        eddy_err err = {0};
        assert_int_equal(eddy_bgq_new(bgq_job, bgq_flush, &s, &lim, &q, &err), 0);
        g_bgq_jobs[0][0] = 0;
        assert_int_equal(eddy_bgq_post(q, &g_bgq_jobs[0][0]), 0);
        if (round == 1) { /* the thread takes it and lingers; then 9 more */
            nanosleep(&(struct timespec){0, 50000000}, NULL);
            for (long i = 1; i < 10; i++) {
                g_bgq_jobs[0][i] = i;
                assert_int_equal(eddy_bgq_post(q, &g_bgq_jobs[0][i]), 0);
            }
        }
        uint64_t t0 = eddy_now_ms();
        assert_int_equal(bgq_wait_flushes(&s, 1), 1);
        assert_true(eddy_now_ms() - t0 < 5000);
        pthread_mutex_lock(&s.mu);
        long ran = s.ran;
        pthread_mutex_unlock(&s.mu);
        assert_int_equal(ran, round == 0 ? 1 : 10);
        eddy_bgq_free(q);
        pthread_mutex_destroy(&s.mu);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_table),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_buf_oom_is_sticky),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_interpolate),
        cmocka_unit_test(test_json_helpers),
        cmocka_unit_test(test_levenshtein),
        cmocka_unit_test(test_template_alloc_failures),
        cmocka_unit_test(test_template_numbers),
        cmocka_unit_test(test_template_invalid_utf8),
        cmocka_unit_test(test_bgq_order_and_bounds),
        cmocka_unit_test(test_bgq_lingers_then_flushes),
        cmocka_unit_test(test_bgq_bounds_while_lingering),
    };
    eddy_alloc_install();
    return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
