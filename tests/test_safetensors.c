/* safetensors reader and writer (src/formats/safetensors.c): round trips of
 * single files and sharded folders, and every malformed input the reader
 * must refuse with a message naming the file and, where there is one, the
 * tensor. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/safetensors.h"
#include "testutil.h"
#include "tu_ckpt.h"

static char g_dir[256];

static int setup(void **state)
{
    (void)state;
    const char *d = tu_tmpdir();
    if (!d)
        return -1;
    snprintf(g_dir, sizeof g_dir, "%s", d);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tc_rmtree(g_dir);
    return 0;
}

static const char *in_dir(const char *file)
{
    static char b[4][512];
    static int k;
    char *p = b[k++ % 4];
    snprintf(p, sizeof b[0], "%s/%s", g_dir, file);
    return p;
}

/* A raw file: 8-byte length, header text, then `data_len` bytes of data. */
static void write_raw(const char *path, uint64_t hlen_field, const char *header, size_t data_len)
{
    size_t hl = strlen(header);
    size_t n = 8 + hl + data_len;
    uint8_t *buf = calloc(1, n);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(hlen_field >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < data_len; i++)
        buf[8 + hl + i] = (uint8_t)i;
    assert_int_equal(tc_write_file(path, buf, n), 0);
    free(buf);
}

static void write_header_file(const char *path, const char *header, size_t data_len)
{
    write_raw(path, strlen(header), header, data_len);
}

/* st_open must fail and its message contain every string of `want`. */
static void expect_open_fails(const char *path, const char *const *want)
{
    st_archive *a = (st_archive *)0x1;
    v4_err err = {{0}};
    assert_int_equal(st_open(path, &a, &err), -1);
    assert_null(a);
    for (int i = 0; want[i]; i++)
        if (!strstr(err.msg, want[i]))
            fail_msg("message lacks '%s': %s", want[i], err.msg);
}

#define FAILS(path, ...) expect_open_fails(path, (const char *const[]){__VA_ARGS__, NULL})

/* Three tensors of different types, written in pieces that split and join
 * tensor boundaries. */
static const float F32V[6] = {1.5f, -2.0f, 0.25f, 3.0f, -0.0f, 1e-3f};
static const uint16_t BF16V[4] = {0x3F80, 0xC000, 0x7F80, 0x0001};
static const uint8_t FP8V[3] = {0x7E, 0x80, 0x01};

static void write_sample(const char *path, const char *prefix)
{
    char n1[64], n2[64], n3[64];
    snprintf(n1, sizeof n1, "%sa.f32", prefix);
    snprintf(n2, sizeof n2, "%sb.bf16", prefix);
    snprintf(n3, sizeof n3, "%sc.fp8", prefix);
    st_spec specs[3] = {{n1, DT_F32, 2, {2, 3}}, {n2, DT_BF16, 1, {4}}, {n3, DT_F8_E4M3, 3, {1, 3, 1}}};
    assert_int_equal(st_spec_bytes(&specs[0]), 24);
    st_writer *w;
    v4_err err;
    assert_int_equal(st_writer_open(path, specs, 3, &w, &err), 0);
    uint8_t all[24 + 8 + 3];
    memcpy(all, F32V, 24);
    memcpy(all + 24, BF16V, 8);
    memcpy(all + 32, FP8V, 3);
    assert_int_equal(st_writer_write(w, all, 10, &err), 0);
    assert_int_equal(st_writer_write(w, all + 10, 20, &err), 0);
    assert_int_equal(st_writer_write(w, all + 30, 5, &err), 0);
    assert_int_equal(st_writer_close(w, &err), 0);
}

static void check_sample(const st_archive *a, const char *prefix, const char *file)
{
    char n[64];
    snprintf(n, sizeof n, "%sa.f32", prefix);
    const st_tensor *t = st_find(a, n);
    assert_non_null(t);
    assert_int_equal(t->dtype, DT_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(t->nelem, 6);
    assert_int_equal(t->nbytes, 24);
    assert_memory_equal(t->data, F32V, 24);
    assert_string_equal(t->file, file);
    snprintf(n, sizeof n, "%sb.bf16", prefix);
    t = st_find(a, n);
    assert_non_null(t);
    assert_int_equal(t->dtype, DT_BF16);
    assert_int_equal(t->ndim, 1);
    assert_int_equal(t->shape[0], 4);
    assert_memory_equal(t->data, BF16V, 8);
    snprintf(n, sizeof n, "%sc.fp8", prefix);
    t = st_find(a, n);
    assert_non_null(t);
    assert_int_equal(t->dtype, DT_F8_E4M3);
    assert_int_equal(t->ndim, 3);
    assert_int_equal(t->shape[1], 3);
    assert_memory_equal(t->data, FP8V, 3);
}

static void test_single_file_round_trip(void **state)
{
    (void)state;
    const char *p = in_dir("one.safetensors");
    write_sample(p, "");
    /* the header length is a multiple of 8 and the data follows it */
    size_t len;
    char *raw = tc_read_file(p, &len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | (uint8_t)raw[i];
    assert_int_equal(hl % 8, 0);
    assert_int_equal(len, 8 + hl + 35);
    free(raw);

    st_archive *a;
    v4_err err;
    assert_int_equal(st_open(p, &a, &err), 0);
    assert_int_equal(st_count(a), 3);
    check_sample(a, "", p);
    /* sorted by name */
    assert_string_equal(st_at(a, 0)->name, "a.f32");
    assert_string_equal(st_at(a, 2)->name, "c.fp8");
    assert_null(st_at(a, 3));
    assert_null(st_find(a, "a.f3"));
    assert_null(st_find(a, "zzz"));
    st_close(a);

    /* a folder holding model.safetensors opens the same way */
    char sub[512];
    snprintf(sub, sizeof sub, "%s/single", g_dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", sub);
    write_sample(path, "");
    assert_int_equal(st_open(sub, &a, &err), 0);
    check_sample(a, "", path);
    st_close(a);
}

static void write_index(const char *dir, const char *json)
{
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    assert_int_equal(tc_write_file(p, json, strlen(json)), 0);
}

/* DIR with two shards x.safetensors (prefix x.) and y.safetensors (y.). */
static const char *make_sharded(const char *name)
{
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", g_dir, name);
    assert_int_equal(mkdir(dir, 0755), 0);
    char p[600];
    snprintf(p, sizeof p, "%s/x.safetensors", dir);
    write_sample(p, "x.");
    snprintf(p, sizeof p, "%s/y.safetensors", dir);
    write_sample(p, "y.");
    return dir;
}

static const char *INDEX_OK =
    "{\"metadata\": {\"total_size\": 70}, \"weight_map\": {"
    "\"x.a.f32\": \"x.safetensors\", \"x.b.bf16\": \"x.safetensors\", \"x.c.fp8\": \"x.safetensors\","
    "\"y.a.f32\": \"y.safetensors\", \"y.b.bf16\": \"y.safetensors\", \"y.c.fp8\": \"y.safetensors\"}}";

static void test_sharded_round_trip(void **state)
{
    (void)state;
    const char *dir = make_sharded("sharded");
    write_index(dir, INDEX_OK);
    st_archive *a;
    v4_err err;
    if (st_open(dir, &a, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(st_count(a), 6);
    char px[600], py[600];
    snprintf(px, sizeof px, "%s/x.safetensors", dir);
    snprintf(py, sizeof py, "%s/y.safetensors", dir);
    check_sample(a, "x.", px);
    check_sample(a, "y.", py);
    st_close(a);
}

static void test_writer_errors(void **state)
{
    (void)state;
    st_spec s[2] = {{"w", DT_F32, 1, {2}}, {"w", DT_F32, 1, {2}}};
    st_writer *w;
    v4_err err = {{0}};
    const char *p = in_dir("w.safetensors");
    /* more bytes than declared */
    assert_int_equal(st_writer_open(p, s, 1, &w, &err), 0);
    float v[3] = {1, 2, 3};
    assert_int_equal(st_writer_write(w, v, 12, &err), -1);
    assert_non_null(strstr(err.msg, p));
    assert_int_equal(st_writer_write(w, v, 4, &err), 0);
    /* fewer bytes than declared */
    assert_int_equal(st_writer_close(w, &err), -1);
    assert_non_null(strstr(err.msg, "4 of 8"));
    /* the same name twice */
    assert_int_equal(st_writer_open(p, s, 2, &w, &err), -1);
    assert_non_null(strstr(err.msg, "'w'"));
    /* MXFP4 is written as I8 */
    st_spec m = {"experts.w1", DT_MXFP4, 2, {4, 32}};
    assert_int_equal(st_writer_open(p, &m, 1, &w, &err), -1);
    assert_non_null(strstr(err.msg, "experts.w1"));
    /* a path that cannot be created */
    assert_int_equal(st_writer_open("/nonexistent-dir/x.safetensors", s, 1, &w, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent-dir/x.safetensors"));
}

static void test_short_and_truncated_files(void **state)
{
    (void)state;
    const char *p = in_dir("short.safetensors");
    assert_int_equal(tc_write_file(p, "\x10\0\0\0\0", 5), 0);
    FAILS(p, p, "shorter than the 8-byte");
    assert_int_equal(tc_write_file(p, "", 0), 0);
    FAILS(p, p, "truncated");

    /* header length beyond the end of the file */
    write_raw(p, 4000, "{}", 0);
    FAILS(p, p, "truncated", "4000");

    /* a valid file cut inside its data section: the last tensor is out of range */
    write_sample(p, "");
    assert_int_equal(truncate(p, 8 + 0), 0); /* nothing after the length */
    FAILS(p, p);
    write_sample(p, "");
    size_t len;
    free(tc_read_file(p, &len));
    assert_int_equal(truncate(p, (off_t)len - 2), 0);
    FAILS(p, p, "'c.fp8'", "outside the data section");
}

static void test_bad_headers(void **state)
{
    (void)state;
    const char *p = in_dir("bad.safetensors");
    write_header_file(p, "this is not json at all", 0);
    FAILS(p, p, "not valid JSON");
    write_raw(p, (uint64_t)1 << 40, "{}", 0);
    FAILS(p, p, "absurd");
    write_raw(p, ST_MAX_HEADER_BYTES + 1u, "{}", 0);
    FAILS(p, p, "absurd");
    write_header_file(p, "[1, 2, 3]", 0);
    FAILS(p, p, "not a JSON object");
    write_header_file(p, "\"text\"", 0);
    FAILS(p, p, "not valid JSON");
    /* a duplicated key is refused rather than one copy silently winning */
    write_header_file(p, "{\"t\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]},"
                         " \"t\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}", 2);
    FAILS(p, p, "not valid JSON");
    /* an empty header is a valid, empty file */
    write_header_file(p, "{}", 0);
    st_archive *a;
    v4_err err;
    assert_int_equal(st_open(p, &a, &err), 0);
    assert_int_equal(st_count(a), 0);
    st_close(a);
}

static void test_bad_entries(void **state)
{
    (void)state;
    const char *p = in_dir("entry.safetensors");
    write_header_file(p, "{\"w\": {\"dtype\": \"F7\", \"shape\": [2], \"data_offsets\": [0, 2]}}", 2);
    FAILS(p, p, "'w'", "unknown dtype 'F7'");
    write_header_file(p, "{\"w\": {\"dtype\": \"MXFP4\", \"shape\": [2], \"data_offsets\": [0, 1]}}", 1);
    FAILS(p, p, "'w'", "unknown dtype");
    write_header_file(p, "{\"w\": {\"dtype\": 7, \"shape\": [2], \"data_offsets\": [0, 2]}}", 2);
    FAILS(p, p, "'w'", "dtype");
    write_header_file(p, "{\"w\": [1, 2]}", 0);
    FAILS(p, p, "'w'", "not an object");
    /* shape x dtype size != byte length */
    write_header_file(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 20]}}", 24);
    FAILS(p, p, "'w'", "20 bytes stored", "24");
    write_header_file(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": \"2\", \"data_offsets\": [0, 8]}}", 8);
    FAILS(p, p, "'w'", "shape");
    write_header_file(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 8);
    FAILS(p, p, "'w'", "shape[0]");
    write_header_file(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}", 4);
    FAILS(p, p, "'w'", "shape");
    write_header_file(p, "{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], "
                         "\"data_offsets\": [0, 4]}}", 4);
    FAILS(p, p, "'w'", "overflow");
    /* offsets outside the data section, reversed, or malformed */
    write_header_file(p, "{\"w\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [4, 12]}}", 8);
    FAILS(p, p, "'w'", "outside the data section");
    write_header_file(p, "{\"w\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [4, 2]}}", 8);
    FAILS(p, p, "'w'", "outside");
    write_header_file(p, "{\"w\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [-2, 0]}}", 8);
    FAILS(p, p, "'w'", "outside");
    write_header_file(p, "{\"w\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [0]}}", 8);
    FAILS(p, p, "'w'", "data_offsets");
    write_header_file(p, "{\"w\": {\"dtype\": \"U8\", \"shape\": [2]}}", 8);
    FAILS(p, p, "'w'", "data_offsets");
    /* overlapping tensors: both named */
    write_header_file(p, "{\"a\": {\"dtype\": \"U8\", \"shape\": [6], \"data_offsets\": [0, 6]},"
                         " \"b\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [4, 8]}}", 8);
    FAILS(p, p, "'a'", "'b'", "overlap");
    write_header_file(p, "{\"c\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [6, 8]},"
                         " \"a\": {\"dtype\": \"U8\", \"shape\": [8], \"data_offsets\": [0, 8]},"
                         " \"b\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [2, 4]}}", 8);
    FAILS(p, p, "overlap");
    /* adjacent is fine, and __metadata__ is not a tensor */
    write_header_file(p, "{\"__metadata__\": {\"format\": \"pt\"}, "
                         "\"a\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]},"
                         " \"b\": {\"dtype\": \"I32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8);
    st_archive *a;
    v4_err err;
    assert_int_equal(st_open(p, &a, &err), 0);
    assert_int_equal(st_count(a), 2);
    assert_int_equal(st_find(a, "b")->data[0], 4);
    st_close(a);
}

static void test_index_errors(void **state)
{
    (void)state;
    /* tensor listed in the index but missing from its shard */
    const char *dir = make_sharded("idx_missing_tensor");
    write_index(dir, "{\"weight_map\": {\"x.a.f32\": \"x.safetensors\", \"x.ghost\": \"x.safetensors\"}}");
    FAILS(dir, "model.safetensors.index.json", "'x.ghost'", "x.safetensors", "missing");

    /* index naming a shard file that does not exist */
    dir = make_sharded("idx_missing_file");
    write_index(dir, "{\"weight_map\": {\"x.a.f32\": \"x.safetensors\", \"z.w\": \"z.safetensors\"}}");
    FAILS(dir, "model.safetensors.index.json", "'z.w'", "z.safetensors");

    /* a non-string entry */
    dir = make_sharded("idx_nonstring");
    write_index(dir, "{\"weight_map\": {\"x.a.f32\": 3}}");
    FAILS(dir, "model.safetensors.index.json", "'x.a.f32'", "not a file name");

    /* the same tensor in two shards */
    dir = make_sharded("idx_dup");
    char p[600];
    snprintf(p, sizeof p, "%s/y.safetensors", dir);
    write_sample(p, "x."); /* y now repeats x's names */
    write_index(dir, "{\"weight_map\": {\"x.a.f32\": \"x.safetensors\", \"x.b.bf16\": \"y.safetensors\"}}");
    FAILS(dir, "'x.a.f32'", "x.safetensors", "y.safetensors");

    /* indexed in one shard, stored in another */
    dir = make_sharded("idx_wrong_shard");
    write_index(dir, "{\"weight_map\": {\"x.a.f32\": \"x.safetensors\", \"y.a.f32\": \"x.safetensors\","
                     " \"y.b.bf16\": \"y.safetensors\"}}");
    FAILS(dir, "'y.a.f32'", "indexed in", "x.safetensors but stored in", "y.safetensors");

    /* a tensor stored in a shard but not listed in the index */
    dir = make_sharded("idx_unlisted");
    write_index(dir, "{\"weight_map\": {\"x.a.f32\": \"x.safetensors\", \"x.c.fp8\": \"x.safetensors\"}}");
    FAILS(dir, "model.safetensors.index.json", "'x.b.bf16'", "x.safetensors", "not listed in the index");

    /* a shard outside the folder */
    dir = make_sharded("idx_escape");
    write_index(dir, "{\"weight_map\": {\"x.a.f32\": \"../x.safetensors\"}}");
    FAILS(dir, "'x.a.f32'", "../x.safetensors");

    /* a malformed shard named by the index */
    dir = make_sharded("idx_bad_shard");
    snprintf(p, sizeof p, "%s/y.safetensors", dir);
    assert_int_equal(tc_write_file(p, "\x03\0\0\0", 4), 0);
    write_index(dir, INDEX_OK);
    FAILS(dir, "y.safetensors", "shorter");

    /* the index itself */
    dir = make_sharded("idx_json");
    write_index(dir, "{\"weight_map\": {\"x.a.f32\": \"x.safetensors\",}}");
    FAILS(dir, "model.safetensors.index.json", "not valid JSON");
    write_index(dir, "{\"metadata\": {}}");
    FAILS(dir, "model.safetensors.index.json", "weight_map");
    write_index(dir, "{\"weight_map\": [\"x.safetensors\"]}");
    FAILS(dir, "model.safetensors.index.json", "weight_map");

    /* nothing to open */
    snprintf(p, sizeof p, "%s/empty", g_dir);
    assert_int_equal(mkdir(p, 0755), 0);
    FAILS(p, p, "model.safetensors");
    FAILS("/nonexistent/model", "/nonexistent/model");
}

static void test_make_writable_is_private(void **state)
{
    (void)state;
    const char *p = in_dir("cow.safetensors");
    write_sample(p, "");
    st_archive *a;
    v4_err err;
    assert_int_equal(st_open(p, &a, &err), 0);
    const st_tensor *t = st_find(a, "c.fp8");
    assert_int_equal(st_make_writable(a, t, &err), 0);
    t->data[0] = 0x42;
    assert_int_equal(st_find(a, "c.fp8")->data[0], 0x42);
    st_archive *b;
    assert_int_equal(st_open(p, &b, &err), 0);
    assert_memory_equal(st_find(b, "c.fp8")->data, FP8V, 3); /* the file is unchanged */
    st_close(b);
    st_close(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_file_round_trip),
        cmocka_unit_test(test_sharded_round_trip),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_short_and_truncated_files),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_bad_entries),
        cmocka_unit_test(test_index_errors),
        cmocka_unit_test(test_make_writable_is_private),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
