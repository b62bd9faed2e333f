/**
 * Packed weight textures of the CPU variants, cached per weight buffer and layout, so a weight is
 * packed once per version, not once per call: a training step's forward and input gradient (and, on
 * cpu-texture, the input gradient's own layout once), every call of a sampling loop with unchanged
 * weights. An entry is re-packed in place when the buffer's write version (runtime/versions.ts) has
 * moved since it was packed: an optimiser step, `write()`, `writeBytes()`, `loadState`, a kernel or
 * `copyFrom` writing the tensor, or the buffer going back to the pool. A buffer handed out raw
 * (`Tensor.buffer`) has no version and is re-packed on every call. Entries beyond `WEIGHT_CACHE.bytesLimit` go back to
 * the scratch texture pool, least recently used first; `releaseConv2dScratch` drops them all.
 */
import type { Gpu } from "../../runtime/device.ts";
import type { Tensor } from "../../runtime/tensor.ts";
import { bufferVersion } from "../../runtime/versions.ts";
import { type ScratchTexture, texturePool } from "../common/texture-pool.ts";
import { packWeights } from "./cpu-texture.ts";
import type { Conv2dGeometry } from "./geometry.ts";

/** Limits of the packed weight cache (per device). */
export const WEIGHT_CACHE = {
  /** Cached textures beyond this many bytes go back to the scratch pool, least recently used first. */
  bytesLimit: 256 * 2 ** 20,
} as const;

interface Entry {
  buffer: GPUBuffer;
  layout: string;
  scratch: ScratchTexture;
  view: GPUTextureView;
  /** The weight buffer's write version when packed; null: unversioned, never reused. */
  version: number | null;
  lastUse: number;
}

/** What the cache has done on a device (tests count packs with it). */
export interface WeightCacheStats {
  /** Weight packing dispatches (new entries and re-packs of changed weights). */
  packs: number;
  /** Calls served by an entry whose weight had not changed. */
  hits: number;
  /** Packs of weights whose buffer was handed out raw (`Tensor.buffer`): no version, so no reuse. */
  unversioned: number;
  entries: number;
  bytes: number;
}

class WeightCache {
  private readonly entries = new Map<GPUBuffer, Map<string, Entry>>();
  private bytes = 0;
  private clock = 0;
  packs = 0;
  hits = 0;
  unversioned = 0;

  constructor(private readonly gpu: Gpu) {}

  view(op: string, g: Conv2dGeometry, w: Tensor, quadOverOutputs: boolean): GPUTextureView {
    const buffer = w.bufferFor("read");
    const layout = `${quadOverOutputs ? "outputs" : "inputs"} ${g.outChannels}x${g.inPerGroup}x${g.kernelHeight}x${g.kernelWidth} /${g.groups}`;
    const version = bufferVersion(buffer);
    let byLayout = this.entries.get(buffer);
    let entry = byLayout?.get(layout);
    if (entry && version !== null && entry.version === version) {
      this.hits++;
    } else {
      if (entry) packWeights(this.gpu, op, g, w, quadOverOutputs, entry.scratch, entry.view);
      else {
        const packed = packWeights(this.gpu, op, g, w, quadOverOutputs);
        entry = { buffer, layout, ...packed, version, lastUse: 0 };
        if (!byLayout) this.entries.set(buffer, (byLayout = new Map()));
        byLayout.set(layout, entry);
        this.bytes += packed.scratch.bytes;
      }
      entry.version = version;
      this.packs++;
      if (version === null) this.unversioned++;
    }
    entry.lastUse = ++this.clock;
    if (this.bytes > WEIGHT_CACHE.bytesLimit) this.trim(WEIGHT_CACHE.bytesLimit, entry);
    return entry.view;
  }

  /** Returns entries to the scratch pool, least recently used first, until at most `keepBytes` remain. */
  trim(keepBytes: number, keep: Entry | null = null): void {
    const byAge = [...this.entries.values()].flatMap((byLayout) => [...byLayout.values()]);
    byAge.sort((a, b) => a.lastUse - b.lastUse);
    for (const entry of byAge) {
      if (this.bytes <= keepBytes) break;
      if (entry === keep) continue;
      const byLayout = this.entries.get(entry.buffer)!;
      byLayout.delete(entry.layout);
      if (byLayout.size === 0) this.entries.delete(entry.buffer);
      this.bytes -= entry.scratch.bytes;
      texturePool(this.gpu).release(entry.scratch);
    }
  }

  stats(): WeightCacheStats {
    let entries = 0;
    for (const byLayout of this.entries.values()) entries += byLayout.size;
    return { packs: this.packs, hits: this.hits, unversioned: this.unversioned, entries, bytes: this.bytes };
  }
}

const caches = new WeakMap<Gpu, WeightCache>();

function cacheOf(gpu: Gpu): WeightCache {
  let cache = caches.get(gpu);
  if (!cache) caches.set(gpu, (cache = new WeightCache(gpu)));
  return cache;
}

/**
 * The packed texture of `w` in the layout a pass reads ("inputs": 4 input channels per texel, the
 * forward's; "outputs": 4 output channels per texel, cpu-texture's input gradient), packed now only if
 * this weight version has no entry yet. The view stays valid for commands recorded until the next
 * call; callers do not release it.
 */
export function packedWeights(
  gpu: Gpu,
  op: string,
  g: Conv2dGeometry,
  w: Tensor,
  quadOverOutputs: boolean,
): GPUTextureView {
  return cacheOf(gpu).view(op, g, w, quadOverOutputs);
}

/** Packs and hits so far, entries and bytes held (tests, diagnostics). */
export function weightCacheStats(gpu: Gpu): WeightCacheStats {
  return cacheOf(gpu).stats();
}

/** Returns every cached weight texture to the scratch pool. */
export function releaseWeightCache(gpu: Gpu): void {
  caches.get(gpu)?.trim(0);
}
