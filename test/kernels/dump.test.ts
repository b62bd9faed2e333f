/** `cxr kernels dump <op>` prints, byte for byte, the WGSL the op compiles (ops/sources.ts). */
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { ATTENTION_KERNELS } from "../../packages/kernels/src/ops/attention/index.ts";
import { SOFTMAX_KERNELS } from "../../packages/kernels/src/ops/softmax/index.ts";
import { dumpKernelSources, KERNEL_SOURCES } from "../../packages/kernels/src/ops/sources.ts";

const ROOT = resolve(import.meta.dirname, "../..");

describe("kernels dump", () => {
  it("gives each variant's passes under a header, exactly as launched", () => {
    expect(dumpKernelSources({ op: "softmax", variant: "gpu-workgroup", pass: "backward" })).toBe(
      `// softmax / gpu-workgroup / backward${SOFTMAX_KERNELS["gpu-workgroup"].backward}\n`,
    );
    const all = dumpKernelSources({ op: "softmax" });
    for (const [variant, kernels] of Object.entries(SOFTMAX_KERNELS)) {
      expect(all).toContain(`// softmax / ${variant} / forward${kernels.forward}\n`);
      expect(all).toContain(`// softmax / ${variant} / backward${kernels.backward}\n`);
    }
    expect(Object.keys(KERNEL_SOURCES)).toContain("softmax");
  });

  it("names what exists when asked for something that does not", () => {
    expect(() => dumpKernelSources({ op: "nope" })).toThrow(
      /kernels dump: no op "nope" \(available ops: softmax/,
    );
    expect(() => dumpKernelSources({ op: "softmax", variant: "x" })).toThrow(
      'kernels dump: softmax has no variant "x" (variants: cpu-rows, gpu-workgroup, f16)',
    );
    expect(() => dumpKernelSources({ op: "softmax", pass: "sideways" })).toThrow(
      'kernels dump: softmax has no pass "sideways" (passes: forward, backward)',
    );
  });

  it("is reachable as cxr kernels dump", () => {
    const cli = (...words: string[]) =>
      spawnSync("bun", ["packages/cli/src/main.ts", "kernels", "dump", ...words], {
        cwd: ROOT,
        encoding: "utf8",
      });
    const result = cli("softmax", "--variant", "cpu-rows", "--pass", "forward");
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).toBe(`// softmax / cpu-rows / forward${SOFTMAX_KERNELS["cpu-rows"].forward}\n`);
    const attentionDump = cli("attention", "--variant", "cpu-subgroup", "--pass", "forward");
    expect(attentionDump.status, attentionDump.stderr).toBe(0);
    expect(attentionDump.stdout).toBe(
      dumpKernelSources({ op: "attention", variant: "cpu-subgroup", pass: "forward" }),
    );
    expect(attentionDump.stdout).toContain(ATTENTION_KERNELS["cpu-subgroup"].forward);
    const bad = cli("no-such-op");
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('no op "no-such-op" (available ops');
  });
});
