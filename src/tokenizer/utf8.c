/* UTF-8 validation and lossy decoding. Invalid bytes are replaced the way
 * Rust's String::from_utf8_lossy and the WHATWG decoder do it: one U+FFFD per
 * maximal subpart of an ill-formed sequence, so streaming and whole decodes
 * produce the same text as the reference implementations. */
#include "tokenizer/tok_internal.h"

#include <string.h>

size_t tok_utf8_char_len(unsigned char lead)
{
    return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

/* Allowed range of the second byte after lead byte b (excludes overlongs,
 * surrogates and code points above U+10FFFF); 0 when b cannot start a
 * multi-byte character. */
static int second_range(unsigned char b, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF)
        return 2;
    if (b >= 0xE0 && b <= 0xEF) {
        if (b == 0xE0)
            *lo = 0xA0;
        if (b == 0xED)
            *hi = 0x9F;
        return 3;
    }
    if (b >= 0xF0 && b <= 0xF4) {
        if (b == 0xF0)
            *lo = 0x90;
        if (b == 0xF4)
            *hi = 0x8F;
        return 4;
    }
    return 0;
}

tok_utf8_step tok_utf8_next(const unsigned char *s, size_t len, size_t *n)
{
    if (s[0] < 0x80) {
        *n = 1;
        return TOK_UTF8_VALID;
    }
    unsigned char lo, hi;
    size_t need = (size_t)second_range(s[0], &lo, &hi);
    if (!need) {
        *n = 1;
        return TOK_UTF8_INVALID;
    }
    size_t i = 1;
    for (; i < need; i++) {
        if (i >= len) {
            *n = i;
            return TOK_UTF8_INCOMPLETE;
        }
        if (s[i] < lo || s[i] > hi) {
            *n = i;
            return TOK_UTF8_INVALID;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    *n = need;
    return TOK_UTF8_VALID;
}

size_t tok_utf8_invalid_at(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t n;
        if (tok_utf8_next(s + i, len - i, &n) != TOK_UTF8_VALID)
            return i;
        i += n;
    }
    return len;
}

size_t tok_utf8_lossy(const unsigned char *s, size_t len, bool hold_tail, char *out, size_t *held)
{
    size_t i = 0, w = 0;
    if (held)
        *held = 0;
    while (i < len) {
        size_t n;
        tok_utf8_step st = tok_utf8_next(s + i, len - i, &n);
        if (st == TOK_UTF8_VALID) {
            memcpy(out + w, s + i, n);
            w += n;
        } else if (st == TOK_UTF8_INCOMPLETE && hold_tail) {
            *held = n;
            return w;
        } else {
            memcpy(out + w, "\xEF\xBF\xBD", 3);
            w += 3;
        }
        i += n;
    }
    return w;
}
