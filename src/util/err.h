/* Errors are values: a function that can fail returns 0 on success or -1 on
 * failure and fills a v4_err the caller can show. The library never prints on
 * its own and never exits. */
#ifndef V4_UTIL_ERR_H
#define V4_UTIL_ERR_H

#include <stdarg.h>

typedef struct v4_err {
    char msg[1024];
} v4_err;

/* Sets e->msg (when e is not NULL) and returns -1, so callers can write
 * `return v4_errf(err, "...", ...);`. */
int v4_errf(v4_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes an existing message with more context: "<prefix>: <old msg>". */
int v4_err_wrap(v4_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
