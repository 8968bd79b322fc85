/* Writing a random checkpoint: plan the tensors, assign them to shards in
 * order, and stream them out. Worker threads generate fixed-size chunks
 * into a ring of buffers; the calling thread writes the chunks in file
 * order, so memory stays at a few chunks per thread whatever the model size,
 * and the bytes do not depend on the thread count. */
#include "tools/mkmodel.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "formats/safetensors.h"
#include "tools/mk_internal.h"

#define MK_CHUNK_BYTES (4u << 20)

typedef struct mk_job {
    size_t tensor;
    int64_t r0, nr;
} mk_job;

typedef struct pipeline {
    const mk_plan *plan;
    const mk_job *jobs;
    size_t n_jobs, n_slots;
    uint8_t **slot;
    size_t *ready; /* per slot: job index + 1 once generated, 0 when free */
    size_t next;   /* next job to claim */
    size_t written;
    int stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} pipeline;

static void *worker(void *arg)
{
    pipeline *pl = arg;
    pthread_mutex_lock(&pl->mu);
    for (;;) {
        /* a job may start once the writer has freed its slot */
        while (!pl->stop && pl->next < pl->n_jobs && pl->next >= pl->written + pl->n_slots)
            pthread_cond_wait(&pl->cv, &pl->mu);
        if (pl->stop || pl->next >= pl->n_jobs)
            break;
        size_t j = pl->next++;
        pthread_mutex_unlock(&pl->mu);
        const mk_job *jb = &pl->jobs[j];
        mk_gen_rows(pl->plan, &pl->plan->t[jb->tensor], jb->r0, jb->nr, pl->slot[j % pl->n_slots]);
        pthread_mutex_lock(&pl->mu);
        pl->ready[j % pl->n_slots] = j + 1;
        pthread_cond_broadcast(&pl->cv);
    }
    pthread_mutex_unlock(&pl->mu);
    return NULL;
}

static int make_dirs(const char *dir, v4_err *err)
{
    char p[4096];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
        return v4_errf(err, "%s: path too long", dir);
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != 0)
            continue;
        char c = *s;
        *s = 0;
        struct stat sb;
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return v4_errf(err, "%s: cannot create directory: %s", p, strerror(errno));
        if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode))
            return v4_errf(err, "%s: exists and is not a directory", p);
        *s = c;
        if (!c)
            return 0;
    }
}

static void shard_name(char *buf, size_t n, int i, int count)
{
    snprintf(buf, n, "model-%05d-of-%05d.safetensors", i + 1, count);
}

static uint64_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode) ? (uint64_t)sb.st_size : 0;
}

/* Refuses early when the folder cannot hold the checkpoint (counting the
 * files it would overwrite as free), rather than failing hours in. */
static int check_space(const mk_options *o, const mk_plan *p, int n_shards, v4_err *err)
{
    struct statvfs vf;
    if (statvfs(o->out_dir, &vf) != 0)
        return 0;
    uint64_t avail = (uint64_t)vf.f_bavail * vf.f_frsize;
    for (int s = 0; s < n_shards; s++) {
        char name[64], path[4200];
        shard_name(name, sizeof name, s, n_shards);
        snprintf(path, sizeof path, "%s/%s", o->out_dir, name);
        avail += file_size(path);
    }
    uint64_t need = p->total + (uint64_t)p->n * 256;
    if (need > avail)
        return v4_errf(err, "%s: the checkpoint needs %.2f GB but only %.2f GB are free", o->out_dir, need / 1e9,
                       avail / 1e9);
    return 0;
}

static int copy_file(const char *from, const char *to, v4_err *err)
{
    FILE *in = fopen(from, "rb");
    if (!in)
        return v4_errf(err, "%s: cannot open: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    if (!out) {
        fclose(in);
        return v4_errf(err, "%s: cannot create: %s", to, strerror(errno));
    }
    char buf[1 << 16];
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n)
            rc = v4_errf(err, "%s: write failed: %s", to, strerror(errno));
    if (rc == 0 && ferror(in))
        rc = v4_errf(err, "%s: read failed", from);
    fclose(in);
    if (fclose(out) != 0 && rc == 0)
        rc = v4_errf(err, "%s: write failed: %s", to, strerror(errno));
    return rc;
}

static int copy_tokenizer(const char *from_dir, const char *to_dir, v4_err *err)
{
    static const char *const files[] = {"tokenizer.json", "tokenizer_config.json"};
    for (int i = 0; i < 2; i++) {
        char src[4200], dst[4200];
        snprintf(src, sizeof src, "%s/%s", from_dir, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", to_dir, files[i]);
        if (i > 0 && access(src, F_OK) != 0)
            continue; /* tokenizer_config.json is optional */
        if (copy_file(src, dst, err))
            return -1;
    }
    return 0;
}

/* Shards: consecutive tensors up to the byte limit (a tensor larger than
 * the limit gets a shard of its own). Returns the shard count. */
static int assign_shards(mk_plan *p, uint64_t limit)
{
    int s = 0;
    uint64_t used = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (used > 0 && used + p->t[i].bytes > limit) {
            s++;
            used = 0;
        }
        p->t[i].shard = s;
        used += p->t[i].bytes;
    }
    return s + 1;
}

/* The chunk list in file order. */
static mk_job *make_jobs(const mk_plan *p, size_t *n_jobs, size_t *max_bytes)
{
    size_t n = 0, cap = 0;
    mk_job *jobs = NULL;
    *max_bytes = 16;
    for (size_t i = 0; i < p->n; i++) {
        const mk_tensor *t = &p->t[i];
        int64_t per = t->row_bytes ? (int64_t)(MK_CHUNK_BYTES / t->row_bytes) : 1;
        if (per < 1)
            per = 1;
        for (int64_t r = 0; r < t->rows; r += per) {
            if (n == cap) {
                cap = cap ? 2 * cap : 4096;
                mk_job *nj = realloc(jobs, cap * sizeof *nj);
                if (!nj) {
                    free(jobs);
                    return NULL;
                }
                jobs = nj;
            }
            jobs[n] = (mk_job){i, r, r + per <= t->rows ? per : t->rows - r};
            size_t b = (size_t)jobs[n].nr * t->row_bytes;
            if (b > *max_bytes)
                *max_bytes = b;
            n++;
        }
    }
    *n_jobs = n;
    return jobs ? jobs : calloc(1, sizeof *jobs);
}

static int write_index(const mk_plan *p, const char *dir, int n_shards, v4_err *err)
{
    json_t *wm = json_object();
    for (size_t i = 0; i < p->n; i++) {
        char name[64];
        shard_name(name, sizeof name, p->t[i].shard, n_shards);
        json_object_set_new(wm, p->t[i].name, json_string(name));
    }
    json_t *root = json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)p->total, "weight_map", wm);
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    int rc = json_dump_file(root, path, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    return rc ? v4_errf(err, "%s: cannot write: %s", path, strerror(errno)) : 0;
}

/* Opens the writer of shard `s` with the header of all its tensors. */
static int open_shard(const mk_plan *p, const char *dir, int s, int n_shards, size_t first, st_writer **w,
                      v4_err *err)
{
    size_t last = first;
    while (last < p->n && p->t[last].shard == s)
        last++;
    st_spec *specs = calloc(last - first + 1, sizeof *specs);
    if (!specs)
        return v4_errf(err, "out of memory");
    for (size_t i = first; i < last; i++) {
        const mk_tensor *t = &p->t[i];
        specs[i - first] = (st_spec){.name = t->name, .dtype = t->dtype, .ndim = t->ndim,
                                     .shape = {t->shape[0], t->shape[1]}};
    }
    char name[64], path[4200];
    shard_name(name, sizeof name, s, n_shards);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = st_writer_open(path, specs, last - first, w, err);
    free(specs);
    return rc;
}

/* Runs the pipeline: workers generate, this thread writes in order. */
static int stream_tensors(const mk_options *o, const mk_plan *p, int n_shards, v4_err *err)
{
    size_t n_jobs, slot_bytes;
    mk_job *jobs = make_jobs(p, &n_jobs, &slot_bytes);
    if (!jobs)
        return v4_errf(err, "out of memory for the chunk list");
    int threads = o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1)
        threads = 1;
    pipeline pl = {.plan = p, .jobs = jobs, .n_jobs = n_jobs, .n_slots = 2 * (size_t)threads + 2};
    pthread_mutex_init(&pl.mu, NULL);
    pthread_cond_init(&pl.cv, NULL);
    pl.slot = calloc(pl.n_slots, sizeof *pl.slot);
    pl.ready = calloc(pl.n_slots, sizeof *pl.ready);
    int rc = 0;
    for (size_t i = 0; pl.slot && i < pl.n_slots; i++)
        if (!(pl.slot[i] = malloc(slot_bytes)))
            rc = -1;
    if (!pl.slot || !pl.ready || rc)
        rc = v4_errf(err, "out of memory for %zu chunk buffers of %zu bytes", pl.n_slots, slot_bytes);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    if (!tid && rc == 0)
        rc = v4_errf(err, "out of memory");
    int started = 0;
    for (; rc == 0 && started < threads; started++) {
        int e = pthread_create(&tid[started], NULL, worker, &pl);
        if (e) {
            rc = v4_errf(err, "cannot start generator threads: %s", strerror(e));
            break;
        }
    }

    st_writer *w = NULL;
    int shard = -1;
    uint64_t done = 0;
    size_t j = 0;
    for (size_t ti = 0; rc == 0 && ti < p->n; ti++) {
        const mk_tensor *t = &p->t[ti];
        if (t->shard != shard) {
            if (w && st_writer_close(w, err))
                rc = -1;
            w = NULL;
            shard = t->shard;
            if (rc == 0 && open_shard(p, o->out_dir, shard, n_shards, ti, &w, err))
                rc = -1;
        }
        for (; rc == 0 && j < n_jobs && pl.jobs[j].tensor == ti; j++) {
            size_t s = j % pl.n_slots;
            pthread_mutex_lock(&pl.mu);
            while (pl.ready[s] != j + 1)
                pthread_cond_wait(&pl.cv, &pl.mu);
            pthread_mutex_unlock(&pl.mu);
            size_t nb = (size_t)pl.jobs[j].nr * t->row_bytes;
            if (st_writer_write(w, pl.slot[s], nb, err)) {
                rc = -1;
                break;
            }
            pthread_mutex_lock(&pl.mu);
            pl.ready[s] = 0;
            pl.written++;
            pthread_cond_broadcast(&pl.cv);
            pthread_mutex_unlock(&pl.mu);
            done += nb;
            if (o->progress)
                o->progress(o->progress_ctx, done, p->total);
        }
    }
    if (w) {
        v4_err e2;
        if (st_writer_close(w, rc ? &e2 : err) && rc == 0)
            rc = -1;
    }
    pthread_mutex_lock(&pl.mu);
    pl.stop = 1;
    pthread_cond_broadcast(&pl.cv);
    pthread_mutex_unlock(&pl.mu);
    for (int i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    free(tid);
    for (size_t i = 0; pl.slot && i < pl.n_slots; i++)
        free(pl.slot[i]);
    free(pl.slot);
    free(pl.ready);
    pthread_mutex_destroy(&pl.mu);
    pthread_cond_destroy(&pl.cv);
    free(jobs);
    return rc;
}

/* Config text, parsed config and plan with shards assigned. */
static int prepare(const mk_options *o, char **json, mk_plan *p, int *n_shards, v4_err *err)
{
    if (mk_config_json(o, json, err))
        return -1;
    v4_config c;
    if (cfg_parse(*json, strlen(*json), "generated config.json", &c, err) || mk_plan_build(&c, o->seed, p, err)) {
        free(*json);
        *json = NULL;
        return -1;
    }
    *n_shards = assign_shards(p, o->shard_bytes ? o->shard_bytes : MK_DEFAULT_SHARD_BYTES);
    return 0;
}

static void summarise(const mk_plan *p, int n_shards, mk_summary *s)
{
    if (s)
        *s = (mk_summary){.bytes = p->total, .tensors = p->n, .shards = n_shards, .layers = (int)p->cfg.n_layers};
}

int mk_plan_size(const mk_options *o, mk_summary *s, v4_err *err)
{
    char *json;
    mk_plan p;
    int n_shards;
    if (prepare(o, &json, &p, &n_shards, err))
        return -1;
    summarise(&p, n_shards, s);
    free(json);
    mk_plan_free(&p);
    return 0;
}

int mk_write(const mk_options *o, mk_summary *s, v4_err *err)
{
    if (!o->out_dir || !*o->out_dir)
        return v4_errf(err, "no output directory given");
    char path[4200];
    if (o->tokenizer_dir) {
        /* checked before hours of writing, not after */
        snprintf(path, sizeof path, "%s/tokenizer.json", o->tokenizer_dir);
        if (access(path, R_OK) != 0)
            return v4_errf(err, "%s: cannot read: %s", path, strerror(errno));
    }
    char *json;
    mk_plan p;
    int n_shards;
    if (prepare(o, &json, &p, &n_shards, err))
        return -1;
    snprintf(path, sizeof path, "%s/config.json", o->out_dir);
    int rc = make_dirs(o->out_dir, err);
    if (rc == 0)
        rc = check_space(o, &p, n_shards, err);
    /* tensors first, then the index and config: a folder with config.json
     * holds a complete checkpoint */
    if (rc == 0)
        rc = stream_tensors(o, &p, n_shards, err);
    if (rc == 0)
        rc = write_index(&p, o->out_dir, n_shards, err);
    if (rc == 0) {
        FILE *f = fopen(path, "wb");
        size_t len = strlen(json);
        if (!f || fwrite(json, 1, len, f) != len || fputc('\n', f) == EOF)
            rc = v4_errf(err, "%s: cannot write: %s", path, strerror(errno));
        if (f && fclose(f) != 0 && rc == 0)
            rc = v4_errf(err, "%s: cannot write: %s", path, strerror(errno));
    }
    if (rc == 0 && o->tokenizer_dir)
        rc = copy_tokenizer(o->tokenizer_dir, o->out_dir, err);
    if (rc == 0)
        summarise(&p, n_shards, s);
    free(json);
    mk_plan_free(&p);
    return rc;
}
