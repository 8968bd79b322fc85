/* Backend selection by name ("cpu", "cuda") for the front ends. */
#ifndef V4_BACKEND_REGISTRY_H
#define V4_BACKEND_REGISTRY_H

#include "backend/backend.h"

typedef struct backend_opts {
    const char *name;     /* "cpu" (default) or "cuda" */
    int threads;          /* CPU worker threads; 0 = all cores */
    dtype_t fp8_dialect;  /* DT_F8_E4M3 (OCP) or DT_F8_E4M3FNUZ; 0 (DT_F32) means OCP */
    int device;           /* GPU ordinal */
} backend_opts;

int backend_open(const backend_opts *o, v4_backend **out, v4_err *err);
void backend_close(v4_backend *be);
/* Parses "ocp" or "fnuz". */
int backend_parse_dialect(const char *s, dtype_t *out, v4_err *err);

#endif
