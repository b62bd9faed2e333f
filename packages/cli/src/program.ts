import { modelBenchCases as classifierModelBenchCases } from "@cxr/classifier";
import { registerCommands as registerClassifierCommands } from "@cxr/classifier/cli";
import { registerCommands as registerDataCommands } from "@cxr/data/cli";
import { registerPhantomCommands } from "@cxr/data/cli-phantom";
import { modelBenchCases as diffusionModelBenchCases } from "@cxr/diffusion";
import { registerCommands as registerDiffusionCommands } from "@cxr/diffusion/cli";
import { registerPretrainedCommands } from "@cxr/diffusion/cli-pretrained";
import { registerCommands as registerKernelCommands } from "@cxr/kernels/cli";
import { registerCommands as registerServerCommands } from "@cxr/server/cli";
import { Command } from "commander";
import { registerDemo } from "./demo.ts";
import { registerQuickstart } from "./quickstart.ts";

/**
 * The one `cxr` command. Each package contributes its subcommands through a `registerCommands`
 * function in its own `src/cli.ts`, so the CLI grows with the packages without a central switch.
 * Shared command groups (`cxr bench ...`) are built here and passed down, so no package imports
 * the CLI.
 */
export function buildProgram(): Command {
  const program = new Command("cxr")
    .description("RoentGen-v2 on WebGPU: chest-radiograph diffusion, synthetic data, fair classifiers")
    .showHelpAfterError()
    .option("--verbose", "also show Dawn's harmless adapter warnings (same as CXR_VERBOSE=1)")
    .hook("preAction", (command) => {
      // Before any command opens a device: createGpu reads CXR_VERBOSE (kernels runtime/quiet.ts).
      if (command.opts().verbose) process.env.CXR_VERBOSE = "1";
    });
  const groups = {
    bench: program.command("bench").description("benchmarks that print measured figures"),
  };
  registerQuickstart(program);
  registerDemo(program);
  // `cxr bench kernels --models`: the packages above the kernels build the model cases.
  registerKernelCommands(program, {
    ...groups,
    modelBenchCases: [classifierModelBenchCases, diffusionModelBenchCases],
  });
  registerDataCommands(program);
  registerPhantomCommands(program);
  registerClassifierCommands(program, groups);
  registerServerCommands(program, groups);
  registerDiffusionCommands(program, groups);
  registerPretrainedCommands(program);
  return program;
}
