/* Test helper: runs the v4serve binary of the same build folder (the test
 * program lives in BUILD/tests/, the CLI at BUILD/v4serve) and captures its
 * exit status, stdout and stderr. */
#ifndef V4_TESTS_TU_RUN_H
#define V4_TESTS_TU_RUN_H

typedef struct tr_result {
    int exited;   /* 1 when it exited normally (not by a signal) */
    int status;   /* exit status when exited, else the signal number */
    char *out;    /* stdout, NUL-terminated, owned */
    char *err;    /* stderr, NUL-terminated, owned */
} tr_result;

/* Path of BUILD/v4serve next to this test program (static buffer). */
const char *tr_cli_path(void);
/* Runs v4serve with the NULL-terminated argument list (without argv[0]).
 * Returns 0 when the program could be started and waited for. */
int tr_run(const char *const *args, tr_result *r);
void tr_free(tr_result *r);
/* Runs and fails the test unless it exits 0 (r holds the output). */
void tr_run_ok(const char *const *args, tr_result *r);
/* Runs and fails the test unless it exits normally (not by a signal), with
 * a non-zero status, and its stderr holds every string of the
 * NULL-terminated `want`. */
void tr_run_fails(const char *const *args, const char *const *want);
#define TR_RUN_FAILS(args, ...) tr_run_fails(args, (const char *const[]){__VA_ARGS__, NULL})

/* One line of `inspect`'s layer schedule:
 * "layer N KIND [ratio R] window W hash|learned routing". */
typedef struct tr_layer {
    int index;
    char kind[16]; /* sliding, CSA, HCA */
    int ratio;     /* 0 for sliding */
    int window;
    int hashed;
} tr_layer;
/* Parses the schedule lines of inspect's output, whitespace-insensitive;
 * returns how many were found (at most max), or -1 for a malformed line. */
int tr_parse_schedule(const char *out, tr_layer *layers, int max);

#endif
