/* The ByteLevel alphabet of GPT-2-style tokenizers: every byte is shown as a
 * printable code point (bytes_to_unicode), so vocabulary strings are UTF-8
 * text. The tokenizer works on raw bytes internally; these functions convert
 * between the two forms. */
#include "tokenizer/tok_internal.h"

/* Printable bytes stand for themselves; the others (controls, space, DEL,
 * NBSP..., soft hyphen) take code points 256, 257, ... in byte order. */
static bool self_mapped(unsigned b)
{
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
}

/* The non-printable bytes are 0..32, 127..160 and 173: 68 of them, taking
 * code points 256..323 in that order. */
static uint32_t bytelevel_char(unsigned char b)
{
    if (self_mapped(b))
        return b;
    if (b <= 32)
        return 256 + b;
    if (b <= 160)
        return 256 + 33 + (b - 127);
    return 256 + 67; /* 173 */
}

/* Inverse: code point -> byte, -1 when the code point is not in the alphabet. */
static int byte_of(uint32_t cp)
{
    if (cp < 256)
        return self_mapped(cp) ? (int)cp : -1;
    uint32_t n = cp - 256;
    if (n < 33)
        return (int)n;
    if (n < 67)
        return (int)(127 + n - 33);
    return n == 67 ? 173 : -1;
}

long tok_bytelevel_decode(const char *s, size_t len, unsigned char *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    long n = 0;
    while (i < len) {
        uint32_t cp;
        if (u[i] < 0x80) {
            cp = u[i++];
        } else if ((u[i] & 0xE0) == 0xC0 && i + 1 < len) {
            cp = (uint32_t)(u[i] & 0x1F) << 6 | (u[i + 1] & 0x3F);
            i += 2;
        } else {
            return -1; /* every byte-level character is below U+0800 */
        }
        int b = byte_of(cp);
        if (b < 0)
            return -1;
        out[n++] = (unsigned char)b;
    }
    return n;
}

size_t tok_bytelevel_encode(const unsigned char *s, size_t len, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        uint32_t cp = bytelevel_char(s[i]);
        if (cp < 0x80) {
            out[n++] = (char)cp;
        } else {
            out[n++] = (char)(0xC0 | cp >> 6);
            out[n++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    return n;
}
