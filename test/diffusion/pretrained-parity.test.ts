/**
 * Parity with PyTorch on a diffusers-layout folder written by packages/diffusion/reference/sd_reference.py
 * (Debian torch 1.13, no diffusers): a tiny SD-2.x-shaped AutoencoderKL with random weights, stored
 * as F32 and as BF16, loaded strictly through PretrainedFolder, and compared with torch's encode
 * (mean, logvar) and decode; the folder's tokenizer against the script's transliteration of
 * transformers' CLIPTokenizer.
 */
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import {
  AutoencoderKL,
  autoencoderConfigFromJson,
  ClipTokenizer,
  loadModuleWeights,
  PretrainedFolder,
  WeightSource,
} from "@cxr/diffusion/pretrained";
import { Tensor } from "@cxr/kernels";
import { afterAll, describe, expect, it } from "vitest";
import { expectClose, gpu } from "../kernels/helpers.ts";
import { temporaryFolder } from "./pretrained-helpers.ts";

const PYTHON = "/usr/bin/python3";
const SCRIPT = join(import.meta.dirname, "../../packages/diffusion/reference/sd_reference.py");
const scratch = temporaryFolder("parity");
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function writeFolder(dtype: string): { folder: string; parity: string } {
  const folder = join(scratch, dtype);
  const output = execFileSync(PYTHON, [SCRIPT, "vae-folder", folder, "--dtype", dtype, "--seed", "7"], {
    encoding: "utf8",
  });
  return JSON.parse(output.trim().split("\n").at(-1) ?? "{}");
}

function worst(actual: Float32Array, expected: Float32Array): number {
  let max = 0;
  for (let index = 0; index < expected.length; index++)
    max = Math.max(max, Math.abs(actual[index] - expected[index]));
  return max;
}

describe.each(["float32", "bfloat16"])("AutoencoderKL parity with torch (weights stored as %s)", (dtype) => {
  it("loads the diffusers folder strictly and matches torch's encode and decode", async () => {
    const g = await gpu();
    const { folder: path, parity } = writeFolder(dtype);
    const folder = PretrainedFolder.open(path, { require: ["vae", "tokenizer"] });
    const config = autoencoderConfigFromJson(folder.vaeConfig());
    expect(config.blockOutChannels).toEqual([16, 32, 32, 288]);
    expect(config.scalingFactor).toBe(0.18215);
    const vae = new AutoencoderKL(g, config);
    const weights = folder.weights("vae");
    const report = loadModuleWeights(vae, weights);
    weights.close();
    expect(report.tensors).toBe(vae.stateTensors().size);
    expect(Object.keys(report.storedAs)).toEqual([dtype === "float32" ? "F32" : "BF16"]);

    const reference = WeightSource.openFile(parity);
    const read = (name: string) => reference.read(name);
    const x = read("x");
    const z = read("z");
    const input = Tensor.upload(g, x.data, x.shape);
    const { mean, logvar } = vae.encode(input);
    const latents = Tensor.upload(g, z.data, z.shape);
    const decoded = vae.decode(latents);
    expect(mean.shape).toEqual(read("mean").shape);
    expect(decoded.shape).toEqual(read("decoded").shape);
    const [meanValues, logvarValues, decodedValues] = await Promise.all([
      mean.download(),
      logvar.download(),
      decoded.download(),
    ]);
    const errors = {
      mean: worst(meanValues, read("mean").data),
      logvar: worst(logvarValues, read("logvar").data),
      decoded: worst(decodedValues, read("decoded").data),
    };
    console.log(`AutoencoderKL vs torch (${dtype} weights): max |diff| ${JSON.stringify(errors)}`);
    expectClose(meanValues, read("mean").data, { atol: 1e-4, rtol: 1e-4 }, "mean");
    expectClose(logvarValues, read("logvar").data, { atol: 1e-4, rtol: 1e-4 }, "logvar");
    expectClose(decodedValues, read("decoded").data, { atol: 1e-4, rtol: 1e-4 }, "decoded");
    reference.close();
    for (const tensor of [input, mean, logvar, latents, decoded]) tensor.release();
    vae.dispose();

    if (dtype === "float32") {
      // The folder's tokenizer (SD 2.x padding with "!") against the script's CLIPTokenizer transliteration.
      const prompts = [
        "a photo of a cat",
        "74 year old BLACK male. No acute intrathoracic abnormalities identified.",
        "  Female,\tage 51;\n\nmild cardiomegaly -- small left pleural effusion (unchanged)  ",
        "Café crème 😀 ²",
        Array.from({ length: 90 }, (_, index) => `w${index}`).join(" "),
      ];
      const expected = JSON.parse(
        execFileSync(PYTHON, [SCRIPT, "tokenize", join(path, "tokenizer")], {
          input: JSON.stringify(prompts),
          encoding: "utf8",
        }),
      ) as number[][];
      const tokenizer = ClipTokenizer.fromFiles(folder.tokenizerFiles());
      expect(tokenizer.padId).toBe(0);
      prompts.forEach((prompt, index) => {
        expect(tokenizer.encode(prompt, { onWarning: () => {} }).ids, prompt).toEqual(expected[index]);
      });
    }
  });
});
