/**
 * Streaming safetensors reading for published checkpoints (a 3.5 GB UNet, sharded text encoders).
 *
 * `@cxr/kernels`' `readSafetensors` reads the whole file into memory and decodes every tensor, which
 * is right for our own small checkpoints but needs the file's size plus its f32 copy for a published
 * one. Here only the JSON header is parsed up front; each tensor is then read on demand with
 * positioned reads (`fs.readSync(fd, buffer, 0, length, position)`), so host memory holds one
 * tensor's bytes and its decoded copy at a time. Sharded checkpoints (`*.safetensors.index.json`,
 * `weight_map: name -> shard file`) are one `WeightSource` over several files.
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync } from "node:fs";
import { endianness } from "node:os";
import { basename, dirname, join } from "node:path";
import { float16BitsToFloat32, float32ToFloat16Bits } from "@cxr/kernels";

/** The dtypes a published diffusers / transformers checkpoint stores weights in. */
export type WeightDType = "F32" | "F16" | "BF16";
/**
 * Integer tensors appear beside the weights in some checkpoints (transformers' CLIP saved the
 * `position_ids` buffer as I64): listed from the header, refused if read as a weight.
 */
export type IntegerDType = "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";
export type StoredDType = WeightDType | IntegerDType;
const FLOAT_BYTES: Record<WeightDType, number> = { F32: 4, F16: 2, BF16: 2 };
const BYTES: Record<StoredDType, number> = { ...FLOAT_BYTES, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
export const isWeightDType = (dtype: StoredDType): dtype is WeightDType => dtype in FLOAT_BYTES;

/** The reference implementation's header limit. */
const MAX_HEADER_BYTES = 100_000_000;
/** Positioned reads are issued in chunks of at most this many bytes (readSync's int32 limit). */
const READ_CHUNK = 1 << 30;

if (endianness() !== "LE") {
  // Typed-array views over file bytes assume a little-endian host, as safetensors data is.
  throw new Error("safetensors-stream: big-endian hosts are not supported");
}

export class WeightsError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
    this.name = "WeightsError";
  }
}

export interface WeightEntry {
  name: string;
  dtype: StoredDType;
  shape: number[];
  /** The file holding it (a shard for sharded checkpoints). */
  file: string;
  /** Absolute byte offsets in `file`. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  entries: Map<string, WeightEntry>;
  metadata: Record<string, string>;
  /** Bytes of tensor data the header describes. */
  dataBytes: number;
}

function readExactly(
  fd: number,
  file: string,
  length: number,
  position: number,
  into: Uint8Array = new Uint8Array(length),
): Uint8Array {
  const bytes = into.subarray(0, length);
  let done = 0;
  while (done < length) {
    const chunk = Math.min(READ_CHUNK, length - done);
    const read = readSync(fd, bytes, done, chunk, position + done);
    if (read === 0) {
      throw new WeightsError(
        file,
        `file ended at byte ${position + done}, expected ${length} bytes from ${position}`,
      );
    }
    done += read;
  }
  return bytes;
}

/** Parses and validates the header of one safetensors file without reading its data. */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (error) {
    throw new WeightsError(file, `cannot open: ${(error as Error).message}`);
  }
  try {
    const fileBytes = fstatSync(fd).size;
    if (fileBytes < 8)
      throw new WeightsError(file, "too short to be a safetensors file (no 8-byte header length)");
    const headerLength = Number(new DataView(readExactly(fd, file, 8, 0).buffer).getBigUint64(0, true));
    if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > fileBytes) {
      throw new WeightsError(
        file,
        `header length ${headerLength} exceeds the file (${fileBytes} bytes): truncated or not safetensors`,
      );
    }
    let header: unknown;
    try {
      header = JSON.parse(new TextDecoder().decode(readExactly(fd, file, headerLength, 8)));
    } catch (error) {
      throw new WeightsError(file, `header is not valid JSON (${(error as Error).message})`);
    }
    if (!header || typeof header !== "object" || Array.isArray(header)) {
      throw new WeightsError(file, "header is not a JSON object");
    }
    const dataStart = 8 + headerLength;
    const dataLength = fileBytes - dataStart;
    const entries = new Map<string, WeightEntry>();
    const metadata: Record<string, string> = {};
    for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
      if (name === "__metadata__") {
        for (const [key, item] of Object.entries((value ?? {}) as Record<string, unknown>)) {
          if (typeof item === "string") metadata[key] = item;
        }
        continue;
      }
      const info = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | null;
      const dtype = info?.dtype;
      if (typeof dtype !== "string" || !(dtype in BYTES)) {
        throw new WeightsError(
          file,
          `tensor "${name}" has unsupported dtype ${JSON.stringify(dtype)} (weights: F32, F16, BF16; integer buffers: ${Object.keys(BYTES).slice(3).join(", ")})`,
        );
      }
      const shape = info?.shape;
      if (!Array.isArray(shape) || shape.some((dim) => !Number.isInteger(dim) || dim < 0)) {
        throw new WeightsError(file, `tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`);
      }
      const offsets = info?.data_offsets;
      if (
        !Array.isArray(offsets) ||
        offsets.length !== 2 ||
        !offsets.every((item) => Number.isInteger(item))
      ) {
        throw new WeightsError(file, `tensor "${name}" has invalid data_offsets ${JSON.stringify(offsets)}`);
      }
      const [begin, end] = offsets as [number, number];
      const needed =
        (shape as number[]).reduce((product, dim) => product * dim, 1) * BYTES[dtype as StoredDType];
      if (begin < 0 || end < begin || end > dataLength) {
        throw new WeightsError(
          file,
          `tensor "${name}" data [${begin}, ${end}) lies outside the ${dataLength} data bytes (truncated file?)`,
        );
      }
      if (end - begin !== needed) {
        throw new WeightsError(
          file,
          `tensor "${name}" has ${end - begin} bytes but ${dtype} ${JSON.stringify(shape)} needs ${needed}`,
        );
      }
      entries.set(name, {
        name,
        dtype: dtype as StoredDType,
        shape: shape as number[],
        file,
        begin: dataStart + begin,
        end: dataStart + end,
      });
    }
    const sorted = [...entries.values()].sort((a, b) => a.begin - b.begin);
    for (let index = 1; index < sorted.length; index++) {
      if (sorted[index].begin < sorted[index - 1].end) {
        throw new WeightsError(
          file,
          `tensors "${sorted[index - 1].name}" and "${sorted[index].name}" overlap`,
        );
      }
    }
    return { entries, metadata, dataBytes: dataLength };
  } finally {
    closeSync(fd);
  }
}

// f16 -> f32 through a 65,536-entry table: one lookup per value instead of bit twiddling.
let halfTable: Float32Array | null = null;
function halfToFloatTable(): Float32Array {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let bits = 0; bits < 65536; bits++) halfTable[bits] = float16BitsToFloat32(bits);
  }
  return halfTable;
}

/**
 * Decodes raw little-endian bytes of `dtype` to float32, into `out` when given (it must hold at
 * least the values; a view of the right length is returned), else into a fresh array.
 */
export function decodeToFloat32(dtype: WeightDType, bytes: Uint8Array, out?: Float32Array): Float32Array {
  const count = bytes.byteLength / (dtype === "F32" ? 4 : 2);
  const target = out ? out.subarray(0, count) : new Float32Array(count);
  switch (dtype) {
    case "F32":
      new Uint8Array(target.buffer, target.byteOffset, bytes.byteLength).set(bytes);
      return target;
    case "F16": {
      const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, count);
      const table = halfToFloatTable();
      for (let index = 0; index < count; index++) target[index] = table[halves[index]];
      return target;
    }
    case "BF16": {
      // bfloat16 is the top half of a float32.
      const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, count);
      const words = new Uint32Array(target.buffer, target.byteOffset, count);
      for (let index = 0; index < count; index++) words[index] = halves[index] << 16;
      return target;
    }
  }
}

/** Decodes raw bytes of `dtype` to IEEE half bits (F16 kept as is; F32 and BF16 rounded to nearest even). */
export function decodeToFloat16(dtype: WeightDType, bytes: Uint8Array): Uint16Array {
  if (dtype === "F16") {
    const out = new Uint16Array(bytes.byteLength / 2);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
  const values = decodeToFloat32(dtype, bytes);
  const out = new Uint16Array(values.length);
  for (let index = 0; index < values.length; index++) out[index] = float32ToFloat16Bits(values[index]);
  return out;
}

/** One weight as read: shape, the dtype it was stored in, and its values. */
export interface LoadedWeight<T extends Float32Array | Uint16Array = Float32Array> {
  shape: number[];
  storedAs: WeightDType;
  data: T;
}

/**
 * The weights of one component: one safetensors file or the shards of an index. Names and shapes
 * come from the headers; values are read one tensor at a time with positioned reads.
 */
export interface ReadOptions {
  /**
   * Decode into a buffer the source keeps and reuses: the returned array is only valid until the
   * next read. Loading a module this way holds one tensor's bytes and one f32 copy at any time
   * (sized by the largest tensor), and creates no garbage per tensor.
   */
  reuse?: boolean;
}

export class WeightSource {
  private readonly descriptors = new Map<string, number>();
  private scratchBytes = new Uint8Array(0);
  private scratchValues = new Float32Array(0);

  private constructor(
    /** The file that names the weights (the .safetensors file, or the index JSON). */
    readonly path: string,
    readonly entries: ReadonlyMap<string, WeightEntry>,
    readonly metadata: Record<string, string>,
  ) {}

  /** A single safetensors file. */
  static openFile(path: string): WeightSource {
    const header = readSafetensorsHeader(path);
    return new WeightSource(path, header.entries, header.metadata);
  }

  /**
   * A sharded checkpoint: `index.json` = { metadata?, weight_map: { name: "shard.safetensors" } }.
   * Every shard must exist and hold exactly the names the index gives it.
   */
  static openIndex(indexPath: string): WeightSource {
    let index: unknown;
    try {
      index = JSON.parse(readFileSync(indexPath, "utf8"));
    } catch (error) {
      throw new WeightsError(indexPath, `cannot read the shard index: ${(error as Error).message}`);
    }
    const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
    if (!weightMap || typeof weightMap !== "object" || Array.isArray(weightMap)) {
      throw new WeightsError(
        indexPath,
        `key "weight_map" must be an object mapping tensor names to shard files`,
      );
    }
    const shards = new Map<string, string[]>();
    for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
      if (typeof shard !== "string" || shard.includes("/") || shard.includes("\\") || shard === "..") {
        throw new WeightsError(
          indexPath,
          `weight_map["${name}"] must be a shard file name, got ${JSON.stringify(shard)}`,
        );
      }
      shards.set(shard, [...(shards.get(shard) ?? []), name]);
    }
    const directory = dirname(indexPath);
    const missing = [...shards.keys()].filter((shard) => !existsSync(join(directory, shard)));
    if (missing.length > 0) {
      throw new WeightsError(
        indexPath,
        `missing shard${missing.length > 1 ? "s" : ""} ${missing.map((shard) => join(directory, shard)).join(", ")} (named in weight_map for ${shards.get(missing[0])?.length} tensors, e.g. "${shards.get(missing[0])?.[0]}")`,
      );
    }
    const entries = new Map<string, WeightEntry>();
    for (const [shard, names] of shards) {
      const path = join(directory, shard);
      const header = readSafetensorsHeader(path);
      const problems: string[] = [];
      for (const name of names) {
        const entry = header.entries.get(name);
        if (!entry) problems.push(`"${name}" is mapped to ${shard} but not in it`);
        else entries.set(name, entry);
      }
      for (const name of header.entries.keys()) {
        if ((weightMap as Record<string, unknown>)[name] !== shard) {
          problems.push(`"${name}" is in ${shard} but weight_map does not map it there`);
        }
      }
      if (problems.length > 0)
        throw new WeightsError(indexPath, `shard ${basename(path)}: ${problems.join("; ")}`);
    }
    const metadata: Record<string, string> = {};
    const indexMetadata = (index as { metadata?: unknown }).metadata;
    if (indexMetadata && typeof indexMetadata === "object") {
      for (const [key, value] of Object.entries(indexMetadata)) metadata[key] = String(value);
    }
    return new WeightSource(indexPath, entries, metadata);
  }

  get names(): string[] {
    return [...this.entries.keys()];
  }

  /** Stored dtypes and how many tensors have each. */
  dtypes(): Map<StoredDType, number> {
    const counts = new Map<StoredDType, number>();
    for (const entry of this.entries.values()) counts.set(entry.dtype, (counts.get(entry.dtype) ?? 0) + 1);
    return counts;
  }

  get byteLength(): number {
    let total = 0;
    for (const entry of this.entries.values()) total += entry.end - entry.begin;
    return total;
  }

  private descriptor(file: string): number {
    let fd = this.descriptors.get(file);
    if (fd === undefined) {
      try {
        fd = openSync(file, "r");
      } catch (error) {
        throw new WeightsError(file, `cannot open: ${(error as Error).message}`);
      }
      this.descriptors.set(file, fd);
    }
    return fd;
  }

  private entry(name: string): WeightEntry {
    const entry = this.entries.get(name);
    if (!entry) throw new WeightsError(this.path, `no tensor "${name}"`);
    return entry;
  }

  /** The stored bytes of one tensor (a positioned read of exactly its range). */
  readBytes(name: string, options: ReadOptions = {}): Uint8Array {
    const entry = this.entry(name);
    const length = entry.end - entry.begin;
    let into: Uint8Array | undefined;
    if (options.reuse) {
      // 8-byte aligned so that typed-array views of any dtype fit.
      if (this.scratchBytes.byteLength < length)
        this.scratchBytes = new Uint8Array(Math.ceil(length / 8) * 8);
      into = this.scratchBytes;
    }
    return readExactly(this.descriptor(entry.file), entry.file, length, entry.begin, into);
  }

  private weightEntry(name: string): WeightEntry & { dtype: WeightDType } {
    const entry = this.entry(name);
    if (!isWeightDType(entry.dtype)) {
      throw new WeightsError(
        entry.file,
        `tensor "${name}" is stored as ${entry.dtype}, not a floating-point weight (F32, F16, BF16)`,
      );
    }
    return entry as WeightEntry & { dtype: WeightDType };
  }

  /** One tensor as float32, whatever float dtype it was stored as. */
  read(name: string, options: ReadOptions = {}): LoadedWeight<Float32Array> {
    const entry = this.weightEntry(name);
    const bytes = this.readBytes(name, options);
    let out: Float32Array | undefined;
    if (options.reuse) {
      const count = entry.shape.reduce((product, dim) => product * dim, 1);
      if (this.scratchValues.length < count) this.scratchValues = new Float32Array(count);
      out = this.scratchValues;
    }
    return { shape: entry.shape, storedAs: entry.dtype, data: decodeToFloat32(entry.dtype, bytes, out) };
  }

  /** One tensor as IEEE half bits (for f16 weights on adapters with shader-f16). */
  readHalf(name: string): LoadedWeight<Uint16Array> {
    const entry = this.weightEntry(name);
    return {
      shape: entry.shape,
      storedAs: entry.dtype,
      data: decodeToFloat16(entry.dtype, this.readBytes(name)),
    };
  }

  /** Closes the file descriptors (reads reopen them) and drops the reuse buffers. */
  close(): void {
    for (const fd of this.descriptors.values()) closeSync(fd);
    this.descriptors.clear();
    this.scratchBytes = new Uint8Array(0);
    this.scratchValues = new Float32Array(0);
  }
}
