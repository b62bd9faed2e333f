import type { Gpu } from "../runtime/device.ts";
import type { WaitMode } from "../runtime/wait.ts";

/** One benchmark: our kernel and a naive reference kernel (one output per invocation), same inputs. */
export interface BenchCase {
  /** Op, e.g. "matmul". */
  op: string;
  /** Shape description, e.g. "1024x1024x1024 fp32". */
  shape: string;
  /** Where the shape comes from, e.g. "UNet 64x64 mid-block". */
  context: string;
  /** FLOPs and bytes of one call of `run`. */
  flops: number;
  bytes: number;
  /** Minimum speed-up over `naive` that the issue demands, if any. */
  targetSpeedup?: number;
  /** Allocates inputs; returns the two callables. Each call only records dispatches. */
  setup(gpu: Gpu): Promise<BenchInstance>;
}

export interface BenchInstance {
  run(): void;
  naive(): void;
  /** Label of the naive variant, e.g. "naive direct conv". */
  naiveLabel: string;
  /**
   * Wait modes for timing `run` and `naive` (runtime/wait.ts); default: the device's own mode for
   * both. Set for the pair that compares the same kernel under two waits.
   */
  waits?: { run: WaitMode; naive: WaitMode };
  /**
   * Extra figures to print (e.g. peak memory, another kernel's rate at the same FLOPs), measured after
   * the timed runs; gets their median times.
   */
  extra?(timed: {
    milliseconds: number;
    naiveMilliseconds: number;
  }): Record<string, string> | Promise<Record<string, string>>;
  dispose(): void;
}
