/**
 * Kernel parameters for one batch of dispatches live in one uniform buffer. Each dispatch gets its
 * own 256-byte-aligned slot, written on the CPU and uploaded once, just before the batch is
 * submitted; reusing one small buffer per dispatch would be overwritten before the GPU reads it.
 */
import "./webgpu.ts";

const ARENA_BYTES = 256 * 1024;

/** Builds a uniform block of 4-byte scalars in declaration order (WGSL struct of u32/i32/f32). */
export class Params {
  private readonly words: number[] = [];
  private readonly kinds: ("u32" | "i32" | "f32")[] = [];
  u32(...values: number[]): this {
    for (const value of values) {
      if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
        throw new RangeError(`uniform u32 out of range: ${value}`);
      }
      this.words.push(value);
      this.kinds.push("u32");
    }
    return this;
  }
  i32(...values: number[]): this {
    for (const value of values) {
      this.words.push(value | 0);
      this.kinds.push("i32");
    }
    return this;
  }
  f32(...values: number[]): this {
    for (const value of values) {
      this.words.push(value);
      this.kinds.push("f32");
    }
    return this;
  }
  /** Bytes, padded to 16 as WGSL uniform structs require. */
  encode(): ArrayBuffer {
    const bytes = Math.max(16, Math.ceil((this.words.length * 4) / 16) * 16);
    const buffer = new ArrayBuffer(bytes);
    const u = new Uint32Array(buffer);
    const i = new Int32Array(buffer);
    const f = new Float32Array(buffer);
    this.words.forEach((value, index) => {
      const kind = this.kinds[index];
      if (kind === "u32") u[index] = value;
      else if (kind === "i32") i[index] = value;
      else f[index] = value;
    });
    return buffer;
  }
}

export class UniformArena {
  private readonly staging = new Uint8Array(ARENA_BYTES);
  private readonly buffer: GPUBuffer;
  private used = 0;
  private readonly alignment: number;

  constructor(private readonly device: GPUDevice) {
    this.buffer = device.createBuffer({
      size: ARENA_BYTES,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    this.alignment = device.limits.minUniformBufferOffsetAlignment;
  }

  allocate(params: Params): GPUBufferBinding {
    const bytes = new Uint8Array(params.encode());
    const offset = Math.ceil(this.used / this.alignment) * this.alignment;
    if (offset + bytes.length > ARENA_BYTES) {
      throw new Error("uniform arena overflow: flush the GPU batch before recording more dispatches");
    }
    this.staging.set(bytes, offset);
    this.used = offset + bytes.length;
    return { buffer: this.buffer, offset, size: bytes.length };
  }

  nearlyFull(): boolean {
    return this.used > ARENA_BYTES - 4096;
  }

  upload(): void {
    if (this.used > 0)
      this.device.queue.writeBuffer(this.buffer, 0, this.staging, 0, Math.ceil(this.used / 4) * 4);
  }

  reset(): void {
    this.used = 0;
  }

  destroy(): void {
    this.buffer.destroy();
  }
}
