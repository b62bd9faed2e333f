/**
 * The one tensor type: a shape, a dtype and a pooled GPU buffer. Data moves only through explicit
 * `Tensor.upload` and `download()`; ops never read back to the CPU.
 */
import "./webgpu.ts";
import type { TapeNode } from "./autograd.ts";
import type { Gpu } from "./device.ts";
import { markUnversioned, markWritten } from "./versions.ts";

/** f32 and f16 hold values; u32 holds indices (token ids, argmax positions). */
export type DType = "f32" | "f16" | "u32";
export type Shape = readonly number[];

export const BYTES_PER_ELEMENT: Record<DType, number> = { f32: 4, f16: 2, u32: 4 };

export function sizeOf(shape: Shape): number {
  let size = 1;
  for (const dim of shape) size *= dim;
  return size;
}

export function formatShape(shape: Shape): string {
  return `[${shape.join(", ")}]`;
}

/** An error that names the op and the shapes involved, so a user can find the bad call. */
export class OpError extends Error {
  constructor(op: string, message: string, operands: Record<string, Shape | Tensor> = {}) {
    const parts = Object.entries(operands).map(
      ([name, value]) => `${name}: ${formatShape(value instanceof Tensor ? value.shape : value)}`,
    );
    super(`${op}: ${message}${parts.length ? ` (${parts.join(", ")})` : ""}`);
    this.name = "OpError";
  }
}

let nextTensorId = 1;
/** The buffer `share()` is wrapping in a new tensor: already ours, so not handed out raw. */
let sharing: GPUBuffer | null = null;
/** Scopes collect tensors made inside `tidy()` so inference loops free their temporaries. */
const scopes: Set<Tensor>[] = [];

export class Tensor {
  readonly id = nextTensorId++;
  readonly size: number;
  /** Set on tensors whose gradient backward() should produce. */
  requiresGrad = false;
  /** Accumulated gradient of a leaf (parameter) after backward(). */
  grad: Tensor | null = null;
  /** The tape node that produced this tensor, when recorded for autograd. */
  node: TapeNode | null = null;
  /** Kept alive through backward() even though it is an intermediate. */
  retained = false;
  private buffer_: GPUBuffer | null;

  constructor(
    readonly gpu: Gpu,
    readonly shape: Shape,
    readonly dtype: DType = "f32",
    buffer?: GPUBuffer,
  ) {
    for (const dim of shape) {
      if (!Number.isInteger(dim) || dim < 1)
        throw new OpError("tensor", `invalid dimension ${dim}`, { shape });
    }
    if (dtype === "f16" && !gpu.features.has("shader-f16")) {
      throw new OpError(
        "tensor",
        "dtype f16 needs the adapter feature 'shader-f16', which this adapter lacks",
        {
          shape,
        },
      );
    }
    this.size = sizeOf(shape);
    const bytes = this.byteLength;
    const limit = Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize);
    if (bytes > limit) {
      throw new OpError(
        "tensor",
        `needs ${bytes} bytes, more than this adapter's largest storage buffer (${limit} bytes)`,
        { shape },
      );
    }
    // A buffer from outside the runtime may be written behind our back (runtime/versions.ts).
    if (buffer && buffer !== sharing) markUnversioned(buffer);
    this.buffer_ = buffer ?? gpu.pool.acquire(bytes);
    scopes.at(-1)?.add(this);
  }

  get byteLength(): number {
    return Math.ceil((this.size * BYTES_PER_ELEMENT[this.dtype]) / 4) * 4;
  }

  get rank(): number {
    return this.shape.length;
  }

  /**
   * The GPU buffer, handed out raw: whoever takes it may write it in ways the runtime cannot see, so
   * from now until the buffer returns to the pool it has no write version and caches of its contents
   * (conv2d's packed weights) miss on every call (runtime/versions.ts). Our own code uses `bufferFor`.
   */
  get buffer(): GPUBuffer {
    const buffer = this.live();
    markUnversioned(buffer);
    return buffer;
  }

  /**
   * The GPU buffer for one command that reads or writes it. "write" counts a write (a new write
   * version, runtime/versions.ts): call it while recording the command that writes. Every write path
   * of ours goes through here (`launch` for read_write bindings, the write helpers below).
   */
  bufferFor(access: "read" | "write"): GPUBuffer {
    const buffer = this.live();
    if (access === "write") markWritten(buffer);
    return buffer;
  }

  private live(): GPUBuffer {
    if (!this.buffer_)
      throw new OpError("tensor", `tensor #${this.id} was used after release()`, { shape: this.shape });
    return this.buffer_;
  }

  get released(): boolean {
    return this.buffer_ === null;
  }

  /** Returns the buffer to the pool. Safe even if queued GPU work still reads it (queue order). */
  release(): void {
    if (this.buffer_) {
      this.gpu.pool.release(this.buffer_);
      this.buffer_ = null;
    }
    this.grad?.release();
    this.grad = null;
    this.node = null;
  }

  /** Marks a parameter (leaf) whose gradient backward() should compute. */
  trainable(): this {
    this.requiresGrad = true;
    return this;
  }

  retain(): this {
    this.retained = true;
    return this;
  }

  static empty(gpu: Gpu, shape: Shape, dtype: DType = "f32"): Tensor {
    return new Tensor(gpu, shape, dtype);
  }

  static zeros(gpu: Gpu, shape: Shape, dtype: DType = "f32"): Tensor {
    const tensor = new Tensor(gpu, shape, dtype);
    gpu.commandEncoder().clearBuffer(tensor.bufferFor("write"), 0, tensor.byteLength);
    return tensor;
  }

  /**
   * Copies host data to a new tensor. f16 tensors take f32 values and convert them; u32 takes
   * integers. The copy is recorded in the current batch (see `write`), so uploading does not submit.
   */
  static upload(gpu: Gpu, data: ArrayLike<number>, shape: Shape, dtype: DType = "f32"): Tensor {
    const size = sizeOf(shape);
    if (data.length !== size) {
      throw new OpError("upload", `data has ${data.length} values but the shape holds ${size}`, { shape });
    }
    if (dtype === "u32") checkUnsigned("upload", data, shape);
    const tensor = new Tensor(gpu, shape, dtype);
    tensor.fill(data);
    return tensor;
  }

  /**
   * Replaces this tensor's contents with host data (same buffer). The copy is recorded in the current
   * command batch from a staging buffer, so it lands after every dispatch recorded before it and
   * before every dispatch recorded after it, and nothing is submitted.
   */
  write(data: ArrayLike<number>): void {
    if (data.length !== this.size) {
      throw new OpError("write", `data has ${data.length} values but the tensor holds ${this.size}`, {
        shape: this.shape,
      });
    }
    if (this.dtype === "u32") checkUnsigned("write", data, this.shape);
    this.fill(data);
  }

  private fill(data: ArrayLike<number>): void {
    const gpu = this.gpu;
    const bytes = this.byteLength;
    const staging = gpu.stagingBuffer(bytes);
    const range = staging.getMappedRange();
    if (this.dtype === "u32") new Uint32Array(range, 0, this.size).set(data);
    else if (this.dtype === "f32") new Float32Array(range, 0, this.size).set(data);
    else {
      const halves = new Uint16Array(range, 0, this.size);
      for (let index = 0; index < this.size; index++) halves[index] = float32ToFloat16Bits(data[index]);
    }
    staging.unmap();
    gpu.commandEncoder().copyBufferToBuffer(staging, 0, this.bufferFor("write"), 0, bytes);
    gpu.maybeFlush();
  }

  /**
   * Replaces this tensor's contents with raw bytes in its dtype's layout (f32 values, f16 bits, u32
   * words; `data.byteLength` may fall short of `byteLength` by the 2-byte pad of an odd f16 count)
   * through `queue.writeBuffer`, which copies the data before returning and needs no staging buffer.
   * The current batch is submitted first, so the write lands after every command recorded before it.
   */
  writeBytes(data: ArrayBufferView): void {
    const bytes = data.byteLength;
    if (bytes !== this.size * BYTES_PER_ELEMENT[this.dtype]) {
      throw new OpError(
        "writeBytes",
        `${bytes} bytes given for ${this.size} ${this.dtype} values (${this.size * BYTES_PER_ELEMENT[this.dtype]} bytes)`,
        { shape: this.shape },
      );
    }
    let source = new Uint8Array(data.buffer, data.byteOffset, bytes);
    if (bytes % 4 !== 0) {
      const padded = new Uint8Array(this.byteLength);
      padded.set(source);
      source = padded;
    }
    this.gpu.flush();
    this.gpu.device.queue.writeBuffer(
      this.bufferFor("write"),
      0,
      source.buffer,
      source.byteOffset,
      source.byteLength,
    );
  }

  /**
   * Records a copy of `source`'s contents into this tensor in the current batch (same byte length;
   * the shapes may differ). The one buffer-to-buffer copy between tensors.
   */
  copyFrom(source: Tensor): this {
    if (source.byteLength !== this.byteLength) {
      throw new OpError("copy", `byte lengths differ (${source.byteLength} vs ${this.byteLength})`, {
        source,
        target: this,
      });
    }
    this.gpu
      .commandEncoder()
      .copyBufferToBuffer(source.bufferFor("read"), 0, this.bufferFor("write"), 0, this.byteLength);
    this.gpu.maybeFlush();
    return this;
  }

  static scalar(gpu: Gpu, value: number): Tensor {
    return Tensor.upload(gpu, [value], [1]);
  }

  /** Waits for queued work and copies the tensor back (as float32 values; u32 exact below 2^24). */
  async download(): Promise<Float32Array> {
    const gpu = this.gpu;
    const bytes = this.byteLength;
    const staging = gpu.device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    gpu.commandEncoder().copyBufferToBuffer(this.bufferFor("read"), 0, staging, 0, bytes);
    gpu.flush();
    try {
      await gpu.wait(() => staging.mapAsync(GPUMapMode.READ));
    } catch (error) {
      gpu.throwPendingErrors();
      throw error;
    }
    const raw = staging.getMappedRange().slice(0);
    staging.unmap();
    staging.destroy();
    gpu.throwPendingErrors();
    if (this.dtype === "f32") return new Float32Array(raw, 0, this.size);
    if (this.dtype === "u32") return Float32Array.from(new Uint32Array(raw, 0, this.size));
    const halves = new Uint16Array(raw, 0, this.size);
    const result = new Float32Array(this.size);
    for (let index = 0; index < this.size; index++) result[index] = float16BitsToFloat32(halves[index]);
    return result;
  }

  /**
   * Moves this tensor's buffer into a new tensor of another shape (no copy); this tensor is released.
   * For results the caller owns, e.g. a gradient whose shape differs from its input's only in rank.
   */
  reshapeInto(shape: Shape): Tensor {
    if (sizeOf(shape) !== this.size) {
      throw new OpError("reshape", `sizes differ (${this.size} vs ${sizeOf(shape)})`, {
        from: this.shape,
        to: shape,
      });
    }
    const moved = this.share(shape);
    this.buffer_ = null;
    this.node = null;
    return moved;
  }

  /** A view with another shape of the same size; shares the buffer (no copy). */
  reshapeView(shape: Shape): Tensor {
    if (sizeOf(shape) !== this.size) {
      throw new OpError("reshape", `sizes differ (${this.size} vs ${sizeOf(shape)})`, {
        from: this.shape,
        to: shape,
      });
    }
    return this.share(shape).asAliasOf(this);
  }

  /** A new tensor over this tensor's buffer (keeping its write version). */
  private share(shape: Shape): Tensor {
    sharing = this.live();
    try {
      return new Tensor(this.gpu, shape, this.dtype, sharing);
    } finally {
      sharing = null;
    }
  }

  private aliasOf: Tensor | null = null;
  private asAliasOf(base: Tensor): this {
    this.aliasOf = base;
    // An alias never returns the buffer to the pool itself; the base tensor owns it.
    this.release = () => {
      this.node = null;
    };
    return this;
  }

  /** The tensor that owns this tensor's buffer. */
  get owner(): Tensor {
    return this.aliasOf ? this.aliasOf.owner : this;
  }

  toString(): string {
    return `Tensor#${this.id}(${formatShape(this.shape)}, ${this.dtype})`;
  }
}

/**
 * Runs `fn`, then releases every tensor it created except those it returns (and retained ones and
 * parameters, which pass to the enclosing scope). When `fn` throws, every tensor it created is
 * released the same way (none is returned) and the error is rethrown.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (error) {
    scopes.pop();
    settle(scope, new Set());
    throw error;
  }
  scopes.pop();
  const keep = new Set<Tensor>();
  const visit = (value: unknown) => {
    if (value instanceof Tensor) keep.add(value.owner);
    else if (Array.isArray(value)) value.forEach(visit);
    else if (value && typeof value === "object" && !(value instanceof Promise))
      Object.values(value).forEach(visit);
  };
  visit(result);
  settle(scope, keep);
  return result;
}

/** Releases a finished scope's tensors except those kept, retained or trainable (passed up instead). */
function settle(scope: Set<Tensor>, keep: Set<Tensor>): void {
  for (const tensor of scope) {
    if (!keep.has(tensor.owner) && !tensor.retained && !tensor.requiresGrad) tensor.release();
    else scopes.at(-1)?.add(tensor);
  }
}

function checkUnsigned(op: string, data: ArrayLike<number>, shape: Shape): void {
  for (let index = 0; index < data.length; index++) {
    const value = data[index];
    if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
      throw new OpError(op, `u32 tensor given ${value} at index ${index}, not an unsigned integer`, {
        shape,
      });
    }
  }
}

const floatView = new Float32Array(1);
const intView = new Uint32Array(floatView.buffer);

export function float32ToFloat16Bits(value: number): number {
  floatView[0] = value;
  const bits = intView[0];
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  let mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  let halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    if (halfExponent < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - halfExponent;
    let half = mantissa >>> shift;
    const remainder = mantissa & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (remainder > halfway || (remainder === halfway && half & 1)) half++;
    return sign | half;
  }
  let half = (halfExponent << 10) | (mantissa >>> 13);
  const remainder = mantissa & 0x1fff;
  if (remainder > 0x1000 || (remainder === 0x1000 && half & 1)) half++;
  halfExponent = half >>> 10;
  return sign | half;
}

export function float16BitsToFloat32(half: number): number {
  const sign = half & 0x8000 ? -1 : 1;
  const exponent = (half >>> 10) & 0x1f;
  const mantissa = half & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (mantissa / 1024);
  if (exponent === 0x1f) return mantissa ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * 2 ** (exponent - 15) * (1 + mantissa / 1024);
}
