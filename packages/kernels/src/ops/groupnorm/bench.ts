/**
 * Group norm benchmarks at the shapes the UNet really uses: a 64x64-latent UNet (SD 2.1 at 512x512:
 * the 320-channel level and the 1280-channel 8x8 level, 32 groups). Each runs the chosen variant next
 * to the naive kernel (one invocation per statistic doing the whole reduction serially); extra cases
 * force each design (fused, chunked, workgroup memory), so the adapter's choice is justified by a
 * measurement in the same table.
 */
import type { BenchCase, BenchInstance } from "../../bench/types.ts";
import { benchValues } from "../../bench/values.ts";
import type { Gpu } from "../../runtime/device.ts";
import { type Shape, sizeOf, Tensor } from "../../runtime/tensor.ts";
import { chooseGroupNormVariant, type GroupNormVariant } from "./choose.ts";
import { groupNormCost } from "./cost.ts";
import { groupNorm } from "./index.ts";

const GROUP_NORM_DESIGNS: GroupNormVariant[] = ["cpu-fused", "cpu-chunked", "gpu-workgroup"];

/**
 * `forced`: time this variant instead of the adapter's choice, to show by measurement why the
 * chooser picks what it picks (one forced design repeats the choice: a check on run-to-run noise).
 */
function groupNormCase(shape: Shape, groups: number, context: string, forced?: GroupNormVariant): BenchCase {
  return {
    op: "groupNorm",
    shape: `${shape.join("x")} g${groups} fp32${forced ? ` (${forced} forced)` : ""}`,
    context,
    ...groupNormCost(shape),
    async setup(gpu: Gpu): Promise<BenchInstance> {
      const channels = shape[1];
      const x = Tensor.upload(gpu, benchValues(sizeOf(shape), 7, 2, 0.5), shape);
      const gamma = Tensor.upload(gpu, benchValues(channels, 11, 2, 1), [channels]);
      const beta = Tensor.upload(gpu, benchValues(channels, 13, 2), [channels]);
      const variant = forced ?? chooseGroupNormVariant(gpu, shape, groups);
      const call = (chosen: GroupNormVariant) => () =>
        groupNorm(x, groups, gamma, beta, 1e-5, { variant: chosen }).release();
      return {
        run: call(variant),
        naive: call("naive"),
        naiveLabel: "naive: one invocation per (n, group)",
        dispose: () => {
          for (const tensor of [x, gamma, beta]) tensor.release();
        },
      };
    },
  };
}

/** The chosen variant, then every other design forced, at one shape. */
function groupNormCases(shape: Shape, groups: number, context: string): BenchCase[] {
  return [
    groupNormCase(shape, groups, context),
    ...GROUP_NORM_DESIGNS.map((variant) =>
      groupNormCase(shape, groups, `${context}, ${variant} forced`, variant),
    ),
  ];
}

export const GROUP_NORM_BENCH_CASES: BenchCase[] = [
  ...groupNormCases([2, 320, 64, 64], 32, "SD UNet 64x64 latent, 320-channel level"),
  ...groupNormCases([2, 1280, 8, 8], 32, "SD UNet 8x8 level, 1280 channels"),
];
