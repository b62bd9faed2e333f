/**
 * `cxr convert` on torchvision's DenseNet-121 state dict (legacy key names as in the published
 * densenet121-a639ec97.pth, a DataParallel "module." prefix), errors without torch, and
 * `cxr model inspect` on an SD-2.1-shaped folder. Needs /usr/bin/python3 with torch and torchvision.
 */
import { execFileSync } from "node:child_process";
import { chmodSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { convertStateDict, inspectFolder, registerPretrainedCommands } from "@cxr/diffusion/cli-pretrained";
import { WeightSource } from "@cxr/diffusion/pretrained";
import { Command } from "commander";
import { afterAll, describe, expect, it } from "vitest";
import { captureOutput } from "../capture.ts";
import { temporaryFolder, writeFixtureSafetensors, writeSd21Configs } from "./pretrained-helpers.ts";

const PYTHON = "/usr/bin/python3";
const scratch = temporaryFolder("convert");
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const MAKE_DENSENET = `
import json, re, sys, torch, torchvision
torch.manual_seed(0)
state = torchvision.models.densenet121().state_dict()
legacy = {}
for key, value in state.items():
    # the published file's names: denselayer1.norm.1.weight instead of denselayer1.norm1.weight
    old = re.sub(r"(denselayer\\d+\\.(?:norm|relu|conv))([12])\\.", r"\\1.\\2.", key)
    legacy["module." + old] = value
torch.save(legacy, sys.argv[1])
print(json.dumps({"count": len(state), "sums": {k: float(v.double().sum()) for k, v in state.items() if k in (
    "features.conv0.weight", "features.denseblock1.denselayer1.norm1.weight",
    "features.denseblock4.denselayer16.conv2.weight", "classifier.weight")}}))
`;

describe("cxr convert", () => {
  it("converts torchvision's DenseNet-121 state dict, fixing legacy names and stripping module.", () => {
    const input = join(scratch, "densenet121.pth");
    const made = JSON.parse(execFileSync(PYTHON, ["-c", MAKE_DENSENET, input], { encoding: "utf8" })) as {
      count: number;
      sums: Record<string, number>;
    };
    const output = join(scratch, "densenet121.safetensors");
    const mapping = convertStateDict(input, output, { stripPrefix: "module." });
    expect(mapping.filter((row) => row.to)).toHaveLength(made.count);
    expect(mapping).toContainEqual({
      from: "module.features.denseblock1.denselayer1.norm.1.weight",
      to: "features.denseblock1.denselayer1.norm1.weight",
      dtype: "F32",
      shape: [64],
    });
    expect(mapping).toContainEqual({
      from: "module.features.norm5.num_batches_tracked",
      to: "features.norm5.num_batches_tracked",
      dtype: "I64",
      shape: [],
    });
    const source = WeightSource.openFile(output);
    expect(source.entries.get("features.conv0.weight")?.shape).toEqual([64, 3, 7, 7]);
    expect(source.entries.get("classifier.weight")?.shape).toEqual([1000, 1024]);
    for (const [name, sum] of Object.entries(made.sums)) {
      const values = source.read(name).data;
      const total = values.reduce((a, b) => a + b, 0);
      expect(Math.abs(total - sum), name).toBeLessThan(1e-3 * Math.max(1, Math.abs(sum)));
    }
    source.close();
    // The output exists now: refused without --force, replaced with it.
    expect(() => convertStateDict(input, output)).toThrow(/exists; pass --force/);
    const half = convertStateDict(input, output, { stripPrefix: "module.", dtype: "float16", force: true });
    expect(half.find((row) => row.to === "classifier.weight")?.dtype).toBe("F16");
  });

  it("prints the mapping through the command", async () => {
    const input = join(scratch, "small.pt");
    execFileSync(PYTHON, [
      "-c",
      `import torch, sys; torch.save({"state_dict": {"w": torch.ones(2, 3), "step": 5}}, sys.argv[1])`,
      input,
    ]);
    const program = new Command("cxr").exitOverride();
    registerPretrainedCommands(program);
    const { text } = await captureOutput(() =>
      program.parseAsync(["convert", input, join(scratch, "small.safetensors"), "--prefix", "model."], {
        from: "user",
      }),
    );
    expect(text).toContain("1 tensors (1 renamed)");
    expect(text).toContain("w -> model.w  F32 [2, 3]");
    expect(text).toContain("step  (skipped: int, not a tensor)");
  });

  it("says what to install when torch is missing, and refuses bad arguments", () => {
    const input = join(scratch, "any.pt");
    writeFileSync(input, "not really a pickle");
    const fake = join(scratch, "python-without-torch");
    writeFileSync(fake, "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n");
    chmodSync(fake, 0o755);
    expect(() => convertStateDict(input, join(scratch, "a.safetensors"), { python: fake })).toThrow(
      /PyTorch is not importable from .*No module named 'torch'.*apt-get install python3-torch/,
    );
    expect(() =>
      convertStateDict(input, join(scratch, "a.safetensors"), { python: join(scratch, "nowhere") }),
    ).toThrow(/cannot run .*nowhere/);
    expect(() => convertStateDict(join(scratch, "missing.pt"), join(scratch, "a.safetensors"))).toThrow(
      /file not found/,
    );
    expect(() => convertStateDict(input, join(scratch, "a.bin"))).toThrow(/must end in \.safetensors/);
    expect(() => convertStateDict(input, join(scratch, "a.safetensors"), { python: PYTHON })).toThrow(
      /any\.pt: torch\.load failed/,
    );
  });
});

describe("cxr model inspect", () => {
  it("validates an SD 2.1-shaped folder and summarises its weights from the headers", () => {
    const root = writeSd21Configs(temporaryFolder("inspect"));
    writeFixtureSafetensors(join(root, "unet", "diffusion_pytorch_model.safetensors"), {
      "conv_in.weight": { dtype: "F16", shape: [320, 4, 3, 3], values: new Float32Array(320 * 36) },
    });
    writeFixtureSafetensors(join(root, "vae", "diffusion_pytorch_model.safetensors"), {
      "decoder.conv_out.bias": { dtype: "F32", shape: [3], values: [1, 2, 3] },
    });
    writeFixtureSafetensors(join(root, "text_encoder", "model.safetensors"), {
      "text_model.final_layer_norm.weight": { dtype: "BF16", shape: [1024], values: new Float32Array(1024) },
      "text_model.embeddings.position_ids": { dtype: "I64", shape: [1, 77], values: new Float32Array(77) },
    });
    const report = inspectFolder(root, { prompt: "a" }) as Record<string, Record<string, unknown>>;
    expect(report.unet.attentionHeadDim).toEqual([5, 10, 20, 20]);
    expect((report.unet.weights as Record<string, unknown>).dtypes).toEqual({ F16: 1 });
    expect(report.vae.scalingFactor).toBe(0.18215);
    expect((report.textEncoder.weights as Record<string, unknown>).dtypes).toEqual({ BF16: 1, I64: 1 });
    expect(report.scheduler).toMatchObject({
      class: "PNDMScheduler",
      stepsOffset: 1,
      timestepSpacing: "leading",
    });
    expect(report.tokenizer.ids).toEqual([1, 0, 2]);
    rmSync(join(root, "unet", "diffusion_pytorch_model.safetensors"));
    writeFileSync(join(root, "unet", "diffusion_pytorch_model.bin"), "PK");
    expect(() => inspectFolder(root)).toThrow(
      /diffusion_pytorch_model\.bin: PyTorch pickle weights are not loaded.*cxr convert/,
    );
    rmSync(root, { recursive: true, force: true });
  });
});
