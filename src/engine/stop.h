/* Stop strings (OpenAI "stop") matched on the decoded text of a request,
 * across token boundaries.
 *
 * The text arrives in pieces (one per decoded token, or whatever the
 * detokenizer hands over). The matcher emits what can no longer be part of a
 * stop string and holds back the rest: the longest tail that is a prefix of
 * some stop string, and a UTF-8 character whose bytes have not all arrived,
 * so emitted text never ends inside a character. When a stop string
 * completes, the text before it is emitted and the stop string itself is not
 * (OpenAI behaviour); the request is then finished.
 *
 * Matching is one KMP automaton per stop string, fed byte by byte, so the
 * result does not depend on how the text is cut into pieces: the stop string
 * that completes first in the text wins, and of two completing on the same
 * byte the longer one (it starts earlier). All memory is taken by stop_init. */
#ifndef V4_ENGINE_STOP_H
#define V4_ENGINE_STOP_H

#include <stddef.h>

#include "util/err.h"

#define STOP_MAX_STRINGS 4   /* OpenAI limit */
#define STOP_MAX_BYTES 256   /* per stop string */
/* Most bytes ever held back: a stop string less its last byte (an incomplete
 * UTF-8 character, at most 3 bytes, is shorter). */
#define STOP_HOLD_MAX (STOP_MAX_BYTES - 1)

typedef struct stop_matcher stop_matcher;

/* n stop strings (0 to STOP_MAX_STRINGS; 0 still holds back incomplete UTF-8
 * characters), each non-empty, at most STOP_MAX_BYTES bytes, well-formed
 * UTF-8. Messages name the offending string by index. */
int stop_init(stop_matcher **out, const char *const *stops, size_t n, v4_err *err);

/* Feeds newly decoded text. Writes to emit the text that is safe to send now
 * and its length to *emit_len. Returns 0 while no stop string has completed;
 * 1 when one has: emit then ends just before the stop string and the matcher
 * is finished (later feeds emit nothing and return 1 again). cap must be at
 * least len + STOP_HOLD_MAX; with less, -1 and nothing is consumed. */
int stop_feed(stop_matcher *m, const char *text, size_t len, char *emit, size_t cap, size_t *emit_len);

/* At the end of generation (max tokens, EOS): releases the held-back text,
 * up to cap bytes (STOP_HOLD_MAX always suffices; with less, call again until
 * it returns 0). Returns the bytes written; 0 after a stop string. It ends the
 * stream: a partial match does not continue into a later feed. */
size_t stop_flush(stop_matcher *m, char *emit, size_t cap);

/* Index of the stop string that completed, -1 while none has (vLLM reports
 * it as stop_reason). */
int stop_matched(const stop_matcher *m);

void stop_free(stop_matcher *m);

#endif
