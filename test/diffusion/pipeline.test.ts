/**
 * The generation pipeline on an untrained phantom-tiny model: reproducibility (same seed, same pixels;
 * image i independent of n and of the batch size for deterministic samplers), every sampler runs,
 * PNG + JSON sidecar that reproduce the image, contact sheets, and errors that name what is wrong.
 */
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeImage } from "@cxr/data";
import {
  createDiffusionModel,
  createPipeline,
  DIFFUSION_CONFIGS,
  GENERATE_DEFAULTS,
  type GenerationMetadata,
  type Pipeline,
  promptFromFields,
  WordTokenizer,
  writeContactSheet,
  writeGeneratedImages,
} from "@cxr/diffusion";
import { promptFromFlags, readPromptsFile, registerCommands } from "@cxr/diffusion/cli";
import { Command } from "commander";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { expectClose, gpu } from "../kernels/helpers.ts";

let root: string;
let pipeline: Pipeline;
let modelDir: string;
const prompt = "70 year old female. Cardiomegaly.";

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "cxr-diffusion-pipeline-"));
  const config = structuredClone(DIFFUSION_CONFIGS["phantom-tiny"]);
  const tokenizer = WordTokenizer.fromPrompts(
    [prompt, "40 year old male. No acute cardiopulmonary abnormality."],
    {
      maxLength: config.textEncoder.maxPositions,
    },
  );
  const model = createDiffusionModel(await gpu(), config, tokenizer, 11);
  modelDir = join(root, "model");
  await model.save(modelDir);
  model.dispose();
  pipeline = await createPipeline(modelDir, { gpu: await gpu() });
}, 120_000);

afterAll(() => {
  pipeline?.dispose();
  rmSync(root, { recursive: true, force: true });
});

describe("createPipeline().generate", () => {
  it("same seed, same images; image i does not depend on n nor on the batch size, bit for bit (DDIM)", async () => {
    const options = { prompt, steps: 4, sampler: "ddim" as const, seed: 7 };
    const a = await pipeline.generate({ ...options, n: 3, maxBatch: 3 });
    const b = await pipeline.generate({ ...options, n: 3, maxBatch: 2 });
    const c = await pipeline.generate({ ...options, n: 1 });
    const d = await pipeline.generate({ ...options, n: 1, seed: 8 });
    expect(a.images.length).toBe(3);
    // The kernels choose by a sample's shape, never by the batch: bit for bit.
    for (let index = 0; index < 3; index++)
      expect(b.images[index].pixels, `image ${index}`).toEqual(a.images[index].pixels);
    const again = await pipeline.generate({ ...options, n: 3, maxBatch: 3 });
    for (let index = 0; index < 3; index++)
      expect(again.images[index].pixels).toEqual(a.images[index].pixels);
    expect(c.images[0].pixels, "n = 1 vs n = 3").toEqual(a.images[0].pixels);
    expect(d.images[0].pixels).not.toEqual(a.images[0].pixels);
    expect(a.images[1].pixels).not.toEqual(a.images[0].pixels);
    for (const image of a.images) {
      expect(image.size).toBe(16);
      expect(image.pixels.every((value) => value >= 0 && value <= 1)).toBe(true);
    }
  }, 300_000);

  it("the same seed gives bit-identical images at maxBatch 1, 2, 3 and 4 (guided: 2 to 8 UNet rows)", async () => {
    const options = { prompt, n: 4, steps: 2, sampler: "ddim" as const, seed: 21 };
    const runs: Awaited<ReturnType<Pipeline["generate"]>>[] = [];
    for (const maxBatch of [1, 2, 3, 4]) runs.push(await pipeline.generate({ ...options, maxBatch }));
    for (const [at, run] of runs.entries()) {
      expect(run.images.length).toBe(4);
      for (let index = 0; index < 4; index++) {
        const differing = run.images[index].pixels.findIndex(
          (value, pixel) => value !== runs[0].images[index].pixels[pixel],
        );
        expect(differing, `maxBatch ${at + 1} vs 1, image ${index}: first differing pixel`).toBe(-1);
      }
    }
    expect(runs[0].images[1].pixels).not.toEqual(runs[0].images[0].pixels);
  }, 300_000);

  it("each sampler step is a step boundary of the kernels runtime: it drains every drainEvery steps", async () => {
    const device = await gpu();
    const saved = device.drainEvery;
    try {
      device.drainEvery = 1;
      await device.endStep(); // start right after a drain, whatever came before
      device.drainEvery = 3;
      const drains = device.drainCount;
      await pipeline.generate({ prompt, n: 1, steps: 7, sampler: "pndm", seed: 2 });
      expect(device.drainCount - drains).toBe(2);
    } finally {
      device.drainEvery = saved;
    }
  }, 300_000);

  it.each(["ddpm", "pndm", "dpmpp-2m"] as const)(
    "%s runs with guidance and is reproducible",
    async (sampler) => {
      const options = {
        prompt: { sex: "male" as const, age: 40, findings: [] },
        n: 2,
        steps: 3,
        sampler,
        seed: 3,
      };
      const first = await pipeline.generate(options);
      const second = await pipeline.generate(options);
      expect(first.images[0].prompt).toBe("40 year old male. No acute cardiopulmonary abnormality.");
      expect(second.images[1].pixels).toEqual(first.images[1].pixels);
    },
    300_000,
  );

  it("guidance changes the image (the unconditional half is used), 1 runs the conditional model alone; rescale", async () => {
    const options = { prompt, n: 1, steps: 2, sampler: "ddim" as const, seed: 5 };
    const one = await pipeline.generate({ ...options, guidance: 1 });
    const three = await pipeline.generate({ ...options, guidance: 3 });
    expect(three.images[0].pixels).not.toEqual(one.images[0].pixels);
    // Guidance rescale changes the guided image and is recorded; 0 is plain guidance.
    const rescaled = await pipeline.generate({ ...options, guidance: 3, guidanceRescale: 0.7 });
    expect(rescaled.images[0].pixels).not.toEqual(three.images[0].pixels);
    expect(rescaled.images[0].metadata.guidanceRescale).toBe(0.7);
    expect(three.images[0].metadata.guidanceRescale).toBe(0);
  }, 300_000);

  it("a negative prompt is what the unconditional half reads: at guidance 0 the image is the negative prompt's own", async () => {
    const normal = "40 year old male. No acute cardiopulmonary abnormality.";
    const options = { n: 1, steps: 2, sampler: "ddim" as const, seed: 5 };
    const plain = await pipeline.generate({ ...options, prompt, guidance: 3 });
    const empty = await pipeline.generate({ ...options, prompt, guidance: 3, negativePrompt: "" });
    expect(empty.images[0].pixels).toEqual(plain.images[0].pixels);
    expect(plain.images[0].metadata.negativePrompt).toBe("");
    const away = await pipeline.generate({ ...options, prompt, guidance: 3, negativePrompt: normal });
    expect(away.images[0].pixels).not.toEqual(plain.images[0].pixels);
    expect(away.images[0].metadata.negativePrompt).toBe(normal);
    // eps_u + 0 (eps_c - eps_u) = eps_u: the negative prompt's conditional prediction, step for step.
    const zero = await pipeline.generate({ ...options, prompt, guidance: 0, negativePrompt: normal });
    const negativeAlone = await pipeline.generate({ ...options, prompt: normal, guidance: 1 });
    expect(zero.images[0].pixels).toEqual(negativeAlone.images[0].pixels);
    // At guidance 1 the unconditional half is not run, so the negative prompt changes nothing.
    const one = await pipeline.generate({ ...options, prompt, guidance: 1 });
    const oneAway = await pipeline.generate({ ...options, prompt, guidance: 1, negativePrompt: normal });
    expect(oneAway.images[0].pixels).toEqual(one.images[0].pixels);
  }, 300_000);

  it("negative guidance: the negative prompt at its own scale over the empty prompt (three rows); equal scales are plain guidance", async () => {
    const patient = "70 year old female.";
    const options = { prompt, n: 2, steps: 2, sampler: "ddim" as const, seed: 5, guidance: 3 };
    const plain = await pipeline.generate(options);
    // eps_0 + 3 (eps_p - eps_0) + 3 (eps_c - eps_p) = eps_0 + 3 (eps_c - eps_0), to f32 rounding.
    const split = await pipeline.generate({ ...options, negativePrompt: patient, negativeGuidance: 3 });
    for (const [index, image] of split.images.entries()) {
      expectClose(image.pixels, plain.images[index].pixels, { atol: 1e-4, rtol: 0 }, `image ${index}`);
    }
    expect(split.images[0].metadata).toMatchObject({ negativePrompt: patient, negativeGuidance: 3 });
    // At 1 the empty rows drop out: the two-row negative prompt, bit for bit.
    const away = await pipeline.generate({ ...options, negativePrompt: patient });
    const one = await pipeline.generate({ ...options, negativePrompt: patient, negativeGuidance: 1 });
    expect(one.images[1].pixels).toEqual(away.images[1].pixels);
    expect(away.images[0].metadata.negativeGuidance).toBe(1);
    // Another scale for the demographics draws another image, also at guidance 1 (three rows still).
    const more = await pipeline.generate({ ...options, negativePrompt: patient, negativeGuidance: 6 });
    expect(more.images[0].pixels).not.toEqual(plain.images[0].pixels);
    const atOne = await pipeline.generate({
      ...options,
      guidance: 1,
      negativePrompt: patient,
      negativeGuidance: 3,
    });
    const conditional = await pipeline.generate({ ...options, guidance: 1 });
    expect(atOne.images[0].pixels).not.toEqual(conditional.images[0].pixels);
    await expect(pipeline.generate({ ...options, negativeGuidance: -1 })).rejects.toThrow(
      "negative guidance must be a number in [0, 30], got -1",
    );
  }, 300_000);

  it("negative prompts one per prompt entry pair up with the entries, and their tokenizer warnings are named", async () => {
    const normal = "40 year old male. No acute cardiopulmonary abnormality.";
    const options = { n: 2, steps: 1, sampler: "ddim" as const, seed: 3, guidance: 3, maxBatch: 3 };
    const heard: string[] = [];
    const both = await pipeline.generate({
      ...options,
      prompt: [prompt, normal],
      negativePrompt: ["", "zebra"],
      onWarning: (message) => heard.push(message),
    });
    expect(both.images.map((image) => image.metadata.negativePrompt)).toEqual(["", "", "zebra", "zebra"]);
    expect(heard).toEqual([
      'negative prompt "zebra": 1 words not in the model\'s vocabulary, read as [unk]: "zebra"',
    ]);
    const first = await pipeline.generate({ ...options, n: 2, prompt });
    expect(both.images[1].pixels).toEqual(first.images[1].pixels);
    await expect(
      pipeline.generate({ ...options, prompt: [prompt, normal], negativePrompt: ["a"] }),
    ).rejects.toThrow("generate: 1 negative prompts for 2 prompts (give one text, or one per prompt)");
    await expect(pipeline.generate({ ...options, prompt, negativePrompt: 7 as never })).rejects.toThrow(
      "negative prompt must be text or a list of texts, got 7",
    );
    await expect(
      pipeline.generate({ ...options, prompt, negativePrompt: ["a", 2] as never }),
    ).rejects.toThrow("negative prompt 1 must be text, got 2");
  }, 300_000);

  it("timestep spacing: trailing starts at the last training timestep and draws other images than leading", async () => {
    const options = { prompt, n: 1, steps: 2, sampler: "ddim" as const, seed: 5 };
    const leading = await pipeline.generate(options);
    const trailing = await pipeline.generate({ ...options, spacing: "trailing" });
    expect(leading.images[0].metadata.spacing).toBe("leading");
    expect(trailing.images[0].metadata.spacing).toBe("trailing");
    expect(trailing.images[0].pixels).not.toEqual(leading.images[0].pixels);
  }, 300_000);

  it("writes PNG + JSON sidecars that reproduce the image, 8- and 16-bit", async () => {
    const result = await pipeline.generate({
      prompt,
      n: 2,
      steps: 2,
      sampler: "ddim",
      spacing: "trailing",
      seed: 9,
      bits: 16,
    });
    const out = join(root, "out");
    const files = writeGeneratedImages(out, result);
    expect(files.map((file) => file.slice(out.length + 1))).toEqual(["image-0000.png", "image-0001.png"]);
    const decoded = await decodeImage(files[1]);
    expect(decoded.bitDepth).toBe(16);
    expect(decoded.width).toBe(16);
    const metadata = JSON.parse(readFileSync(join(out, "image-0001.json"), "utf8")) as GenerationMetadata;
    expect(metadata.model.dir).toBe(modelDir);
    expect(metadata.model.weightsSha256).toMatch(/^[0-9a-f]{64}$/);
    const again = await pipeline.generate({
      prompt: metadata.prompt,
      n: metadata.n,
      steps: metadata.steps,
      sampler: metadata.sampler,
      spacing: metadata.spacing,
      seed: metadata.seed,
      guidance: metadata.guidance,
      bits: metadata.bits,
      maxBatch: metadata.maxBatch,
    });
    expect(Buffer.compare(again.images[1].png, readFileSync(files[1]))).toBe(0);
  }, 300_000);

  it("warns once per prompt that was truncated or had unknown words, and records its tokens in the sidecar", async () => {
    const context = DIFFUSION_CONFIGS["phantom-tiny"].textEncoder.maxPositions;
    const long = `${prompt} ${new Array(context).fill("cardiomegaly").join(" ")}`;
    const odd = "70 year old zebra female. Cardiomegaly.";
    const heard: string[] = [];
    const result = await pipeline.generate({
      prompt: [long, odd, prompt],
      n: 2,
      steps: 1,
      sampler: "ddim",
      maxBatch: 3,
      onWarning: (message) => heard.push(message),
    });
    expect(result.warnings).toEqual(heard);
    expect(heard).toHaveLength(2);
    // The prompt splits into 7 words ("70 year old female . cardiomegaly ."); start and end take two places.
    const dropped = 7 + context - (context - 2);
    expect(heard[0]).toContain(`context of ${context} tokens: truncated, ${dropped} words dropped`);
    expect(heard[1]).toContain('1 words not in the model\'s vocabulary, read as [unk]: "zebra"');
    const tokens = result.images.map((image) => image.metadata.tokens);
    expect(tokens[0]).toEqual({
      length: context,
      context,
      dropped: new Array(dropped).fill("cardiomegaly"),
      unknown: [],
    });
    expect(tokens[1]).toEqual(tokens[0]);
    expect(tokens[2]).toEqual({ length: 10, context, dropped: [], unknown: ["zebra"] });
    expect(tokens[4]).toEqual({ length: 9, context, dropped: [], unknown: [] });
  }, 300_000);

  it("cxr generate prints the tokenizer's warnings on stderr and passes --spacing", async () => {
    const program = new Command("cxr").exitOverride();
    registerCommands(program, { bench: program.command("bench") });
    const errors: string[] = [];
    const stderr = vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
      errors.push(String(chunk));
      return true;
    });
    const log = vi.spyOn(console, "log").mockImplementation(() => undefined);
    const out = join(root, "warned");
    try {
      await program.parseAsync(
        ["generate", "--model", modelDir, "--prompt", "70 year old zebra female. Cardiomegaly."].concat([
          "--n",
          "1",
          "--steps",
          "1",
          "--sampler",
          "ddim",
          "--spacing",
          "trailing",
          "--guidance-rescale",
          "0.5",
          "--out",
          out,
        ]),
        { from: "user" },
      );
    } finally {
      stderr.mockRestore();
      log.mockRestore();
    }
    expect(errors.join("")).toContain(
      'warning: prompt "70 year old zebra female. Cardiomegaly.": 1 words not in',
    );
    const sidecar = JSON.parse(readFileSync(join(out, "image-0000.json"), "utf8")) as GenerationMetadata;
    expect(sidecar.tokens.unknown).toEqual(["zebra"]);
    expect(sidecar.spacing).toBe("trailing");
    expect(sidecar.guidanceRescale).toBe(0.5);
  }, 300_000);

  it("cxr generate --negative-prompt and --negative-guidance: {patient} is the prompt's demographic sentence; a prompt off the template is refused", async () => {
    const program = new Command("cxr").exitOverride();
    registerCommands(program, { bench: program.command("bench") });
    const log = vi.spyOn(console, "log").mockImplementation(() => undefined);
    const out = join(root, "negative");
    const common = ["--n", "1", "--steps", "1", "--sampler", "ddim", "--out", out];
    const negative = ["--negative-prompt", "{patient} No acute cardiopulmonary abnormality."];
    try {
      await program.parseAsync(
        ["generate", "--model", modelDir, "--sex", "F", "--age", "70", "--findings", "Cardiomegaly"]
          .concat(negative, ["--negative-guidance", "2"])
          .concat(common),
        { from: "user" },
      );
      await expect(
        program.parseAsync(
          ["generate", "--model", modelDir, "--prompt", "an enlarged heart"].concat(negative).concat(common),
          { from: "user" },
        ),
      ).rejects.toThrow(
        'negative prompt "{patient} No acute cardiopulmonary abnormality.": {patient} needs a prompt that starts "{age} year old [RACE] {sex}.", got "an enlarged heart"',
      );
    } finally {
      log.mockRestore();
    }
    const sidecar = JSON.parse(readFileSync(join(out, "image-0000.json"), "utf8")) as GenerationMetadata;
    expect(sidecar.prompt).toBe("70 year old female. Cardiomegaly.");
    expect(sidecar.negativePrompt).toBe("70 year old female. No acute cardiopulmonary abnormality.");
    expect(sidecar.negativeGuidance).toBe(2);
  }, 300_000);

  it("cxr generate without --sampler and --steps samples with the model's own (config.json sampling)", async () => {
    const own = join(root, "own-sampling");
    cpSync(modelDir, own, { recursive: true });
    const configPath = join(own, "config.json");
    const config = JSON.parse(readFileSync(configPath, "utf8"));
    writeFileSync(configPath, JSON.stringify({ ...config, sampling: { sampler: "ddim", steps: 2 } }));
    const program = new Command("cxr").exitOverride();
    registerCommands(program, { bench: program.command("bench") });
    const log = vi.spyOn(console, "log").mockImplementation(() => undefined);
    const out = join(root, "own-sampling-out");
    try {
      await program.parseAsync(
        ["generate", "--model", own, "--prompt", "70 year old female.", "--out", out],
        {
          from: "user",
        },
      );
    } finally {
      log.mockRestore();
    }
    const sidecar = JSON.parse(readFileSync(join(out, "image-0000.json"), "utf8")) as GenerationMetadata;
    expect([sidecar.sampler, sidecar.steps]).toEqual(["ddim", 2]);
    // The folder without it keeps GENERATE_DEFAULTS.
    const plain = await createPipeline(modelDir, { gpu: await gpu() });
    try {
      expect([plain.defaults.sampler, plain.defaults.steps]).toEqual([
        GENERATE_DEFAULTS.sampler,
        GENERATE_DEFAULTS.steps,
      ]);
    } finally {
      plain.dispose();
    }
  }, 300_000);

  it("writes a labelled contact sheet in one call from a model folder: one row per prompt", async () => {
    const prompts = [prompt, { sex: "male" as const, age: 40, findings: ["Pleural Effusion"] }];
    const out = join(root, "sheets", "new", "sheet.png"); // the folder is created
    const { result } = await writeContactSheet(modelDir, {
      prompts,
      perPrompt: 3,
      out,
      steps: 2,
      sampler: "ddim",
      cell: 32,
    });
    expect(result.images.map((image) => image.prompt)).toEqual([
      prompt,
      prompt,
      prompt,
      ...new Array(3).fill(promptFromFields(prompts[1] as never)),
    ]);
    const meta = await sharp(out).metadata();
    expect(meta.width).toBe(220 + 3 * 36 + 4);
    expect(meta.height).toBe(2 * 36 + 4);
  }, 300_000);

  it("rejects bad requests and model folders, naming what and where", async () => {
    await expect(
      pipeline.generate({
        prompt,
        sampler: "euler" as never,
        steps: 0,
        n: -1,
        guidance: 100,
        bits: 12 as never,
        spacing: "uniform" as never,
        guidanceRescale: -1,
      }),
    ).rejects.toThrow(
      'generate: n must be an integer in [1, 10000], got -1; steps must be an integer in [1, 1000], got 0; unknown sampler "euler" (ddpm, ddim, pndm, dpmpp-2m); guidance must be a number in [0, 30], got 100; guidance rescale must be a number in [0, 1], got -1; unknown timestep spacing "uniform" (leading, trailing, linspace); bits must be 8 or 16, got 12',
    );
    await expect(pipeline.generate({ prompt: [] })).rejects.toThrow("generate: the prompt list is empty");
    await expect(pipeline.generate({ prompt: { sex: "x" as never, age: 5, findings: [] } })).rejects.toThrow(
      /sex must be "female" or "male"/,
    );
    await expect(createPipeline(join(root, "nowhere"))).rejects.toThrow(
      /model directory .*nowhere does not exist/,
    );
    const partial = join(root, "partial");
    mkdirSync(partial);
    await expect(createPipeline(partial)).rejects.toThrow(
      /model directory .*partial is missing config.json, tokenizer.json, text_encoder\/model.safetensors, unet\/diffusion_pytorch_model.safetensors/,
    );
  });
});

describe("cxr generate flags", () => {
  it("builds the prompt from --prompt or from --sex/--age/--race/--findings", () => {
    expect(promptFromFlags({ prompt: "x" })).toBe("x");
    expect(
      promptFromFlags({ sex: "F", age: 70, race: "asian", findings: "Cardiomegaly, Pleural Effusion" }),
    ).toEqual({
      sex: "female",
      age: 70,
      race: "ASIAN",
      findings: ["Cardiomegaly", "Pleural Effusion"],
    });
    expect(() => promptFromFlags({})).toThrow(/give --prompt TEXT, or --sex and --age/);
    expect(() => promptFromFlags({ prompt: "x", sex: "F" })).toThrow(/either --prompt or --sex/);
    expect(() => promptFromFlags({ sex: "X", age: 3 })).toThrow(
      /--sex must be F, M, female or male, got "X"/,
    );
    expect(() => promptFromFlags({ sex: "M" })).toThrow(/--age is required/);
    expect(() => promptFromFlags({ sex: "M", age: 3, race: "martian" })).toThrow(
      /--race must be one of WHITE/,
    );
    expect(() => readPromptsFile(join(root, "none.txt"))).toThrow(/cannot read the prompts file .*none.txt/);
  });
});
