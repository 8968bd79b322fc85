/* Stop-string matcher (src/engine/stop.c): stop strings split across 2 and 3
 * feeds, at the very start, overlapping prefixes, multi-byte UTF-8 stop
 * strings split inside a character, no text lost to a hold-back (flush),
 * several stop strings, validation, and a randomised comparison with a
 * direct search over the whole text for every way of cutting it into feeds. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/stop.h"
#include "testutil.h"

static stop_matcher *make(const char *const *stops, size_t n)
{
    stop_matcher *m;
    v4_err err = {{0}};
    if (stop_init(&m, stops, n, &err))
        fail_msg("stop_init: %s", err.msg);
    return m;
}

/* Feeds the pieces in order and then flushes (unless a stop string
 * completed); returns the concatenated output in out (NUL-terminated), the
 * index of the feed that returned 1 (-1 for none) in *stop_at. */
static void run(stop_matcher *m, const char *const *pieces, size_t n, char *out, int *stop_at)
{
    char emit[4096];
    size_t len = 0;
    *stop_at = -1;
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        int rc = stop_feed(m, pieces[i], strlen(pieces[i]), emit, sizeof emit, &k);
        assert_true(rc == 0 || rc == 1);
        memcpy(out + len, emit, k);
        len += k;
        if (rc == 1 && *stop_at < 0)
            *stop_at = (int)i;
    }
    if (*stop_at < 0)
        len += stop_flush(m, out + len, STOP_HOLD_MAX);
    out[len] = 0;
}

static void expect(const char *const *stops, size_t ns, const char *const *pieces, size_t np, const char *want,
                   int want_stop_at, int want_which)
{
    stop_matcher *m = make(stops, ns);
    char out[8192];
    int at;
    run(m, pieces, np, out, &at);
    if (strcmp(out, want) != 0)
        fail_msg("output \"%s\", expected \"%s\"", out, want);
    assert_int_equal(at, want_stop_at);
    assert_int_equal(stop_matched(m), want_which);
    stop_free(m);
}

static void test_split_feeds(void **state)
{
    (void)state;
    const char *stop[] = {"STOP"};
    /* one feed */
    expect(stop, 1, (const char *[]){"hello STOP world"}, 1, "hello ", 0, 0);
    /* split across 2 feeds */
    expect(stop, 1, (const char *[]){"hello ST", "OP world"}, 2, "hello ", 1, 0);
    /* split across 3 feeds */
    expect(stop, 1, (const char *[]){"ab S", "TO", "P!"}, 3, "ab ", 2, 0);
    /* byte by byte */
    expect(stop, 1, (const char *[]){"x", "S", "T", "O", "P", "y"}, 6, "x", 4, 0);
    /* what is emitted when: the held part comes out once it cannot match */
    stop_matcher *m = make(stop, 1);
    char emit[64];
    size_t k;
    assert_int_equal(stop_feed(m, "xx ST", 5, emit, sizeof emit, &k), 0);
    assert_int_equal(k, 3);
    assert_memory_equal(emit, "xx ", 3);
    assert_int_equal(stop_feed(m, "AR", 2, emit, sizeof emit, &k), 0);
    assert_int_equal(k, 4);
    assert_memory_equal(emit, "STAR", 4);
    assert_int_equal(stop_feed(m, "", 0, emit, sizeof emit, &k), 0);
    assert_int_equal(k, 0);
    assert_int_equal(stop_matched(m), -1);
    stop_free(m);
}

static void test_at_start(void **state)
{
    (void)state;
    const char *stop[] = {"STOP"};
    expect(stop, 1, (const char *[]){"STOP and more"}, 1, "", 0, 0);
    expect(stop, 1, (const char *[]){"S", "TOP"}, 2, "", 1, 0);
    /* after a stop the matcher is finished */
    stop_matcher *m = make(stop, 1);
    char emit[64];
    size_t k = 99;
    assert_int_equal(stop_feed(m, "STOP", 4, emit, sizeof emit, &k), 1);
    assert_int_equal(k, 0);
    assert_int_equal(stop_feed(m, "more", 4, emit, sizeof emit, &k), 1);
    assert_int_equal(k, 0);
    assert_int_equal(stop_flush(m, emit, sizeof emit), 0);
    stop_free(m);
}

static void test_overlapping_prefixes(void **state)
{
    (void)state;
    expect((const char *[]){"ab"}, 1, (const char *[]){"aab"}, 1, "a", 0, 0);
    expect((const char *[]){"ab"}, 1, (const char *[]){"a", "a", "b"}, 3, "a", 2, 0);
    expect((const char *[]){"aab"}, 1, (const char *[]){"a", "a", "a", "b"}, 4, "a", 3, 0);
    /* a partial match that fails falls back to its longest border */
    expect((const char *[]){"abab"}, 1, (const char *[]){"aba", "a", "bab"}, 3, "aba", 2, 0);
    expect((const char *[]){"abab"}, 1, (const char *[]){"aba", "abab"}, 2, "aba", 1, 0);
    expect((const char *[]){"abac"}, 1, (const char *[]){"abab", "ac"}, 2, "ab", 1, 0);
    /* a near miss is released whole */
    expect((const char *[]){"abab"}, 1, (const char *[]){"aba", "c"}, 2, "abac", -1, -1);
}

static void test_utf8(void **state)
{
    (void)state;
    /* 終わり: three characters of three bytes each */
    const char *stop[] = {"\xE7\xB5\x82\xE3\x82\x8F\xE3\x82\x8A"};
    const char *text = "\xE3\x81\x93\xE3\x82\x8C\xE7\xB5\x82\xE3\x82\x8F\xE3\x82\x8A\xE3\x81\xA7\xE3\x81\x99";
    /* every split into two feeds, including inside characters */
    for (size_t cut = 0; cut <= strlen(text); cut++) {
        char a[64], b[64];
        memcpy(a, text, cut);
        a[cut] = 0;
        strcpy(b, text + cut);
        stop_matcher *m = make(stop, 1);
        char emit[512], out[512];
        size_t k, len = 0;
        int rc = stop_feed(m, a, strlen(a), emit, sizeof emit, &k);
        assert_true(rc == 0 || (rc == 1 && cut >= 15));
        /* never the start of a character without its end */
        for (size_t i = 0; i < k; i++)
            if (((unsigned char)emit[i] & 0xC0) == 0xC0)
                assert_true(i + ((unsigned char)emit[i] >= 0xE0 ? 3 : 2) <= k);
        memcpy(out, emit, k);
        len = k;
        if (rc == 0) {
            rc = stop_feed(m, b, strlen(b), emit, sizeof emit, &k);
            memcpy(out + len, emit, k);
            len += k;
        }
        assert_int_equal(rc, 1);
        assert_int_equal(len, 6);
        assert_memory_equal(out, "\xE3\x81\x93\xE3\x82\x8C", 6); /* これ */
        stop_free(m);
    }
    /* An incomplete character is held back with no stop strings at all, and
     * released at the end. */
    stop_matcher *m = make(NULL, 0);
    char emit[64];
    size_t k;
    assert_int_equal(stop_feed(m, "ab\xE2\x82", 4, emit, sizeof emit, &k), 0);
    assert_int_equal(k, 2);
    assert_int_equal(stop_feed(m, "\xAC!", 2, emit, sizeof emit, &k), 0);
    assert_int_equal(k, 4);
    assert_memory_equal(emit, "\xE2\x82\xAC!", 4); /* €! */
    assert_int_equal(stop_feed(m, "\xF0\x9F", 2, emit, sizeof emit, &k), 0);
    assert_int_equal(k, 0);
    assert_int_equal(stop_flush(m, emit, sizeof emit), 2);
    assert_memory_equal(emit, "\xF0\x9F", 2);
    /* stray continuation bytes are not held */
    assert_int_equal(stop_feed(m, "\x80\x80", 2, emit, sizeof emit, &k), 0);
    assert_int_equal(k, 2);
    stop_free(m);
}

static void test_flush_releases(void **state)
{
    (void)state;
    const char *stop[] = {"</s>"};
    expect(stop, 1, (const char *[]){"abc</"}, 1, "abc</", -1, -1);
    expect(stop, 1, (const char *[]){"abc<", "/"}, 2, "abc</", -1, -1);
    /* flush with a small buffer, in pieces */
    stop_matcher *m = make(stop, 1);
    char emit[64];
    size_t k;
    assert_int_equal(stop_feed(m, "x</s", 4, emit, sizeof emit, &k), 0);
    assert_int_equal(k, 1);
    assert_int_equal(stop_flush(m, emit, 2), 2);
    assert_memory_equal(emit, "</", 2);
    assert_int_equal(stop_flush(m, emit, 2), 1);
    assert_memory_equal(emit, "s", 1);
    assert_int_equal(stop_flush(m, emit, 2), 0);
    stop_free(m);
    /* the longest stop string: 255 bytes held, then released */
    char big[STOP_MAX_BYTES + 1];
    memset(big, 'a', STOP_MAX_BYTES);
    big[STOP_MAX_BYTES] = 0;
    const char *bs[] = {big};
    m = make(bs, 1);
    char buf[1024];
    assert_int_equal(stop_feed(m, big, STOP_MAX_BYTES - 1, buf, sizeof buf, &k), 0);
    assert_int_equal(k, 0);
    assert_int_equal(stop_feed(m, "b", 1, buf, sizeof buf, &k), 0);
    assert_int_equal(k, STOP_MAX_BYTES);
    assert_int_equal(stop_feed(m, big, STOP_MAX_BYTES, buf, sizeof buf, &k), 1);
    assert_int_equal(k, 0);
    stop_free(m);
    /* too small an output buffer is refused without consuming anything */
    m = make(stop, 1);
    assert_int_equal(stop_feed(m, "ab</", 4, buf, 3, &k), -1);
    assert_int_equal(stop_feed(m, "ab</", 4, buf, 4, &k), 0);
    assert_int_equal(k, 2);
    assert_int_equal(stop_feed(m, "s>", 2, buf, 4, &k), 1);
    assert_int_equal(k, 0);
    stop_free(m);
}

static void test_several(void **state)
{
    (void)state;
    const char *stops[] = {"\n\n", "END", "###"};
    expect(stops, 3, (const char *[]){"abc##", "#def\n\n"}, 2, "abc", 1, 2);
    expect(stops, 3, (const char *[]){"abc\n", "\nEND"}, 2, "abc", 1, 0);
    expect(stops, 3, (const char *[]){"E", "N", "#", "##"}, 4, "EN", 3, 2);
    /* the one completing first in the text wins, whatever the list order */
    expect((const char *[]){"abcde", "bcd"}, 2, (const char *[]){"abcdef"}, 1, "a", 0, 1);
    /* completing on the same byte: the longer (earlier) one */
    expect((const char *[]){"cd", "bcd"}, 2, (const char *[]){"ab", "cd"}, 2, "a", 1, 1);
    /* the same string twice: the first index */
    expect((const char *[]){"x", "x"}, 2, (const char *[]){"0x"}, 1, "0", 0, 0);
    /* four stop strings, the OpenAI maximum */
    expect((const char *[]){"w", "x", "y", "z"}, 4, (const char *[]){"abcz"}, 1, "abc", 0, 3);
}

static void expect_init_error(const char *const *stops, size_t n, const char *what)
{
    stop_matcher *m = (stop_matcher *)1;
    v4_err err = {{0}};
    assert_int_equal(stop_init(&m, stops, n, &err), -1);
    assert_null(m);
    if (!strstr(err.msg, what))
        fail_msg("message \"%s\" does not mention \"%s\"", err.msg, what);
}

static void test_validation(void **state)
{
    (void)state;
    expect_init_error((const char *[]){"a", "b", "c", "d", "e"}, 5, "at most 4");
    expect_init_error((const char *[]){"a", ""}, 2, "stop[1]: empty");
    expect_init_error((const char *[]){"a", NULL}, 2, "stop[1]");
    char big[STOP_MAX_BYTES + 2];
    memset(big, 'a', STOP_MAX_BYTES + 1);
    big[STOP_MAX_BYTES + 1] = 0;
    expect_init_error((const char *[]){big}, 1, "stop[0]: 257 bytes");
    expect_init_error((const char *[]){"ok", "\xC3"}, 2, "stop[1]: not valid UTF-8 at byte 0");
    expect_init_error((const char *[]){"a\x80"}, 1, "stop[0]: not valid UTF-8 at byte 1");
    expect_init_error((const char *[]){"\xC0\xAF"}, 1, "not valid UTF-8"); /* overlong */
    expect_init_error((const char *[]){"\xED\xA0\x80"}, 1, "not valid UTF-8"); /* surrogate */
    expect_init_error((const char *[]){"\xF4\x90\x80\x80"}, 1, "not valid UTF-8"); /* > U+10FFFF */
    stop_matcher *m;
    assert_int_equal(stop_init(&m, (const char *[]){"\xF0\x9F\x98\x80", "\xC3\xA9"}, 2, NULL), 0);
    stop_free(m);
}

/* Random texts over a small alphabet that mixes ASCII with 2-, 3- and 4-byte
 * characters, random stop strings (often taken from the text), random cuts
 * into feeds: the output must equal the text up to the stop string that
 * completes first (the longest of those completing on the same byte), the
 * feed that reports it must be the one holding its last byte, and no emitted
 * piece may end inside a character. */
static void test_random(void **state)
{
    (void)state;
    tu_rng rng = {tu_seed_from_time("stop_random")};
    static const char *const alphabet[] = {"a", "b", "\n", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"};
    for (int iter = 0; iter < 3000; iter++) {
        char text[1024];
        size_t tl = 0;
        int nch = (int)(tu_next(&rng) % 60);
        for (int c = 0; c < nch; c++) {
            const char *ch = alphabet[tu_next(&rng) % 6];
            memcpy(text + tl, ch, strlen(ch));
            tl += strlen(ch);
        }
        text[tl] = 0;
        char stop_buf[4][64];
        const char *stops[4];
        size_t ns = tu_next(&rng) % 5;
        for (size_t s = 0; s < ns; s++) {
            size_t sl = 0;
            int len = 1 + (int)(tu_next(&rng) % 4);
            for (int c = 0; c < len; c++) {
                const char *ch = alphabet[tu_next(&rng) % 6];
                memcpy(stop_buf[s] + sl, ch, strlen(ch));
                sl += strlen(ch);
            }
            stop_buf[s][sl] = 0;
            if (tl && tu_next(&rng) % 2) { /* a piece of the text, cut at characters */
                size_t a = tu_next(&rng) % tl, b;
                while (a > 0 && ((unsigned char)text[a] & 0xC0) == 0x80)
                    a--;
                b = a + 1 + tu_next(&rng) % 12;
                b = b > tl ? tl : b;
                while (b < tl && ((unsigned char)text[b] & 0xC0) == 0x80)
                    b++;
                memcpy(stop_buf[s], text + a, b - a);
                stop_buf[s][b - a] = 0;
            }
            stops[s] = stop_buf[s];
        }
        /* reference: the earliest end, then the longest */
        size_t ref_end = (size_t)-1, ref_len = 0;
        int ref_which = -1;
        for (size_t e = 1; e <= tl && ref_which < 0; e++)
            for (size_t s = 0; s < ns; s++) {
                size_t sl = strlen(stops[s]);
                if (sl <= e && memcmp(text + e - sl, stops[s], sl) == 0 && sl > ref_len) {
                    ref_end = e, ref_len = sl, ref_which = (int)s;
                }
            }
        size_t want_len = ref_which >= 0 ? ref_end - ref_len : tl;

        stop_matcher *m = make(stops, ns);
        char out[2048], emit[2048];
        size_t len = 0, pos = 0;
        int stopped = 0;
        while (pos < tl && !stopped) {
            size_t piece = 1 + tu_next(&rng) % 7;
            piece = pos + piece > tl ? tl - pos : piece;
            size_t k;
            int rc = stop_feed(m, text + pos, piece, emit, sizeof emit, &k);
            /* emitted pieces end on character boundaries (the text is valid) */
            if (k && rc == 0) {
                size_t i = k;
                while (i > 0 && ((unsigned char)emit[i - 1] & 0xC0) == 0x80)
                    i--;
                assert_true(i > 0);
                unsigned char lead = (unsigned char)emit[i - 1];
                size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
                assert_int_equal(k - (i - 1), need);
            }
            memcpy(out + len, emit, k);
            len += k;
            pos += piece;
            if (rc == 1) {
                stopped = 1;
                if (!(ref_which >= 0 && ref_end <= pos && ref_end > pos - piece))
                    fail_msg("iteration %d: stop reported in the feed ending at %zu, expected end %zu", iter, pos,
                             ref_end);
            }
        }
        if (!stopped)
            len += stop_flush(m, out + len, STOP_HOLD_MAX);
        assert_int_equal(stopped, ref_which >= 0);
        assert_int_equal(stop_matched(m), ref_which);
        if (len != want_len || memcmp(out, text, len) != 0)
            fail_msg("iteration %d: output of %zu bytes, expected the first %zu of the text", iter, len, want_len);
        stop_free(m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_feeds),
        cmocka_unit_test(test_at_start),
        cmocka_unit_test(test_overlapping_prefixes),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_flush_releases),
        cmocka_unit_test(test_several),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
