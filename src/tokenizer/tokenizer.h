/* The byte-level BPE tokenizer of the DeepSeek family, loaded from a model
 * folder's Hugging Face tokenizer.json (+ tokenizer_config.json). Encoding
 * matches added tokens first, then applies the pre-tokenizer rules written in
 * the file (PCRE2 regex splits, then ByteLevel), then ranked BPE merges.
 * Decoding maps ids back to bytes; a stream decoder emits only whole UTF-8
 * characters. A loaded tokenizer is immutable: encode and decode may run
 * concurrently from several threads. */
#ifndef V4_TOKENIZER_TOKENIZER_H
#define V4_TOKENIZER_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef struct tok_tokenizer tok_tokenizer;

/* Loads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json (for
 * bos_token / eos_token). Unsupported features of the format are errors that
 * name them. */
int tok_load(const char *model_dir, tok_tokenizer **out, v4_err *err);
void tok_free(tok_tokenizer *t);

/* Largest id (vocabulary or added token) + 1. */
int64_t tok_vocab_size(const tok_tokenizer *t);
/* Id of the added token whose text is exactly `text`, -1 if there is none. */
int32_t tok_find_special(const tok_tokenizer *t, const char *text);
/* BOS / EOS from tokenizer_config.json's bos_token / eos_token (looked up
 * among the added tokens by text); -1 when not configured. */
int32_t tok_bos_id(const tok_tokenizer *t);
int32_t tok_eos_id(const tok_tokenizer *t);
/* Whether id is an added token marked "special" (what skip_special skips). */
bool tok_is_special(const tok_tokenizer *t, int32_t id);
/* The bytes id decodes to (may be part of a UTF-8 character; not
 * NUL-terminated), e.g. for OpenAI logprobs "bytes"; NULL for an unknown id. */
const char *tok_token_bytes(const tok_tokenizer *t, int32_t id, size_t *len);

/* Encodes UTF-8 text. parse_special: match the added tokens (special or not)
 * in the text as single ids; when false the whole text goes through BPE, so
 * user text cannot inject control tokens. Caller frees *ids (allocated even
 * when there are no ids). Invalid UTF-8 is an error naming the byte offset;
 * on error *ids is NULL. */
int tok_encode(const tok_tokenizer *t, const char *text, size_t len, bool parse_special, int32_t **ids,
               size_t *n_ids, v4_err *err);

/* Whole decode into a malloc'd NUL-terminated string. Invalid UTF-8 in the
 * byte sequence becomes U+FFFD (one per maximal invalid subpart, like
 * Hugging Face's from_utf8_lossy). Ids out of range are an error. */
int tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char **out, v4_err *err);
/* The same, also giving the length (the text may contain NUL characters). */
int tok_decode_n(const tok_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char **out,
                 size_t *out_len, v4_err *err);

/* Streaming decode: push one id at a time; only complete UTF-8 characters
 * are emitted, a partial one is held in `pending` until the next push. The
 * concatenation of all pushes and the flush equals tok_decode of the ids. */
typedef struct tok_stream {
    unsigned char pending[8];
    int n_pending;
} tok_stream; /* zero-initialise */

/* Bytes an `out` buffer of tok_stream_push needs to be safe for any id
 * (worst case: every byte invalid, each becoming a 3-byte U+FFFD, + NUL). */
size_t tok_stream_bound(const tok_tokenizer *t);
/* Writes the complete UTF-8 text of one more token to out (cap bytes, a NUL
 * is added after it), returns bytes written (without the NUL) or -1 on error
 * (bad id, or cap too small: then nothing is consumed). */
int tok_stream_push(const tok_tokenizer *t, tok_stream *s, int32_t id, bool skip_special, char *out, size_t cap,
                    v4_err *err);
/* Emits U+FFFD for an incomplete tail (cap >= 4 suffices), resets the state,
 * returns bytes written. */
int tok_stream_flush(tok_stream *s, char *out, size_t cap);

#endif
