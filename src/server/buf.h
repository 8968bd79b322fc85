/* A growable byte buffer for the server: request bodies, the pending output
 * of a generation (text, token ids, logprob records) and formatted SSE text.
 * It grows by doubling, so appending is amortised O(1); a failed allocation
 * leaves the buffer as it was and returns -1. */
#ifndef V4_SERVER_BUF_H
#define V4_SERVER_BUF_H

#include <stddef.h>

typedef struct srv_buf {
    char *p;
    size_t n, cap;
} srv_buf; /* zero-initialise */

/* Makes room for `more` bytes beyond n. */
int srv_buf_reserve(srv_buf *b, size_t more);
int srv_buf_append(srv_buf *b, const void *data, size_t len);
int srv_buf_puts(srv_buf *b, const char *s);
int srv_buf_printf(srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Keeps the allocation, forgets the contents. */
void srv_buf_clear(srv_buf *b);
void srv_buf_free(srv_buf *b);

#endif
