/* safetensors: 8-byte little-endian header length N, N bytes of JSON
 * {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
 * then the data section; offsets are relative to the data section. */
#include "formats/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct st_shard {
    char *path;
    uint8_t *map;
    size_t size;
} st_shard;

struct st_archive {
    st_shard *shards;
    size_t n_shards;
    st_tensor *tensors; /* sorted by name */
    size_t n_tensors;
    size_t cap_tensors;
};

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

const st_tensor *st_find(const st_archive *a, const char *name)
{
    if (a->n_tensors == 0)
        return NULL; /* tensors may be NULL */
    st_tensor key = {.name = name};
    return bsearch(&key, a->tensors, a->n_tensors, sizeof key, cmp_tensor_name);
}

size_t st_count(const st_archive *a) { return a->n_tensors; }
const st_tensor *st_at(const st_archive *a, size_t i) { return i < a->n_tensors ? &a->tensors[i] : NULL; }

void st_close(st_archive *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n_tensors; i++)
        free((char *)a->tensors[i].name);
    for (size_t i = 0; i < a->n_shards; i++) {
        if (a->shards[i].map)
            munmap(a->shards[i].map, a->shards[i].size);
        free(a->shards[i].path);
    }
    free(a->shards);
    free(a->tensors);
    free(a);
}

static int push_tensor(st_archive *a, const st_tensor *t)
{
    if (a->n_tensors == a->cap_tensors) {
        size_t cap = a->cap_tensors ? a->cap_tensors * 2 : 256;
        st_tensor *n = realloc(a->tensors, cap * sizeof *n);
        if (!n)
            return -1;
        a->tensors = n;
        a->cap_tensors = cap;
    }
    a->tensors[a->n_tensors++] = *t;
    return 0;
}

typedef struct span {
    uint64_t begin, end;
    const char *name;
} span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Parses one tensor entry of a header. */
static int parse_entry(const char *file, const char *name, json_t *v, uint64_t data_size, st_tensor *t, v4_err *err)
{
    if (!json_is_object(v))
        return v4_errf(err, "%s: tensor '%s': header entry is not an object", file, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return v4_errf(err, "%s: tensor '%s': missing or non-string dtype", file, name);
    if (dt_from_name(json_string_value(jd), &t->dtype) != 0 || t->dtype == DT_MXFP4)
        return v4_errf(err, "%s: tensor '%s': unknown dtype '%s'", file, name, json_string_value(jd));
    if (!json_is_array(js) || json_array_size(js) > ST_MAX_DIMS)
        return v4_errf(err, "%s: tensor '%s': shape must be an array of at most %d integers", file, name, ST_MAX_DIMS);
    t->ndim = (int)json_array_size(js);
    uint64_t nelem = 1;
    for (int i = 0; i < t->ndim; i++) {
        json_t *d = json_array_get(js, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return v4_errf(err, "%s: tensor '%s': shape[%d] is not a non-negative integer", file, name, i);
        t->shape[i] = json_integer_value(d);
        if (t->shape[i] != 0 && nelem > UINT64_MAX / 16 / (uint64_t)t->shape[i])
            return v4_errf(err, "%s: tensor '%s': shape overflows", file, name);
        nelem *= (uint64_t)t->shape[i];
    }
    t->nelem = (int64_t)nelem;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)))
        return v4_errf(err, "%s: tensor '%s': data_offsets must be [begin, end]", file, name);
    json_int_t b = json_integer_value(json_array_get(jo, 0)), e = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || e < b || (uint64_t)e > data_size)
        return v4_errf(err, "%s: tensor '%s': data_offsets [%lld, %lld] outside the data section of %llu bytes",
                       file, name, (long long)b, (long long)e, (unsigned long long)data_size);
    uint64_t want = nelem * dt_elem_size(t->dtype);
    if ((uint64_t)(e - b) != want)
        return v4_errf(err, "%s: tensor '%s': %lld bytes stored but shape x %s size needs %llu", file, name,
                       (long long)(e - b), dt_name(t->dtype), (unsigned long long)want);
    t->nbytes = (size_t)want;
    t->data = (uint8_t *)(uintptr_t)b; /* offset for now; rebased by the caller */
    return 0;
}

/* Maps one file and appends its tensors to the archive. */
static int load_shard(st_archive *a, const char *path, v4_err *err)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return v4_errf(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return v4_errf(err, "%s: cannot stat: %s", path, strerror(errno));
    }
    size_t size = (size_t)sb.st_size;
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return v4_errf(err, "%s: not a regular file", path);
    }
    if (size < 8) {
        close(fd);
        return v4_errf(err, "%s: truncated: %zu bytes, shorter than the 8-byte header length", path, size);
    }
    uint8_t *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return v4_errf(err, "%s: mmap failed: %s", path, strerror(errno));

    st_shard *ns = realloc(a->shards, (a->n_shards + 1) * sizeof *ns);
    if (!ns) {
        munmap(map, size);
        return v4_errf(err, "%s: out of memory", path);
    }
    a->shards = ns;
    st_shard *sh = &a->shards[a->n_shards++];
    sh->path = strdup(path);
    sh->map = map;
    sh->size = size;

    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | map[i];
    if (hlen > ST_MAX_HEADER_BYTES)
        return v4_errf(err, "%s: header length %llu is absurd (limit %u bytes)", path, (unsigned long long)hlen,
                       ST_MAX_HEADER_BYTES);
    if (hlen > size - 8)
        return v4_errf(err, "%s: truncated: header length %llu but only %zu bytes follow", path,
                       (unsigned long long)hlen, size - 8);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return v4_errf(err, "%s: header is not valid JSON: %s (at byte %d)", path, jerr.text, jerr.position);
    if (!json_is_object(root)) {
        json_decref(root);
        return v4_errf(err, "%s: header is not a JSON object", path);
    }
    uint64_t data_size = size - 8 - hlen;
    uint8_t *data = map + 8 + hlen;
    size_t first = a->n_tensors;
    const char *name;
    json_t *v;
    int rc = 0;
    json_object_foreach(root, name, v) {
        if (strcmp(name, "__metadata__") == 0)
            continue;
        st_tensor t = {0};
        if (parse_entry(path, name, v, data_size, &t, err) != 0) {
            rc = -1;
            break;
        }
        t.data = data + (uintptr_t)t.data;
        t.name = strdup(name);
        t.file = sh->path;
        if (!t.name || push_tensor(a, &t) != 0) {
            free((char *)t.name);
            rc = v4_errf(err, "%s: out of memory", path);
            break;
        }
    }
    json_decref(root);
    if (rc != 0)
        return rc;

    /* overlap check over this shard's tensors */
    size_t n = a->n_tensors - first;
    span *sp = malloc((n ? n : 1) * sizeof *sp);
    if (!sp)
        return v4_errf(err, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = &a->tensors[first + i];
        sp[i] = (span){(uint64_t)(t->data - data), (uint64_t)(t->data - data) + t->nbytes, t->name};
    }
    qsort(sp, n, sizeof *sp, cmp_span);
    for (size_t i = 1; i < n; i++) {
        if (sp[i].begin < sp[i - 1].end) {
            rc = v4_errf(err, "%s: tensors '%s' and '%s' overlap in the data section", path, sp[i - 1].name,
                         sp[i].name);
            break;
        }
    }
    free(sp);
    return rc;
}

static char *join_path(const char *dir, const char *file)
{
    size_t n = strlen(dir) + strlen(file) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, file);
    return p;
}

static int file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Sorts, rejects duplicate names across shards. */
static int finish_archive(st_archive *a, v4_err *err)
{
    if (a->n_tensors > 1) /* an empty file leaves tensors NULL, which qsort must not see */
        qsort(a->tensors, a->n_tensors, sizeof *a->tensors, cmp_tensor_name);
    for (size_t i = 1; i < a->n_tensors; i++)
        if (strcmp(a->tensors[i].name, a->tensors[i - 1].name) == 0)
            return v4_errf(err, "tensor '%s' appears in both %s and %s", a->tensors[i].name,
                           a->tensors[i - 1].file, a->tensors[i].file);
    return 0;
}

static int open_index(st_archive *a, const char *dir, const char *index_path, v4_err *err)
{
    json_error_t jerr;
    json_t *root = json_load_file(index_path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return v4_errf(err, "%s: not valid JSON: %s (line %d)", index_path, jerr.text, jerr.line);
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        json_decref(root);
        return v4_errf(err, "%s: missing or non-object \"weight_map\"", index_path);
    }
    int rc = 0;
    /* Open each distinct shard once, in first-seen order. */
    const char *name;
    json_t *v;
    json_object_foreach(wm, name, v) {
        if (!json_is_string(v)) {
            rc = v4_errf(err, "%s: weight_map entry '%s' is not a file name", index_path, name);
            break;
        }
        const char *shard = json_string_value(v);
        if (strchr(shard, '/') || strcmp(shard, "..") == 0) {
            rc = v4_errf(err, "%s: weight_map entry '%s' names '%s', which is not a file in the model folder",
                         index_path, name, shard);
            break;
        }
        char *p = join_path(dir, shard);
        int seen = 0;
        for (size_t i = 0; i < a->n_shards && p; i++)
            seen |= strcmp(a->shards[i].path, p) == 0;
        if (!p)
            rc = v4_errf(err, "out of memory");
        else if (!seen && !file_exists(p))
            rc = v4_errf(err, "%s: tensor '%s' is mapped to %s, which does not exist or is not a file", index_path,
                         name, p);
        else if (!seen)
            rc = load_shard(a, p, err);
        free(p);
        if (rc)
            break;
    }
    if (rc == 0)
        rc = finish_archive(a, err);
    if (rc == 0) {
        json_object_foreach(wm, name, v) {
            const st_tensor *t = st_find(a, name);
            char *p = join_path(dir, json_string_value(v));
            if (!t)
                rc = v4_errf(err, "%s: tensor '%s' is in the index but missing from %s", index_path, name, p);
            else if (strcmp(t->file, p) != 0)
                rc = v4_errf(err, "%s: tensor '%s' is indexed in %s but stored in %s", index_path, name, p, t->file);
            free(p);
            if (rc)
                break;
        }
    }
    /* Every entry matched a distinct tensor; any further tensor in the
     * opened shards is one the index does not list, which loaders that go
     * by the index would never see. */
    if (rc == 0 && a->n_tensors != json_object_size(wm)) {
        for (size_t i = 0; i < a->n_tensors; i++) {
            if (!json_object_get(wm, a->tensors[i].name)) {
                rc = v4_errf(err, "%s: tensor '%s' in %s is not listed in the index", index_path,
                             a->tensors[i].name, a->tensors[i].file);
                break;
            }
        }
    }
    json_decref(root);
    return rc;
}

int st_open(const char *path, st_archive **out, v4_err *err)
{
    *out = NULL;
    st_archive *a = calloc(1, sizeof *a);
    if (!a)
        return v4_errf(err, "out of memory");
    struct stat sb;
    int rc;
    if (stat(path, &sb) != 0) {
        rc = v4_errf(err, "%s: %s", path, strerror(errno));
    } else if (S_ISDIR(sb.st_mode)) {
        char *index = join_path(path, "model.safetensors.index.json");
        char *single = join_path(path, "model.safetensors");
        if (index && file_exists(index))
            rc = open_index(a, path, index, err);
        else if (single && file_exists(single))
            rc = load_shard(a, single, err) ? -1 : finish_archive(a, err);
        else
            rc = v4_errf(err, "%s: no model.safetensors.index.json or model.safetensors", path);
        free(index);
        free(single);
    } else {
        rc = load_shard(a, path, err) ? -1 : finish_archive(a, err);
    }
    if (rc != 0) {
        st_close(a);
        return -1;
    }
    *out = a;
    return 0;
}

int st_make_writable(const st_archive *a, const st_tensor *t, v4_err *err)
{
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t b = (uintptr_t)t->data & ~(uintptr_t)(page - 1);
    uintptr_t e = (uintptr_t)t->data + t->nbytes;
    if (mprotect((void *)b, e - b, PROT_READ | PROT_WRITE) != 0)
        return v4_errf(err, "%s: tensor '%s': cannot make writable: %s", t->file, t->name, strerror(errno));
    (void)a;
    return 0;
}

/* ---- writer ---- */

struct st_writer {
    FILE *f;
    char *path;
    uint64_t expect, written;
};

size_t st_spec_bytes(const st_spec *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++)
        n *= s->shape[i];
    return dt_bytes(s->dtype, n);
}

int st_writer_open(const char *path, const st_spec *specs, size_t n, st_writer **out, v4_err *err)
{
    *out = NULL;
    json_t *root = json_object();
    json_object_set_new(root, "__metadata__", json_pack("{s:s}", "format", "pt"));
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const st_spec *s = &specs[i];
        if (s->dtype == DT_MXFP4)
            return json_decref(root), v4_errf(err, "%s: tensor '%s': write MXFP4 as I8", path, s->name);
        /* a repeated name would silently replace the earlier header entry */
        if (json_object_get(root, s->name))
            return json_decref(root), v4_errf(err, "%s: tensor '%s' is listed twice (or is reserved)", path, s->name);
        json_t *shape = json_array();
        for (int d = 0; d < s->ndim; d++)
            json_array_append_new(shape, json_integer(s->shape[d]));
        uint64_t nb = st_spec_bytes(s);
        json_object_set_new(root, s->name,
                            json_pack("{s:s,s:o,s:[I,I]}", "dtype", dt_name(s->dtype), "shape", shape,
                                      "data_offsets", (json_int_t)off, (json_int_t)(off + nb)));
        off += nb;
    }
    char *hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!hdr)
        return v4_errf(err, "%s: cannot serialise header", path);
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7;
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(hdr);
        return v4_errf(err, "%s: cannot create: %s", path, strerror(errno));
    }
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int ok = fwrite(len, 1, 8, f) == 8 && fwrite(hdr, 1, hl, f) == hl;
    for (size_t i = hl; i < padded && ok; i++)
        ok = fputc(' ', f) != EOF;
    free(hdr);
    if (!ok) {
        fclose(f);
        return v4_errf(err, "%s: write failed: %s", path, strerror(errno));
    }
    st_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path))) {
        free(w);
        fclose(f);
        return v4_errf(err, "%s: out of memory", path);
    }
    w->f = f;
    w->expect = off;
    *out = w;
    return 0;
}

int st_writer_write(st_writer *w, const void *data, size_t nbytes, v4_err *err)
{
    if (w->written + nbytes > w->expect)
        return v4_errf(err, "%s: more data written than the header declares", w->path);
    if (fwrite(data, 1, nbytes, w->f) != nbytes)
        return v4_errf(err, "%s: write failed: %s", w->path, strerror(errno));
    w->written += nbytes;
    return 0;
}

int st_writer_close(st_writer *w, v4_err *err)
{
    int rc = 0;
    if (w->written != w->expect)
        rc = v4_errf(err, "%s: %llu of %llu data bytes written", w->path, (unsigned long long)w->written,
                     (unsigned long long)w->expect);
    if (fclose(w->f) != 0 && rc == 0)
        rc = v4_errf(err, "%s: close failed: %s", w->path, strerror(errno));
    free(w->path);
    free(w);
    return rc;
}
