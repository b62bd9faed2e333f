/**
 * The safetensors checkpoint format (Hugging Face): an 8-byte little-endian header length, a JSON
 * header mapping names to {dtype, shape, data_offsets}, then the raw little-endian data.
 * We read F32, F16, BF16, F64 and the integer types (converted to float32 values) and write F32/F16.
 * Files are written to a temporary name and renamed, so a crash never leaves a half-written checkpoint.
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { float16BitsToFloat32, float32ToFloat16Bits } from "../runtime/tensor.ts";

export type SafetensorsDType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

const BYTES: Record<SafetensorsDType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** The largest header we accept (the reference implementation's limit is 100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

export interface StoredTensor {
  /** dtype as stored in the file. */
  dtype: SafetensorsDType;
  shape: number[];
  /** Values converted to float32. */
  data: Float32Array;
}

export interface SafetensorsFile {
  tensors: Map<string, StoredTensor>;
  metadata: Record<string, string>;
}

export class SafetensorsError extends Error {
  constructor(path: string, message: string) {
    super(`${path}: ${message}`);
    this.name = "SafetensorsError";
  }
}

const scratch = new DataView(new ArrayBuffer(4));

function decode(dtype: SafetensorsDType, bytes: Uint8Array): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = bytes.byteLength / BYTES[dtype];
  const out = new Float32Array(count);
  for (let index = 0; index < count; index++) {
    switch (dtype) {
      case "F64":
        out[index] = view.getFloat64(index * 8, true);
        break;
      case "F32":
        out[index] = view.getFloat32(index * 4, true);
        break;
      case "F16":
        out[index] = float16BitsToFloat32(view.getUint16(index * 2, true));
        break;
      case "BF16":
        // bfloat16 is the top half of a float32.
        scratch.setUint32(0, view.getUint16(index * 2, true) << 16, true);
        out[index] = scratch.getFloat32(0, true);
        break;
      case "I64":
        out[index] = Number(view.getBigInt64(index * 8, true));
        break;
      case "I32":
        out[index] = view.getInt32(index * 4, true);
        break;
      case "I16":
        out[index] = view.getInt16(index * 2, true);
        break;
      case "I8":
        out[index] = view.getInt8(index);
        break;
      case "U8":
      case "BOOL":
        out[index] = view.getUint8(index);
        break;
    }
  }
  return out;
}

/** Parses a safetensors file; every inconsistency is an error naming the file and the tensor. */
export function readSafetensors(path: string): SafetensorsFile {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(readFileSync(path));
  } catch (error) {
    throw new SafetensorsError(path, `cannot read: ${(error as Error).message}`);
  }
  if (bytes.byteLength < 8)
    throw new SafetensorsError(path, "too short to be a safetensors file (no 8-byte header length)");
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > bytes.byteLength) {
    throw new SafetensorsError(
      path,
      `header length ${headerLength} exceeds the file (${bytes.byteLength} bytes): truncated or not safetensors`,
    );
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  } catch (error) {
    throw new SafetensorsError(path, `header is not valid JSON (${(error as Error).message})`);
  }
  if (!header || typeof header !== "object" || Array.isArray(header)) {
    throw new SafetensorsError(path, "header is not a JSON object");
  }
  const dataStart = 8 + headerLength;
  const dataLength = bytes.byteLength - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, StoredTensor>();
  const ranges: [number, number, string][] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") {
      for (const [key, value] of Object.entries((entry ?? {}) as Record<string, unknown>)) {
        if (typeof value !== "string") throw new SafetensorsError(path, `metadata "${key}" is not a string`);
        metadata[key] = value;
      }
      continue;
    }
    const info = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof info?.dtype !== "string" || !(info.dtype in BYTES)) {
      throw new SafetensorsError(
        path,
        `tensor "${name}" has unsupported dtype ${JSON.stringify(info?.dtype)}`,
      );
    }
    const dtype = info.dtype as SafetensorsDType;
    const shape = info.shape;
    if (!Array.isArray(shape) || shape.some((dim) => !Number.isInteger(dim) || dim < 0)) {
      throw new SafetensorsError(path, `tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`);
    }
    const offsets = info.data_offsets;
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((value) => Number.isInteger(value))
    ) {
      throw new SafetensorsError(
        path,
        `tensor "${name}" has invalid data_offsets ${JSON.stringify(offsets)}`,
      );
    }
    const [begin, end] = offsets as [number, number];
    const expected = (shape as number[]).reduce((product, dim) => product * dim, 1) * BYTES[dtype];
    if (begin < 0 || end < begin || end > dataLength) {
      throw new SafetensorsError(
        path,
        `tensor "${name}" data [${begin}, ${end}) lies outside the ${dataLength} data bytes (truncated file?)`,
      );
    }
    if (end - begin !== expected) {
      throw new SafetensorsError(
        path,
        `tensor "${name}" has ${end - begin} bytes but ${dtype} ${JSON.stringify(shape)} needs ${expected}`,
      );
    }
    ranges.push([begin, end, name]);
    // Copy so that the typed array is aligned whatever the file offset.
    const slice = bytes.slice(dataStart + begin, dataStart + end);
    tensors.set(name, { dtype, shape: shape as number[], data: decode(dtype, slice) });
  }
  ranges.sort((a, b) => a[0] - b[0]);
  for (let index = 1; index < ranges.length; index++) {
    if (ranges[index][0] < ranges[index - 1][1]) {
      throw new SafetensorsError(path, `tensors "${ranges[index - 1][2]}" and "${ranges[index][2]}" overlap`);
    }
  }
  return { tensors, metadata };
}

export interface TensorToWrite {
  shape: readonly number[];
  data: Float32Array;
  /** Stored dtype; default F32. */
  dtype?: "F32" | "F16";
}

/** Writes tensors (in name order) atomically: temp file, fsync, rename. */
export function writeSafetensors(
  path: string,
  tensors: Map<string, TensorToWrite> | Record<string, TensorToWrite>,
  metadata: Record<string, string> = {},
): void {
  const entries = [...(tensors instanceof Map ? tensors.entries() : Object.entries(tensors))].sort(
    ([a], [b]) => (a < b ? -1 : a > b ? 1 : 0),
  );
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  const payloads: Uint8Array[] = [];
  let offset = 0;
  for (const [name, tensor] of entries) {
    const count = tensor.shape.reduce((product, dim) => product * dim, 1);
    if (count !== tensor.data.length) {
      throw new SafetensorsError(
        path,
        `tensor "${name}" has ${tensor.data.length} values for shape [${tensor.shape.join(", ")}]`,
      );
    }
    const dtype = tensor.dtype ?? "F32";
    let payload: Uint8Array;
    if (dtype === "F32") {
      payload = new Uint8Array(Float32Array.from(tensor.data).buffer);
    } else {
      const halves = new Uint16Array(count);
      for (let index = 0; index < count; index++) halves[index] = float32ToFloat16Bits(tensor.data[index]);
      payload = new Uint8Array(halves.buffer);
    }
    header[name] = { dtype, shape: [...tensor.shape], data_offsets: [offset, offset + payload.byteLength] };
    payloads.push(payload);
    offset += payload.byteLength;
  }
  let json = JSON.stringify(header);
  // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
  json += " ".repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);
  const lengthBytes = new Uint8Array(8);
  new DataView(lengthBytes.buffer).setBigUint64(0, BigInt(headerBytes.byteLength), true);
  const temporary = `${path}.tmp-${process.pid}`;
  const fd = openSync(temporary, "w");
  try {
    writeSync(fd, lengthBytes);
    writeSync(fd, headerBytes);
    for (const payload of payloads) writeSync(fd, payload);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    unlinkSync(temporary);
    throw error;
  }
  closeSync(fd);
  renameSync(temporary, path);
}
