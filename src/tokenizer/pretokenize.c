/* The pre-tokenizer: the "pre_tokenizer" rules of tokenizer.json (a Split,
 * a ByteLevel, or a Sequence of them) compiled to PCRE2 and applied to a text
 * segment, giving the pieces BPE runs on. Split semantics follow Hugging Face
 * tokenizers exactly: its find_matches (with the Oniguruma iterator's rule for
 * empty matches), `invert`, and the five delimiter behaviors. ByteLevel with
 * use_regex adds the GPT-2 split; its byte mapping needs no work because BPE
 * runs on raw bytes. */
#include "tokenizer/tok_internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* Hugging Face's ByteLevel pre-tokenizer regex, used when use_regex is true. */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* Hugging Face compiles these patterns with Oniguruma, whose Unicode \s is
 * the White_Space property (with U+0085, without U+180E), while PCRE2's \s
 * under UCP also takes U+180E: spell \s and \S as the property, which
 * PCRE2 accepts inside and outside classes. Other escapes (and \Q...\E
 * quoted text) are copied as they are. out needs 16 * len + 1 bytes. */
static size_t onig_to_pcre2(const char *p, size_t len, char *out)
{
    size_t w = 0;
    bool quoted = false;
    for (size_t i = 0; i < len; i++) {
        if (p[i] != '\\' || i + 1 == len) {
            out[w++] = p[i];
            continue;
        }
        char c = p[++i];
        if (quoted || (c != 's' && c != 'S')) {
            quoted = quoted ? c != 'E' : c == 'Q';
            out[w++] = '\\';
            out[w++] = c;
            continue;
        }
        const char *rep = c == 's' ? "\\p{White_Space}" : "\\P{White_Space}";
        memcpy(out + w, rep, strlen(rep));
        w += strlen(rep);
    }
    out[w] = 0;
    return w;
}

static int add_rule(tok_pretok *p, const char *pattern, size_t len, bool literal, tok_split_behavior beh,
                    bool invert, v4_err *err)
{
    int ec;
    PCRE2_SIZE eo;
    uint32_t opts = PCRE2_UTF | PCRE2_NO_UTF_CHECK | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    if (tok_utf8_invalid_at((const unsigned char *)pattern, len) != len)
        return v4_errf(err, "pre_tokenizer: pattern is not valid UTF-8");
    char *pat = malloc(16 * len + 1);
    if (!pat)
        return v4_errf(err, "tokenizer: out of memory");
    size_t plen = len;
    if (literal)
        memcpy(pat, pattern, len);
    else
        plen = onig_to_pcre2(pattern, len, pat);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, plen, opts, &ec, &eo, NULL);
    free(pat);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return v4_errf(err, "pre_tokenizer: cannot compile pattern /%.*s/: %s (offset %zu of its PCRE2 form)",
                       (int)len, pattern, (const char *)msg, (size_t)eo);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter when JIT is unavailable */
    tok_split_rule *r = realloc(p->rules, (p->n + 1) * sizeof *r);
    if (!r) {
        pcre2_code_free(re);
        return v4_errf(err, "tokenizer: out of memory");
    }
    p->rules = r;
    r[p->n].re = re;
    r[p->n].behavior = beh;
    r[p->n].invert = invert;
    p->n++;
    return 0;
}

static int parse_behavior(const char *s, tok_split_behavior *b)
{
    static const struct {
        const char *name;
        tok_split_behavior b;
    } names[] = {
        {"Removed", TOK_SPLIT_REMOVED},
        {"Isolated", TOK_SPLIT_ISOLATED},
        {"MergedWithPrevious", TOK_SPLIT_MERGED_WITH_PREVIOUS},
        {"MergedWithNext", TOK_SPLIT_MERGED_WITH_NEXT},
        {"Contiguous", TOK_SPLIT_CONTIGUOUS},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i].name) == 0) {
            *b = names[i].b;
            return 0;
        }
    return -1;
}

static int parse_split(json_t *j, tok_pretok *p, v4_err *err)
{
    json_t *pat = json_object_get(j, "pattern");
    json_t *re = json_object_get(pat, "Regex");
    json_t *str = json_object_get(pat, "String");
    json_t *beh = json_object_get(j, "behavior");
    json_t *inv = json_object_get(j, "invert");
    tok_split_behavior b;
    if (!json_is_string(re) && !json_is_string(str))
        return v4_errf(err, "pre_tokenizer Split: \"pattern\" must be {\"Regex\": ...} or {\"String\": ...}");
    if (!json_is_string(beh) || parse_behavior(json_string_value(beh), &b))
        return v4_errf(err, "pre_tokenizer Split: unknown \"behavior\" %s",
                       json_is_string(beh) ? json_string_value(beh) : "(missing)");
    if (inv && !json_is_boolean(inv))
        return v4_errf(err, "pre_tokenizer Split: \"invert\" must be a boolean");
    json_t *s = json_is_string(re) ? re : str;
    return add_rule(p, json_string_value(s), json_string_length(s), !json_is_string(re), b, json_is_true(inv), err);
}

static int parse_one(json_t *j, tok_pretok *p, int depth, v4_err *err)
{
    const char *type = json_string_value(json_object_get(j, "type"));
    if (!type)
        return v4_errf(err, "pre_tokenizer: missing \"type\"");
    if (p->byte_level)
        return v4_errf(err, "pre_tokenizer: a %s step after ByteLevel is not supported", type);
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(j, "pretokenizers");
        if (!json_is_array(list) || depth > 8)
            return v4_errf(err, "pre_tokenizer Sequence: \"pretokenizers\" must be an array");
        size_t i;
        json_t *e;
        json_array_foreach(list, i, e)
        {
            if (parse_one(e, p, depth + 1, err))
                return v4_err_wrap(err, "pre_tokenizer Sequence item %zu", i);
        }
        return 0;
    }
    if (strcmp(type, "Split") == 0)
        return parse_split(j, p, err);
    if (strcmp(type, "ByteLevel") == 0) {
        if (json_is_true(json_object_get(j, "add_prefix_space")))
            return v4_errf(err, "pre_tokenizer ByteLevel: add_prefix_space = true is not supported");
        json_t *ur = json_object_get(j, "use_regex"); /* Hugging Face's default is true */
        if ((!ur || json_is_true(ur)) &&
            add_rule(p, GPT2_PATTERN, strlen(GPT2_PATTERN), false, TOK_SPLIT_ISOLATED, false, err))
            return -1;
        p->byte_level = true;
        return 0;
    }
    return v4_errf(err, "pre_tokenizer: type \"%s\" is not supported", type);
}

int tok_pretok_parse(const void *json, tok_pretok *p, v4_err *err)
{
    memset(p, 0, sizeof *p);
    json_t *j = (json_t *)json;
    if (!json_is_object(j))
        return v4_errf(err, "pre_tokenizer: must be an object (a byte-level tokenizer needs ByteLevel)");
    if (parse_one(j, p, 0, err))
        return -1;
    if (!p->byte_level)
        return v4_errf(err, "pre_tokenizer: no ByteLevel step; only byte-level BPE is supported");
    return 0;
}

void tok_pretok_free(tok_pretok *p)
{
    for (size_t i = 0; i < p->n; i++)
        pcre2_code_free(p->rules[i].re);
    free(p->rules);
    memset(p, 0, sizeof *p);
}

void tok_pretok_scratch_free(tok_pretok_scratch *sc)
{
    pcre2_match_data_free(sc->md);
    free(sc->a.v);
    free(sc->b.v);
    free(sc->matches.v);
    free(sc->flags);
    memset(sc, 0, sizeof *sc);
}

static int push_match(tok_pretok_scratch *sc, size_t start, size_t end, bool is_match, v4_err *err)
{
    if (tok_spans_push(&sc->matches, start, end, err))
        return -1;
    if (sc->flags_cap < sc->matches.cap) {
        uint8_t *f = realloc(sc->flags, sc->matches.cap);
        if (!f)
            return v4_errf(err, "tokenizer: out of memory");
        sc->flags = f;
        sc->flags_cap = sc->matches.cap;
    }
    sc->flags[sc->matches.n - 1] = is_match;
    return 0;
}

/* Hugging Face's Pattern::find_matches for a regex: the piece s[0, len)
 * (matched as a subject of its own, so lookarounds stop at its ends) as a
 * list of spans covering it, each flagged match / non-match; `invert` flips
 * the flags. */
static int find_matches(const tok_split_rule *r, const char *s, size_t len, tok_pretok_scratch *sc, v4_err *err)
{
    sc->matches.n = 0;
    size_t prev = 0, last_end = 0, last_match_end = 0;
    bool have_last = false;
    while (last_end <= len) {
        int rc = pcre2_match(r->re, (PCRE2_SPTR)s, len, last_end, PCRE2_NO_UTF_CHECK, sc->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return v4_errf(err, "pre_tokenizer: regex match failed: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(sc->md);
        size_t ms = ov[0], me = ov[1];
        if (me < ms)
            return v4_errf(err, "pre_tokenizer: regex reported a match that ends before it starts");
        /* The Oniguruma iterator refuses an empty match right where the last
         * match ended and moves on by one character. */
        if (ms == me && have_last && last_match_end == me) {
            last_end += last_end < len ? tok_utf8_char_len((unsigned char)s[last_end]) : 1;
            continue;
        }
        last_end = last_match_end = me;
        have_last = true;
        if (prev != ms && push_match(sc, prev, ms, r->invert, err))
            return -1;
        if (push_match(sc, ms, me, !r->invert, err))
            return -1;
        prev = me;
    }
    if (prev != len && push_match(sc, prev, len, r->invert, err))
        return -1;
    return 0;
}

/* NormalizedString::split: folds the flagged spans by the behavior, then
 * keeps the non-empty, non-removed ones (shifted by base) in out. */
static int apply_behavior(tok_split_behavior beh, const tok_pretok_scratch *sc, size_t base, tok_spans *out,
                          v4_err *err)
{
    const tok_span *m = sc->matches.v;
    const uint8_t *f = sc->flags;
    size_t n = sc->matches.n, first = out->n;
    bool prev_match = false;
    switch (beh) {
    case TOK_SPLIT_REMOVED:
    case TOK_SPLIT_ISOLATED:
        for (size_t i = 0; i < n; i++) {
            if (beh == TOK_SPLIT_REMOVED && f[i])
                continue;
            if (tok_spans_push(out, m[i].start, m[i].end, err))
                return -1;
        }
        break;
    case TOK_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < n; i++) {
            bool is = f[i];
            if (is == prev_match && out->n > first)
                out->v[out->n - 1].end = m[i].end;
            else if (tok_spans_push(out, m[i].start, m[i].end, err))
                return -1;
            prev_match = is;
        }
        break;
    case TOK_SPLIT_MERGED_WITH_PREVIOUS:
        for (size_t i = 0; i < n; i++) {
            bool is = f[i];
            if (is && !prev_match && out->n > first)
                out->v[out->n - 1].end = m[i].end;
            else if (tok_spans_push(out, m[i].start, m[i].end, err))
                return -1;
            prev_match = is;
        }
        break;
    case TOK_SPLIT_MERGED_WITH_NEXT:
        /* Hugging Face folds from the right, extending the following span. */
        for (size_t k = n; k-- > 0;) {
            bool is = f[k];
            if (is && !prev_match && out->n > first)
                out->v[out->n - 1].start = m[k].start;
            else if (tok_spans_push(out, m[k].start, m[k].end, err))
                return -1;
            prev_match = is;
        }
        for (size_t i = first, j = out->n; i + 1 < j; i++, j--) {
            tok_span tmp = out->v[i];
            out->v[i] = out->v[j - 1];
            out->v[j - 1] = tmp;
        }
        break;
    }
    size_t w = first;
    for (size_t i = first; i < out->n; i++) {
        if (out->v[i].end == out->v[i].start)
            continue;
        out->v[w].start = out->v[i].start + base;
        out->v[w].end = out->v[i].end + base;
        w++;
    }
    out->n = w;
    return 0;
}

int tok_pretok_run(const tok_pretok *p, const char *s, size_t len, tok_pretok_scratch *sc, v4_err *err)
{
    if (!sc->md) {
        sc->md = pcre2_match_data_create(1, NULL);
        if (!sc->md)
            return v4_errf(err, "tokenizer: out of memory for regex match data");
    }
    sc->a.n = 0;
    if (len == 0)
        return 0;
    if (tok_spans_push(&sc->a, 0, len, err))
        return -1;
    for (size_t r = 0; r < p->n; r++) {
        sc->b.n = 0;
        for (size_t i = 0; i < sc->a.n; i++) {
            tok_span piece = sc->a.v[i];
            if (find_matches(&p->rules[r], s + piece.start, piece.end - piece.start, sc, err) ||
                apply_behavior(p->rules[r].behavior, sc, piece.start, &sc->b, err))
                return -1;
        }
        tok_spans tmp = sc->a;
        sc->a = sc->b;
        sc->b = tmp;
    }
    return 0;
}
