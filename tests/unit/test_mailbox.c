/* tests/unit/test_mailbox.c - per-key ordering with interleaved keys. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "eddy/runtime.h"

typedef struct log {
    char started[64][16];
    int n;
    int running_per_key[4];
} log_t;

static void on_start(const char *key, void *item, void *ud)
{
    log_t *l = ud;
    int k = key[0] - 'A';
    assert_int_equal(l->running_per_key[k], 0); /* never two runs of one key */
    l->running_per_key[k] = 1;
    snprintf(l->started[l->n++], 16, "%s", (const char *)item);
}

static void finish(eddy_mailboxes *mb, log_t *l, const char *key)
{
    l->running_per_key[key[0] - 'A'] = 0;
    eddy_mailbox_done(mb, key);
}

static void test_interleaved_keys(void **state)
{
    static char items[][8] = {"A1", "B1", "A2", "C1", "B2", "A3", "C2"};
    eddy_mailboxes *mb;
    log_t l;
    (void)state;
    memset(&l, 0, sizeof(l));
    assert_int_equal(eddy_mailboxes_new(on_start, &l, &mb, NULL), 0);
    for (size_t i = 0; i < 7; i++) {
        char key[2] = {items[i][0], 0};
        assert_int_equal(eddy_mailbox_push(mb, key, items[i], NULL), 0);
    }
    assert_int_equal(l.n, 0); /* nothing starts inside push */
    eddy_mailboxes_dispatch(mb);
    /* one per key, in order of first arrival */
    assert_int_equal(l.n, 3);
    assert_string_equal(l.started[0], "A1");
    assert_string_equal(l.started[1], "B1");
    assert_string_equal(l.started[2], "C1");
    assert_int_equal(eddy_mailboxes_running(mb), 3);
    assert_int_equal(eddy_mailboxes_pending(mb), 7);
    eddy_mailboxes_dispatch(mb); /* busy keys do not start again */
    assert_int_equal(l.n, 3);
    finish(mb, &l, "B");
    finish(mb, &l, "A");
    eddy_mailboxes_dispatch(mb);
    assert_int_equal(l.n, 5);
    assert_string_equal(l.started[3], "B2");
    assert_string_equal(l.started[4], "A2");
    finish(mb, &l, "A");
    finish(mb, &l, "C");
    finish(mb, &l, "B");
    eddy_mailboxes_dispatch(mb);
    assert_string_equal(l.started[5], "A3");
    assert_string_equal(l.started[6], "C2");
    finish(mb, &l, "A");
    finish(mb, &l, "C");
    assert_int_equal(eddy_mailboxes_pending(mb), 0);
    assert_int_equal(eddy_mailboxes_running(mb), 0);
    eddy_mailboxes_free(mb, NULL);
}

static void test_many_keys_grow(void **state)
{
    eddy_mailboxes *mb;
    log_t l;
    char key[32];
    static char item[] = "x";
    (void)state;
    memset(&l, 0, sizeof(l));
    assert_int_equal(eddy_mailboxes_new(on_start, &l, &mb, NULL), 0);
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "D%d", i);
        assert_int_equal(eddy_mailbox_push(mb, key, item, NULL), 0);
        assert_int_equal(eddy_mailbox_push(mb, key, item, NULL), 0);
    }
    assert_int_equal(eddy_mailboxes_pending(mb), 10000);
    eddy_mailboxes_free(mb, NULL); /* queued items are released */
}

static void test_keygroup_stable(void **state)
{
    (void)state;
    assert_int_equal(eddy_keygroup("customer-1", 128), eddy_keygroup("customer-1", 128));
    assert_true(eddy_keygroup("anything", 128) < 128);
    assert_true(eddy_keygroup("anything", 1) == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interleaved_keys),
        cmocka_unit_test(test_many_keys_grow),
        cmocka_unit_test(test_keygroup_stable),
    };
    return cmocka_run_group_tests_name("mailbox", tests, NULL, NULL);
}
