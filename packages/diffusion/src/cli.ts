/**
 * `cxr train diffusion`, `cxr generate`, `cxr diffusion fidelity` and `cxr bench diffusion`. Each calls
 * the library function of the same name, the code path the server and the study use.
 */

import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type ChexpertLabel, RACES, type Race } from "@cxr/data";
import { type Command, InvalidArgumentError, Option } from "commander";
import { DIFFUSION_BENCH_DEFAULTS, formatDiffusionBench, runDiffusionBench } from "./bench.ts";
import {
  FIDELITY_DEFAULTS,
  FIDELITY_MEASURE_NAMES,
  type FidelityMeasureName,
  type FidelityReport,
  formatFidelity,
  formatRealFilms,
  measureFidelity,
  measureRealFilms,
  parseFidelityPhrases,
} from "./fidelity.ts";
import { compareFidelityReports, formatFidelityComparison } from "./fidelity-compare.ts";
import { checkPoolable, poolFidelityReports } from "./fidelity-pool.ts";
import { DIFFUSION_CONFIGS, TRAINED_PREDICTIONS, type TrainedPrediction } from "./model/config.ts";
import { PRECISIONS, type Precision } from "./model/model.ts";
import {
  negativePromptFor,
  PATIENT_PLACEHOLDER,
  type PromptFields,
  promptFromFields,
} from "./model/prompt.ts";
import { formatGenerationMemory } from "./pipeline/memory.ts";
import { writeContactSheet, writeGeneratedImages } from "./pipeline/outputs.ts";
import { createPipeline, GENERATE_DEFAULTS, GENERATE_LIMITS } from "./pipeline/pipeline.ts";
import {
  FOLDER_BATCH_DEFAULT,
  formatFolderGenerate,
  generateFromFolder,
  isDiffusersFolder,
} from "./pretrained/cli.ts";
import { GUIDANCE_DEFAULTS } from "./schedule/guidance.ts";
import {
  SAMPLER_KINDS,
  SAMPLING_DEFAULTS,
  type SamplerKind,
  TIMESTEP_SPACINGS,
  type TimestepSpacing,
} from "./schedule/samplers.ts";
import { parseSingleFindings, type SingleFindings } from "./training/select.ts";
import {
  parseRepeatFindings,
  TRAIN_DEFAULTS,
  TRAIN_LIMITS,
  type TrainProgress,
  trainDiffusion,
} from "./training/train.ts";

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
  config?: string;
  init?: string;
  growAttention?: number[];
  prediction?: TrainedPrediction;
  resolution?: number;
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
  repeatFindings?: Partial<Record<ChexpertLabel, number>>;
  singleFindings?: SingleFindings;
  labelPrompts: number;
  labelSides?: boolean;
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
      `model configuration (${Object.keys(DIFFUSION_CONFIGS).join(", ")}; default phantom-small, or the --init model's)`,
    )
    .option(
      "--init <dir>",
      "start from this model folder's weights, tokenizer and config (e.g. models/phantom-diffusion) with a fresh optimizer, schedule and EMA",
    )
    .addOption(
      new Option(
        "--prediction <type>",
        "what the UNet learns to predict, replacing the config's or the --init model's (with --init the same weights learn it)",
      ).choices([...TRAINED_PREDICTIONS]),
    )
    .option(
      "--resolution <px>",
      "train at this image size instead of the config's or the --init model's (pixel space; with --init the same weights learn at the new size; saved as NAME@PXpx)",
      parseIntegerIn("--resolution", 8, 1024),
    )
    .option(
      "--grow-attention <levels>",
      "with --init: add transformer blocks (self- and cross-attention) at these UNet levels, comma-separated (0 = full resolution), starting as the identity; the other weights are the init model's",
      (value: string) =>
        value.split(",").map((part) => {
          const level = Number(part.trim());
          if (part.trim() === "" || !Number.isSafeInteger(level) || level < 0) {
            throw new InvalidArgumentError(`"${part}" is not a level (an integer from 0)`);
          }
          return level;
        }),
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
      "--label-prompts <share>",
      'share of prompts whose impression is written from the labels ("Cardiomegaly and pleural effusion.", as --findings prompts are) instead of the report impression',
      parseNumberIn("--label-prompts", 0, 1),
      TRAIN_DEFAULTS.labelPrompts,
    )
    .option(
      "--label-sides",
      'label-worded prompts name the side the report gives a lateralised finding ("Left pleural effusion."); needs --label-prompts',
    )
    .option(
      "--repeat-findings <list>",
      'oversample rare findings: "Cardiomegaly=3,Pleural Effusion=2" puts each positive record that many times in every epoch (default: every record once)',
      (value: string) => {
        try {
          return parseRepeatFindings(value);
        } catch (error) {
          throw new InvalidArgumentError((error as Error).message.replace(/^--repeat-findings: /, ""));
        }
      },
    )
    .option(
      "--single-findings <list>",
      'train only on films whose one finding (support devices aside) is listed, at most N of a finding where given, drawn by the seed: "Pleural Effusion,Cardiomegaly,No Finding=130" (default: every film)',
      (value: string) => {
        try {
          return parseSingleFindings(value);
        } catch (error) {
          throw new InvalidArgumentError((error as Error).message.replace(/^--single-findings: /, ""));
        }
      },
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
      let result: Awaited<ReturnType<typeof trainDiffusion>>;
      try {
        result = await trainDiffusion({
          data: flags.data as string,
          config: flags.config ?? (flags.init === undefined ? "phantom-small" : undefined),
          init: flags.init,
          growAttention: flags.growAttention,
          prediction: flags.prediction,
          resolution: flags.resolution,
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
          repeatFindings: flags.repeatFindings,
          singleFindings: flags.singleFindings,
          labelPrompts: flags.labelPrompts,
          labelSides: flags.labelSides === true,
          checkpointEvery: flags.checkpointEvery,
          logEvery: flags.logEvery,
          signal: controller.signal,
          onProgress: (progress) => {
            const line = progressLine(progress);
            process.stderr.write(interactive ? `\r${line}` : `${line}\n`);
          },
        });
      } finally {
        // Also when training fails: a later Ctrl-C must not reach a handler of a run that ended.
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
      }
      if (interactive) process.stderr.write("\n");
      console.log(
        `${result.stopped ? "stopped" : "trained"} ${result.steps} steps (${result.imagesSeen} images seen) in ${formatDuration(result.seconds)}`,
      );
      console.log(`model (EMA weights): ${result.modelDir}`);
      console.log(`loss: ${result.lossCsv}${result.lossPng ? `, ${result.lossPng}` : ""}`);
      console.log(`continue with --resume --out ${flags.out}`);
    });
  registerGenerate(program);
  registerFidelity(program);
  groups.bench
    .command("diffusion")
    .description(
      "training steps/s and sampled images/s with per-kernel breakdown and peak pool memory, beside PyTorch's training step",
    )
    .option(
      "--config <name>",
      `configuration (${Object.keys(DIFFUSION_CONFIGS).join(", ")})`,
      DIFFUSION_BENCH_DEFAULTS.config,
    )
    .option(
      "--batch <n>",
      "training batch",
      parseIntegerIn("--batch", 1, 1024),
      DIFFUSION_BENCH_DEFAULTS.batch,
    )
    .option(
      "--train-steps <n>",
      "timed training steps",
      parseIntegerIn("--train-steps", 1, 1000),
      DIFFUSION_BENCH_DEFAULTS.trainSteps,
    )
    .option(
      "--images <n>",
      "images sampled",
      parseIntegerIn("--images", 1, 1024),
      DIFFUSION_BENCH_DEFAULTS.sampleImages,
    )
    .option(
      "--sample-steps <n>",
      "denoising steps",
      parseIntegerIn("--sample-steps", 1, 1000),
      DIFFUSION_BENCH_DEFAULTS.sampleSteps,
    )
    .addOption(
      new Option("--sampler <name>", "sampler")
        .choices([...SAMPLER_KINDS])
        .default(DIFFUSION_BENCH_DEFAULTS.sampler),
    )
    .option("--no-torch", "skip the PyTorch reference")
    .option("--json", "print JSON")
    .action(
      async (flags: {
        config: string;
        batch: number;
        trainSteps: number;
        images: number;
        sampleSteps: number;
        sampler: SamplerKind;
        torch: boolean;
        json?: boolean;
      }) => {
        const result = await runDiffusionBench({
          config: flags.config,
          batch: flags.batch,
          trainSteps: flags.trainSteps,
          sampleImages: flags.images,
          sampleSteps: flags.sampleSteps,
          sampler: flags.sampler,
          torch: flags.torch,
        });
        console.log(flags.json ? JSON.stringify(result, null, 2) : formatDiffusionBench(result));
      },
    );
}

interface FidelityFlags {
  model?: string;
  realOnly?: boolean;
  size?: number;
  measureSize: number;
  measures: FidelityMeasureName[];
  phrase?: string[];
  data?: string;
  split: "valid" | "test" | "train";
  n: number;
  steps: number;
  sampler: SamplerKind;
  spacing: TimestepSpacing;
  guidance: number;
  guidanceRescale: number;
  negativePrompt: string;
  negativeGuidance: number;
  seed: number;
  json?: boolean;
  out?: string;
}

/** --spacing: how the inference timesteps are spread over the training ones. */
function spacingOption(note = ""): Option {
  return new Option(
    "--spacing <kind>",
    `timestep spacing (diffusers' timestep_spacing): leading starts 10 steps at t = 901 (SD 2.1's), trailing at 999${note}`,
  ).choices([...TIMESTEP_SPACINGS]);
}

function registerFidelity(program: Command): void {
  const group =
    program.commands.find((command) => command.name() === "diffusion") ??
    program.command("diffusion").description("generator diagnostics");
  group
    .command("fidelity")
    .description(
      "conditioning fidelity from pixels: cardiothoracic ratio of images generated for Cardiomegaly vs No Finding prompts, lateral lung depth for Pleural Effusion vs No Finding, lower-zone ratio for female vs male (AUROCs), beside real phantom films",
    )
    .option("--model <dir>", "model directory (required unless --real-only)")
    .option(
      "--measures <list>",
      `measures beside the CTR, comma-separated (${FIDELITY_MEASURE_NAMES.join(", ")}) or none; each adds --n generated images`,
      parseMeasures,
      [...FIDELITY_DEFAULTS.measures],
    )
    .option(
      "--real-only",
      "measure only the real films of --data (no model): how well each measure separates them",
    )
    .option(
      "--size <px>",
      "with --real-only: the resolution the films are resized to before measuring (the model's resolution otherwise)",
      parseIntegerIn("--size", 8, 4096),
    )
    .option(
      "--measure-size <px>",
      "images smaller than this are upsampled (bilinear) to it before measuring",
      parseIntegerIn("--measure-size", 8, 4096),
      FIDELITY_DEFAULTS.measureSize,
    )
    .option(
      "--phrase <finding=words>",
      'word a finding of the generated prompts as given, e.g. "Pleural Effusion=large left pleural effusion"; "|" separates wordings the images take in turn, e.g. "Pleural Effusion=right pleural effusion|left pleural effusion" (repeatable; default: the label\'s phrase, "Pleural effusion.")',
      (value: string, previous: string[] = []) => {
        const values = [...previous, value];
        try {
          parseFidelityPhrases(values);
        } catch (error) {
          throw new InvalidArgumentError((error as Error).message.replace(/^--phrase: /, ""));
        }
        return values;
      },
    )
    .option("--data <dir>", "real films to compare with (CheXpert layout, e.g. the phantom's output)")
    .addOption(
      new Option("--split <split>", "split of --data to measure")
        .choices(["valid", "test", "train"])
        .default(FIDELITY_DEFAULTS.split),
    )
    .option("--n <count>", "images per class", parseIntegerIn("--n", 2, 10_000), FIDELITY_DEFAULTS.n)
    .option(
      "--steps <count>",
      "denoising steps",
      parseIntegerIn("--steps", 1, GENERATE_LIMITS.maxSteps),
      FIDELITY_DEFAULTS.steps,
    )
    .addOption(
      new Option("--sampler <name>", "sampler")
        .choices([...SAMPLER_KINDS])
        .default(FIDELITY_DEFAULTS.sampler),
    )
    .addOption(spacingOption().default(FIDELITY_DEFAULTS.spacing))
    .option(
      "--guidance <scale>",
      "guidance scale",
      parseNumberIn("--guidance", 0, GENERATE_LIMITS.maxGuidance),
      FIDELITY_DEFAULTS.guidance,
    )
    .option(
      "--guidance-rescale <phi>",
      "guidance rescale in [0, 1] (diffusers' guidance_rescale; 0: off)",
      parseNumberIn("--guidance-rescale", 0, 1),
      FIDELITY_DEFAULTS.guidanceRescale,
    )
    .option(
      "--negative-prompt <text>",
      `negative prompt of every generated image (diffusers' negative_prompt: the text guidance steers away from; default "": the empty prompt); ${PATIENT_PLACEHOLDER} stands for the image's demographic sentence, e.g. "${PATIENT_PLACEHOLDER}" guides the impression alone`,
      FIDELITY_DEFAULTS.negativePrompt,
    )
    .option(
      "--negative-guidance <scale>",
      'the negative prompt\'s own guidance over the empty prompt: eps_0 + sn (eps_n - eps_0) + s (eps_c - eps_n), three UNet rows per image (default 1: eps_n + s (eps_c - eps_n)); with "{patient}" it scales the demographics and --guidance the findings',
      parseNumberIn("--negative-guidance", 0, GENERATE_LIMITS.maxGuidance),
      FIDELITY_DEFAULTS.negativeGuidance,
    )
    .option(
      "--seed <n>",
      "noise seed",
      parseIntegerIn("--seed", 0, Number.MAX_SAFE_INTEGER),
      FIDELITY_DEFAULTS.seed,
    )
    .option("--json", "print the report as JSON")
    .option("--out <dir>", "also write fidelity.json here")
    .action(async (flags: FidelityFlags) => {
      if (flags.realOnly) {
        if (!flags.data || flags.size === undefined) {
          throw new Error("--real-only needs --data DIR and --size PX");
        }
        if (flags.model) throw new Error("--real-only measures no model: drop --model");
        if (flags.phrase) throw new Error("--phrase words generated prompts: --real-only generates none");
        const options = {
          realData: flags.data,
          split: flags.split,
          n: flags.n,
          seed: flags.seed,
          size: flags.size,
          measureSize: flags.measureSize,
          measures: flags.measures,
        };
        const real = await measureRealFilms(options);
        writeFidelityJson(flags.out, { ...options, ...real });
        console.log(
          flags.json ? JSON.stringify({ ...options, ...real }, null, 2) : formatRealFilms(real, options),
        );
        return;
      }
      if (!flags.model) throw new Error("--model DIR is required (or --real-only with --data)");
      if (flags.size !== undefined) throw new Error("--size goes with --real-only only");
      const pipeline = await createPipeline(flags.model);
      try {
        const report = await measureFidelity(pipeline, {
          n: flags.n,
          steps: flags.steps,
          sampler: flags.sampler,
          spacing: flags.spacing,
          guidance: flags.guidance,
          guidanceRescale: flags.guidanceRescale,
          negativePrompt: flags.negativePrompt,
          negativeGuidance: flags.negativeGuidance,
          seed: flags.seed,
          realData: flags.data,
          split: flags.split,
          measures: flags.measures,
          measureSize: flags.measureSize,
          ...(flags.phrase ? { phrases: parseFidelityPhrases(flags.phrase) } : {}),
          onProgress: (message) => console.error(message),
        });
        writeFidelityJson(flags.out, report);
        console.log(flags.json ? JSON.stringify(report, null, 2) : formatFidelity(report));
      } finally {
        pipeline.dispose();
      }
    });
  group
    .command("fidelity-compare")
    .description(
      "compare two fidelity reports (fidelity.json, or folders holding one) image by image: two models, or one model sampled two ways (sampler, steps, spacing, guidance and its rescale may differ; n, seed, batch and prompts must match): paired bootstrap interval of each AUROC difference",
    )
    .argument("<a>", "report A: fidelity.json or its folder")
    .argument("<b>", "report B: fidelity.json or its folder")
    .option("--json", "print the comparison as JSON")
    .action((a: string, b: string, flags: { json?: boolean }) => {
      const comparison = compareFidelityReports(readFidelityReport(a), readFidelityReport(b), [a, b]);
      console.log(flags.json ? JSON.stringify(comparison, null, 2) : formatFidelityComparison(comparison));
    });
  group
    .command("fidelity-pool")
    .description(
      "pool fidelity reports of one model sampled alike that differ only in seed: their generated images together, against every film of the split (measured anew; the reports' own real films are overlapping draws), with each gap's interval",
    )
    .argument("<reports...>", "two or more reports: fidelity.json files or folders holding one")
    .option("--data <dir>", "the real films (CheXpert layout); default: the folder the reports measured")
    .option("--json", "print the pooled report as JSON")
    .option("--out <dir>", "also write the pooled report as fidelity.json here")
    .action(async (paths: string[], flags: { data?: string; json?: boolean; out?: string }) => {
      const reports = paths.map(readFidelityReport);
      checkPoolable(reports, paths);
      const realData = flags.data ?? sharedRealData(reports, paths);
      const { split, seed, measureSize, measures } = reports[0].settings;
      let real: Awaited<ReturnType<typeof measureRealFilms>> | undefined;
      if (realData !== undefined) {
        console.error(`measuring every film of ${realData} (${split} split)`);
        real = await measureRealFilms({
          realData,
          split,
          n: 10_000,
          seed,
          size: reports[0].resolution,
          measureSize,
          measures,
        });
      } else {
        console.error("no real films: the reports measured none and no --data was given");
      }
      const pooled = poolFidelityReports(reports, { real, realData, names: paths });
      writeFidelityJson(flags.out, pooled);
      console.log(flags.json ? JSON.stringify(pooled, null, 2) : formatFidelity(pooled));
    });
}

/** The real-film folder every report measured; undefined when none did; an Error when they differ. */
function sharedRealData(reports: readonly FidelityReport[], paths: readonly string[]): string | undefined {
  const folders = new Set(reports.map((report) => report.settings.realData));
  if (folders.size > 1) {
    const listed = reports.map((report, index) => `${paths[index]}: ${report.settings.realData ?? "none"}`);
    throw new Error(
      `the reports measured different real films (${listed.join("; ")}); choose one with --data DIR`,
    );
  }
  return reports[0].settings.realData;
}

/** A fidelity.json (or the one in a folder), with errors naming the file. */
function readFidelityReport(path: string): FidelityReport {
  const file = existsSync(path) && statSync(path).isDirectory() ? join(path, "fidelity.json") : path;
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new Error(`cannot read the fidelity report ${file}: ${(error as Error).message}`);
  }
  let report: unknown;
  try {
    report = JSON.parse(text);
  } catch (error) {
    throw new Error(`${file} is not valid JSON (${(error as Error).message})`);
  }
  if (typeof report !== "object" || report === null || !("generated" in report) || !("settings" in report)) {
    throw new Error(`${file} is not a fidelity report of a model (no "generated" and "settings")`);
  }
  return report as FidelityReport;
}

function parseMeasures(value: string): FidelityMeasureName[] {
  if (value.trim() === "none") return [];
  const names = value.split(",").map((name) => name.trim());
  for (const name of names) {
    if (!(FIDELITY_MEASURE_NAMES as readonly string[]).includes(name)) {
      throw new InvalidArgumentError(
        `--measures: unknown measure "${name}" (known: ${FIDELITY_MEASURE_NAMES.join(", ")}, or none)`,
      );
    }
  }
  if (new Set(names).size !== names.length)
    throw new InvalidArgumentError(`--measures: "${value}" lists a measure twice`);
  return names as FidelityMeasureName[];
}

/** fidelity.json in `dir` (created), written atomically; nothing without --out. */
function writeFidelityJson(dir: string | undefined, report: unknown): void {
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  const path = join(dir, "fidelity.json");
  writeFileSync(`${path}.tmp-${process.pid}`, `${JSON.stringify(report, null, 2)}\n`);
  renameSync(`${path}.tmp-${process.pid}`, path);
}

interface GenerateFlags {
  model: string;
  prompt?: string;
  sex?: string;
  age?: number;
  race?: string;
  findings?: string;
  prompts?: string;
  grid?: boolean;
  n: number;
  steps?: number;
  guidance?: number;
  guidanceRescale?: number;
  negativePrompt?: string;
  negativeGuidance?: number;
  sampler?: SamplerKind;
  spacing?: TimestepSpacing;
  seed: number;
  bits: string;
  batch?: number;
  variant?: string;
  precision: Precision;
  out: string;
}

/** The prompt of `cxr generate` from --prompt or --sex/--age/--race/--findings (exactly one way). */
export function promptFromFlags(
  flags: Pick<GenerateFlags, "prompt" | "sex" | "age" | "race" | "findings">,
): string | PromptFields {
  const fielded =
    flags.sex !== undefined ||
    flags.age !== undefined ||
    flags.race !== undefined ||
    flags.findings !== undefined;
  if (flags.prompt !== undefined && fielded) {
    throw new InvalidArgumentError("give either --prompt or --sex/--age/--race/--findings, not both");
  }
  if (flags.prompt !== undefined) {
    if (flags.prompt.trim() === "") throw new InvalidArgumentError("--prompt is empty");
    return flags.prompt;
  }
  if (!fielded)
    throw new InvalidArgumentError(
      "give --prompt TEXT, or --sex and --age (with --race and --findings optional)",
    );
  const sex = flags.sex?.toLowerCase();
  const sexes: Record<string, "female" | "male"> = { f: "female", female: "female", m: "male", male: "male" };
  if (sex === undefined || !(sex in sexes))
    throw new InvalidArgumentError(`--sex must be F, M, female or male, got ${JSON.stringify(flags.sex)}`);
  if (flags.age === undefined) throw new InvalidArgumentError("--age is required with --sex");
  let race: Race | null = null;
  if (flags.race !== undefined) {
    const upper = flags.race.toUpperCase();
    if (!(RACES as readonly string[]).includes(upper)) {
      throw new InvalidArgumentError(
        `--race must be one of ${RACES.join(", ")}, got ${JSON.stringify(flags.race)}`,
      );
    }
    race = upper as Race;
  }
  const findings = (flags.findings ?? "")
    .split(",")
    .map((finding) => finding.trim())
    .filter((finding) => finding.length > 0);
  return { sex: sexes[sex], age: flags.age, race, findings };
}

/** A prompts file: one prompt per line (blank lines and lines starting with # ignored). */
export function readPromptsFile(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new Error(`cannot read the prompts file ${path}: ${(error as Error).message}`);
  }
  const prompts = text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line.length > 0 && !line.startsWith("#"));
  if (prompts.length === 0) throw new Error(`the prompts file ${path} has no prompts`);
  return prompts;
}

/** The default grid: "No Finding" and each common finding, for a 70-year-old woman and man. */
export const DEFAULT_GRID_PROMPTS: PromptFields[] = (["female", "male"] as const).flatMap((sex) =>
  [[], ["Cardiomegaly"], ["Pleural Effusion"], ["Edema"]].map((findings) => ({ sex, age: 70, findings })),
);

function registerGenerate(program: Command): void {
  program
    .command("generate")
    .description(
      "generate chest radiographs from a prompt (PNG + JSON sidecar per image), or a contact sheet; " +
        "--model is our own model folder (e.g. models/phantom-diffusion) or a diffusers Stable Diffusion 2.x / RoentGen-v2 folder (model_index.json)",
    )
    .requiredOption(
      "--model <dir>",
      "model folder: ours (config.json + tokenizer.json, e.g. models/phantom-diffusion or a run's checkpoint/ema) or a diffusers folder (model_index.json)",
    )
    .option("--prompt <text>", 'prompt, e.g. "70 year old female. Cardiomegaly."')
    .option("--sex <F|M>", "patient sex (instead of --prompt)")
    .option("--age <years>", "patient age", parseNumberIn("--age", 0, 150))
    .option("--race <race>", `patient race (${RACES.join(", ")})`)
    .option("--findings <list>", 'comma-separated CheXpert findings, e.g. "Cardiomegaly,Pleural Effusion"')
    .option("--prompts <file>", "a contact sheet: one row per prompt of this file (one per line)")
    .option(
      "--grid",
      "a contact sheet of the default grid: normal, cardiomegaly, effusion, edema x female, male",
    )
    .option(
      "--n <count>",
      "images per prompt",
      parseIntegerIn("--n", 1, GENERATE_LIMITS.maxImages),
      GENERATE_DEFAULTS.n,
    )
    .option(
      "--steps <count>",
      `denoising steps (default: the model's config.json "sampling" steps, else ${GENERATE_DEFAULTS.steps}; ${SAMPLING_DEFAULTS.inferenceSteps} for a diffusers folder: RoentGen-v2's)`,
      parseIntegerIn("--steps", 1, GENERATE_LIMITS.maxSteps),
    )
    .option(
      "--guidance <scale>",
      `classifier-free guidance scale (default ${GENERATE_DEFAULTS.guidance}; RoentGen-v2's is ${GUIDANCE_DEFAULTS.scale}; 1 = conditional only)`,
      parseNumberIn("--guidance", 0, GENERATE_LIMITS.maxGuidance),
    )
    .option(
      "--guidance-rescale <phi>",
      `guidance rescale in [0, 1] (diffusers' guidance_rescale: each guided prediction pulled toward the conditional one's standard deviation; default ${GENERATE_DEFAULTS.guidanceRescale}: off)`,
      parseNumberIn("--guidance-rescale", 0, 1),
    )
    .option(
      "--negative-prompt <text>",
      `what guidance steers away from (diffusers' negative_prompt; default "": the empty prompt), e.g. "No acute cardiopulmonary abnormality."; ${PATIENT_PLACEHOLDER} stands for the prompt's demographic sentence ("70 year old female."), so "${PATIENT_PLACEHOLDER}" guides the findings alone`,
    )
    .option(
      "--negative-guidance <scale>",
      `our models: the negative prompt's own guidance over the empty prompt, eps_0 + sn (eps_n - eps_0) + s (eps_c - eps_n), three UNet rows per image (default ${GENERATE_DEFAULTS.negativeGuidance}: eps_n + s (eps_c - eps_n)); with "${PATIENT_PLACEHOLDER}" it scales the demographics and --guidance the findings`,
      parseNumberIn("--negative-guidance", 0, GENERATE_LIMITS.maxGuidance),
    )
    .addOption(
      new Option(
        "--sampler <name>",
        `sampler (default: the model's config.json "sampling" sampler, else ${GENERATE_DEFAULTS.sampler}, e.g. ddpm for models/phantom-diffusion; for a diffusers folder its scheduler's class)`,
      ).choices([...SAMPLER_KINDS]),
    )
    .addOption(spacingOption(`; default ${GENERATE_DEFAULTS.spacing}; our models only`))
    .option(
      "--seed <n>",
      "noise seed (same seed, same images)",
      parseIntegerIn("--seed", 0, Number.MAX_SAFE_INTEGER),
      GENERATE_DEFAULTS.seed,
    )
    .addOption(new Option("--bits <depth>", "PNG bit depth").choices(["8", "16"]).default("8"))
    .option(
      "--batch <count>",
      `images per GPU batch (default ${GENERATE_DEFAULTS.maxBatch} for our models, ${FOLDER_BATCH_DEFAULT} for a diffusers folder)`,
      parseIntegerIn("--batch", 1, 1024),
    )
    .option("--variant <name>", "diffusers folders: weight variant, e.g. fp16 for *.fp16.safetensors")
    .addOption(
      new Option(
        "--precision <p>",
        "weights and activations of the text encoder, the UNet and (diffusers folders) the VAE: f32, or f16 (needs the adapter's shader-f16; inference only, f32 arithmetic inside each kernel; guidance and sampler stay f32)",
      )
        .choices([...PRECISIONS])
        .default("f32"),
    )
    .requiredOption("--out <dir>", "output folder")
    .action(async (flags: GenerateFlags) => {
      const sheet = flags.grid === true || flags.prompts !== undefined;
      if (flags.grid && flags.prompts !== undefined)
        throw new InvalidArgumentError("give --grid or --prompts, not both");
      const onStep = (progress: { step: number; steps: number; chunk: number; chunks: number }) => {
        if (process.stderr.isTTY) {
          process.stderr.write(
            `\rbatch ${progress.chunk + 1}/${progress.chunks}, step ${progress.step}/${progress.steps}`,
          );
        }
      };
      if (isDiffusersFolder(flags.model)) {
        if (sheet) {
          throw new InvalidArgumentError(
            `${flags.model} is a diffusers folder: --grid and --prompts (contact sheets) are only for our own models; give --prompt or --sex/--age`,
          );
        }
        if (flags.negativeGuidance !== undefined) {
          throw new InvalidArgumentError(
            `${flags.model} is a diffusers folder: --negative-guidance is for our own models (a diffusers folder takes --negative-prompt at guidance's scale)`,
          );
        }
        if (flags.spacing !== undefined) {
          throw new InvalidArgumentError(
            `${flags.model} is a diffusers folder: it samples with its scheduler_config.json's timestep_spacing; --spacing is for our own models`,
          );
        }
        const prompt = promptFromFlags(flags);
        const result = await generateFromFolder(flags.model, {
          prompts: [typeof prompt === "string" ? prompt : promptFromFields(prompt)],
          negativePrompt: negativePromptFor(flags.negativePrompt ?? "", prompt),
          out: flags.out,
          n: flags.n,
          steps: flags.steps,
          guidance: flags.guidance,
          guidanceRescale: flags.guidanceRescale,
          sampler: flags.sampler,
          seed: flags.seed,
          bits: Number(flags.bits) as 8 | 16,
          batch: flags.batch ?? FOLDER_BATCH_DEFAULT,
          variant: flags.variant,
          precision: flags.precision,
          onStep,
          onWarning: (message) => process.stderr.write(`\nwarning: ${message}\n`),
        });
        if (process.stderr.isTTY) process.stderr.write("\n");
        console.log(`prompt: ${result.prompts[0]}`);
        process.stdout.write(formatFolderGenerate(result));
        return;
      }
      if (flags.variant !== undefined) {
        throw new InvalidArgumentError(
          `--variant is for diffusers folders; ${flags.model} has no model_index.json`,
        );
      }
      const prompt = sheet ? null : promptFromFlags(flags);
      const pipeline = await createPipeline(flags.model, { precision: flags.precision });
      // The model's config.json may name its own sampler and steps (`sampling`).
      const defaults = pipeline.defaults;
      const common = {
        steps: flags.steps ?? defaults.steps,
        guidance: flags.guidance ?? defaults.guidance,
        guidanceRescale: flags.guidanceRescale ?? defaults.guidanceRescale,
        negativeGuidance: flags.negativeGuidance ?? defaults.negativeGuidance,
        sampler: flags.sampler ?? defaults.sampler,
        spacing: flags.spacing ?? defaults.spacing,
        seed: flags.seed,
        bits: Number(flags.bits) as 8 | 16,
        maxBatch: flags.batch ?? defaults.maxBatch,
        onStep,
        onWarning: (message: string) => process.stderr.write(`\nwarning: ${message}\n`),
      };
      const negativeOf = (entry: string | PromptFields) =>
        negativePromptFor(flags.negativePrompt ?? "", entry);
      try {
        if (sheet) {
          const prompts = flags.prompts !== undefined ? readPromptsFile(flags.prompts) : DEFAULT_GRID_PROMPTS;
          const { path, result } = await writeContactSheet(pipeline, {
            ...common,
            negativePrompt: prompts.map(negativeOf),
            prompts,
            perPrompt: flags.n,
            out: join(flags.out, "contact-sheet.png"),
          });
          const files = writeGeneratedImages(flags.out, result);
          if (process.stderr.isTTY) process.stderr.write("\n");
          console.log(
            `${files.length} images (${prompts.length} prompts x ${flags.n}) in ${result.seconds.toFixed(1)} s -> ${flags.out}`,
          );
          console.log(`contact sheet: ${path}`);
          console.log(formatGenerationMemory(result.memory, pipeline.precision));
        } else {
          const result = await pipeline.generate({
            ...common,
            prompt: prompt as string | PromptFields,
            negativePrompt: negativeOf(prompt as string | PromptFields),
            n: flags.n,
          });
          const files = writeGeneratedImages(flags.out, result);
          if (process.stderr.isTTY) process.stderr.write("\n");
          console.log(`prompt: ${result.images[0].prompt}`);
          console.log(
            `${files.length} images in ${result.seconds.toFixed(1)} s (${result.imagesPerSecond.toFixed(2)} images/s) -> ${flags.out}`,
          );
          console.log(formatGenerationMemory(result.memory, pipeline.precision));
        }
      } finally {
        pipeline.dispose();
      }
    });
}
