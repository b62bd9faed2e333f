/**
 * `trainClassifierRun` (what `cxr train classifier` calls) and `predictDataset` (`cxr predict`) end
 * to end on small phantom datasets with the tiny DenseNet-BC at 32 px: the three strategies, the
 * files a run writes, exact resume, predictions readable by the evaluation toolkit, and every
 * bad-input refusal leaving nothing behind.
 */
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import {
  predictDataset,
  readPredictionsCsv,
  type TrainRunOptions,
  trainClassifierRun,
} from "@cxr/classifier";
import { generatePhantomDataset } from "@cxr/data";
import { defaultGpu, type Gpu, readSafetensors } from "@cxr/kernels";
import sharp from "sharp";
import { beforeAll, describe, expect, it } from "vitest";
import { scratchFolder } from "./helpers.ts";

let gpu: Gpu;
let folder: string;
let real: string;
let synthetic: string;
/** The uninterrupted 2-epoch run of the exact-resume test, which the signal test compares against. */
let straightRun: { weights: Map<string, { data: unknown }>; stepsPerEpoch: number } | undefined;

beforeAll(async () => {
  gpu = await defaultGpu();
  folder = scratchFolder("train-run");
  real = join(folder, "real");
  synthetic = join(folder, "synthetic");
  await generatePhantomDataset({
    outDir: real,
    count: 260,
    size: 64,
    institutions: ["highland", "valley"],
    seed: 3,
  });
  await generatePhantomDataset({
    outDir: synthetic,
    count: 120,
    size: 64,
    institutions: ["northgate"],
    seed: 4,
  });
});

function options(
  out: string,
  extra: Partial<TrainRunOptions> = {},
): Partial<TrainRunOptions> & Pick<TrainRunOptions, "train" | "out"> {
  return {
    train: real,
    out,
    config: "densenet-bc-tiny",
    imageSize: 32,
    batchSize: 16,
    epochs: 2,
    patience: 5,
    bootstrapRounds: 10,
    progress: false,
    ...extra,
  };
}

describe("cxr train classifier (trainClassifierRun)", () => {
  it("real on one institution: checkpoints, metrics, learning curve, predictions and evaluations in and out of distribution", async () => {
    const out = join(folder, "run-real");
    const result = await trainClassifierRun(gpu, options(out, { institution: "highland" }));
    expect(result.stopped).toBe(false);
    expect(result.history.map((row) => `${row.phase} ${row.epoch}`)).toEqual(["real 1", "real 2"]);
    for (const row of result.history) {
      expect(row.trainLoss).toBeGreaterThan(0);
      expect(row.validationMacroAuroc).toBeGreaterThan(0);
      expect(row.peakMemoryBytes).toBeGreaterThan(0);
    }
    const files = readdirSync(out).sort();
    for (const name of [
      "best-real.safetensors",
      "checkpoint.safetensors",
      "evaluation-test",
      "evaluation-test-other-institutions",
      "learning-curve.png",
      "metrics.csv",
      "model.json",
      "model.safetensors",
      "predictions-test-other-institutions.csv",
      "predictions-test.csv",
      "predictions-valid.csv",
      "run.json",
    ]) {
      expect(files).toContain(name);
    }
    expect(files.some((name) => name.includes(".tmp-"))).toBe(false);
    const metrics = readFileSync(join(out, "metrics.csv"), "utf8").trim().split("\n");
    expect(metrics[0]).toBe(
      "phase,epoch,steps,learning_rate,train_loss,validation_macro_auroc,images_per_second,seconds,peak_memory_mib",
    );
    expect(metrics.length).toBe(3);
    const curve = await sharp(join(out, "learning-curve.png")).metadata();
    expect(curve.width).toBe(640);
    const test = readPredictionsCsv(join(out, "predictions-test.csv"));
    expect(test.rows.every((row) => row.institution === "highland")).toBe(true);
    const other = readPredictionsCsv(join(out, "predictions-test-other-institutions.csv"));
    expect(other.rows.every((row) => row.institution === "valley")).toBe(true);
    const evaluation = JSON.parse(readFileSync(join(out, "evaluation-test", "evaluation.json"), "utf8"));
    expect(evaluation.schema).toBe("cxr-evaluation");
    expect(result.evaluations.map((entry) => entry.name)).toEqual(["test", "test-other-institutions"]);

    // cxr predict on the same test split gives the same probabilities as the run wrote.
    const predicted = join(folder, "predicted.csv");
    const summary = await predictDataset(gpu, {
      model: out,
      data: real,
      format: "chexpert",
      split: "test",
      out: predicted,
      batchSize: 7,
    });
    const again = readPredictionsCsv(predicted);
    expect(summary.images).toBe(again.rows.length);
    const byImage = new Map(test.rows.map((row, index) => [row.imageId, index]));
    const noFinding = again.labels.indexOf("No Finding");
    let compared = 0;
    again.rows.forEach((row, index) => {
      const position = byImage.get(row.imageId);
      if (position === undefined) return;
      expect(again.probability[noFinding][index]).toBeCloseTo(
        test.probability[test.labels.indexOf("No Finding")][position],
        5,
      );
      compared++;
    });
    expect(compared).toBe(test.rows.length);
  });

  it("resumes exactly: 1 epoch, stop, resume for the 2nd gives the same weights as 2 epochs at once", async () => {
    const straight = join(folder, "run-straight");
    const resumed = join(folder, "run-resumed");
    await trainClassifierRun(gpu, options(straight, { bootstrapRounds: 0 }));
    const first = await trainClassifierRun(gpu, options(resumed, { bootstrapRounds: 0, stopAfterEpochs: 1 }));
    expect(first.stopped).toBe(true);
    expect(existsSync(join(resumed, "model.safetensors"))).toBe(false);
    await expect(trainClassifierRun(gpu, options(resumed, { bootstrapRounds: 0 }))).rejects.toThrow(
      /already holds a training run; pass --resume/,
    );
    await expect(
      trainClassifierRun(gpu, options(resumed, { bootstrapRounds: 0, resume: true, epochs: 3 })),
    ).rejects.toThrow(/--resume: the run in .* was started with other settings \(epochs\)/);
    // Memory-efficient blocks change the order of gradient sums, so a resume may not switch them.
    await expect(
      trainClassifierRun(gpu, options(resumed, { bootstrapRounds: 0, resume: true, memoryEfficient: true })),
    ).rejects.toThrow(/--resume: the run in .* was started with other settings \(spec\)/);
    const second = await trainClassifierRun(gpu, options(resumed, { bootstrapRounds: 0, resume: true }));
    expect(second.history.length).toBe(2);
    const a = readSafetensors(join(straight, "model.safetensors")).tensors;
    const b = readSafetensors(join(resumed, "model.safetensors")).tensors;
    expect([...b.keys()]).toEqual([...a.keys()]);
    for (const [name, tensor] of a) expect(b.get(name)!.data, name).toEqual(tensor.data);
    expect(readFileSync(join(resumed, "metrics.csv"), "utf8").split("\n").length).toBe(
      readFileSync(join(straight, "metrics.csv"), "utf8").split("\n").length,
    );
    straightRun = { weights: a, stepsPerEpoch: second.history[0].steps };
  });

  // Split from the test above (it needs that test's uninterrupted run) so that neither comes near
  // the per-test timeout on a loaded two-core machine.
  it("resumes exactly after a signal mid-epoch, twice: the same weights as the uninterrupted run", async () => {
    expect(straightRun, "needs the uninterrupted run of the previous test").toBeDefined();
    const { weights: a, stepsPerEpoch: perEpoch } = straightRun!;
    // Stopped by a signal mid-epoch (twice, once in each epoch) and resumed: still the same weights,
    // and every epoch's metrics count all its steps.
    const signalled = join(folder, "run-signalled");
    const steps: number[] = [];
    const session = async (stopAt: number | null, resume: boolean) => {
      const controller = new AbortController();
      return trainClassifierRun(
        gpu,
        options(signalled, {
          bootstrapRounds: 0,
          resume,
          signal: controller.signal,
          log: () => {},
          onStep: (progress) => {
            steps.push(progress.step);
            expect(progress.totalSteps).toBe(2 * progress.batchesPerEpoch);
            if (progress.step === stopAt) controller.abort();
          },
        }),
      );
    };
    expect(perEpoch).toBeGreaterThan(3);
    expect((await session(2, false)).stopped).toBe(true);
    expect((await session(perEpoch + 2, true)).stopped).toBe(true);
    const last = await session(null, true);
    expect(last.stopped).toBe(false);
    expect(steps).toEqual(Array.from({ length: 2 * perEpoch }, (_, index) => index + 1));
    expect(last.history.map((row) => row.steps)).toEqual([perEpoch, perEpoch]);
    const c = readSafetensors(join(signalled, "model.safetensors")).tensors;
    for (const [name, tensor] of a) expect(c.get(name)!.data, name).toEqual(tensor.data);
  });

  it("trains with memory-efficient dense blocks and records them in model.json", async () => {
    const out = join(folder, "run-memory-efficient");
    const result = await trainClassifierRun(
      gpu,
      options(out, { bootstrapRounds: 0, epochs: 1, memoryEfficient: true }),
    );
    expect(result.history.length).toBe(1);
    expect(result.history[0].trainLoss).toBeGreaterThan(0);
    const spec = JSON.parse(readFileSync(join(out, "model.json"), "utf8"));
    expect(spec.config.memoryEfficient).toBe(true);
  });

  it("mix draws synthetic images into every batch; pretrain-finetune runs both phases", async () => {
    const mix = await trainClassifierRun(
      gpu,
      options(join(folder, "run-mix"), {
        strategy: "mix",
        synthetic,
        mixRatio: 0.25,
        epochs: 1,
        bootstrapRounds: 0,
      }),
    );
    // 12 real images per batch of 16: the epoch has floor(real train / 12) steps.
    const realTrain = readFileSync(join(real, "train.csv"), "utf8").trim().split("\n").length - 1;
    expect(mix.history[0].steps).toBe(Math.floor(realTrain / 12));
    const staged = await trainClassifierRun(
      gpu,
      options(join(folder, "run-pretrain"), {
        strategy: "pretrain-finetune",
        synthetic,
        pretrainEpochs: 1,
        epochs: 1,
        bootstrapRounds: 0,
      }),
    );
    expect(staged.history.map((row) => row.phase)).toEqual(["pretrain", "finetune"]);
    expect(existsSync(join(folder, "run-pretrain", "best-pretrain.safetensors"))).toBe(true);
  });

  it("trains attribute heads alone (sex, age, race) without the findings loss", async () => {
    const out = join(folder, "run-heads");
    const result = await trainClassifierRun(
      gpu,
      options(out, {
        heads: { findings: false, sex: true, age: true, race: true },
        epochs: 1,
        bootstrapRounds: 0,
      }),
    );
    expect(result.history[0].trainLoss).toBeGreaterThan(0);
    const names = [...readSafetensors(join(out, "model.safetensors")).tensors.keys()];
    for (const head of ["sex_head.weight", "age_head.weight", "race_head.weight", "race_head.bias"])
      expect(names).toContain(head);
    const spec = JSON.parse(readFileSync(join(out, "model.json"), "utf8"));
    expect(spec.config.attributes).toEqual({ sex: true, age: true, race: true });
    expect(result.evaluations).toEqual([]);
    expect(existsSync(join(out, "predictions-test.csv"))).toBe(false);
    const lines = readFileSync(join(out, "predictions-attributes-test.csv"), "utf8").trim().split("\n");
    expect(lines[0]).toBe(
      "patient_id,image_id,sex,sex_prob_male,age,age_pred,race,race_prob_WHITE,race_prob_BLACK,race_prob_ASIAN,race_prob_HISPANIC",
    );
    const testImages = readFileSync(join(real, "test.csv"), "utf8").trim().split("\n").length - 1;
    expect(lines.length - 1).toBe(testImages);
    for (const line of lines.slice(1)) {
      const cells = line.split(",");
      const male = Number(cells[3]);
      expect(male).toBeGreaterThanOrEqual(0);
      expect(male).toBeLessThanOrEqual(1);
      expect(Number.isFinite(Number(cells[5]))).toBe(true);
      const race = cells.slice(7).map(Number);
      expect(race.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
    }
  });

  it("refuses bad input with a clear message and writes nothing", async () => {
    const refuse = async (extra: Partial<TrainRunOptions>, message: RegExp, name: string) => {
      const out = join(folder, `refused-${name}`);
      await expect(trainClassifierRun(gpu, options(out, extra))).rejects.toThrow(message);
      expect(existsSync(out), `${name} left ${out} behind`).toBe(false);
    };
    // A synthetic set with an extra label column.
    const extraLabels = join(folder, "synthetic-extra");
    cpSync(synthetic, extraLabels, { recursive: true });
    for (const file of ["train.csv", "valid.csv", "test.csv"]) {
      const lines = readFileSync(join(extraLabels, file), "utf8").trim().split("\n");
      writeFileSync(
        join(extraLabels, file),
        `${lines.map((line, index) => `${line},${index === 0 ? "Hernia" : "0.0"}`).join("\n")}\n`,
      );
    }
    await refuse(
      { strategy: "mix", synthetic: extraLabels },
      /label columns differ from the real set's; has extra Hernia/,
      "labels",
    );
    // A dataset without a test split.
    const noTest = join(folder, "no-test");
    mkdirSync(noTest);
    cpSync(join(real, "train"), join(noTest, "train"), { recursive: true });
    cpSync(join(real, "valid"), join(noTest, "valid"), { recursive: true });
    copyFileSync(join(real, "train.csv"), join(noTest, "train.csv"));
    copyFileSync(join(real, "valid.csv"), join(noTest, "valid.csv"));
    writeFileSync(
      join(noTest, "test.csv"),
      `${readFileSync(join(real, "test.csv"), "utf8").split("\n")[0]}\n`,
    );
    await refuse({ train: noTest }, /the test split is empty/, "empty-split");
    await refuse(
      { institution: "atlantis" },
      /--institution atlantis: no such institution .* \(has highland, valley\)/,
      "institution",
    );
    await refuse({ imageSize: 256 }, /is 64x64, too small for 256 px training/, "size");
    await refuse({ strategy: "mix" }, /--strategy mix needs --synthetic DIR/, "no-synthetic");
    await refuse(
      { config: "small-cnn", heads: { findings: true, sex: true, age: false, race: false } },
      /attribute heads .* need a DenseNet config/,
      "heads",
    );
    await refuse(
      { config: "small-cnn", memoryEfficient: true },
      /--memory-efficient \(memory-efficient dense blocks\) needs a DenseNet config, not small-cnn/,
      "memory-efficient",
    );
  });

  it("cxr predict refuses a folder that is not a trained model", async () => {
    await expect(
      predictDataset(gpu, {
        model: folder,
        data: real,
        format: "chexpert",
        split: null,
        out: join(folder, "x.csv"),
        batchSize: 8,
      }),
    ).rejects.toThrow(/model.json is missing \(a folder written by cxr train classifier\)/);
    expect(existsSync(join(folder, "x.csv"))).toBe(false);
  });
});
