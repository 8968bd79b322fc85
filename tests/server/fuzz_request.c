/* libFuzzer target for the OpenAI request parser (src/server/request.c),
 * outside `make test`; tests/test_server_fuzz.c fuzzes the running server.
 * Every input, as a completions and as a chat body, must either parse (and
 * free cleanly) or fail with a 400 naming what is wrong.
 *
 *   (needs libclang-rt-19-dev for the fuzzer runtime)
 *   clang-19 -g -O1 -march=native -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE -Isrc \
 *       tests/server/fuzz_request.c src/server/request.c src/server/error.c src/engine/stop.c \
 *       src/engine/sampler*.c src/util/err.c -ljansson -lm -o /tmp/fuzz_request
 *   /tmp/fuzz_request -max_total_time=60 -max_len=4096 [CORPUS_DIR]
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const srv_api APIS[] = {SRV_API_COMPLETIONS, SRV_API_CHAT};
    for (size_t i = 0; i < 2; i++) {
        srv_gen_req r;
        srv_error e;
        if (srv_parse_request(APIS[i], (const char *)data, size, 129280, &r, &e) == 0) {
            if (r.n < 1 || r.n > SRV_MAX_CHOICES || r.max_tokens < 0)
                abort();
            srv_gen_req_free(&r);
        } else if (e.status != 400 || !e.message[0]) {
            abort();
        }
    }
    return 0;
}
