/* The v4serve subcommands. Each takes argc/argv after the subcommand name and
 * returns the process exit status. */
#ifndef V4_CLI_COMMANDS_H
#define V4_CLI_COMMANDS_H

int cmd_inspect(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_check_golden(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
