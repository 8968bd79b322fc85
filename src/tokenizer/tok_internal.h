/* Internal pieces of the tokenizer shared between its files: the loaded
 * tokenizer struct, the small hash maps, the added-token trie, the
 * pre-tokenizer rules, UTF-8 helpers and growable per-call buffers. Nothing
 * here is part of the public API (tokenizer.h). */
#ifndef V4_TOKENIZER_TOK_INTERNAL_H
#define V4_TOKENIZER_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"
#include "util/err.h"

/* ---- growable arrays (per call, never shared between threads) ---- */
typedef struct tok_ids {
    int32_t *v;
    size_t n, cap;
} tok_ids;
int tok_ids_push(tok_ids *a, int32_t id, v4_err *err);

typedef struct tok_span {
    size_t start, end;
} tok_span;
typedef struct tok_spans {
    tok_span *v;
    size_t n, cap;
} tok_spans;
int tok_spans_push(tok_spans *a, size_t start, size_t end, v4_err *err);

/* ---- byte strings -> int32 (vocab.c) ---- */
typedef struct tok_strmap {
    struct tok_strmap_slot {
        uint32_t off, len; /* key bytes in keys[] */
        int32_t value;     /* -1: empty slot */
    } *slots;
    size_t mask; /* capacity - 1, capacity a power of two */
    size_t count;
    char *keys;
    size_t keys_len, keys_cap;
} tok_strmap;
int tok_strmap_init(tok_strmap *m, size_t expected, v4_err *err);
/* Inserts or overwrites. */
int tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t value, v4_err *err);
int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len);
void tok_strmap_free(tok_strmap *m);

/* ---- merge ranks: (left id, right id) -> (rank, merged id) (vocab.c) ---- */
typedef struct tok_pairmap {
    struct tok_pair_slot {
        uint64_t key;
        int32_t rank; /* -1: empty slot */
        int32_t id;
    } *slots;
    size_t mask;
} tok_pairmap;
int tok_pairmap_init(tok_pairmap *m, size_t expected, v4_err *err);
/* A pair listed twice keeps its later rank, as Hugging Face's map does. */
void tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id);
/* Returns the slot or NULL. */
const struct tok_pair_slot *tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b);
void tok_pairmap_free(tok_pairmap *m);

/* ---- byte-level alphabet (bytelevel.c) ---- */
/* Maps a byte-level string back to bytes; returns the byte count, or -1 when
 * a character is not in the byte-level alphabet. out needs len bytes. */
long tok_bytelevel_decode(const char *s, size_t len, unsigned char *out);
/* Writes the byte-level form of raw bytes (at most 2 bytes per input byte). */
size_t tok_bytelevel_encode(const unsigned char *s, size_t len, char *out);

/* ---- UTF-8 (utf8.c) ---- */
/* Offset of the first invalid byte, or len when all of s is valid UTF-8. */
size_t tok_utf8_invalid_at(const unsigned char *s, size_t len);
/* Length of the UTF-8 character starting at s[0] (s must be valid). */
size_t tok_utf8_char_len(unsigned char lead);
typedef enum tok_utf8_step {
    TOK_UTF8_VALID,      /* *n bytes form one character */
    TOK_UTF8_INVALID,    /* *n bytes are one maximal invalid subpart: one U+FFFD */
    TOK_UTF8_INCOMPLETE, /* the rest (*n bytes) is a valid but unfinished prefix */
} tok_utf8_step;
tok_utf8_step tok_utf8_next(const unsigned char *s, size_t len, size_t *n);
/* Lossy conversion of bytes: complete characters are copied, invalid parts
 * become U+FFFD. If hold_tail, an incomplete final character is not written
 * and its length goes to *held; otherwise it also becomes U+FFFD. out needs
 * 3 * len bytes. Returns bytes written. */
size_t tok_utf8_lossy(const unsigned char *s, size_t len, bool hold_tail, char *out, size_t *held);

/* ---- added tokens (added.c) ---- */
typedef struct tok_trie {
    struct tok_trie_node {
        int32_t child;   /* first child node, -1 none */
        int32_t sibling; /* next sibling node, -1 none */
        int32_t token;   /* id of the token ending here, -1 none */
        unsigned char byte;
    } *nodes;
    size_t n, cap;
} tok_trie;
int tok_trie_init(tok_trie *tr, v4_err *err);
int tok_trie_add(tok_trie *tr, const char *s, size_t len, int32_t id, v4_err *err);
/* Longest token that starts at s[0]; returns its id and sets *match_len, or -1. */
int32_t tok_trie_longest(const tok_trie *tr, const char *s, size_t len, size_t *match_len);
void tok_trie_free(tok_trie *tr);

/* ---- pre-tokenizer (pretokenize.c) ---- */
typedef enum tok_split_behavior {
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_MERGED_WITH_PREVIOUS,
    TOK_SPLIT_MERGED_WITH_NEXT,
    TOK_SPLIT_CONTIGUOUS,
} tok_split_behavior;
typedef struct tok_split_rule {
    pcre2_code *re;
    tok_split_behavior behavior;
    bool invert;
} tok_split_rule;
typedef struct tok_pretok {
    tok_split_rule *rules;
    size_t n;
    bool byte_level; /* a ByteLevel step was present (required) */
} tok_pretok;
/* Parses the "pre_tokenizer" JSON object (a json_t *, passed as void * to
 * keep jansson out of this header). */
int tok_pretok_parse(const void *json, tok_pretok *p, v4_err *err);
void tok_pretok_free(tok_pretok *p);

/* Per-call scratch of the pre-tokenizer. */
typedef struct tok_pretok_scratch {
    pcre2_match_data *md;
    tok_spans a, b;    /* current pieces, next pieces */
    tok_spans matches; /* one piece's match list */
    uint8_t *flags;    /* is-match flag per entry of matches */
    size_t flags_cap;
} tok_pretok_scratch;
void tok_pretok_scratch_free(tok_pretok_scratch *sc);
/* Splits s[0, len) into pieces, left in sc->a (offsets into s). */
int tok_pretok_run(const tok_pretok *p, const char *s, size_t len, tok_pretok_scratch *sc, v4_err *err);

/* ---- the loaded tokenizer ---- */
enum {
    TOK_ID_PRESENT = 1, /* the id has a token */
    TOK_ID_SPECIAL = 2, /* an added token marked "special" */
};

struct tok_tokenizer {
    int64_t n_ids;       /* max id + 1 */
    uint8_t *id_flags;   /* TOK_ID_* per id */
    uint32_t *text_off;  /* decoded bytes of each id in text[] */
    uint32_t *text_len;
    char *text;
    size_t max_token_bytes;

    tok_strmap vocab;    /* byte-level string -> id (BPE model vocab) */
    int32_t byte_id[256];/* id of each single byte */
    tok_pairmap merges;
    bool ignore_merges;

    tok_strmap added;    /* added token content -> id */
    tok_trie trie_raw;   /* added tokens with normalized = false */
    tok_trie trie_norm;  /* added tokens with normalized = true */

    tok_pretok pretok;
    int32_t bos_id, eos_id;
};

/* Bytes a present id decodes to (not NUL-terminated). */
static inline const char *tok_id_text(const tok_tokenizer *t, int32_t id, size_t *len)
{
    *len = t->text_len[id];
    return t->text + t->text_off[id];
}

/* BPE of one pre-tokenized piece (bpe.c). */
typedef struct tok_bpe_scratch {
    struct tok_bpe_sym {
        int32_t id, prev, next;
        bool alive;
    } *sym;
    size_t sym_cap;
    struct tok_bpe_merge {
        int32_t rank, pos, id;
    } *heap; /* room for 3 * sym_cap entries */
    size_t heap_n;
    char *bl; /* byte-level form of the piece (ignore_merges lookups) */
    size_t bl_cap;
} tok_bpe_scratch;
void tok_bpe_scratch_free(tok_bpe_scratch *sc);
int tok_bpe(const tok_tokenizer *t, const unsigned char *s, size_t len, tok_bpe_scratch *sc, tok_ids *out,
            v4_err *err);

#endif
