/* The DeepSeek-V4 chat format (MODEL.md section 6): rendering a conversation
 * into the prompt text / ids, and splitting generated text into reasoning
 * and answer at the first "</think>". */
#ifndef V4_TOKENIZER_CHAT_H
#define V4_TOKENIZER_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"
#include "util/err.h"

typedef struct tok_chat_msg {
    const char *role;    /* "system", "user" or "assistant" */
    const char *content; /* NULL is treated as "" */
} tok_chat_msg;

/* Renders BOS, the system messages (joined by "\n\n", in order, wherever
 * they stand), then each turn: "<｜User｜>" + text, or "<｜Assistant｜>" +
 * answer + EOS for a completed assistant turn (its reasoning, anything up to
 * and including a "</think>" in it, is dropped), and finally
 * "<｜Assistant｜>" followed by "<think>" (thinking) or "</think>". Marker
 * texts are checked against the tokenizer's added tokens; any role other
 * than the three is an error naming it. *out is malloc'd, NUL-terminated. */
int tok_chat_render(const tok_tokenizer *t, const tok_chat_msg *msgs, size_t n, bool thinking, char **out,
                    v4_err *err);

/* The same prompt as ids, with message texts encoded with parse_special =
 * false: text that merely looks like a control token stays text. Equals
 * tok_encode(render, parse_special = true) whenever no message contains the
 * text of an added token. Caller frees *ids. */
int tok_chat_encode(const tok_tokenizer *t, const tok_chat_msg *msgs, size_t n, bool thinking, int32_t **ids,
                    size_t *n_ids, v4_err *err);

/* Splitting a generated answer into reasoning_content and content. With
 * thinking on, everything before the first "</think>" is reasoning and
 * everything after it is content (the marker itself is dropped); with
 * thinking off, all of it is content. Works on a stream of text pieces: a
 * piece that ends with a possible start of "</think>" has that tail held
 * back until the next piece or the flush. */
typedef struct tok_reasoning_split {
    bool in_reasoning;
    char held[8];
    size_t n_held;
} tok_reasoning_split;

void tok_reasoning_init(tok_reasoning_split *s, bool thinking);
/* Feeds the next piece. Writes its reasoning part to reasoning and its
 * content part to content (each needs len + 8 bytes; not NUL-terminated) and
 * their lengths to *n_reasoning and *n_content; either may be 0. */
void tok_reasoning_push(tok_reasoning_split *s, const char *text, size_t len, char *reasoning, size_t *n_reasoning,
                        char *content, size_t *n_content);
/* At the end of generation: releases held-back text (to reasoning when still
 * in it). Buffers need 8 bytes. */
void tok_reasoning_flush(tok_reasoning_split *s, char *reasoning, size_t *n_reasoning, char *content,
                         size_t *n_content);

#endif
