/* Loading a tokenizer from a model folder: tokenizer.json (BPE model,
 * merges, added tokens, normalizer / pre_tokenizer / decoder) and the
 * optional tokenizer_config.json (bos_token, eos_token). Everything the
 * encoder needs is built here once; the result is read-only. Features of the
 * format this tokenizer does not implement are refused with an error naming
 * them rather than silently mis-tokenizing. */
#include "tokenizer/tok_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct loader {
    tok_tokenizer *t;
    const char *path;
    v4_err *err;
    /* decoded bytes of each id, collected before the per-id arrays exist */
    char *text;
    size_t text_len, text_cap;
} loader;

static int ensure_ids(loader *L, int64_t id)
{
    tok_tokenizer *t = L->t;
    if (id < 0 || id >= INT32_MAX)
        return v4_errf(L->err, "%s: token id %lld out of range", L->path, (long long)id);
    if (id < t->n_ids)
        return 0;
    int64_t n = t->n_ids ? t->n_ids : 1024;
    while (n <= id)
        n *= 2;
    uint8_t *f = realloc(t->id_flags, (size_t)n);
    if (f)
        t->id_flags = f;
    uint32_t *o = f ? realloc(t->text_off, (size_t)n * sizeof *o) : NULL;
    if (o)
        t->text_off = o;
    uint32_t *l = o ? realloc(t->text_len, (size_t)n * sizeof *l) : NULL;
    if (!l)
        return v4_errf(L->err, "%s: out of memory for %lld ids", L->path, (long long)n);
    t->text_len = l;
    memset(t->id_flags + t->n_ids, 0, (size_t)(n - t->n_ids));
    t->n_ids = n;
    return 0;
}

/* Text a token decodes to, by the ByteLevel decoder's rule: when every
 * character is in the byte-level alphabet, the bytes they stand for;
 * otherwise (added tokens like <｜User｜>) the UTF-8 of the string itself. */
static int set_text(loader *L, int64_t id, const char *s, size_t len)
{
    if (ensure_ids(L, id))
        return -1;
    if (L->text_len + len > UINT32_MAX)
        return v4_errf(L->err, "%s: token texts exceed 4 GiB", L->path);
    if (L->text_len + len > L->text_cap) {
        size_t c = L->text_cap ? L->text_cap : 1 << 20;
        while (c < L->text_len + len)
            c *= 2;
        char *p = realloc(L->text, c);
        if (!p)
            return v4_errf(L->err, "%s: out of memory for token texts", L->path);
        L->text = p;
        L->text_cap = c;
    }
    long n = tok_bytelevel_decode(s, len, (unsigned char *)L->text + L->text_len);
    if (n < 0) {
        memcpy(L->text + L->text_len, s, len);
        n = (long)len;
    }
    L->t->text_off[id] = (uint32_t)L->text_len;
    L->t->text_len[id] = (uint32_t)n;
    L->t->id_flags[id] |= TOK_ID_PRESENT;
    L->text_len += (size_t)n;
    if ((size_t)n > L->t->max_token_bytes)
        L->t->max_token_bytes = (size_t)n;
    return 0;
}

/* Reads the whole file first: jansson parses a buffer much faster than a
 * FILE read character by character. */
static json_t *load_json(const char *path, bool optional, bool *absent, v4_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (optional) {
            *absent = true;
            return NULL;
        }
        return v4_errf(err, "%s: cannot open", path), NULL;
    }
    char *buf = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0)
        buf = malloc((size_t)size + 1);
    bool ok = buf && fread(buf, 1, (size_t)size, f) == (size_t)size;
    fclose(f);
    if (!ok) {
        free(buf);
        return v4_errf(err, "%s: cannot read", path), NULL;
    }
    json_error_t je;
    json_t *j = json_loadb(buf, (size_t)size, JSON_ALLOW_NUL, &je);
    free(buf);
    if (!j)
        v4_errf(err, "%s: line %d column %d: %s", path, je.line, je.column, je.text);
    return j;
}

static bool is_identity_normalizer(json_t *n)
{
    if (!n || json_is_null(n))
        return true;
    const char *type = json_string_value(json_object_get(n, "type"));
    if (!type || strcmp(type, "Sequence") != 0)
        return false;
    json_t *list = json_object_get(n, "normalizers");
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        if (!is_identity_normalizer(e))
            return false;
    }
    return json_is_array(list);
}

static int check_model(loader *L, json_t *model)
{
    const char *type = json_string_value(json_object_get(model, "type"));
    if (type && strcmp(type, "BPE") != 0)
        return v4_errf(L->err, "%s: model type \"%s\" is not supported (only BPE)", L->path, type);
    static const char *const must_be_unset[] = {"continuing_subword_prefix", "end_of_word_suffix", "dropout"};
    for (size_t i = 0; i < 3; i++) {
        json_t *v = json_object_get(model, must_be_unset[i]);
        if (v && !json_is_null(v))
            return v4_errf(L->err, "%s: model.%s is set, which is not supported", L->path, must_be_unset[i]);
    }
    if (json_is_true(json_object_get(model, "byte_fallback")))
        return v4_errf(L->err, "%s: model.byte_fallback = true is not supported", L->path);
    L->t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    return 0;
}

static int load_vocab(loader *L, json_t *vocab)
{
    tok_tokenizer *t = L->t;
    if (!json_is_object(vocab))
        return v4_errf(L->err, "%s: model.vocab must be an object", L->path);
    if (tok_strmap_init(&t->vocab, json_object_size(vocab), L->err))
        return -1;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v)
    {
        if (!json_is_integer(v))
            return v4_errf(L->err, "%s: model.vocab[\"%s\"] must be an integer id", L->path, key);
        int64_t id = json_integer_value(v);
        size_t klen = strlen(key);
        if (set_text(L, id, key, klen) ||
            tok_strmap_put(&t->vocab, key, klen, (int32_t)id, L->err))
            return -1;
    }
    for (int b = 0; b < 256; b++) {
        char s[2];
        unsigned char byte = (unsigned char)b;
        size_t n = tok_bytelevel_encode(&byte, 1, s);
        t->byte_id[b] = tok_strmap_get(&t->vocab, s, n);
        if (t->byte_id[b] < 0)
            return v4_errf(L->err, "%s: model.vocab lacks the byte-level token for byte 0x%02X", L->path, b);
    }
    return 0;
}

static int merge_id(loader *L, const char *s, size_t len, size_t rank)
{
    int32_t id = tok_strmap_get(&L->t->vocab, s, len);
    if (id < 0)
        v4_errf(L->err, "%s: model.merges[%zu]: token \"%.*s\" is not in the vocabulary", L->path, rank, (int)len,
                s);
    return id;
}

static int load_merges(loader *L, json_t *merges)
{
    tok_tokenizer *t = L->t;
    if (!json_is_array(merges))
        return v4_errf(L->err, "%s: model.merges must be an array", L->path);
    size_t n = json_array_size(merges);
    if (n > INT32_MAX)
        return v4_errf(L->err, "%s: too many merges", L->path);
    if (tok_pairmap_init(&t->merges, n, L->err))
        return -1;
    char *both = NULL;
    size_t both_cap = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        json_t *m = json_array_get(merges, i);
        const char *a, *b;
        size_t la, lb;
        if (json_is_string(m)) { /* "a b" (byte-level text never contains a space) */
            a = json_string_value(m);
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                rc = v4_errf(L->err, "%s: model.merges[%zu] \"%s\" is not two tokens", L->path, i, a);
                break;
            }
            la = (size_t)(sp - a);
            b = sp + 1;
            lb = strlen(b);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) { /* ["a", "b"] */
            a = json_string_value(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            la = json_string_length(json_array_get(m, 0));
            lb = json_string_length(json_array_get(m, 1));
        } else {
            rc = v4_errf(L->err, "%s: model.merges[%zu] must be \"a b\" or [\"a\", \"b\"]", L->path, i);
            break;
        }
        if (la + lb > both_cap) {
            both_cap = 2 * (la + lb);
            char *p = realloc(both, both_cap);
            if (!p) {
                rc = v4_errf(L->err, "%s: out of memory", L->path);
                break;
            }
            both = p;
        }
        memcpy(both, a, la);
        memcpy(both + la, b, lb);
        int32_t ia = merge_id(L, a, la, i), ib = ia < 0 ? -1 : merge_id(L, b, lb, i);
        int32_t iab = ib < 0 ? -1 : merge_id(L, both, la + lb, i);
        if (iab < 0)
            rc = -1;
        else
            tok_pairmap_put(&t->merges, ia, ib, (int32_t)i, iab);
    }
    free(both);
    return rc;
}

static int load_added(loader *L, json_t *added)
{
    tok_tokenizer *t = L->t;
    if (added && !json_is_array(added))
        return v4_errf(L->err, "%s: added_tokens must be an array", L->path);
    if (tok_strmap_init(&t->added, json_array_size(added), L->err) || tok_trie_init(&t->trie_raw, L->err) ||
        tok_trie_init(&t->trie_norm, L->err))
        return -1;
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a)
    {
        json_t *id = json_object_get(a, "id"), *content = json_object_get(a, "content");
        if (!json_is_integer(id) || !json_is_string(content) || json_string_length(content) == 0)
            return v4_errf(L->err, "%s: added_tokens[%zu] needs an integer \"id\" and a non-empty \"content\"",
                           L->path, i);
        const char *s = json_string_value(content);
        size_t len = json_string_length(content);
        static const char *const flags[] = {"lstrip", "rstrip", "single_word"};
        for (size_t k = 0; k < 3; k++)
            if (json_is_true(json_object_get(a, flags[k])))
                return v4_errf(L->err, "%s: added token \"%s\" has %s = true, which is not supported", L->path, s,
                               flags[k]);
        if (set_text(L, json_integer_value(id), s, len))
            return -1;
        int32_t tid = (int32_t)json_integer_value(id);
        if (tok_strmap_put(&t->added, s, len, tid, L->err))
            return -1;
        if (json_is_true(json_object_get(a, "special")))
            t->id_flags[tid] |= TOK_ID_SPECIAL;
        /* Hugging Face matches normalized tokens after normalizing; the
         * normalizer is the identity here, so only the pass differs. */
        tok_trie *tr = json_is_true(json_object_get(a, "normalized")) ? &t->trie_norm : &t->trie_raw;
        if (tok_trie_add(tr, s, len, tid, L->err))
            return -1;
    }
    return 0;
}

/* bos_token / eos_token: a string or an AddedToken object with "content". */
static int config_token(loader *L, json_t *cfg, const char *field, int32_t *out)
{
    json_t *v = json_object_get(cfg, field);
    if (json_is_object(v))
        v = json_object_get(v, "content");
    *out = -1;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return v4_errf(L->err, "%s: \"%s\" must be a string or have a string \"content\"", L->path, field);
    *out = tok_strmap_get(&L->t->added, json_string_value(v), json_string_length(v));
    if (*out < 0)
        return v4_errf(L->err, "%s: %s \"%s\" is not an added token of tokenizer.json", L->path, field,
                       json_string_value(v));
    return 0;
}

static int load_config(loader *L, json_t *cfg)
{
    if (!json_is_object(cfg))
        return v4_errf(L->err, "%s: top level must be an object", L->path);
    return config_token(L, cfg, "bos_token", &L->t->bos_id) || config_token(L, cfg, "eos_token", &L->t->eos_id)
               ? -1
               : 0;
}

static int load_tokenizer_json(loader *L, json_t *root)
{
    if (!json_is_object(root))
        return v4_errf(L->err, "%s: top level must be an object", L->path);
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model))
        return v4_errf(L->err, "%s: missing \"model\"", L->path);
    if (!is_identity_normalizer(json_object_get(root, "normalizer")))
        return v4_errf(L->err, "%s: only an empty normalizer is supported", L->path);
    json_t *dec = json_object_get(root, "decoder");
    const char *dtype = json_string_value(json_object_get(dec, "type"));
    if (!dtype || strcmp(dtype, "ByteLevel") != 0)
        return v4_errf(L->err, "%s: decoder must be ByteLevel (found %s)", L->path, dtype ? dtype : "none");
    if (check_model(L, model) || load_vocab(L, json_object_get(model, "vocab")) ||
        load_merges(L, json_object_get(model, "merges")) || load_added(L, json_object_get(root, "added_tokens")))
        return -1;
    if (tok_pretok_parse(json_object_get(root, "pre_tokenizer"), &L->t->pretok, L->err))
        return v4_err_wrap(L->err, "%s", L->path);
    return 0;
}

/* n_ids was the capacity of the per-id arrays while loading; from now on it
 * is max id + 1. Hands over the collected token texts. */
static void finish(loader *L)
{
    tok_tokenizer *t = L->t;
    int64_t n = t->n_ids;
    while (n > 0 && !(t->id_flags[n - 1] & TOK_ID_PRESENT))
        n--;
    t->n_ids = n;
    t->text = L->text;
    L->text = NULL;
}

int tok_load(const char *model_dir, tok_tokenizer **out, v4_err *err)
{
    *out = NULL;
    tok_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return v4_errf(err, "tokenizer: out of memory");
    t->bos_id = t->eos_id = -1;
    char path[4096];
    loader L = {.t = t, .path = path, .err = err};
    bool absent = false;
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    json_t *root = load_json(path, false, &absent, err);
    int rc = root ? load_tokenizer_json(&L, root) : -1;
    json_decref(root);
    if (rc == 0) {
        finish(&L);
        snprintf(path, sizeof path, "%s/tokenizer_config.json", model_dir);
        json_t *cfg = load_json(path, true, &absent, err);
        if (cfg)
            rc = load_config(&L, cfg);
        else if (!absent)
            rc = -1;
        json_decref(cfg);
    }
    free(L.text);
    if (rc) {
        tok_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void tok_free(tok_tokenizer *t)
{
    if (!t)
        return;
    free(t->id_flags);
    free(t->text_off);
    free(t->text_len);
    free(t->text);
    tok_strmap_free(&t->vocab);
    tok_pairmap_free(&t->merges);
    tok_strmap_free(&t->added);
    tok_trie_free(&t->trie_raw);
    tok_trie_free(&t->trie_norm);
    tok_pretok_free(&t->pretok);
    free(t);
}

int64_t tok_vocab_size(const tok_tokenizer *t)
{
    return t->n_ids;
}

int32_t tok_find_special(const tok_tokenizer *t, const char *text)
{
    return tok_strmap_get(&t->added, text, strlen(text));
}

int32_t tok_bos_id(const tok_tokenizer *t)
{
    return t->bos_id;
}

int32_t tok_eos_id(const tok_tokenizer *t)
{
    return t->eos_id;
}

bool tok_is_special(const tok_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_ids && (t->id_flags[id] & TOK_ID_SPECIAL);
}

const char *tok_token_bytes(const tok_tokenizer *t, int32_t id, size_t *len)
{
    *len = 0;
    if (id < 0 || id >= t->n_ids || !(t->id_flags[id] & TOK_ID_PRESENT))
        return NULL;
    return tok_id_text(t, id, len);
}
