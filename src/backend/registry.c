/* Backend selection; GPU backends register when the build includes them
 * (V4_HAVE_CUDA). */
#include "backend/registry.h"

#include <string.h>

#ifdef V4_HAVE_CUDA
int backend_cuda_create(int device, dtype_t fp8_dialect, v4_backend **out, v4_err *err);
void backend_cuda_destroy(v4_backend *be);
#endif

int backend_parse_dialect(const char *s, dtype_t *out, v4_err *err)
{
    if (strcmp(s, "ocp") == 0)
        *out = DT_F8_E4M3;
    else if (strcmp(s, "fnuz") == 0)
        *out = DT_F8_E4M3FNUZ;
    else
        return v4_errf(err, "unknown FP8 dialect '%s' (use ocp or fnuz)", s);
    return 0;
}

int backend_open(const backend_opts *o, v4_backend **out, v4_err *err)
{
    const char *name = o->name ? o->name : "cpu";
    dtype_t dialect = o->fp8_dialect ? o->fp8_dialect : DT_F8_E4M3;
    if (strcmp(name, "cpu") == 0)
        return backend_cpu_create(o->threads, dialect, out, err);
#ifdef V4_HAVE_CUDA
    if (strcmp(name, "cuda") == 0)
        return backend_cuda_create(o->device, dialect, out, err);
#else
    if (strcmp(name, "cuda") == 0)
        return v4_errf(err, "this build has no CUDA backend; build with `make cuda`");
#endif
    return v4_errf(err, "unknown backend '%s' (cpu or cuda)", name);
}

void backend_close(v4_backend *be)
{
    if (!be)
        return;
#ifdef V4_HAVE_CUDA
    if (strcmp(be->ops->name, "cuda") == 0) {
        backend_cuda_destroy(be);
        return;
    }
#endif
    backend_cpu_destroy(be);
}
