import type { Command } from "commander";

/** The shared `cxr bench` group; packages add `bench kernels`, `bench evaluate`, ... to it. */
export function benchCommand(program: Command): Command {
  const existing = program.commands.find((command) => command.name() === "bench");
  return existing ?? program.command("bench").description("benchmarks that print measured figures");
}
