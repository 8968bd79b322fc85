/* Stop-string matcher: KMP automata over the byte stream, a small buffer of
 * held-back text, and the UTF-8 rule for what may be emitted. See stop.h. */
#include "engine/stop.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct stop_matcher {
    size_t n;
    size_t len[STOP_MAX_STRINGS];
    unsigned char pat[STOP_MAX_STRINGS][STOP_MAX_BYTES];
    /* border[s][q]: longest proper prefix of pat[s][0..q) that is also its
     * suffix, where the automaton falls back to on a mismatch at q. */
    uint16_t border[STOP_MAX_STRINGS][STOP_MAX_BYTES + 1];
    size_t state[STOP_MAX_STRINGS]; /* bytes of pat[s] matched by the tail of the stream */
    unsigned char held[STOP_HOLD_MAX];
    size_t n_held;
    int matched; /* index of the completed stop string, -1 */
};

/* Length of the well-formed UTF-8 character at s[0..n), 0 if there is none
 * (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF). */
static size_t utf8_char(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t k = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (!k || n < k)
        return 0;
    for (size_t i = 1; i < k; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F) || (c == 0xF0 && s[1] < 0x90) ||
        (c == 0xF4 && s[1] > 0x8F))
        return 0;
    return k;
}

int stop_init(stop_matcher **out, const char *const *stops, size_t n, v4_err *err)
{
    *out = NULL;
    if (n > STOP_MAX_STRINGS)
        return v4_errf(err, "stop: %zu stop strings, at most %d allowed", n, STOP_MAX_STRINGS);
    for (size_t s = 0; s < n; s++) {
        if (!stops[s])
            return v4_errf(err, "stop[%zu]: missing", s);
        size_t len = strlen(stops[s]);
        if (len == 0)
            return v4_errf(err, "stop[%zu]: empty string", s);
        if (len > STOP_MAX_BYTES)
            return v4_errf(err, "stop[%zu]: %zu bytes, at most %d allowed", s, len, STOP_MAX_BYTES);
        const unsigned char *p = (const unsigned char *)stops[s];
        for (size_t i = 0; i < len;) {
            size_t k = utf8_char(p + i, len - i);
            if (!k)
                return v4_errf(err, "stop[%zu]: not valid UTF-8 at byte %zu", s, i);
            i += k;
        }
    }
    stop_matcher *m = calloc(1, sizeof *m);
    if (!m)
        return v4_errf(err, "stop: out of memory");
    m->n = n;
    m->matched = -1;
    for (size_t s = 0; s < n; s++) {
        size_t len = strlen(stops[s]);
        m->len[s] = len;
        memcpy(m->pat[s], stops[s], len);
        uint16_t *b = m->border[s];
        size_t k = 0;
        for (size_t q = 1; q < len; q++) {
            while (k > 0 && m->pat[s][q] != m->pat[s][k])
                k = b[k];
            if (m->pat[s][q] == m->pat[s][k])
                k++;
            b[q + 1] = (uint16_t)k;
        }
    }
    *out = m;
    return 0;
}

/* Byte j of the held text followed by the new text. */
static inline unsigned char at(const stop_matcher *m, const char *text, size_t j)
{
    return j < m->n_held ? m->held[j] : (unsigned char)text[j - m->n_held];
}

/* Bytes at the end of the stream (held + text, `total` bytes) that form the
 * start of a UTF-8 character whose remaining bytes have not arrived. */
static size_t utf8_incomplete_tail(const stop_matcher *m, const char *text, size_t total)
{
    for (size_t back = 1; back <= 3 && back <= total; back++) {
        unsigned char c = at(m, text, total - back);
        if ((c & 0xC0) == 0x80)
            continue; /* continuation byte: look further back for the lead */
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? back : 0;
    }
    return 0;
}

/* Copies bytes [from, to) of held + text to dst. */
static void copy_out(const stop_matcher *m, const char *text, size_t from, size_t to, char *dst)
{
    if (from < m->n_held) {
        size_t k = (to < m->n_held ? to : m->n_held) - from;
        memcpy(dst, m->held + from, k);
        dst += k;
        from += k;
    }
    if (from < to)
        memcpy(dst, text + (from - m->n_held), to - from);
}

int stop_feed(stop_matcher *m, const char *text, size_t len, char *emit, size_t cap, size_t *emit_len)
{
    *emit_len = 0;
    if (m->matched >= 0)
        return 1;
    if (cap < m->n_held + len)
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        int best = -1;
        for (size_t s = 0; s < m->n; s++) {
            size_t q = m->state[s];
            while (q > 0 && m->pat[s][q] != c)
                q = m->border[s][q];
            if (m->pat[s][q] == c)
                q++;
            m->state[s] = q;
            if (q == m->len[s] && (best < 0 || m->len[s] > m->len[best]))
                best = (int)s;
        }
        if (best >= 0) {
            /* Everything the stop string spans before this feed is still
             * held: the hold always covers the longest partial match. */
            size_t start = m->n_held + i + 1 - m->len[best];
            copy_out(m, text, 0, start, emit);
            *emit_len = start;
            m->matched = best;
            m->n_held = 0;
            return 1;
        }
    }
    size_t total = m->n_held + len, hold = utf8_incomplete_tail(m, text, total);
    for (size_t s = 0; s < m->n; s++)
        hold = m->state[s] > hold ? m->state[s] : hold;
    copy_out(m, text, 0, total - hold, emit);
    *emit_len = total - hold;
    unsigned char keep[STOP_HOLD_MAX];
    copy_out(m, text, total - hold, total, (char *)keep);
    memcpy(m->held, keep, hold);
    m->n_held = hold;
    return 0;
}

size_t stop_flush(stop_matcher *m, char *emit, size_t cap)
{
    size_t k = m->n_held < cap ? m->n_held : cap;
    memcpy(emit, m->held, k);
    memmove(m->held, m->held + k, m->n_held - k);
    m->n_held -= k;
    /* The stream has ended: no partial match carries on into a later feed. */
    memset(m->state, 0, sizeof m->state);
    return k;
}

int stop_matched(const stop_matcher *m)
{
    return m->matched;
}

void stop_free(stop_matcher *m)
{
    free(m);
}
