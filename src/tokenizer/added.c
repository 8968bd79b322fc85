/* Byte trie of the added tokens, for leftmost-longest matching of their text
 * before BPE (what Hugging Face's AddedVocabulary does with Aho-Corasick).
 * Node 0 is the root; children are a sibling list, few per node. */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>

static int32_t new_node(tok_trie *tr, unsigned char byte, v4_err *err)
{
    if (tr->n == tr->cap) {
        size_t c = tr->cap ? tr->cap * 2 : 256;
        struct tok_trie_node *p = realloc(tr->nodes, c * sizeof *p);
        if (!p)
            return v4_errf(err, "tokenizer: out of memory for the added-token trie");
        tr->nodes = p;
        tr->cap = c;
    }
    struct tok_trie_node *nd = &tr->nodes[tr->n];
    nd->child = nd->sibling = nd->token = -1;
    nd->byte = byte;
    return (int32_t)tr->n++;
}

int tok_trie_init(tok_trie *tr, v4_err *err)
{
    tr->nodes = NULL;
    tr->n = tr->cap = 0;
    return new_node(tr, 0, err) < 0 ? -1 : 0;
}

static int32_t find_child(const tok_trie *tr, int32_t node, unsigned char byte)
{
    for (int32_t c = tr->nodes[node].child; c >= 0; c = tr->nodes[c].sibling)
        if (tr->nodes[c].byte == byte)
            return c;
    return -1;
}

int tok_trie_add(tok_trie *tr, const char *s, size_t len, int32_t id, v4_err *err)
{
    int32_t node = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char b = (unsigned char)s[i];
        int32_t c = find_child(tr, node, b);
        if (c < 0) {
            c = new_node(tr, b, err);
            if (c < 0)
                return -1;
            tr->nodes[c].sibling = tr->nodes[node].child;
            tr->nodes[node].child = c;
        }
        node = c;
    }
    tr->nodes[node].token = id; /* a repeated content keeps the later id */
    return 0;
}

int32_t tok_trie_longest(const tok_trie *tr, const char *s, size_t len, size_t *match_len)
{
    int32_t node = 0, best = -1;
    for (size_t i = 0; i < len; i++) {
        node = find_child(tr, node, (unsigned char)s[i]);
        if (node < 0)
            break;
        if (tr->nodes[node].token >= 0) {
            best = tr->nodes[node].token;
            *match_len = i + 1;
        }
    }
    return best;
}

void tok_trie_free(tok_trie *tr)
{
    free(tr->nodes);
    tr->nodes = NULL;
    tr->n = tr->cap = 0;
}
