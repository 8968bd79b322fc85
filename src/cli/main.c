/* v4serve: one binary, subcommands dispatched by name. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} command;

static const command COMMANDS[] = {
    {"inspect", cmd_inspect, "summarise a checkpoint: config, layer schedule, parameters, KV bytes"},
    {"mkmodel", cmd_mkmodel, "write a deterministic random checkpoint (tiny, demo or full Flash)"},
    {"check-golden", cmd_check_golden, "compare logits with a golden file (prefill, chunked, token by token)"},
    {"generate", cmd_generate, "generate text for one prompt through the serving engine"},
    {"bench", cmd_bench, "offline benchmark: decode and prefill against the device's roofline"},
    {"serve", cmd_serve, "OpenAI-compatible HTTP server (completions, chat, streaming, metrics)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: v4serve <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
        fprintf(f, "  %-13s %s\n", COMMANDS[i].name, COMMANDS[i].help);
    fprintf(f, "\n`v4serve <command> --help` shows a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
        if (strcmp(argv[1], COMMANDS[i].name) == 0)
            return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "v4serve: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
