/* Runs the CLI for tests; see tu_run.h. Output goes through temporary files
 * so a large output cannot block the child on a full pipe. */
#include "tu_run.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tu_ckpt.h"

const char *tr_cli_path(void)
{
    static char path[4096];
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return "v4serve";
    self[n] = 0;
    char *tests_dir = dirname(self);        /* BUILD/tests */
    char *build_dir = dirname(tests_dir);   /* BUILD */
    snprintf(path, sizeof path, "%s/v4serve", build_dir);
    return path;
}

int tr_run(const char *const *args, tr_result *r)
{
    memset(r, 0, sizeof *r);
    char out_path[] = "/tmp/v4run.out.XXXXXX", err_path[] = "/tmp/v4run.err.XXXXXX";
    int fo = mkstemp(out_path), fe = mkstemp(err_path);
    if (fo < 0 || fe < 0)
        return -1;
    int argc = 0;
    while (args[argc])
        argc++;
    char **argv = calloc((size_t)argc + 2, sizeof *argv);
    argv[0] = (char *)tr_cli_path();
    for (int i = 0; i < argc; i++)
        argv[i + 1] = (char *)args[i];
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fo, 1);
        dup2(fe, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    free(argv);
    close(fo);
    close(fe);
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    r->exited = WIFEXITED(st);
    r->status = r->exited ? WEXITSTATUS(st) : WIFSIGNALED(st) ? WTERMSIG(st) : -1;
    r->out = tc_read_file(out_path, NULL);
    r->err = tc_read_file(err_path, NULL);
    unlink(out_path);
    unlink(err_path);
    if (!r->out)
        r->out = strdup("");
    if (!r->err)
        r->err = strdup("");
    return 0;
}

void tr_free(tr_result *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

void tr_run_ok(const char *const *args, tr_result *r)
{
    assert_int_equal(tr_run(args, r), 0);
    if (!r->exited || r->status != 0)
        fail_msg("%s %s: exited %d status %d\nstderr: %s", tr_cli_path(), args[0], r->exited, r->status, r->err);
}

void tr_run_fails(const char *const *args, const char *const *want)
{
    tr_result r;
    assert_int_equal(tr_run(args, &r), 0);
    if (!r.exited)
        fail_msg("killed by signal %d; stderr: %s", r.status, r.err);
    if (r.status == 0)
        fail_msg("exited 0; stdout: %s", r.out);
    for (int i = 0; want[i]; i++)
        if (!strstr(r.err, want[i]))
            fail_msg("stderr lacks '%s': %s", want[i], r.err);
    tr_free(&r);
}

int tr_parse_schedule(const char *out, tr_layer *layers, int max)
{
    int n = 0;
    const char *line = out;
    while (line && *line && n < max) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        char buf[256];
        if (len >= sizeof buf)
            len = sizeof buf - 1;
        memcpy(buf, line, len);
        buf[len] = 0;
        char *save = NULL, *tok[12];
        int nt = 0;
        for (char *t = strtok_r(buf, " \t", &save); t && nt < 12; t = strtok_r(NULL, " \t", &save))
            tok[nt++] = t;
        if (nt >= 2 && strcmp(tok[0], "layer") == 0) {
            tr_layer *l = &layers[n];
            memset(l, 0, sizeof *l);
            int k = 3;
            if (nt < 7)
                return -1;
            l->index = atoi(tok[1]);
            snprintf(l->kind, sizeof l->kind, "%s", tok[2]);
            if (strcmp(tok[3], "ratio") == 0) {
                l->ratio = atoi(tok[4]);
                k = 5;
            }
            if (nt < k + 4 || strcmp(tok[k], "window") != 0 || strcmp(tok[k + 3], "routing") != 0)
                return -1;
            l->window = atoi(tok[k + 1]);
            l->hashed = strcmp(tok[k + 2], "hash") == 0;
            n++;
        }
        line = eol ? eol + 1 : NULL;
    }
    return n;
}
