/* safetensors reader (mmap, single file or sharded through
 * model.safetensors.index.json) and a streaming writer.
 *
 * The reader validates everything it is given: header length, header JSON,
 * dtype names, shape x dtype size == byte length, offsets in range and not
 * overlapping, every indexed tensor present in the shard the index names.
 * Every error names the file and, where there is one, the tensor. */
#ifndef V4_FORMATS_SAFETENSORS_H
#define V4_FORMATS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "formats/dtype.h"
#include "util/err.h"

#define ST_MAX_DIMS 8
/* A header larger than this is refused as absurd (real headers are < 1 MB). */
#define ST_MAX_HEADER_BYTES (100u << 20)

typedef struct st_tensor {
    const char *name;
    const char *file; /* path of the shard holding it */
    dtype_t dtype;    /* as stored in the file */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t nelem;
    uint8_t *data; /* inside a read-only mapping; see st_make_writable */
    size_t nbytes;
} st_tensor;

typedef struct st_archive st_archive;

/* Opens `path`: a directory (model.safetensors.index.json if present, else
 * model.safetensors) or one .safetensors file. */
int st_open(const char *path, st_archive **out, v4_err *err);
void st_close(st_archive *a);

/* Looks a tensor up by exact name; NULL when absent. */
const st_tensor *st_find(const st_archive *a, const char *name);
size_t st_count(const st_archive *a);
const st_tensor *st_at(const st_archive *a, size_t i); /* sorted by name */

/* Makes a tensor's bytes writable in this process only (copy-on-write pages
 * of a private mapping), for one-time conversions at load such as OCP ->
 * fnuz FP8. The file on disk never changes. */
int st_make_writable(const st_archive *a, const st_tensor *t, v4_err *err);

/* Streaming writer: the header (all names, dtypes, shapes) is written first,
 * then the data of each tensor in the order given, so a checkpoint of any
 * size is written without holding it in memory. */
typedef struct st_spec {
    const char *name;
    dtype_t dtype; /* file dtype (MXFP4 weights are written as I8) */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
} st_spec;

typedef struct st_writer st_writer;

int st_writer_open(const char *path, const st_spec *specs, size_t n, st_writer **out, v4_err *err);
/* Appends bytes of the current tensor(s); calls may split or join tensors
 * freely as long as the total equals the sum of the tensors' sizes. */
int st_writer_write(st_writer *w, const void *data, size_t nbytes, v4_err *err);
/* Checks that every byte was written, closes, frees. */
int st_writer_close(st_writer *w, v4_err *err);
/* Bytes a tensor of this spec occupies in the file. */
size_t st_spec_bytes(const st_spec *s);

#endif
