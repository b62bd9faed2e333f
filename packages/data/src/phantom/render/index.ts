/**
 * renderPhantom: parameters in, a square grayscale radiograph out (Float32Array, row-major, 0 = black,
 * 1 = white). Pure: the same parameters give the same pixels; noise comes from the seed in the
 * parameters. Passes: anatomy (soft tissue and air) -> bones -> findings -> strokes (devices and thin
 * lines) -> markers -> detector.
 */
import type { FractureFinding, PhantomParameters } from "../types.ts";
import { drawAnatomy } from "./anatomy.ts";
import { drawBones } from "./bones.ts";
import { createLayers, type Layers } from "./canvas.ts";
import { expose } from "./detector.ts";
import { drawFindings } from "./findings.ts";
import { bodyFrame } from "./frame.ts";
import { hemithorax } from "./geometry.ts";
import { drawLines } from "./lines.ts";
import { drawMarkers } from "./markers.ts";

export const PHANTOM_SIZES = [64, 128, 256, 512] as const;
export type PhantomSize = (typeof PHANTOM_SIZES)[number];

/** Layers are reused between renders of the same size: rendering thousands of images allocates little. */
const layerCache = new Map<number, Layers>();

function layersFor(size: number): Layers {
  let layers = layerCache.get(size);
  if (layers === undefined) {
    layers = createLayers(size);
    layerCache.set(size, layers);
  }
  layers.overlay.fill(0);
  layers.stroke.fill(0);
  return layers;
}

export function renderPhantom(parameters: PhantomParameters, size: number): Float32Array {
  if (!Number.isInteger(size) || size < 16 || size > 4096) {
    throw new Error(`phantom image size must be an integer from 16 to 4096, got ${size}`);
  }
  const { anatomy, habitus, acquisition, findings, devices } = parameters;
  const layers = layersFor(size);
  const frame = bodyFrame(acquisition, size);
  const right = hemithorax(anatomy, "right");
  const left = hemithorax(anatomy, "left");
  let mediastinalWidening = 1;
  const fractures: FractureFinding[] = [];
  for (const finding of findings) {
    if (finding.kind === "mediastinalWidening") mediastinalWidening = finding.widthFactor;
    if (finding.kind === "fracture") fractures.push(finding);
  }
  drawAnatomy(layers, frame, { anatomy, habitus, acquisition, right, left, mediastinalWidening });
  drawBones(layers, frame, { anatomy, habitus, acquisition, right, left, fractures });
  drawFindings(layers, frame, { findings, right, left, textureSeed: anatomy.textureSeed });
  drawLines(layers, frame, findings, devices, anatomy);
  drawMarkers(layers.overlay, size, acquisition.markers);
  return expose(layers, acquisition);
}
