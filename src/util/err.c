#include "util/err.h"

#include <stdio.h>
#include <string.h>

int v4_errf(v4_err *e, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int v4_err_wrap(v4_err *e, const char *fmt, ...)
{
    if (e) {
        char old[sizeof e->msg];
        memcpy(old, e->msg, sizeof old);
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        size_t used = n < 0 ? 0 : (size_t)n < sizeof e->msg ? (size_t)n : sizeof e->msg - 1;
        size_t room = sizeof e->msg - used;
        if (room > 2) {
            memcpy(e->msg + used, ": ", 2);
            size_t k = strnlen(old, room - 3);
            memcpy(e->msg + used + 2, old, k);
            e->msg[used + 2 + k] = 0;
        }
    }
    return -1;
}
