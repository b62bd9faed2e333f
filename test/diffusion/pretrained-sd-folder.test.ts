/**
 * A complete tiny SD-2.x-shaped diffusers folder written by reference/sd_reference.py (sd-folder):
 * configs translated into the generator's UNetConfig / TextEncoderConfig and the samplers'
 * SchedulerConfig, the diffusers-named weights (UNet stored F16, text encoder F32 with transformers'
 * position_ids buffer) loaded strictly into UNet2DConditionModel / ClipTextModel / AutoencoderKL, and
 * the CLIP tokenizer -> text encoder -> UNet chain compared with torch (torch_reference.py's functions,
 * fed names and shapes it derives from the configs itself).
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  diffusionConfigFromFolder,
  loadPretrainedComponents,
  loadPretrainedUnet,
  PretrainedFolder,
  readSafetensorsHeader,
  schedulerFromJson,
  unetConfigFromJson,
} from "@cxr/diffusion/pretrained";
import { readSafetensors, Tensor, uploadTokens } from "@cxr/kernels";
import { afterAll, describe, expect, it } from "vitest";
import { expectClose, gpu } from "../kernels/helpers.ts";
import { SD21_SCHEDULER_CONFIG, SD21_UNET_CONFIG, temporaryFolder } from "./pretrained-helpers.ts";

const PYTHON = "/usr/bin/python3";
const SCRIPT = join(import.meta.dirname, "../../packages/diffusion/reference/sd_reference.py");
const scratch = temporaryFolder("sdfolder");
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function maxAbs(values: ArrayLike<number>): number {
  let m = 0;
  for (let index = 0; index < values.length; index++) m = Math.max(m, Math.abs(values[index]));
  return m;
}

describe("config translation", () => {
  it("maps SD 2.1-base's unet/config.json and scheduler_config.json", () => {
    const unet = unetConfigFromJson(PretrainedFolderConfigs.unet());
    expect(unet).toMatchObject({
      blockOutChannels: [320, 640, 1280, 1280],
      attentionHeadDim: [5, 10, 20, 20],
      crossAttentionDim: 1024,
      useLinearProjection: true,
      layersPerBlock: 2,
      downsamplePadding: 1,
      flipSinToCos: true,
      freqShift: 0,
    });
    const { kind, config } = schedulerFromJson(PretrainedFolderConfigs.scheduler());
    expect(kind).toBe("pndm");
    expect(config).toMatchObject({
      kind: "scaled_linear",
      betaStart: 0.00085,
      betaEnd: 0.012,
      stepsOffset: 1,
      setAlphaToOne: false,
      timestepSpacing: "leading",
      predictionType: "epsilon",
    });
    expect(() =>
      unetConfigFromJson({ ...PretrainedFolderConfigs.unet(), layers_per_block: [2, 2, 1, 2] }),
    ).toThrow(/key "layers_per_block" = \[2,2,1,2\]: different values per level/);
    expect(() =>
      schedulerFromJson({ ...PretrainedFolderConfigs.scheduler(), skip_prk_steps: false }),
    ).toThrow(/skip_prk_steps/);
  });
});

/** The SD 2.1 configs of pretrained-helpers, parsed through the folder's schemas. */
const PretrainedFolderConfigs = {
  unet: () => {
    return writeConfigs(join(scratch, "cfg-unet")).unetConfig();
  },
  scheduler: () => writeConfigs(join(scratch, "cfg-scheduler")).schedulerConfig(),
};

function writeConfigs(root: string): PretrainedFolder {
  for (const [component, file, value] of [
    ["unet", "config.json", SD21_UNET_CONFIG],
    ["scheduler", "scheduler_config.json", SD21_SCHEDULER_CONFIG],
  ] as const) {
    mkdirSync(join(root, component), { recursive: true });
    writeFileSync(join(root, component, file), JSON.stringify(value));
  }
  writeFileSync(
    join(root, "model_index.json"),
    JSON.stringify({
      _class_name: "StableDiffusionPipeline",
      unet: ["diffusers", "UNet2DConditionModel"],
      scheduler: ["diffusers", "PNDMScheduler"],
    }),
  );
  return PretrainedFolder.open(root, { require: ["unet", "scheduler"] });
}

describe("a tiny SD 2.x diffusers folder against torch", () => {
  it("loads every component strictly and matches torch's text encoder and UNet outputs", async () => {
    const g = await gpu();
    const folder = join(scratch, "sd");
    const made = JSON.parse(
      execFileSync(PYTHON, [SCRIPT, "sd-folder", folder, "--seed", "3"], { encoding: "utf8" })
        .trim()
        .split("\n")
        .at(-1) ?? "{}",
    ) as { parity: string; prompts: string[] };
    const components = loadPretrainedComponents(g, folder);
    const { config, tokenizer, textEncoder, unet, vae, scheduler, reports } = components;
    expect(config).toMatchObject({ resolution: 64, channels: 3, space: "latent", prediction: "epsilon" });
    expect(config.unet.attentionHeadDim).toEqual([2, 4]);
    expect(scheduler.kind).toBe("pndm");
    expect(reports.unet.storedAs).toEqual({ F16: unet.stateTensors().size });
    expect(reports.textEncoder.storedAs).toEqual({ F32: textEncoder.stateTensors().size });
    expect(reports.vae.tensors).toBe(vae.stateTensors().size);

    const reference = readSafetensors(made.parity).tensors;
    const get = (name: string) => {
      const entry = reference.get(name);
      if (!entry) throw new Error(`${made.parity} lacks ${name}`);
      return entry;
    };
    // Tokenizer: SD 2.x padding ("!" = 0) and the transliteration's ids.
    const ids = tokenizer.encodeBatch(made.prompts);
    expect(Array.from(ids)).toEqual(Array.from(get("ids").data));
    const idTensor = uploadTokens(textEncoder.textModel.embeddings.tokenEmbedding.weight, ids, [
      made.prompts.length,
      77,
    ]);
    const hidden = textEncoder.forward(idTensor);
    const hiddenValues = await hidden.download();
    const torchHidden = get("text_hidden").data;
    const textScale = maxAbs(torchHidden);
    expectClose(
      hiddenValues,
      torchHidden,
      { atol: 2e-5 * textScale, rtol: 2e-5 },
      "text encoder last_hidden_state",
    );

    const sample = Tensor.upload(g, get("sample").data, get("sample").shape);
    const timesteps = Tensor.upload(g, get("timesteps").data, get("timesteps").shape);
    const output = unet.forward(sample, timesteps, hidden);
    const outputValues = await output.download();
    const torchOutput = get("unet_output").data;
    const unetScale = maxAbs(torchOutput);
    let worst = 0;
    for (let index = 0; index < torchOutput.length; index++) {
      worst = Math.max(worst, Math.abs(outputValues[index] - torchOutput[index]));
    }
    console.log(
      `SD folder vs torch: text encoder max |diff| ${maxAbs(hiddenValues.map((v, i) => v - torchHidden[i])).toExponential(2)} (scale ${textScale.toFixed(2)}), ` +
        `UNet ${worst.toExponential(2)} (scale ${unetScale.toFixed(2)})`,
    );
    expectClose(outputValues, torchOutput, { atol: 1e-4 * unetScale, rtol: 1e-4 }, "UNet output");

    const latents = Tensor.upload(g, get("z").data, get("z").shape);
    const decoded = vae.decode(latents);
    expectClose(await decoded.download(), get("decoded").data, { atol: 1e-4, rtol: 1e-4 }, "VAE decode");
    for (const tensor of [idTensor, hidden, sample, timesteps, output, latents, decoded]) tensor.release();
    textEncoder.dispose();
    unet.dispose();
    vae.dispose();

    // Bad input on the same folder: a UNet weight file missing a tensor, an unsupported config value.
    const opened = PretrainedFolder.open(folder);
    expect(diffusionConfigFromFolder(opened).unet.blockOutChannels).toEqual([32, 64]);
    const unetFile = join(folder, "unet", "diffusion_pytorch_model.safetensors");
    const header = readSafetensorsHeader(unetFile).entries;
    expect([...header.keys()]).toContain("mid_block.attentions.0.proj_in.weight");
    const unetJson = JSON.parse(readFileSync(join(folder, "unet", "config.json"), "utf8"));
    writeFileSync(
      join(folder, "unet", "config.json"),
      JSON.stringify({ ...unetJson, cross_attention_dim: 48 }),
    );
    expect(() => loadPretrainedUnet(g, PretrainedFolder.open(folder))).toThrow(
      /unet\/diffusion_pytorch_model\.safetensors: \d+ mismatches with UNet2DConditionModel:[\s\S]*attn2\.to_k\.weight" is \[32, 32\] in the file, the model needs \[32, 48\]/,
    );
    expect(() => diffusionConfigFromFolder(PretrainedFolder.open(folder))).toThrow(
      /key "cross_attention_dim" = 48 but text_encoder\/config.json has hidden_size 32/,
    );
  });
});
