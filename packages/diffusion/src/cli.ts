/**
 * `cxr train diffusion`, `cxr generate`, `cxr diffusion fidelity` and `cxr bench diffusion`. Each calls
 * the library function of the same name, the code path the server and the study use.
 */
import { type Command, InvalidArgumentError } from "commander";
import { DIFFUSION_CONFIGS } from "./model/config.ts";
import { TRAIN_DEFAULTS, TRAIN_LIMITS, type TrainProgress, trainDiffusion } from "./training/train.ts";

export function parseIntegerIn(name: string, minimum: number, maximum: number) {
  return (value: string): number => {
    const number = Number(value);
    if (!Number.isSafeInteger(number) || number < minimum || number > maximum) {
      throw new InvalidArgumentError(
        `${name} must be an integer in [${minimum}, ${maximum}], got "${value}"`,
      );
    }
    return number;
  };
}

export function parseNumberIn(name: string, minimum: number, maximum: number) {
  return (value: string): number => {
    const number = Number(value);
    if (value.trim() === "" || !Number.isFinite(number) || number < minimum || number > maximum) {
      throw new InvalidArgumentError(`${name} must be a number in [${minimum}, ${maximum}], got "${value}"`);
    }
    return number;
  };
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(s % 60).padStart(2, "0")}s`;
}

/** One progress line: a bar, the step, loss, steps/s and ETA (redrawn in place on a terminal). */
export function progressLine(progress: TrainProgress, width = 24): string {
  const done = Math.round((progress.step / progress.totalSteps) * width);
  const bar = `${"#".repeat(done)}${"-".repeat(width - done)}`;
  return `[${bar}] step ${progress.step}/${progress.totalSteps}  loss ${progress.loss.toFixed(4)}  lr ${progress.learningRate.toExponential(2)}  ${progress.stepsPerSecond.toFixed(3)} steps/s  ETA ${formatDuration(progress.etaSeconds)}`;
}

interface TrainFlags {
  data?: string;
  config: string;
  steps: number;
  batch: number;
  out?: string;
  resume?: boolean;
  seed: number;
  lr: number;
  warmup?: number;
  minSnr: string;
  emaDecay: number;
  dropout: number;
  checkpointEvery: number;
  logEvery: number;
}

export function registerCommands(program: Command, groups: { bench: Command }): void {
  const train = program.commands.find((command) => command.name() === "train") ?? program.command("train");
  if (!train.description()) train.description("train a model (diffusion, classifier)");
  train
    .command("diffusion")
    .description(
      "train the text-conditioned generator (text encoder + UNet) on a CheXpert-layout or prompt folder (train split)",
    )
    .requiredOption(
      "--data <dir>",
      "training images: CheXpert layout (train.csv) or images with .txt prompts",
    )
    .option(
      "--config <name>",
      `model configuration (${Object.keys(DIFFUSION_CONFIGS).join(", ")})`,
      "phantom-small",
    )
    .option(
      "--steps <n>",
      "total optimizer steps",
      parseIntegerIn("--steps", 1, TRAIN_LIMITS.maxSteps),
      TRAIN_DEFAULTS.steps,
    )
    .option(
      "--batch <n>",
      "images per step",
      parseIntegerIn("--batch", 1, TRAIN_LIMITS.maxBatch),
      TRAIN_DEFAULTS.batchSize,
    )
    .requiredOption(
      "--out <dir>",
      "run folder: checkpoint/ (model, ema, optimizer, state), loss.csv, loss.png",
    )
    .option("--resume", "continue the checkpoint in --out exactly where it stopped")
    .option(
      "--seed <n>",
      "seed of initialisation, data order, timesteps and noise",
      parseIntegerIn("--seed", 0, 2 ** 31),
      TRAIN_DEFAULTS.seed,
    )
    .option(
      "--lr <rate>",
      "peak learning rate (AdamW)",
      parseNumberIn("--lr", 1e-8, 0.5),
      TRAIN_DEFAULTS.learningRate,
    )
    .option(
      "--warmup <steps>",
      "linear warm-up steps (default min(500, 10% of --steps))",
      parseIntegerIn("--warmup", 0, TRAIN_LIMITS.maxSteps),
    )
    .option("--min-snr <gamma>", 'min-SNR-gamma loss weighting, or "off"', String(TRAIN_DEFAULTS.minSnrGamma))
    .option(
      "--ema-decay <d>",
      "EMA decay",
      parseNumberIn("--ema-decay", 0, 0.999999),
      TRAIN_DEFAULTS.emaDecay,
    )
    .option(
      "--dropout <p>",
      "share of prompts replaced by the empty prompt",
      parseNumberIn("--dropout", 0, 1),
      TRAIN_DEFAULTS.conditioningDropout,
    )
    .option(
      "--checkpoint-every <n>",
      "steps between checkpoints",
      parseIntegerIn("--checkpoint-every", 1, TRAIN_LIMITS.maxSteps),
      TRAIN_DEFAULTS.checkpointEvery,
    )
    .option(
      "--log-every <n>",
      "steps between loss read-backs and progress lines",
      parseIntegerIn("--log-every", 1, TRAIN_LIMITS.maxSteps),
      TRAIN_DEFAULTS.logEvery,
    )
    .action(async (flags: TrainFlags) => {
      const minSnrGamma = flags.minSnr === "off" ? null : parseNumberIn("--min-snr", 1e-6, 1e6)(flags.minSnr);
      const controller = new AbortController();
      const onSignal = () => {
        if (controller.signal.aborted) process.exit(130);
        process.stderr.write(
          "\nstopping after this step (a checkpoint is written); press Ctrl-C again to quit now\n",
        );
        controller.abort();
      };
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
      const interactive = process.stderr.isTTY === true;
      const result = await trainDiffusion({
        data: flags.data as string,
        config: flags.config,
        steps: flags.steps,
        batchSize: flags.batch,
        out: flags.out as string,
        resume: flags.resume === true,
        seed: flags.seed,
        learningRate: flags.lr,
        warmupSteps: flags.warmup,
        minSnrGamma,
        emaDecay: flags.emaDecay,
        conditioningDropout: flags.dropout,
        checkpointEvery: flags.checkpointEvery,
        logEvery: flags.logEvery,
        signal: controller.signal,
        onProgress: (progress) => {
          const line = progressLine(progress);
          process.stderr.write(interactive ? `\r${line}` : `${line}\n`);
        },
      });
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      if (interactive) process.stderr.write("\n");
      console.log(
        `${result.stopped ? "stopped" : "trained"} ${result.steps} steps (${result.imagesSeen} images seen) in ${formatDuration(result.seconds)}`,
      );
      console.log(`model (EMA weights): ${result.modelDir}`);
      console.log(`loss: ${result.lossCsv}${result.lossPng ? `, ${result.lossPng}` : ""}`);
      console.log(`continue with --resume --out ${flags.out}`);
    });
  void groups;
}
