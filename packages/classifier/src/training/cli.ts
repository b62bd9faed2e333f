/**
 * `cxr train classifier`, `cxr predict` and `cxr bench classifier`. The `train` group is shared with
 * other packages (the diffusion model adds `train diffusion`): it is created only if absent.
 */
import {
  DATASET_FORMATS,
  type DatasetFormat,
  SPLITS,
  type Split,
  UNCERTAINTY_POLICIES,
  type UncertaintyPolicy,
} from "@cxr/data";
import { createGpu } from "@cxr/kernels";
import { type Command, InvalidArgumentError } from "commander";
import {
  type ClassifierBenchCase,
  DEFAULT_CLASSIFIER_BENCH,
  formatClassifierBench,
  runClassifierBenchCase,
} from "./bench.ts";
import { MODEL_CONFIG_NAMES } from "./models.ts";
import { predictDataset } from "./predict.ts";
import { DEFAULT_TRAIN_RUN, STRATEGIES, type Strategy, trainClassifierRun } from "./run.ts";

const integer = (minimum: number) => (value: string) => {
  const number = Number(value);
  if (!Number.isSafeInteger(number) || number < minimum)
    throw new InvalidArgumentError(`expected an integer >= ${minimum}, got "${value}"`);
  return number;
};
const positive = (value: string) => {
  const number = Number(value);
  if (!(number > 0) || !Number.isFinite(number))
    throw new InvalidArgumentError(`expected a number > 0, got "${value}"`);
  return number;
};
const fraction = (value: string) => {
  const number = Number(value);
  if (!(number > 0 && number < 1))
    throw new InvalidArgumentError(`expected a number strictly between 0 and 1, got "${value}"`);
  return number;
};
const choice =
  <T extends string>(values: readonly T[], what: string) =>
  (value: string): T => {
    if (!(values as readonly string[]).includes(value))
      throw new InvalidArgumentError(`unknown ${what} "${value}" (choose from ${values.join(", ")})`);
    return value as T;
  };

const HEAD_NAMES = ["findings", "sex", "age", "race"] as const;
const heads = (value: string) => {
  const names = value.split(",").map((name) => name.trim());
  for (const name of names) choice(HEAD_NAMES, "head")(name);
  return {
    findings: names.includes("findings"),
    sex: names.includes("sex"),
    age: names.includes("age"),
    race: names.includes("race"),
  };
};

interface TrainFlags {
  train: string;
  format: DatasetFormat;
  synthetic?: string;
  syntheticFormat: DatasetFormat;
  strategy: Strategy;
  mixRatio: number;
  config: string;
  out: string;
  resume?: boolean;
  institution?: string;
  imageSize?: number;
  batchSize: number;
  epochs: number;
  lr: number;
  pretrainEpochs: number;
  pretrainLr: number;
  patience: number;
  policy: UncertaintyPolicy;
  heads: { findings: boolean; sex: boolean; age: boolean; race: boolean };
  memoryEfficient?: boolean;
  augment: boolean;
  seed: number;
  bootstrap: number;
  stopAfter?: number;
}

export function registerTrainingCommands(program: Command, groups: { bench: Command }): void {
  const train =
    program.commands.find((command) => command.name() === "train") ??
    program.command("train").description("train a model (see the subcommands)");
  const defaults = DEFAULT_TRAIN_RUN;
  train
    .command("classifier")
    .description(
      "train a DenseNet (or the small CNN) on real, mixed or synthetic-then-real data, then evaluate it",
    )
    .requiredOption("--train <dir>", "real dataset (train, valid and test splits)")
    .option(
      "--format <format>",
      "dataset format of --train",
      choice(DATASET_FORMATS, "format"),
      defaults.format,
    )
    .option("--synthetic <dir>", "synthetic dataset (mix and pretrain-finetune)")
    .option(
      "--synthetic-format <format>",
      "dataset format of --synthetic",
      choice(DATASET_FORMATS, "format"),
      defaults.syntheticFormat,
    )
    .option(
      "--strategy <name>",
      `${STRATEGIES.join(" | ")}`,
      choice(STRATEGIES, "strategy"),
      defaults.strategy,
    )
    .option(
      "--mix-ratio <r>",
      "share of each mix batch drawn from the synthetic set",
      fraction,
      defaults.mixRatio,
    )
    .option(
      "--config <name>",
      `network: ${MODEL_CONFIG_NAMES.join(", ")}`,
      choice(MODEL_CONFIG_NAMES, "config"),
      defaults.config,
    )
    .requiredOption(
      "--out <dir>",
      "run folder: checkpoints, metrics.csv, learning-curve.png, predictions, evaluations",
    )
    .option("--resume", "continue the run in --out from its last checkpoint")
    .option(
      "--institution <name>",
      "train, select and test on one institution; the others are out of distribution",
    )
    .option("--image-size <px>", "model input side (default: the config's)", integer(8))
    .option("--batch-size <n>", "images per batch", integer(1), defaults.batchSize)
    .option("--epochs <n>", "epochs of the real / mix / fine-tuning phase", integer(1), defaults.epochs)
    .option("--lr <rate>", "peak learning rate of that phase", positive, defaults.learningRate)
    .option(
      "--pretrain-epochs <n>",
      "epochs of synthetic pretraining (pretrain-finetune)",
      integer(1),
      defaults.pretrainEpochs,
    )
    .option(
      "--pretrain-lr <rate>",
      "peak learning rate of pretraining",
      positive,
      defaults.pretrainLearningRate,
    )
    .option(
      "--patience <epochs>",
      "stop a phase after this many epochs without a better validation AUROC",
      integer(1),
      defaults.patience,
    )
    .option(
      "--policy <name>",
      "uncertain labels: ignore | zeros | ones",
      choice(UNCERTAINTY_POLICIES, "policy"),
      defaults.policy,
    )
    .option("--heads <list>", "outputs to train: findings,sex,age,race (any subset)", heads, defaults.heads)
    .option(
      "--memory-efficient",
      "memory-efficient dense blocks: recompute concatenation + norm1 + relu1 + conv1 in backward (DenseNet configs)",
    )
    .option("--no-augment", "no rotation/scale/brightness/contrast augmentation")
    .option("--seed <n>", "initialisation, shuffling and augmentation seed", integer(0), defaults.seed)
    .option(
      "--bootstrap <rounds>",
      "bootstrap rounds of the final evaluation",
      integer(0),
      defaults.bootstrapRounds,
    )
    .action(async (flags: TrainFlags) => {
      const gpu = await createGpu();
      try {
        const result = await trainClassifierRun(gpu, {
          train: flags.train,
          format: flags.format,
          synthetic: flags.synthetic ?? null,
          syntheticFormat: flags.syntheticFormat,
          strategy: flags.strategy,
          mixRatio: flags.mixRatio,
          config: flags.config,
          out: flags.out,
          resume: flags.resume ?? false,
          institution: flags.institution ?? null,
          imageSize: flags.imageSize ?? null,
          batchSize: flags.batchSize,
          epochs: flags.epochs,
          learningRate: flags.lr,
          pretrainEpochs: flags.pretrainEpochs,
          pretrainLearningRate: flags.pretrainLr,
          patience: flags.patience,
          policy: flags.policy,
          heads: flags.heads,
          memoryEfficient: flags.memoryEfficient ?? false,
          augment: flags.augment,
          seed: flags.seed,
          bootstrapRounds: flags.bootstrap,
          stopAfterEpochs: flags.stopAfter ?? null,
        });
        if (result.stopped) {
          console.log(
            `stopped after ${result.history.length} epochs in all; continue with --resume --out ${result.out}`,
          );
          return;
        }
        console.log(
          `trained ${flags.config} (${flags.strategy}) in ${result.out}: validation macro AUROC ${result.validationMacroAuroc.toFixed(4)}; ${result.evaluations
            .map(
              (evaluation) => `${evaluation.name} macro AUROC ${evaluation.macroAuroc?.toFixed(4) ?? "n/a"}`,
            )
            .join("; ")}`,
        );
      } finally {
        gpu.destroy();
      }
    });

  program
    .command("predict")
    .description("apply a trained classifier to a dataset; writes the evaluation toolkit's predictions CSV")
    .requiredOption(
      "--model <dir>",
      "a folder written by cxr train classifier (model.json, model.safetensors)",
    )
    .requiredOption("--data <dir>", "dataset to predict")
    .option(
      "--format <format>",
      "dataset format",
      choice(DATASET_FORMATS, "format"),
      "chexpert" as DatasetFormat,
    )
    .option("--split <name>", "only this split (train, valid, test)", choice(SPLITS, "split"))
    .requiredOption("--out <file>", "predictions CSV to write")
    .option("--batch-size <n>", "images per batch", integer(1), 64)
    .action(
      async (flags: {
        model: string;
        data: string;
        format: DatasetFormat;
        split?: Split;
        out: string;
        batchSize: number;
      }) => {
        const gpu = await createGpu();
        try {
          const result = await predictDataset(gpu, { ...flags, split: flags.split ?? null });
          console.log(
            `wrote ${result.images} predictions to ${flags.out}${result.excluded ? ` (${result.excluded} images without sex, age or race left out)` : ""}`,
          );
        } finally {
          gpu.destroy();
        }
      },
    );
  groups.bench
    .command("classifier")
    .description(
      "training and inference images/s of DenseNet-121 (224 px) and the phantom DenseNet-BC (64 px), peak memory, top kernels, PyTorch beside",
    )
    .option(
      "--cases <list>",
      "config:size:batch:steps[:me], comma-separated (:me: memory-efficient dense blocks)",
      parseBenchCases,
      DEFAULT_CLASSIFIER_BENCH,
    )
    .option("--no-pytorch", "skip the PyTorch reference")
    .action(async (flags: { cases: ClassifierBenchCase[]; pytorch: boolean }) => {
      const gpu = await createGpu({ profile: true });
      try {
        const results = [];
        for (const benchCase of flags.cases) {
          console.error(
            `running ${benchCase.config} at ${benchCase.imageSize} px, batch ${benchCase.batch} ...`,
          );
          results.push(await runClassifierBenchCase(gpu, benchCase, { pytorch: flags.pytorch }));
        }
        console.log(formatClassifierBench(gpu, results));
      } finally {
        gpu.destroy();
      }
    });
}

function parseBenchCases(value: string): ClassifierBenchCase[] {
  return value.split(",").map((entry) => {
    const [config, size, batch, steps, blocks, ...rest] = entry.split(":");
    const numbers = [size, batch, steps].map(Number);
    if (
      !config ||
      numbers.some((number) => !Number.isInteger(number) || number < 1) ||
      (blocks !== undefined && blocks !== "me") ||
      rest.length > 0
    ) {
      throw new InvalidArgumentError(
        `expected config:size:batch:steps or config:size:batch:steps:me, got "${entry}"`,
      );
    }
    choice(
      MODEL_CONFIG_NAMES.filter((name) => name !== "small-cnn"),
      "DenseNet config",
    )(config);
    return {
      config,
      imageSize: numbers[0],
      batch: numbers[1],
      steps: numbers[2],
      memoryEfficient: blocks === "me",
    };
  });
}
