/**
 * Reuses GPU buffers by size class, so a training step allocates nothing after its first run.
 * Sizes are rounded up (256 B granularity below 1 MiB, eighths of a power of two above) to make
 * reuse likely while wasting at most 12.5%.
 */
import "./webgpu.ts";
import { markReturned } from "./versions.ts";
export const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

export function sizeClass(bytes: number): number {
  const minimum = Math.max(bytes, 16);
  if (minimum <= 1 << 20) return Math.ceil(minimum / 256) * 256;
  const step = 2 ** (Math.floor(Math.log2(minimum)) - 3);
  return Math.ceil(minimum / step) * step;
}

export interface PoolStats {
  /** Bytes held by buffers handed out right now. */
  inUseBytes: number;
  /** The most `inUseBytes` has been since the last `resetPeak()`. */
  peakInUseBytes: number;
  /** Bytes held by idle buffers kept for reuse. */
  idleBytes: number;
  allocations: number;
  reuses: number;
}

export class BufferPool {
  private readonly idle = new Map<number, GPUBuffer[]>();
  private readonly stats: PoolStats = {
    inUseBytes: 0,
    peakInUseBytes: 0,
    idleBytes: 0,
    allocations: 0,
    reuses: 0,
  };

  constructor(private readonly device: GPUDevice) {}

  acquire(bytes: number): GPUBuffer {
    const size = sizeClass(bytes);
    const list = this.idle.get(size);
    let buffer = list?.pop();
    if (buffer) {
      this.stats.reuses++;
      this.stats.idleBytes -= size;
    } else {
      buffer = this.device.createBuffer({ size, usage: STORAGE_USAGE });
      this.stats.allocations++;
    }
    this.stats.inUseBytes += size;
    this.stats.peakInUseBytes = Math.max(this.stats.peakInUseBytes, this.stats.inUseBytes);
    return buffer;
  }

  release(buffer: GPUBuffer): void {
    markReturned(buffer); // the next tensor that gets it holds other contents (runtime/versions.ts)
    const size = buffer.size;
    this.stats.inUseBytes -= size;
    this.stats.idleBytes += size;
    let list = this.idle.get(size);
    if (!list) this.idle.set(size, (list = []));
    list.push(buffer);
  }

  snapshot(): PoolStats {
    return { ...this.stats };
  }

  resetPeak(): void {
    this.stats.peakInUseBytes = this.stats.inUseBytes;
  }

  /** Frees idle buffers (e.g. between a training run and sampling). */
  trim(): void {
    for (const list of this.idle.values()) for (const buffer of list) buffer.destroy();
    this.idle.clear();
    this.stats.idleBytes = 0;
  }

  destroy(): void {
    this.trim();
  }
}
