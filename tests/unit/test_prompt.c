/* tests/unit/test_prompt.c - template compile and render. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "eddy/buf.h"
#include "eddy/prompt.h"

static void test_render(void **state)
{
    eddy_template *t;
    eddy_err e;
    char *out;
    json_t *ctx = json_loads("{\"event\":{\"text\":\"hi\",\"n\":3,\"o\":{\"a\":1}},\"key\":\"K7\","
                             "\"memory\":{}}",
                             0, NULL);
    (void)state;
    assert_int_equal(eddy_template_new("[{{key}}] {{ event.text }} n={{event.n}} o={{event.o}} "
                                       "m={{memory.x?}} {{{{literal",
                                       "p.md", 1, 1, &t, &e),
                     0);
    assert_int_equal(eddy_template_render(t, ctx, &out, &e), 0);
    assert_string_equal(out, "[K7] hi n=3 o={\"a\":1} m= {{literal");
    eddy_free(out);
    eddy_template_free(t);
    json_decref(ctx);
}

static void test_missing_variable_names_place(void **state)
{
    eddy_template *t;
    eddy_err e;
    char *out;
    json_t *ctx = json_loads("{\"event\":{}}", 0, NULL);
    (void)state;
    assert_int_equal(eddy_template_new("line one\n  then {{event.text}}", "p.md", 1, 1, &t, &e), 0);
    assert_int_equal(eddy_template_render(t, ctx, &out, &e), EDDY_ETEMPLATE);
    assert_non_null(strstr(e.msg, "p.md:2:8: template variable 'event.text' has no value"));
    eddy_template_free(t);
    json_decref(ctx);
}

static void test_bad_templates(void **state)
{
    eddy_template *t;
    eddy_err e;
    (void)state;
    assert_int_equal(eddy_template_new("a {{event.text", "job.yaml", 12, 9, &t, &e),
                     EDDY_ETEMPLATE);
    assert_non_null(strstr(e.msg, "job.yaml:12:11: unclosed '{{'"));
    assert_int_equal(eddy_template_new("{{ 1 + 2 }}", "x", 1, 1, &t, &e), EDDY_ETEMPLATE);
    assert_non_null(strstr(e.msg, "is not a variable"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_missing_variable_names_place),
        cmocka_unit_test(test_bad_templates),
    };
    eddy_alloc_install();
    return cmocka_run_group_tests_name("prompt", tests, NULL, NULL);
}
