/* Checkpoint editing helper for tests; see tu_ckpt.h. */
#include "tu_ckpt.h"

#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *tc_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return NULL;
    }
    long n = ftell(f);
    rewind(f);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        if (len)
            *len = (size_t)n;
    }
    return buf;
}

int tc_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(data, 1, len, f) == len;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

static tc_tensor *push(tc_ckpt *c)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        tc_tensor *t = realloc(c->t, cap * sizeof *t);
        if (!t)
            return NULL;
        c->t = t;
        c->cap = cap;
    }
    tc_tensor *t = &c->t[c->n++];
    memset(t, 0, sizeof *t);
    return t;
}

int tc_load(tc_ckpt *c, const char *model_dir)
{
    memset(c, 0, sizeof *c);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    c->config = tc_read_file(path, NULL);
    st_archive *a;
    v4_err err;
    if (st_open(model_dir, &a, &err) != 0)
        return -1;
    for (size_t i = 0; i < st_count(a); i++) {
        const st_tensor *s = st_at(a, i);
        tc_tensor *t = push(c);
        if (!t)
            return st_close(a), -1;
        snprintf(t->name, sizeof t->name, "%s", s->name);
        t->dtype = s->dtype;
        t->ndim = s->ndim;
        memcpy(t->shape, s->shape, sizeof t->shape);
        t->nbytes = s->nbytes;
        t->data = malloc(s->nbytes ? s->nbytes : 1);
        if (!t->data)
            return st_close(a), -1;
        memcpy(t->data, s->data, s->nbytes);
    }
    st_close(a);
    return 0;
}

tc_tensor *tc_find(tc_ckpt *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->t[i].name, name) == 0)
            return &c->t[i];
    return NULL;
}

int tc_remove(tc_ckpt *c, const char *name)
{
    tc_tensor *t = tc_find(c, name);
    if (!t)
        return -1;
    free(t->data);
    size_t i = (size_t)(t - c->t);
    memmove(&c->t[i], &c->t[i + 1], (c->n - i - 1) * sizeof *t);
    c->n--;
    return 0;
}

tc_tensor *tc_add(tc_ckpt *c, const char *name, dtype_t dt, int ndim, const int64_t *shape)
{
    tc_tensor *t = push(c);
    if (!t)
        return NULL;
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dt;
    t->ndim = ndim;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (t->shape[i] = shape[i]);
    t->nbytes = dt_bytes(dt, n);
    t->data = calloc(1, t->nbytes ? t->nbytes : 1);
    return t->data ? t : NULL;
}

static int write_one(const char *path, const tc_tensor *ts, size_t n)
{
    st_spec *specs = calloc(n ? n : 1, sizeof *specs);
    if (!specs)
        return -1;
    for (size_t i = 0; i < n; i++) {
        specs[i].name = ts[i].name;
        specs[i].dtype = ts[i].dtype;
        specs[i].ndim = ts[i].ndim;
        memcpy(specs[i].shape, ts[i].shape, sizeof specs[i].shape);
    }
    st_writer *w;
    v4_err err;
    int rc = st_writer_open(path, specs, n, &w, &err);
    free(specs);
    if (rc)
        return -1;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = st_writer_write(w, ts[i].data, ts[i].nbytes, &err);
    return st_writer_close(w, &err) || rc ? -1 : 0;
}

int tc_write(const tc_ckpt *c, const char *dir, int n_shards)
{
    char path[4096];
    if (c->config) {
        snprintf(path, sizeof path, "%s/config.json", dir);
        if (tc_write_file(path, c->config, strlen(c->config)))
            return -1;
    }
    if (n_shards <= 0) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        return write_one(path, c->t, c->n);
    }
    json_t *wm = json_object();
    size_t total = 0, begin = 0;
    for (int s = 0; s < n_shards; s++) {
        size_t end = c->n * (size_t)(s + 1) / (size_t)n_shards;
        char file[64];
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        snprintf(path, sizeof path, "%s/%s", dir, file);
        if (write_one(path, c->t + begin, end - begin))
            return json_decref(wm), -1;
        for (size_t i = begin; i < end; i++) {
            json_object_set_new(wm, c->t[i].name, json_string(file));
            total += c->t[i].nbytes;
        }
        begin = end;
    }
    json_t *root = json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", wm);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    int rc = json_dump_file(root, path, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    return rc ? -1 : 0;
}

void tc_free(tc_ckpt *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->t[i].data);
    free(c->t);
    free(c->config);
    memset(c, 0, sizeof *c);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

void tc_rmtree(const char *dir)
{
    if (dir && *dir)
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
