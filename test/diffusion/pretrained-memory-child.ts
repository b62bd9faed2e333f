/**
 * Run as a child process by pretrained-folder.test.ts: reads every tensor of a safetensors file
 * and prints the growth of the resident set over the baseline taken after imports: the largest of
 * the samples taken after each tensor (current RSS; Bun's maxRSS already holds its start-up peak,
 * which would hide the growth), and the growth of the kernel's peak (maxRSS) as a second figure.
 * argv: <file> <mode>: "stream" reads as loadModuleWeights does (positioned reads into reused
 * buffers); "whole" is the control: the file read at once (readFileSync), then each tensor decoded into one reused buffer.
 */
import { readFileSync } from "node:fs";
import {
  decodeToFloat32,
  readSafetensorsHeader,
  WeightSource,
} from "../../packages/diffusion/src/pretrained/safetensors-stream.ts";

const [file, mode] = process.argv.slice(2);
const peakBytes = () => process.resourceUsage().maxRSS * 1024;
const baselinePeak = peakBytes();
const baseline = process.memoryUsage().rss;
let sampled = baseline;
const sample = () => {
  sampled = Math.max(sampled, process.memoryUsage().rss);
};
const started = performance.now();
let checksum = 0;
let largest = 0;
const visit = (data: Float32Array) => {
  checksum += data[0] + data[data.length - 1];
  largest = Math.max(largest, data.byteLength);
  sample();
};
if (mode === "stream") {
  const source = WeightSource.openFile(file);
  for (const name of source.names) visit(source.read(name, { reuse: true }).data);
  source.close();
} else {
  const bytes = new Uint8Array(readFileSync(file));
  let values = new Float32Array(0);
  for (const entry of readSafetensorsHeader(file).entries.values()) {
    if (entry.dtype === "F32" || entry.dtype === "F16" || entry.dtype === "BF16") {
      const count = (entry.end - entry.begin) / (entry.dtype === "F32" ? 4 : 2);
      if (values.length < count) values = new Float32Array(count);
      visit(decodeToFloat32(entry.dtype, bytes.subarray(entry.begin, entry.end), values));
    }
  }
}
process.stdout.write(
  `${JSON.stringify({ growth: sampled - baseline, peakGrowth: peakBytes() - baselinePeak, checksum, largest, ms: performance.now() - started })}\n`,
);
