/* Open-addressing hash maps of the tokenizer: byte strings -> id (vocabulary,
 * added tokens) and id pairs -> merge rank (BPE merges). Built once at load,
 * read-only afterwards, so lookups are safe from many threads. */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static size_t pow2_for(size_t expected)
{
    size_t c = 64;
    while (c < expected * 2)
        c *= 2;
    return c;
}

int tok_strmap_init(tok_strmap *m, size_t expected, v4_err *err)
{
    memset(m, 0, sizeof *m);
    size_t cap = pow2_for(expected);
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots)
        return v4_errf(err, "tokenizer: out of memory for a hash map of %zu entries", expected);
    for (size_t i = 0; i < cap; i++)
        m->slots[i].value = -1;
    m->mask = cap - 1;
    return 0;
}

static int strmap_grow(tok_strmap *m, v4_err *err)
{
    size_t cap = (m->mask + 1) * 2;
    struct tok_strmap_slot *s = malloc(cap * sizeof *s);
    if (!s)
        return v4_errf(err, "tokenizer: out of memory growing a hash map to %zu slots", cap);
    for (size_t i = 0; i < cap; i++)
        s[i].value = -1;
    for (size_t i = 0; i <= m->mask; i++) {
        if (m->slots[i].value < 0)
            continue;
        size_t j = hash_bytes(m->keys + m->slots[i].off, m->slots[i].len) & (cap - 1);
        while (s[j].value >= 0)
            j = (j + 1) & (cap - 1);
        s[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = s;
    m->mask = cap - 1;
    return 0;
}

int tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t value, v4_err *err)
{
    if ((m->count + 1) * 2 > m->mask + 1 && strmap_grow(m, err))
        return -1;
    size_t j = hash_bytes(key, len) & m->mask;
    for (; m->slots[j].value >= 0; j = (j + 1) & m->mask) {
        if (m->slots[j].len == len && memcmp(m->keys + m->slots[j].off, key, len) == 0) {
            m->slots[j].value = value;
            return 0;
        }
    }
    if (m->keys_len + len > UINT32_MAX)
        return v4_errf(err, "tokenizer: hash map keys exceed 4 GiB");
    if (m->keys_len + len > m->keys_cap) {
        size_t c = m->keys_cap ? m->keys_cap : 4096;
        while (c < m->keys_len + len)
            c *= 2;
        char *k = realloc(m->keys, c);
        if (!k)
            return v4_errf(err, "tokenizer: out of memory for hash map keys");
        m->keys = k;
        m->keys_cap = c;
    }
    if (len)
        memcpy(m->keys + m->keys_len, key, len);
    m->slots[j].off = (uint32_t)m->keys_len;
    m->slots[j].len = (uint32_t)len;
    m->slots[j].value = value;
    m->keys_len += len;
    m->count++;
    return 0;
}

int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len)
{
    if (!m->slots)
        return -1;
    for (size_t j = hash_bytes(key, len) & m->mask; m->slots[j].value >= 0; j = (j + 1) & m->mask)
        if (m->slots[j].len == len && memcmp(m->keys + m->slots[j].off, key, len) == 0)
            return m->slots[j].value;
    return -1;
}

void tok_strmap_free(tok_strmap *m)
{
    free(m->slots);
    free(m->keys);
    memset(m, 0, sizeof *m);
}

int tok_pairmap_init(tok_pairmap *m, size_t expected, v4_err *err)
{
    size_t cap = pow2_for(expected);
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots)
        return v4_errf(err, "tokenizer: out of memory for %zu merges", expected);
    for (size_t i = 0; i < cap; i++)
        m->slots[i].rank = -1;
    m->mask = cap - 1;
    return 0;
}

static uint64_t pair_key(int32_t a, int32_t b)
{
    return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

void tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id)
{
    uint64_t k = pair_key(a, b);
    size_t j = hash_u64(k) & m->mask;
    for (; m->slots[j].rank >= 0; j = (j + 1) & m->mask)
        if (m->slots[j].key == k)
            break;
    m->slots[j].key = k;
    m->slots[j].rank = rank;
    m->slots[j].id = id;
}

const struct tok_pair_slot *tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b)
{
    uint64_t k = pair_key(a, b);
    for (size_t j = hash_u64(k) & m->mask; m->slots[j].rank >= 0; j = (j + 1) & m->mask)
        if (m->slots[j].key == k)
            return &m->slots[j];
    return NULL;
}

void tok_pairmap_free(tok_pairmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->mask = 0;
}
