/* Test helper: loads a checkpoint (config.json and every tensor) into
 * memory, lets a test edit it (drop, add, retype, reshape, overwrite), and
 * writes it back with the project's own safetensors writer, as one file or
 * as shards with an index. Used to make malformed checkpoints from the
 * golden ones. */
#ifndef V4_TESTS_TU_CKPT_H
#define V4_TESTS_TU_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "formats/safetensors.h"

typedef struct tc_tensor {
    char name[256];
    dtype_t dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint8_t *data; /* owned */
    size_t nbytes;
} tc_tensor;

typedef struct tc_ckpt {
    tc_tensor *t;
    size_t n, cap;
    char *config; /* config.json text, owned; NULL writes none */
} tc_ckpt;

/* Copies DIR/config.json and every tensor of DIR. Returns 0 or -1. */
int tc_load(tc_ckpt *c, const char *model_dir);
tc_tensor *tc_find(tc_ckpt *c, const char *name);
/* Removes a tensor; returns -1 when absent. */
int tc_remove(tc_ckpt *c, const char *name);
/* Appends a zero-filled tensor (file dtype: MXFP4 weights as I8). */
tc_tensor *tc_add(tc_ckpt *c, const char *name, dtype_t dt, int ndim, const int64_t *shape);
/* Writes DIR/config.json and the tensors: with n_shards == 0 as
 * DIR/model.safetensors, else split into n_shards files named like the
 * official checkpoint plus model.safetensors.index.json. */
int tc_write(const tc_ckpt *c, const char *dir, int n_shards);
void tc_free(tc_ckpt *c);

/* Reads a whole file into a malloc'd NUL-terminated buffer (NULL on error). */
char *tc_read_file(const char *path, size_t *len);
/* Writes a buffer to a file; returns 0 or -1. */
int tc_write_file(const char *path, const void *data, size_t len);
/* Removes a directory tree made by a test (e.g. a tu_tmpdir()). */
void tc_rmtree(const char *dir);

#endif
