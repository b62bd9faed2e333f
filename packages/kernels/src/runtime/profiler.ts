/**
 * Per-kernel GPU time, call counts, FLOPs and bytes. With `timestamp-query` every dispatch is its own
 * timed compute pass; without it only counts are kept and benchmarks time by wall clock instead.
 */
import "./webgpu.ts";

const QUERY_CAPACITY = 2048; // timestamps per batch: two per dispatch

export interface KernelRecord {
  /** Op name, e.g. "matmul". */
  name: string;
  /** The variant the dispatcher chose, e.g. "cpu-register-blocked". */
  variant: string;
  calls: number;
  flops: number;
  bytes: number;
  /** Summed GPU nanoseconds, or null where nothing was timed. */
  gpuNanoseconds: number | null;
}

export interface ProfileRow extends KernelRecord {
  milliseconds: number | null;
  gflopsPerSecond: number | null;
  gigabytesPerSecond: number | null;
}

interface PendingTiming {
  key: string;
  queryIndex: number;
}

export class Profiler {
  readonly timing: boolean;
  private readonly records = new Map<string, KernelRecord>();
  private querySet: GPUQuerySet | null = null;
  private resolveBuffer: GPUBuffer | null = null;
  private queryCount = 0;
  private pending: PendingTiming[] = [];
  private readonly inFlight: Promise<void>[] = [];

  constructor(
    private readonly device: GPUDevice,
    timestamps: boolean,
    readonly enabled: boolean,
  ) {
    this.timing = timestamps;
    if (timestamps) {
      this.querySet = device.createQuerySet({ type: "timestamp", count: QUERY_CAPACITY });
      this.resolveBuffer = device.createBuffer({
        size: QUERY_CAPACITY * 8,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      });
    }
  }

  /** Counts one dispatch; returns the pass's timestampWrites when timing. */
  record(
    name: string,
    variant: string,
    flops: number,
    bytes: number,
  ): GPUComputePassTimestampWrites | undefined {
    if (!this.enabled) return undefined;
    const key = `${name}\u0000${variant}`;
    let entry = this.records.get(key);
    if (!entry) {
      entry = { name, variant, calls: 0, flops: 0, bytes: 0, gpuNanoseconds: this.timing ? 0 : null };
      this.records.set(key, entry);
    }
    entry.calls++;
    entry.flops += flops;
    entry.bytes += bytes;
    if (!this.querySet) return undefined;
    const queryIndex = this.queryCount;
    this.queryCount += 2;
    this.pending.push({ key, queryIndex });
    return {
      querySet: this.querySet,
      beginningOfPassWriteIndex: queryIndex,
      endOfPassWriteIndex: queryIndex + 1,
    };
  }

  nearlyFull(): boolean {
    return this.queryCount >= QUERY_CAPACITY - 2;
  }

  /** Called by the device just before submitting a batch. */
  resolve(encoder: GPUCommandEncoder): void {
    if (!this.querySet || !this.resolveBuffer || this.queryCount === 0) return;
    const count = this.queryCount;
    const readback = this.device.createBuffer({
      size: count * 8,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    encoder.resolveQuerySet(this.querySet, 0, count, this.resolveBuffer, 0);
    encoder.copyBufferToBuffer(this.resolveBuffer, 0, readback, 0, count * 8);
    const pending = this.pending;
    this.pending = [];
    this.queryCount = 0;
    // Mapping waits for the submit that follows; collect() awaits it.
    queueMicrotask(() => {
      this.inFlight.push(
        readback.mapAsync(GPUMapMode.READ).then(() => {
          const stamps = new BigUint64Array(readback.getMappedRange().slice(0));
          readback.unmap();
          readback.destroy();
          for (const { key, queryIndex } of pending) {
            const entry = this.records.get(key);
            const elapsed = Number(stamps[queryIndex + 1] - stamps[queryIndex]);
            if (entry && entry.gpuNanoseconds !== null && elapsed > 0) entry.gpuNanoseconds += elapsed;
          }
        }),
      );
    });
  }

  async collect(): Promise<void> {
    await new Promise<void>((resolve) => queueMicrotask(resolve));
    const waiting = this.inFlight.splice(0, this.inFlight.length);
    await Promise.all(waiting);
  }

  reset(): void {
    this.records.clear();
  }

  rows(): ProfileRow[] {
    return [...this.records.values()]
      .map((entry) => {
        const seconds = entry.gpuNanoseconds === null ? null : entry.gpuNanoseconds / 1e9;
        return {
          ...entry,
          milliseconds: seconds === null ? null : seconds * 1e3,
          gflopsPerSecond: seconds ? entry.flops / seconds / 1e9 : null,
          gigabytesPerSecond: seconds ? entry.bytes / seconds / 1e9 : null,
        };
      })
      .sort((a, b) => (b.gpuNanoseconds ?? b.calls) - (a.gpuNanoseconds ?? a.calls));
  }

  table(): string {
    return formatProfile(this.rows());
  }

  destroy(): void {
    this.querySet?.destroy();
    this.resolveBuffer?.destroy();
  }
}

function cell(value: number | null, digits: number): string {
  return value === null ? "-" : value.toFixed(digits);
}

export function formatProfile(rows: ProfileRow[]): string {
  const header = ["kernel", "variant", "calls", "ms", "GFLOP", "GFLOP/s", "GB/s"];
  const body = rows.map((row) => [
    row.name,
    row.variant,
    String(row.calls),
    cell(row.milliseconds, 3),
    (row.flops / 1e9).toFixed(3),
    cell(row.gflopsPerSecond, 2),
    cell(row.gigabytesPerSecond, 2),
  ]);
  const widths = header.map((title, column) =>
    Math.max(title.length, ...body.map((line) => line[column].length)),
  );
  const line = (cells: string[]) =>
    cells
      .map((text, column) => (column < 2 ? text.padEnd(widths[column]) : text.padStart(widths[column])))
      .join("  ");
  return [line(header), line(widths.map((width) => "-".repeat(width))), ...body.map(line)].join("\n");
}
