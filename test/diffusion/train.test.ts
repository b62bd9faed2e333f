/**
 * Generator training: an interrupted and resumed run ends with bit-identical weights, EMA and
 * optimizer state to an uninterrupted one (phantom-tiny, a few steps, on this adapter); a failed
 * checkpoint save leaves the last good checkpoint alone; bad input gets errors naming what and where.
 */
import {
  copyFileSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type CxrRecord, generatePhantomDataset, loadChexpert } from "@cxr/data";
import {
  CheckpointError,
  createPipeline,
  DiffusionModel,
  diffusionConfig,
  epochPool,
  findCheckpoint,
  findingsInLabelOrder,
  labelPromptDraws,
  loadTrainingData,
  makeNoiseSchedule,
  minSnrWeights,
  parseRepeatFindings,
  parseSingleFindings,
  promptFromRecord,
  readTrainingState,
  saveCheckpoint,
  selectSingleFindings,
  singleFindingOf,
  stepDraws,
  type TrainOptions,
  trainDiffusion,
  trainingPrompt,
  withAttentionAt,
  withResolution,
} from "@cxr/diffusion";
import { readSafetensors, writeSafetensors } from "@cxr/kernels";
import { Command } from "commander";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registerCommands } from "../../packages/diffusion/src/cli.ts";
import { gpu } from "../kernels/helpers.ts";

let root: string;
let data: string;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "cxr-diffusion-train-"));
  data = join(root, "phantom");
  await generatePhantomDataset({ outDir: data, count: 24, size: 64, institutions: ["northgate"], seed: 3 });
}, 120_000);

afterAll(() => rmSync(root, { recursive: true, force: true }));

const base = (out: string): Partial<TrainOptions> & Pick<TrainOptions, "data" | "config" | "out"> => ({
  data,
  config: "phantom-tiny",
  out,
  steps: 4,
  batchSize: 3,
  checkpointEvery: 2,
  logEvery: 1,
  seed: 5,
  log: () => {},
});

/** `cxr train diffusion --data DATA --out ROOT/OUT ...flags`, parsed as the CLI would (errors thrown). */
async function trainCli(out: string, ...flags: string[]): Promise<void> {
  const program = new Command("cxr").exitOverride();
  program.configureOutput({ writeErr: () => {}, writeOut: () => {} });
  registerCommands(program, { bench: program.command("bench") });
  await program.parseAsync([
    "node",
    "cxr",
    "train",
    "diffusion",
    "--data",
    data,
    "--out",
    join(root, out),
    ...flags,
  ]);
}

function tensorsOf(dir: string, file: string) {
  return readSafetensors(join(dir, file)).tensors;
}

function expectIdentical(a: string, b: string, file: string) {
  const left = tensorsOf(a, file);
  const right = tensorsOf(b, file);
  expect([...left.keys()]).toEqual([...right.keys()]);
  for (const [name, tensor] of left) {
    const other = right.get(name)!;
    const same =
      tensor.data.length === other.data.length &&
      tensor.data.every((value, i) => Object.is(value, other.data[i]));
    expect(same, `${file}: ${name} differs`).toBe(true);
  }
}

describe("trainDiffusion", () => {
  it("an interrupted run resumed from its checkpoint ends bit-identical to an uninterrupted one", async () => {
    const device = await gpu();
    const straight = join(root, "straight");
    const first = await trainDiffusion({ ...base(straight), gpu: device });
    expect(first.steps).toBe(4);
    expect(first.stopped).toBe(false);

    const interrupted = join(root, "interrupted");
    const controller = new AbortController();
    const stoppedRun = await trainDiffusion({
      ...base(interrupted),
      gpu: device,
      signal: controller.signal,
      onProgress: (progress) => {
        if (progress.step === 3) controller.abort();
      },
    });
    expect(stoppedRun.stopped).toBe(true);
    expect(stoppedRun.steps).toBe(3);
    expect(readTrainingState(join(interrupted, "checkpoint")).step).toBe(3);
    const resumed = await trainDiffusion({ ...base(interrupted), gpu: device, resume: true });
    expect(resumed.steps).toBe(4);
    expect(resumed.imagesSeen).toBe(12);

    const a = join(straight, "checkpoint");
    const b = join(interrupted, "checkpoint");
    for (const file of [
      "model/unet/diffusion_pytorch_model.safetensors",
      "model/text_encoder/model.safetensors",
      "ema/unet/diffusion_pytorch_model.safetensors",
      "ema/text_encoder/model.safetensors",
      "optimizer.safetensors",
    ]) {
      expectIdentical(a, b, file);
    }
    expect(readFileSync(join(a, "model/tokenizer.json"), "utf8")).toBe(
      readFileSync(join(b, "model/tokenizer.json"), "utf8"),
    );
    // The loss log has one row per step, the same losses in both runs.
    const losses = (dir: string) =>
      readFileSync(join(dir, "loss.csv"), "utf8")
        .trim()
        .split("\n")
        .slice(1)
        .map((line) => line.split(",").slice(0, 2).join(","));
    expect(losses(interrupted)).toEqual(losses(straight));
    expect(losses(straight).length).toBe(4);
    // The EMA differs from the live weights.
    const trained = tensorsOf(a, "model/unet/diffusion_pytorch_model.safetensors").get(
      "conv_out.weight",
    )!.data;
    const ema = tensorsOf(a, "ema/unet/diffusion_pytorch_model.safetensors").get("conv_out.weight")!.data;
    expect(trained.some((value, i) => value !== ema[i])).toBe(true);
    expect(first.lossPng).not.toBeNull();
    expect(readFileSync(first.lossPng!).subarray(1, 4).toString()).toBe("PNG");
  }, 600_000);

  it("--init starts a new run from a model folder's weights, tokenizer and config", async () => {
    const device = await gpu();
    const source = join(root, "init-source");
    await trainDiffusion({ ...base(source), gpu: device });
    const initDir = join(source, "checkpoint", "model");
    // One step at a negligible learning rate: the weights must still be the init model's.
    const started = join(root, "init-run");
    const { config: _config, ...rest } = base(started);
    const result = await trainDiffusion({
      ...rest,
      init: initDir,
      steps: 1,
      learningRate: 1e-9,
      gpu: device,
    });
    expect(result.steps).toBe(1);
    const file = "unet/diffusion_pytorch_model.safetensors";
    const initial = tensorsOf(initDir, file);
    const after = tensorsOf(join(started, "checkpoint", "model"), file);
    let largest = 0;
    for (const [name, tensor] of initial) {
      const other = after.get(name)!.data;
      tensor.data.forEach((value, i) => {
        largest = Math.max(largest, Math.abs(value - other[i]));
      });
    }
    expect(largest).toBeLessThan(1e-6);
    // A fresh run with another seed starts elsewhere (so the check above is not vacuous).
    const init = initial.get("conv_in.weight")!.data;
    const seeded = join(root, "init-fresh");
    await trainDiffusion({ ...base(seeded), seed: 6, steps: 1, learningRate: 1e-9, gpu: device });
    const other = tensorsOf(join(seeded, "checkpoint", "model"), file).get("conv_in.weight")!.data;
    expect(init.some((value, i) => Math.abs(value - other[i]) > 1e-3)).toBe(true);
    // The tokenizer and the configuration are the init model's.
    for (const name of ["tokenizer.json", "config.json"]) {
      expect(readFileSync(join(started, "checkpoint", "model", name), "utf8")).toBe(
        readFileSync(join(initDir, name), "utf8"),
      );
    }
    // An init run resumes like any other; a resume with another init is refused.
    await expect(
      trainDiffusion({
        ...rest,
        init: join(root, "straight", "checkpoint", "model"),
        steps: 1,
        resume: true,
        learningRate: 1e-9,
        gpu: device,
      }),
    ).rejects.toThrow(/cannot resume .* init/);
    // A --config that disagrees with the init model is refused, naming both.
    await expect(
      trainDiffusion({
        ...base(join(root, "init-bad")),
        config: "phantom-small",
        init: initDir,
        gpu: device,
      }),
    ).rejects.toThrow(/--config phantom-small differs from the init model .*config\.json/);
    // Its `sampling` (how it is sampled, not what is trained) may differ from the named config's.
    const sampled = join(root, "init-sampling");
    cpSync(initDir, sampled, { recursive: true });
    const sampledConfig = JSON.parse(readFileSync(join(sampled, "config.json"), "utf8"));
    const sampling = { sampler: "ddpm", steps: 20 };
    writeFileSync(join(sampled, "config.json"), JSON.stringify({ ...sampledConfig, sampling }));
    const sampledRun = join(root, "init-sampling-run");
    await trainDiffusion({ ...base(sampledRun), init: sampled, steps: 1, learningRate: 1e-9, gpu: device });
    const saved = JSON.parse(readFileSync(join(sampledRun, "checkpoint", "model", "config.json"), "utf8"));
    expect(saved.sampling).toEqual(sampling);
    await expect(trainDiffusion({ ...rest, out: join(root, "init-none"), gpu: device })).rejects.toThrow(
      "give a config or an init model",
    );
  }, 600_000);

  it("--prediction makes an init model's weights learn the other parameterisation, saved in its config", async () => {
    const device = await gpu();
    const initDir = join(root, "straight", "checkpoint", "model");
    const run = join(root, "init-v");
    const { config: _config, ...rest } = base(run);
    await trainDiffusion({
      ...rest,
      init: initDir,
      prediction: "v_prediction",
      steps: 1,
      learningRate: 1e-9,
      gpu: device,
    });
    const configOf = (dir: string) => JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    expect(configOf(initDir).prediction).toBe("epsilon");
    const saved = configOf(join(run, "checkpoint", "model"));
    expect(saved.prediction).toBe("v_prediction");
    // Everything else in the configuration is the init model's, and so are the weights.
    expect({ ...saved, prediction: "epsilon" }).toEqual(configOf(initDir));
    const file = "unet/diffusion_pytorch_model.safetensors";
    const before = tensorsOf(initDir, file).get("conv_out.weight")!.data;
    const after = tensorsOf(join(run, "checkpoint", "model"), file).get("conv_out.weight")!.data;
    expect(Math.max(...before.map((value, i) => Math.abs(value - after[i])))).toBeLessThan(1e-6);
    await expect(
      trainDiffusion({
        ...rest,
        out: join(root, "init-bad-prediction"),
        init: initDir,
        prediction: "x0" as never,
        gpu: device,
      }),
    ).rejects.toThrow('prediction must be "epsilon" or "v_prediction", got "x0"');
  }, 600_000);

  it("--resolution trains an init model's weights at another image size, saved in its config", async () => {
    const device = await gpu();
    const initDir = join(root, "straight", "checkpoint", "model");
    const run = join(root, "init-32px");
    const { config: _config, ...rest } = base(run);
    const lines: string[] = [];
    await trainDiffusion({
      ...rest,
      init: initDir,
      resolution: 32,
      steps: 1,
      learningRate: 1e-9,
      gpu: device,
      log: (line) => lines.push(line),
    });
    expect(lines).toContain('resolution: 32 px (the init model was trained at 16 px), "phantom-tiny@32px"');
    const configOf = (dir: string) => JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    const initial = configOf(initDir);
    const saved = configOf(join(run, "checkpoint", "model"));
    expect([initial.resolution, initial.unet.sampleSize]).toEqual([16, 16]);
    expect([saved.name, saved.resolution, saved.unet.sampleSize]).toEqual(["phantom-tiny@32px", 32, 32]);
    // Everything else in the configuration is the init model's, and so are the weights (lr 1e-9).
    expect({
      ...saved,
      name: initial.name,
      resolution: 16,
      unet: { ...saved.unet, sampleSize: 16 },
    }).toEqual(initial);
    const file = "unet/diffusion_pytorch_model.safetensors";
    const before = tensorsOf(initDir, file);
    const after = tensorsOf(join(run, "checkpoint", "model"), file);
    expect([...after.keys()]).toEqual([...before.keys()]);
    let largest = 0;
    for (const [name, tensor] of before) {
      const other = after.get(name)!.data;
      tensor.data.forEach((value, i) => {
        largest = Math.max(largest, Math.abs(value - other[i]));
      });
    }
    expect(largest).toBeLessThan(1e-6);
    // The trained folder generates images of its new size.
    const pipeline = await createPipeline(join(run, "checkpoint", "model"), { gpu: device });
    try {
      const { images } = await pipeline.generate({ prompt: "", n: 1, steps: 2, sampler: "ddim", seed: 1 });
      expect(images[0].pixels.length).toBe(32 * 32);
    } finally {
      pipeline.dispose();
    }
    // The size belongs to the run: a resume that leaves it out is refused.
    await expect(
      trainDiffusion({ ...rest, init: initDir, steps: 1, resume: true, learningRate: 1e-9, gpu: device }),
    ).rejects.toThrow(/cannot resume .*resolution/);
    // Sizes the UNet cannot halve evenly, the size it already has, and latent models are refused.
    for (const [resolution, message] of [
      [
        33,
        'resizing "phantom-tiny": resolution 33 is not a positive multiple of 2 (its UNet halves the image 1 times)',
      ],
      [16, 'resizing "phantom-tiny": it is already 16 px'],
    ] as const) {
      await expect(
        trainDiffusion({
          ...rest,
          out: join(root, `init-${resolution}px`),
          init: initDir,
          resolution,
          gpu: device,
        }),
      ).rejects.toThrow(message);
    }
    // The CLI flag reaches the run (33 is refused by trainDiffusion, 4 by the flag's range).
    const cli = (value: string) => trainCli("resize-cli", "--init", initDir, "--resolution", value);
    await expect(cli("33")).rejects.toThrow("resolution 33 is not a positive multiple of 2");
    await expect(cli("4")).rejects.toThrow(/--resolution/);
    expect(() => withResolution(diffusionConfig("sd2-base"), 768)).toThrow(
      'resizing "sd2-base": only pixel-space models train at another resolution (this one is latent)',
    );
    expect(withResolution(diffusionConfig("phantom-small"), 64).name).toBe("phantom-small@64px");
    expect(withResolution(withResolution(diffusionConfig("phantom-small"), 64), 128).name).toBe(
      "phantom-small@128px",
    );
    expect(() => withResolution(diffusionConfig("phantom-small"), 34)).toThrow(
      "not a positive multiple of 4",
    );
  }, 600_000);

  it("--grow-attention adds transformer blocks that start as the identity, trains and resumes them", async () => {
    const device = await gpu();
    const initDir = join(root, "straight", "checkpoint", "model");
    const { model: grown, added } = DiffusionModel.grow(device, initDir, [0], 7);
    const original = DiffusionModel.load(device, initDir);
    try {
      // phantom-tiny attends at level 1 only; level 0 gets one block in down_blocks.0 (one resnet) and
      // two in up_blocks.1 (two resnets), every other tensor keeps the init model's name and value.
      expect(grown.config.unet.downBlockTypes).toEqual(["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]);
      expect(grown.config.unet.upBlockTypes).toEqual(["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]);
      expect(grown.config.name).toBe("phantom-tiny+attention0");
      expect(added.length).toBeGreaterThan(0);
      expect(added.every((name) => /^(down_blocks\.0|up_blocks\.1)\.attentions\.[0-2]\./.test(name))).toBe(
        true,
      );
      expect(new Set(added.map((name) => name.split(".").slice(0, 4).join(".")))).toEqual(
        new Set(["down_blocks.0.attentions.0", "up_blocks.1.attentions.0", "up_blocks.1.attentions.1"]),
      );
      const before = await original.unet.state();
      const after = await grown.unet.state();
      for (const [name, tensor] of before) expect(after.get(name)!.data, name).toEqual(tensor.data);
      // proj_out starts at zero (the block adds nothing); the other weights keep their seeded
      // initialisation (biases and norm shifts start at zero anyway).
      const zero = (name: string) => after.get(name)!.data.every((value) => value === 0);
      const projOut = added.filter((name) => /\.proj_out\./.test(name));
      expect(projOut.length).toBe(6);
      for (const name of projOut) expect(zero(name), name).toBe(true);
      for (const name of added.filter((name) => /(to_q|to_k|proj_in|ff\.net\.2)\.weight$/.test(name))) {
        expect(zero(name), name).toBe(false);
      }
      // The same prompts and noise give the same images, bit for bit: each new block adds 0 to its input.
      const request = {
        prompt: ["70 year old WHITE female. Cardiomegaly.", ""],
        n: 1,
        steps: 2,
        guidance: 3,
        seed: 4,
      };
      const [a, b] = [
        await (await createPipeline(original)).generate(request),
        await (await createPipeline(grown)).generate(request),
      ];
      a.images.forEach((image, index) => {
        expect(b.images[index].pixels).toEqual(image.pixels);
      });
    } finally {
      grown.dispose();
      original.dispose();
    }

    // Training grows the init model, writes the grown configuration and resumes like any run.
    const out = join(root, "grown");
    const options = { ...base(out), config: undefined, init: initDir, growAttention: [0], gpu: device };
    const controller = new AbortController();
    const stopped = await trainDiffusion({
      ...options,
      signal: controller.signal,
      onProgress: (progress) => {
        if (progress.step === 2) controller.abort();
      },
    });
    expect(stopped.steps).toBe(2);
    const config = JSON.parse(readFileSync(join(out, "checkpoint", "model", "config.json"), "utf8"));
    expect(config.name).toBe("phantom-tiny+attention0");
    expect(config.unet.downBlockTypes[0]).toBe("CrossAttnDownBlock2D");
    const trained = tensorsOf(join(out, "checkpoint", "model"), "unet/diffusion_pytorch_model.safetensors");
    const projOut = trained.get("down_blocks.0.attentions.0.proj_out.weight")!.data;
    expect(projOut.some((value) => value !== 0)).toBe(true);
    const resumed = await trainDiffusion({ ...options, resume: true });
    expect(resumed.steps).toBe(4);
    await expect(trainDiffusion({ ...options, growAttention: undefined, resume: true })).rejects.toThrow(
      /cannot resume .*growAttention/,
    );

    // Bad requests name what is wrong.
    expect(() => withAttentionAt(config, [1])).toThrow(
      'adding attention to "phantom-tiny+attention0": level 1 (down_blocks.1) already has attention',
    );
    const tiny = readFileSync(join(initDir, "config.json"), "utf8");
    const tinyConfig = JSON.parse(tiny);
    expect(() => withAttentionAt(tinyConfig, [0, 0, 2, -1])).toThrow(
      /level 0 is listed twice; level 2 is not an integer in \[0, 1\]; level -1 is not an integer in \[0, 1\]/,
    );
    expect(() => withAttentionAt(tinyConfig, [])).toThrow("no level given");
    await expect(
      trainDiffusion({ ...options, out: join(root, "grow-bad"), growAttention: [1] }),
    ).rejects.toThrow("level 1 (down_blocks.1) already has attention");
    await expect(
      trainDiffusion({ ...options, out: join(root, "grow-config"), config: "phantom-tiny" }),
    ).rejects.toThrow("give either a config or attention levels to grow the init model, not both");
    await expect(
      trainDiffusion({ ...base(join(root, "grow-no-init")), growAttention: [0], gpu: device }),
    ).rejects.toThrow("growing attention needs an init model to grow");
    // The CLI flag: a list of levels, anything else refused before training starts.
    const cli = (value: string) => trainCli("grow-cli", "--init", initDir, "--grow-attention", value);
    await expect(cli("0,x")).rejects.toThrow('"x" is not a level (an integer from 0)');
    await expect(cli("-1")).rejects.toThrow('"-1" is not a level (an integer from 0)');
    await expect(cli("1")).rejects.toThrow("level 1 (down_blocks.1) already has attention");
    // A folder whose weights do not fit (here: already grown) is refused, naming the file and tensor.
    expect(() => DiffusionModel.grow(device, join(out, "checkpoint", "model"), [0])).toThrow(
      /level 0 \(down_blocks\.0\) already has attention/,
    );
    const broken = join(root, "grow-broken");
    mkdirSync(join(broken, "unet"), { recursive: true });
    mkdirSync(join(broken, "text_encoder"), { recursive: true });
    for (const file of ["config.json", "tokenizer.json", "text_encoder/model.safetensors"]) {
      copyFileSync(join(initDir, file), join(broken, file));
    }
    // The init UNet without conv_in.weight and with a stray tensor: both named, nothing loaded.
    const unet = new Map(
      [...tensorsOf(initDir, "unet/diffusion_pytorch_model.safetensors")]
        .filter(([name]) => name !== "conv_in.weight")
        .map(([name, tensor]) => [name, { shape: tensor.shape, data: tensor.data }]),
    );
    unet.set("extra.weight", { shape: [2], data: new Float32Array(2) });
    writeSafetensors(join(broken, "unet", "diffusion_pytorch_model.safetensors"), unet);
    const refusal = (() => {
      try {
        DiffusionModel.grow(device, broken, [0]);
      } catch (error) {
        return (error as Error).message;
      }
      return "";
    })();
    expect(refusal).toMatch(/cannot grow into "phantom-tiny\+attention0":/);
    expect(refusal).toMatch(/unet\/diffusion_pytorch_model\.safetensors \(2 mismatches\)/);
    expect(refusal).toMatch(/missing "conv_in\.weight"/);
    expect(refusal).toMatch(/unexpected "extra\.weight"/);
  }, 600_000);

  it("a failed save leaves the previous checkpoint untouched and no temporary folder behind", async () => {
    const out = join(root, "straight");
    const before = readFileSync(join(out, "checkpoint", "state.json"), "utf8");
    const failing = {
      model: { save: async () => {} } as never,
      swapEma: () => {},
      optimizerState: {},
      state: { ...readTrainingState(join(out, "checkpoint")), step: 99 },
    };
    await expect(
      saveCheckpoint(out, failing, {
        beforeSwap: () => {
          throw new Error("disk full");
        },
      }),
    ).rejects.toThrow(
      /saving the checkpoint of step 99 failed \(disk full\); the previous checkpoint in .* is untouched/,
    );
    expect(readFileSync(join(out, "checkpoint", "state.json"), "utf8")).toBe(before);
    expect(readdirSync(out).filter((name) => name.includes(".tmp-"))).toEqual([]);
    expect(findCheckpoint(out)).toBe(join(out, "checkpoint"));
  });

  it("refuses bad input with errors that name what and where", async () => {
    const empty = join(root, "empty");
    mkdirSync(empty, { recursive: true });
    await expect(trainDiffusion({ ...base(join(root, "o1")), data: empty })).rejects.toThrow(
      /no training images in .*empty \(folder layout: 0 records read/,
    );
    await expect(trainDiffusion({ ...base(join(root, "o2")), data: join(root, "missing") })).rejects.toThrow(
      /training data folder .*missing does not exist/,
    );
    await expect(trainDiffusion({ ...base(join(root, "o3")), config: "phantom-huge" })).rejects.toThrow(
      'unknown diffusion config "phantom-huge"; known: phantom-tiny, phantom-small, phantom-base, sd2-base',
    );
    await expect(trainDiffusion({ ...base(join(root, "o4")), steps: 0, batchSize: 1e9 })).rejects.toThrow(
      "trainDiffusion: steps must be an integer in [1, 10000000], got 0; batch size must be an integer in [1, 4096], got 1000000000",
    );
    await expect(trainDiffusion({ ...base(join(root, "o5")), batchSize: 4000 })).rejects.toThrow(
      /training images in .* are fewer than one batch of 4000/,
    );
    await expect(trainDiffusion({ ...base(join(root, "o6")), resume: true })).rejects.toThrow(
      /--resume: no checkpoint in .*o6/,
    );
    await expect(trainDiffusion({ ...base(join(root, "straight")) })).rejects.toThrow(
      /already holds a checkpoint; pass --resume/,
    );
    await expect(
      trainDiffusion({ ...base(join(root, "straight")), resume: true, batchSize: 2 }),
    ).rejects.toThrow(/cannot resume .* with different settings: batchSize: checkpoint 3, now 2/);
    const broken = join(root, "broken");
    mkdirSync(join(broken, "checkpoint"), { recursive: true });
    writeFileSync(join(broken, "checkpoint", "state.json"), "{ not json");
    await expect(trainDiffusion({ ...base(broken), resume: true })).rejects.toThrow(CheckpointError);
  });

  it("reads a RoentGen-style prompt folder: train/ only, prompts from the .txt files", () => {
    const folder = join(root, "roentgen");
    const images = loadChexpert(data)
      .records.slice(0, 3)
      .map((record) => record.imagePath);
    for (const [index, split] of ["train", "train", "valid"].entries()) {
      mkdirSync(join(folder, split), { recursive: true });
      copyFileSync(images[index], join(folder, split, `image${index}.png`));
      writeFileSync(
        join(folder, split, `image${index}.txt`),
        `6${index} year old ASIAN male. Pleural effusion.`,
      );
    }
    const loaded = loadTrainingData(folder);
    expect(loaded.format).toBe("folder");
    expect(loaded.prompts.sort()).toEqual([
      "60 year old ASIAN male. Pleural effusion.",
      "61 year old ASIAN male. Pleural effusion.",
    ]);
    expect(loaded.notes).toEqual(["1 records of other splits left out (train split only)"]);
  });

  it("min-SNR weights and per-step draws", () => {
    const schedule = makeNoiseSchedule({ kind: "squaredcos_cap_v2" });
    const abar = schedule.alphasCumprod;
    // Find timesteps with SNR above and below gamma = 5.
    const high = abar.findIndex((value) => value / (1 - value) < 20);
    const low = abar.findIndex((value) => value / (1 - value) < 0.5);
    const snrHigh = abar[high] / (1 - abar[high]);
    const snrLow = abar[low] / (1 - abar[low]);
    const eps = minSnrWeights(abar, [high, low], 5, "epsilon");
    expect(eps[0]).toBeCloseTo(5 / snrHigh, 6); // clipped: gamma / SNR
    expect(eps[1]).toBeCloseTo(1, 6); // SNR < gamma: weight 1
    const v = minSnrWeights(abar, [high, low], 5, "v_prediction");
    expect(v[0]).toBeCloseTo(5 / (snrHigh + 1), 6);
    expect(v[1]).toBeCloseTo(snrLow / (snrLow + 1), 6);
    const a = stepDraws(5, 7, 4, 1000);
    expect(stepDraws(5, 7, 4, 1000)).toEqual(a);
    expect(stepDraws(5, 8, 4, 1000).timesteps).not.toEqual(a.timesteps);
    expect(a.timesteps.every((t) => Number.isInteger(t) && t >= 0 && t < 1000)).toBe(true);
  });

  it("--repeat-findings oversamples positive records, belongs to the resume identity, refuses bad input", async () => {
    const labels = (cardiomegaly: number | null, effusion: number | null) =>
      ({ labels: { Cardiomegaly: cardiomegaly, "Pleural Effusion": effusion } }) as unknown as Parameters<
        typeof epochPool
      >[0][number];
    const records = [labels(1, 0), labels(0, 1), labels(1, 1), labels(-1, null), labels(0, 0)];
    expect(epochPool(records, undefined)).toEqual([0, 1, 2, 3, 4]);
    // Positive = label 1 only (uncertain -1 is not repeated); the largest factor wins.
    expect(epochPool(records, { Cardiomegaly: 3, "Pleural Effusion": 2 })).toEqual([
      0, 0, 0, 1, 1, 2, 2, 2, 3, 4,
    ]);
    expect(parseRepeatFindings("cardiomegaly=3, Pleural Effusion = 2")).toEqual({
      Cardiomegaly: 3,
      "Pleural Effusion": 2,
    });
    expect(() => parseRepeatFindings("Cardiomegaly")).toThrow('expected FINDING=N, got "Cardiomegaly"');
    expect(() => parseRepeatFindings("Heart=2")).toThrow(/unknown finding "Heart" \(one of No Finding, /);
    expect(() => parseRepeatFindings(" , ")).toThrow("no FINDING=N given");
    await expect(
      trainDiffusion({ ...base(join(root, "r0")), repeatFindings: { Cardiomegaly: 0 } }),
    ).rejects.toThrow("repeatFindings: the factor of Cardiomegaly must be an integer in [1, 100], got 0");

    const device = await gpu();
    const out = join(root, "repeat");
    const messages: string[] = [];
    const loaded = loadTrainingData(data);
    const positives = loaded.records.filter((record) => record.labels["No Finding"] === 1).length;
    expect(positives).toBeGreaterThan(0);
    const run = await trainDiffusion({
      ...base(out),
      steps: 2,
      gpu: device,
      repeatFindings: { "No Finding": 4 },
      log: (message) => messages.push(message),
    });
    expect(run.steps).toBe(2);
    const expectedPool = loaded.records.length + 3 * positives;
    expect(
      messages.some((line) => line.startsWith(`repeat findings: ${expectedPool} images per epoch`)),
    ).toBe(true);
    expect(readTrainingState(join(out, "checkpoint")).options).toMatchObject({
      repeatFindings: { "No Finding": 4 },
    });
    // A resume must keep the oversampling, in both directions.
    await expect(trainDiffusion({ ...base(out), steps: 2, resume: true })).rejects.toThrow(
      /with different settings: repeatFindings: checkpoint \{"No Finding":4\}, now undefined/,
    );
    await expect(
      trainDiffusion({ ...base(join(root, "straight")), resume: true, repeatFindings: { "No Finding": 4 } }),
    ).rejects.toThrow(/repeatFindings: checkpoint undefined, now \{"No Finding":4\}/);
  }, 300_000);

  it("the per-finding options enter the resume identity in label order, whatever order the flag or an older checkpoint listed them in", async () => {
    expect(Object.keys(findingsInLabelOrder({ "Pleural Effusion": 2, extra: 1, "No Finding": 3 }))).toEqual([
      "No Finding",
      "Pleural Effusion",
      "extra",
    ]);
    const out = join(root, "order");
    const device = await gpu();
    const flagOrder = {
      repeatFindings: { "Pleural Effusion": 2, "No Finding": 3 },
      singleFindings: { "Pleural Effusion": null, "No Finding": 6 },
    };
    const controller = new AbortController();
    const stopped = await trainDiffusion({
      ...base(out),
      ...flagOrder,
      gpu: device,
      signal: controller.signal,
      onProgress: (progress) => {
        if (progress.step === 2) controller.abort();
      },
    });
    expect(stopped.steps).toBe(2);
    const statePath = join(out, "checkpoint", "state.json");
    const state = JSON.parse(readFileSync(statePath, "utf8"));
    // Written in label order (No Finding is CheXpert's first label).
    expect(Object.keys(state.options.repeatFindings)).toEqual(["No Finding", "Pleural Effusion"]);
    expect(Object.keys(state.options.singleFindings)).toEqual(["No Finding", "Pleural Effusion"]);
    // A checkpoint written before the normalisation kept the flag's order: still resumable.
    writeFileSync(
      statePath,
      JSON.stringify({ ...state, options: { ...state.options, ...flagOrder } }, null, 2),
    );
    const labelOrder = {
      repeatFindings: { "No Finding": 3, "Pleural Effusion": 2 },
      singleFindings: { "No Finding": 6, "Pleural Effusion": null },
    };
    // Another value is still refused, and named.
    await expect(
      trainDiffusion({
        ...base(out),
        ...labelOrder,
        repeatFindings: { "No Finding": 3, "Pleural Effusion": 3 },
        resume: true,
      }),
    ).rejects.toThrow(
      /repeatFindings: checkpoint \{"No Finding":3,"Pleural Effusion":2\}, now \{"No Finding":3,"Pleural Effusion":3\}/,
    );
    const resumed = await trainDiffusion({ ...base(out), ...labelOrder, gpu: device, resume: true });
    expect(resumed.steps).toBe(4);
  }, 300_000);

  it("--single-findings keeps films whose one finding is listed, capped by the seed, belongs to the resume identity, refuses bad input", async () => {
    const record = (labels: Record<string, number | null>) =>
      ({ labels }) as unknown as Parameters<typeof singleFindingOf>[0];
    expect(singleFindingOf(record({ "No Finding": 1, "Support Devices": 1 }))).toBe("No Finding");
    expect(singleFindingOf(record({ "Pleural Effusion": 1, "Support Devices": 1, Edema: 0 }))).toBe(
      "Pleural Effusion",
    );
    expect(singleFindingOf(record({ "Pleural Effusion": 1, Edema: 1 }))).toBeNull();
    // An uncertain companion is not "alone", nor is an uncertain finding by itself.
    expect(singleFindingOf(record({ "Pleural Effusion": 1, Atelectasis: -1 }))).toBeNull();
    expect(singleFindingOf(record({ Cardiomegaly: -1 }))).toBeNull();
    expect(singleFindingOf(record({ "Support Devices": 1 }))).toBeNull();

    const records = [
      record({ "No Finding": 1 }),
      record({ Cardiomegaly: 1 }),
      record({ "No Finding": 1 }),
      record({ Cardiomegaly: 1, "Pleural Effusion": 1 }),
      record({ "Pleural Effusion": 1 }),
      record({ "No Finding": 1 }),
      record({ "No Finding": 1 }),
    ];
    expect(selectSingleFindings(records, { "Pleural Effusion": null, Cardiomegaly: null }, 1)).toEqual({
      kept: [1, 4],
      counts: [
        { label: "Cardiomegaly", kept: 1, qualified: 1 },
        { label: "Pleural Effusion", kept: 1, qualified: 1 },
      ],
    });
    const capped = selectSingleFindings(records, { "No Finding": 2, "Pleural Effusion": 5 }, 9);
    expect(capped.counts).toEqual([
      { label: "No Finding", kept: 2, qualified: 4 },
      { label: "Pleural Effusion", kept: 1, qualified: 1 },
    ]);
    expect(capped.kept).toHaveLength(3);
    expect(capped.kept).toContain(4);
    expect([...capped.kept].sort((a, b) => a - b)).toEqual(capped.kept);
    expect(capped.kept.filter((index) => index !== 4).every((index) => [0, 2, 5, 6].includes(index))).toBe(
      true,
    );
    expect(selectSingleFindings(records, { "No Finding": 2 }, 9)).toEqual(
      selectSingleFindings(records, { "No Finding": 2 }, 9),
    );
    const picks = new Set(
      [1, 2, 3, 4, 5, 6, 7, 8].map((seed) =>
        selectSingleFindings(records, { "No Finding": 2 }, seed).kept.join(),
      ),
    );
    expect(picks.size).toBeGreaterThan(1);

    expect(parseSingleFindings("pleural effusion, Cardiomegaly ,No Finding = 130")).toEqual({
      "Pleural Effusion": null,
      Cardiomegaly: null,
      "No Finding": 130,
    });
    expect(() => parseSingleFindings("Heart")).toThrow(/unknown finding "Heart" \(one of No Finding, /);
    expect(() => parseSingleFindings("Support Devices")).toThrow('unknown finding "Support Devices"');
    expect(() => parseSingleFindings("Cardiomegaly,cardiomegaly=2")).toThrow("Cardiomegaly is listed twice");
    expect(() => parseSingleFindings("No Finding=many")).toThrow(
      'the most records of No Finding must be an integer, got "many"',
    );
    expect(() => parseSingleFindings(" , ")).toThrow("no finding given");
    await expect(trainCli("s-cli", "--single-findings", "Heart")).rejects.toThrow(/unknown finding "Heart"/);
    await expect(
      trainDiffusion({ ...base(join(root, "sf0")), singleFindings: { "No Finding": 0 } }),
    ).rejects.toThrow(
      "singleFindings: the most records of No Finding must be an integer of at least 1, got 0",
    );

    const loaded = loadTrainingData(data);
    const normal = loaded.records.filter((one) => singleFindingOf(one) === "No Finding").length;
    expect(normal).toBeGreaterThan(4);
    const out = join(root, "single");
    const messages: string[] = [];
    const run = await trainDiffusion({
      ...base(out),
      steps: 2,
      gpu: await gpu(),
      singleFindings: { "No Finding": 4 },
      log: (message) => messages.push(message),
    });
    expect(run.steps).toBe(2);
    expect(messages).toContain(
      `single findings: 4 of ${loaded.records.length} records kept (No Finding 4 of ${normal})`,
    );
    expect(readTrainingState(join(out, "checkpoint")).options).toMatchObject({
      singleFindings: { "No Finding": 4 },
    });
    await expect(trainDiffusion({ ...base(out), steps: 2, resume: true })).rejects.toThrow(
      /with different settings: singleFindings: checkpoint \{"No Finding":4\}, now undefined/,
    );
    // Fewer kept films than one batch: said before anything is trained.
    await expect(
      trainDiffusion({ ...base(join(root, "sf-small")), batchSize: 3, singleFindings: { "No Finding": 2 } }),
    ).rejects.toThrow(/2 training images in .* are fewer than one batch of 3/);
  }, 300_000);

  it("--label-prompts writes that share of prompts from the labels, belongs to the resume identity, refuses bad input", async () => {
    const both = {
      report: "70 year old female. Small left pleural effusion.",
      labels: "70 year old female. Pleural effusion.",
    };
    const options = { conditioningDropout: 0.1, labelPrompts: 0.5 };
    // The guidance drop comes first; then the label draw picks the label-style impression below the share.
    expect(trainingPrompt(both, { drop: 0.05, label: 0.1 }, options)).toBe("");
    expect(trainingPrompt(both, { drop: 0.5, label: 0.49 }, options)).toBe(both.labels);
    expect(trainingPrompt(both, { drop: 0.5, label: 0.5 }, options)).toBe(both.report);
    expect(trainingPrompt(both, { drop: 0.5, label: null }, options)).toBe(both.report);
    expect(trainingPrompt(both, { drop: 0.5, label: 0.99 }, { ...options, labelPrompts: 1 })).toBe(
      both.labels,
    );
    // Their own stream: deterministic per (seed, step), different across steps, and not the stepDraws stream.
    const draws = labelPromptDraws(5, 7, 64);
    expect(labelPromptDraws(5, 7, 64)).toEqual(draws);
    expect(labelPromptDraws(5, 8, 64)).not.toEqual(draws);
    expect([...draws]).not.toEqual(stepDraws(5, 7, 64, 1000).dropDraws);
    const below = [...draws].filter((value) => value < 0.5).length;
    expect(below).toBeGreaterThan(16);
    expect(below).toBeLessThan(48);

    await expect(trainDiffusion({ ...base(join(root, "l0")), labelPrompts: 1.5 })).rejects.toThrow(
      "labelPrompts must be in [0, 1], got 1.5",
    );

    await expect(trainDiffusion({ ...base(join(root, "s0")), labelSides: true })).rejects.toThrow(
      "labelSides words the label prompts, so it needs labelPrompts above 0",
    );

    const loaded = loadTrainingData(data);
    const labelPrompt = (record: CxrRecord) =>
      promptFromRecord(record, { impression: "labels", sides: true });
    const differ = loaded.records.filter(
      (record, index) => labelPrompt(record) !== loaded.prompts[index],
    ).length;
    const sided = loaded.records.filter(
      (record) => labelPrompt(record) !== promptFromRecord(record, { impression: "labels" }),
    ).length;
    expect(differ).toBeGreaterThan(0);
    expect(sided).toBeGreaterThan(0);
    const out = join(root, "labels");
    const messages: string[] = [];
    const run = await trainDiffusion({
      ...base(out),
      steps: 2,
      gpu: await gpu(),
      labelPrompts: 1,
      labelSides: true,
      log: (message) => messages.push(message),
    });
    expect(run.steps).toBe(2);
    expect(messages).toContain(
      `label prompts: 100% of prompts written from the labels (${differ} of ${loaded.records.length} records have a report impression that differs)`,
    );
    expect(messages).toContain(
      `label sides: ${sided} of ${loaded.records.length} label prompts name the side their report gives`,
    );
    expect(readTrainingState(join(out, "checkpoint")).options).toMatchObject({
      labelPrompts: 1,
      labelSides: true,
    });
    await expect(trainDiffusion({ ...base(out), steps: 2, resume: true, labelPrompts: 1 })).rejects.toThrow(
      /with different settings: labelSides: checkpoint true, now undefined/,
    );
    await expect(trainDiffusion({ ...base(out), steps: 2, resume: true })).rejects.toThrow(
      /with different settings: labelPrompts: checkpoint 1, now undefined/,
    );
  }, 300_000);
});
