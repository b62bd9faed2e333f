/**
 * Waiting for the GPU without busy-polling.
 *
 * Dawn's node bindings (the `webgpu` package) complete `mapAsync` and `onSubmittedWorkDone` by
 * calling `wgpuInstanceProcessEvents` from a native callback that reschedules itself with
 * `globalThis.setImmediate` for as long as any such promise is pending. While JavaScript awaits GPU
 * work, the main thread therefore spins; on a CPU adapter (lavapipe) it takes one of the cores
 * llvmpipe's worker threads compute on. The bindings look `setImmediate` up on the global object at
 * every tick, so for the duration of one of our waits we swap in a wrapper: native callbacks (Dawn's
 * tick) run immediately during the first `spinMs` of the wait, so short round trips keep their
 * latency, and after that at most once per `intervalMs` through a timer. JavaScript callbacks
 * scheduled by anyone else pass through untouched. Outside our waits `setImmediate` is the original.
 *
 * Mode "busy" is Dawn's own behaviour (kept for side-by-side benchmarks: `cxr bench kernels --wait`).
 */

/** "timer": spin briefly, then poll Dawn's events on a timer (default). "busy": Dawn's setImmediate loop. */
export type WaitMode = "busy" | "timer";
export const WAIT_MODES: readonly WaitMode[] = ["busy", "timer"];

export interface WaitPolicy {
  mode: WaitMode;
  /** Poll at full speed for this long at the start of a wait (milliseconds). */
  spinMs: number;
  /** Then poll once per this many milliseconds. */
  intervalMs: number;
}

export const DEFAULT_WAIT_POLICY: WaitPolicy = { mode: "timer", spinMs: 1, intervalMs: 1 };

/** Counts since the process started; tests read them to see the throttle engage. */
export interface WaitStats {
  /** Waits that went through `waitForGpu`. */
  waits: number;
  /** Native event-loop ticks scheduled while a timer-mode wait was active. */
  nativeTicks: number;
  /** Of those, ticks delayed by a timer instead of run immediately. */
  throttledTicks: number;
}

const stats: WaitStats = { waits: 0, nativeTicks: 0, throttledTicks: 0 };

export function waitStats(): WaitStats {
  return { ...stats };
}

/** Parses a wait mode from the CLI or the environment; names the source in the error. */
export function parseWaitMode(value: string, source: string): WaitMode {
  if ((WAIT_MODES as readonly string[]).includes(value)) return value as WaitMode;
  throw new Error(`${source}: wait mode must be one of ${WAIT_MODES.join(", ")}, got "${value}"`);
}

type Immediate = typeof globalThis.setImmediate;
type Callback = (...args: unknown[]) => void;

let active = 0;
let original: Immediate | null = null;
let policy: WaitPolicy = DEFAULT_WAIT_POLICY;
let started = 0;

function isNative(callback: unknown): boolean {
  return (
    typeof callback === "function" && Function.prototype.toString.call(callback).includes("[native code]")
  );
}

function throttledImmediate(this: unknown, callback: Callback, ...args: unknown[]) {
  const immediate = original as Immediate;
  if (!isNative(callback)) return immediate(callback, ...args);
  stats.nativeTicks++;
  if (performance.now() - started < policy.spinMs) return immediate(callback, ...args);
  stats.throttledTicks++;
  return setTimeout(callback, policy.intervalMs, ...args);
}

function enter(next: WaitPolicy): void {
  if (active++ > 0) return;
  policy = next;
  started = performance.now();
  original = globalThis.setImmediate;
  globalThis.setImmediate = throttledImmediate as unknown as Immediate;
}

function leave(): void {
  if (--active > 0) return;
  if (original) globalThis.setImmediate = original;
  original = null;
}

/**
 * Runs `start` (which begins one or more Dawn async operations) and awaits its promise with Dawn's
 * event polling throttled per `waitPolicy`. The swap is in place before `start` runs, because Dawn
 * schedules its first tick the moment an operation begins.
 */
export async function waitForGpu<T>(waitPolicy: WaitPolicy, start: () => Promise<T>): Promise<T> {
  stats.waits++;
  if (waitPolicy.mode === "busy") return start();
  enter(waitPolicy);
  try {
    return await start();
  } finally {
    leave();
  }
}
