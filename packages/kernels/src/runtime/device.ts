/**
 * The WebGPU device layer: finds an adapter (discrete GPU, then integrated, then software), turns on
 * the optional features we use, asks for the adapter's full limits, and keeps Dawn's instance alive
 * for the whole process (a collected instance segfaults inside Dawn: PLATFORM.md).
 */
import { BufferPool } from "./pool.ts";
import { Profiler } from "./profiler.ts";
import { verboseFromEnvironment, withoutDawnNoise } from "./quiet.ts";
import { UniformArena } from "./uniforms.ts";
import { DEFAULT_WAIT_POLICY, parseWaitMode, type WaitMode, type WaitPolicy, waitForGpu } from "./wait.ts";
import { create } from "./webgpu.ts";

/** Features we switch on when the adapter offers them. */
export const OPTIONAL_FEATURES = ["shader-f16", "subgroups", "timestamp-query"] as const;
export type OptionalFeature = (typeof OPTIONAL_FEATURES)[number];

/** What kind of processor runs the kernels; kernels pick their variant from it. */
export type AdapterKind = "discrete" | "integrated" | "cpu" | "unknown";

export interface DeviceOptions {
  /** Dawn backend: "vulkan", "metal", "d3d12", "opengles". Default: Dawn's choice, then opengles. */
  backend?: string;
  /** Pick the adapter whose name contains this substring (Dawn's `adapter=` option). */
  adapterName?: string;
  /** Time each kernel with timestamp queries (when available) for the profiler. */
  profile?: boolean;
  /** Refuse the OpenGL ES compatibility fallback. */
  noFallback?: boolean;
  /** Skip an optional feature even if present (testing the paths without it). */
  disableFeatures?: OptionalFeature[];
  /** How to wait for GPU work: "timer" (default, no busy-polling) or "busy" (Dawn's own loop). */
  wait?: WaitMode;
  /** Show Dawn's two harmless limit warnings (runtime/quiet.ts). Default: env CXR_VERBOSE=1. */
  verbose?: boolean;
  /**
   * `endStep()` drains the queue and collects garbage every this many steps (0: never), the
   * workaround for a crash inside Dawn in long runs (see `Gpu.endStep`). Default: env
   * CXR_DRAIN_EVERY, else 16.
   */
  drainEvery?: number;
}

/** Steps between two drains of `Gpu.endStep()` unless configured: what both long loops ran with. */
export const DEFAULT_DRAIN_EVERY = 16;

/** Parses a drain interval (a whole number of steps, 0 = never); names the source in the error. */
export function parseDrainEvery(value: string | number, source: string): number {
  const steps = typeof value === "number" ? value : /^\s*\d+\s*$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(steps) || steps < 0)
    throw new Error(
      `${source}: the drain interval must be a whole number of steps >= 0 (0 = never), got "${value}"`,
    );
  return steps;
}

/**
 * Forces a full garbage collection where the runtime allows it: `Bun.gc(true)` under Bun,
 * `globalThis.gc` under Node when started with `--expose-gc` (e.g. NODE_OPTIONS=--expose-gc).
 * Returns whether a collection ran.
 */
export function collectGarbage(): boolean {
  const runtime = globalThis as { Bun?: { gc(force: boolean): void }; gc?: () => void };
  if (runtime.Bun) {
    runtime.Bun.gc(true);
    return true;
  }
  if (typeof runtime.gc === "function") {
    runtime.gc();
    return true;
  }
  return false;
}

export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  kind: AdapterKind;
  backend: string;
  compatibilityMode: boolean;
}

// Module-level on purpose: Dawn's GPU object must outlive every device made from it. One instance
// per set of flags, reused by later devices (each new instance enumerates adapters again).
const liveInstances = new Map<string, GPU>();

function dawnInstance(flags: string[]): GPU {
  const key = flags.join("\u0000");
  let instance = liveInstances.get(key);
  if (!instance) {
    instance = create(flags);
    liveInstances.set(key, instance);
  }
  return instance;
}

export function classifyAdapter(info: GPUAdapterInfo, isFallback: boolean): AdapterKind {
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`.toLowerCase();
  if (isFallback || /llvmpipe|lavapipe|swiftshader|software|warp|microsoft basic render/.test(text))
    return "cpu";
  if (/intel|integrated|apple|mali|adreno|powervr|videocore/.test(text)) return "integrated";
  if (/nvidia|amd|radeon|geforce|quadro|tesla|\bh100|\bh200|\ba100/.test(text)) return "discrete";
  return "unknown";
}

interface AdapterChoice {
  adapter: GPUAdapter;
  backend: string;
  compatibilityMode: boolean;
}

async function requestBestAdapter(options: DeviceOptions): Promise<AdapterChoice | { failures: string[] }> {
  const failures: string[] = [];
  const flags = (backend?: string) => {
    const list: string[] = [];
    if (backend) list.push(`backend=${backend}`);
    if (options.adapterName) list.push(`adapter=${options.adapterName}`);
    return list;
  };
  const backend = options.backend ?? process.env.DAWNNODE_BACKEND;
  const verbose = options.verbose ?? verboseFromEnvironment();
  if (backend !== "opengles") {
    const gpu = dawnInstance(flags(backend));
    // Discrete first, then integrated; Dawn orders adapters by these preferences.
    for (const powerPreference of ["high-performance", "low-power"] as const) {
      try {
        const adapter = await withoutDawnNoise(verbose, () => gpu.requestAdapter({ powerPreference }));
        if (adapter) return { adapter, backend: backend ?? "default", compatibilityMode: false };
      } catch (error) {
        failures.push(`${backend ?? "default"} ${powerPreference}: ${(error as Error).message}`);
      }
    }
    failures.push(`${backend ?? "default backend"}: no adapter found`);
  }
  if (options.noFallback || (backend && backend !== "opengles")) return { failures };
  // OpenGL ES compatibility path: works with stock Mesa where Vulkan lavapipe is too old.
  if (!process.env.EGL_PLATFORM) process.env.EGL_PLATFORM = "surfaceless";
  const gles = dawnInstance(flags("opengles"));
  try {
    const adapter = await withoutDawnNoise(verbose, () =>
      gles.requestAdapter({ featureLevel: "compatibility" }),
    );
    if (adapter) return { adapter, backend: "opengles", compatibilityMode: true };
    failures.push("opengles (compatibility): no adapter found");
  } catch (error) {
    failures.push(`opengles: ${(error as Error).message}`);
  }
  return { failures };
}

export const INSTALL_HINT = [
  "No WebGPU adapter was found. Kernels need a Vulkan, Metal or D3D12 driver (or OpenGL ES).",
  "On Debian 12 / Ubuntu without a GPU, install Mesa's software Vulkan driver (lavapipe) from backports:",
  '  echo "deb http://deb.debian.org/debian bookworm-backports main" > /etc/apt/sources.list.d/backports.list',
  "  apt-get update && apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1",
  "(or run `bash setup.sh` as root, which does this). On a GPU machine install the vendor's Vulkan driver.",
  "Fallback with stock Mesa: apt-get install -y libegl1 libegl-mesa0 libgles2, then run with",
  "EGL_PLATFORM=surfaceless CXR_BACKEND=opengles (compatibility mode; not every kernel variant runs there).",
].join("\n");

export class GpuUnavailableError extends Error {
  constructor(readonly failures: string[]) {
    super(`${INSTALL_HINT}\nTried: ${failures.join("; ") || "nothing"}`);
    this.name = "GpuUnavailableError";
  }
}

/** Limits we raise to the adapter's maximum instead of WebGPU's conservative defaults. */
const RAISED_LIMITS = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
  "maxTextureDimension2D",
] as const;

/** Upload staging a batch may hold before `maybeFlush()` submits it. */
const MAX_STAGED_BYTES = 256 * 1024 * 1024;

/**
 * One open device with everything a kernel launch needs: the buffer pool, the pipeline cache,
 * the uniform arena, the command encoder that batches dispatches, and the profiler.
 */
export class Gpu {
  readonly features: ReadonlySet<OptionalFeature>;
  readonly pool: BufferPool;
  readonly profiler: Profiler;
  readonly uniforms: UniformArena;
  /** How `sync()` and downloads wait for the GPU (runtime/wait.ts); change it at any time. */
  waitPolicy: WaitPolicy = { ...DEFAULT_WAIT_POLICY };
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private encoder: GPUCommandEncoder | null = null;
  private pendingDispatches = 0;
  /** Staging buffers of uploads recorded in this batch; destroyed once the batch is submitted. */
  private staged: GPUBuffer[] = [];
  private stagedBytes = 0;
  private submits = 0;
  private stepsSinceDrain = 0;
  private drains = 0;
  /** Steps between the drains of `endStep()` (0: never); change it at any time. */
  drainEvery = DEFAULT_DRAIN_EVERY;
  private lostReason: string | null = null;
  private readonly errors: string[] = [];

  constructor(
    readonly device: GPUDevice,
    readonly adapter: AdapterDescription,
    features: Set<OptionalFeature>,
    profile: boolean,
  ) {
    this.features = features;
    this.pool = new BufferPool(device);
    this.uniforms = new UniformArena(device);
    this.profiler = new Profiler(device, profile && features.has("timestamp-query"), profile);
    device.lost.then((info) => {
      this.lostReason = `${info.reason}: ${info.message}`;
    });
    device.onuncapturederror = (event: GPUUncapturedErrorEvent) => {
      this.errors.push(event.error.message);
    };
  }

  get kind(): AdapterKind {
    return this.adapter.kind;
  }

  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  /** The compute pipeline for this WGSL source, compiled once per device (compiles are slow on lavapipe). */
  pipeline(code: string, label: string, entryPoint = "main"): GPUComputePipeline {
    const key = `${entryPoint}\u0000${code}`;
    let pipeline = this.pipelines.get(key);
    if (!pipeline) {
      const module = this.device.createShaderModule({ code, label });
      pipeline = this.device.createComputePipeline({
        layout: "auto",
        compute: { module, entryPoint },
        label,
      });
      this.pipelines.set(key, pipeline);
    }
    return pipeline;
  }

  /**
   * The encoder that collects this batch of dispatches; submitted by `flush()`. A command that writes
   * a tensor's buffer takes it with `tensor.bufferFor("write")` (runtime/versions.ts); `launch` and the
   * Tensor write helpers do.
   */
  commandEncoder(): GPUCommandEncoder {
    this.assertAlive();
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    this.pendingDispatches++;
    return this.encoder;
  }

  /**
   * A buffer of `bytes` (a multiple of 4), mapped for writing, whose contents a copy recorded in the
   * current batch will read. It lives until the batch is submitted, then it is destroyed (the GPU
   * finishes the copy first). Used by `Tensor.upload` so an upload does not end the batch.
   */
  stagingBuffer(bytes: number): GPUBuffer {
    this.assertAlive();
    const buffer = this.device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.COPY_SRC,
      mappedAtCreation: true,
    });
    this.staged.push(buffer);
    this.stagedBytes += bytes;
    return buffer;
  }

  /** Command buffers submitted by this device so far (each `flush()` with work pending adds one). */
  get submitCount(): number {
    return this.submits;
  }

  /** Submits every recorded dispatch. Cheap when nothing is pending. */
  flush(): void {
    if (!this.encoder) return;
    this.uniforms.upload();
    this.profiler.resolve(this.encoder);
    this.device.queue.submit([this.encoder.finish()]);
    this.submits++;
    this.encoder = null;
    this.pendingDispatches = 0;
    this.uniforms.reset();
    for (const buffer of this.staged) buffer.destroy();
    this.staged = [];
    this.stagedBytes = 0;
  }

  /**
   * Flushes when a batch has grown large, so memory for uniforms, timestamps and upload staging
   * stays bounded.
   */
  maybeFlush(): void {
    if (
      this.pendingDispatches >= 512 ||
      this.stagedBytes >= MAX_STAGED_BYTES ||
      this.uniforms.nearlyFull() ||
      this.profiler.nearlyFull()
    )
      this.flush();
  }

  /** Waits until the GPU has finished everything submitted, then reports validation errors. */
  async sync(): Promise<void> {
    await this.wait(async () => {
      this.flush();
      await this.device.queue.onSubmittedWorkDone();
      await this.profiler.collect();
    });
    this.throwPendingErrors();
  }

  /**
   * Marks the end of one step of a long loop (a training step, a sampler step). Every
   * `drainEvery` steps it waits until the GPU has finished everything submitted (`sync()`, which
   * also lets Dawn's event loop run: its deferred frees happen there) and forces a garbage
   * collection (`collectGarbage()`); otherwise it returns at once.
   *
   * Why: Dawn releases a bind group, buffer or command buffer only when its JavaScript wrapper is
   * collected, and a step records hundreds to thousands of dispatches, each with a bind group.
   * Without this, long runs crashed inside Dawn (a segmentation fault in native code): phantom
   * DenseNet-BC training on 4,000 images under Bun (after 274 s) and Node (after 88 s), and a
   * 200-step PNDM sampling run of phantom-tiny under Bun, which never yields to the event loop
   * between steps. The root cause was not found (no short reproduction); with a drain every 16
   * steps both ran to the end. Under Node the collection needs `--expose-gc`; the drain runs
   * without it.
   */
  async endStep(): Promise<void> {
    this.stepsSinceDrain++;
    if (this.drainEvery <= 0 || this.stepsSinceDrain < this.drainEvery) return;
    this.stepsSinceDrain = 0;
    await this.sync();
    collectGarbage();
    this.drains++;
  }

  /** Drains `endStep()` has run so far. */
  get drainCount(): number {
    return this.drains;
  }

  /** Awaits Dawn async work that `start` begins, polling Dawn's events per `waitPolicy`. */
  wait<T>(start: () => Promise<T>): Promise<T> {
    return waitForGpu(this.waitPolicy, start);
  }

  throwPendingErrors(): void {
    if (this.errors.length > 0) {
      const messages = this.errors.splice(0, this.errors.length);
      throw new Error(`WebGPU reported: ${messages.join("\n")}`);
    }
  }

  assertAlive(): void {
    if (this.lostReason) throw new Error(`The GPU device was lost (${this.lostReason}); create a new one.`);
  }

  destroy(): void {
    this.flush();
    this.pool.destroy();
    this.uniforms.destroy();
    this.profiler.destroy();
    this.device.destroy();
  }
}

/** Opens the best available device. Throws `GpuUnavailableError` with install instructions. */
export async function createGpu(options: DeviceOptions = {}): Promise<Gpu> {
  const choice = await requestBestAdapter(options);
  if ("failures" in choice) throw new GpuUnavailableError(choice.failures);
  const { adapter } = choice;
  const info = adapter.info;
  const disabled = new Set(options.disableFeatures ?? []);
  const features = new Set<OptionalFeature>(
    OPTIONAL_FEATURES.filter((feature) => adapter.features.has(feature) && !disabled.has(feature)),
  );
  const requiredLimits: Record<string, number> = {};
  for (const name of RAISED_LIMITS) {
    const value = (adapter.limits as unknown as Record<string, number | undefined>)[name];
    if (typeof value === "number") requiredLimits[name] = value;
  }
  const device = await adapter.requestDevice({
    requiredFeatures: [...features] as GPUFeatureName[],
    requiredLimits,
  });
  const description: AdapterDescription = {
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    kind: classifyAdapter(info, (info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true),
    backend: choice.backend,
    compatibilityMode: choice.compatibilityMode,
  };
  const gpu = new Gpu(device, description, features, options.profile ?? false);
  if (options.wait) gpu.waitPolicy.mode = options.wait;
  if (options.drainEvery !== undefined) gpu.drainEvery = parseDrainEvery(options.drainEvery, "drainEvery");
  else if (process.env.CXR_DRAIN_EVERY)
    gpu.drainEvery = parseDrainEvery(process.env.CXR_DRAIN_EVERY, "CXR_DRAIN_EVERY");
  return gpu;
}

let shared: Promise<Gpu> | null = null;

/**
 * The process-wide default device (tests, CLI). Options from the environment:
 * CXR_BACKEND, CXR_ADAPTER, CXR_PROFILE=1, CXR_WAIT=timer|busy, CXR_VERBOSE=1, CXR_DRAIN_EVERY=n.
 */
export function defaultGpu(): Promise<Gpu> {
  if (!shared) {
    shared = createGpu({
      backend: process.env.CXR_BACKEND || undefined,
      adapterName: process.env.CXR_ADAPTER || undefined,
      profile: process.env.CXR_PROFILE === "1",
      wait: process.env.CXR_WAIT ? parseWaitMode(process.env.CXR_WAIT, "CXR_WAIT") : undefined,
    });
  }
  return shared;
}
