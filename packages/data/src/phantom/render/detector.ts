/**
 * From attenuation to display values: the detector's exposure curve (with the anode heel effect),
 * windowing and gamma, quantum noise, detector blur, vendor edge enhancement and the collimator's
 * unexposed border. Institutions differ in every one of these (see ../institutions.ts).
 */
import { Rng } from "../../random.ts";
import type { Acquisition } from "../types.ts";
import { gaussianBlur, type Layers } from "./canvas.ts";

/** Below this sigma (pixels) a blur changes nothing an 8- or 16-bit PNG would keep. */
const NEGLIGIBLE_BLUR_PIXELS = 0.25;
const COLLIMATED_LEVEL = 0.92;

export function expose(layers: Layers, acquisition: Acquisition): Float32Array {
  const { size, tissue, air, markings, bone, overlay } = layers;
  const image = new Float32Array(size * size);
  const { gain, gamma, windowLow, windowHigh, heel } = acquisition.exposure;
  const windowScale = 1 / (windowHigh - windowLow);
  const noise = new Rng(acquisition.noise.seed);
  const sigma = acquisition.noise.sigma;
  // Box-Muller gives two independent normals per pair of uniforms; the second is kept for the next pixel.
  let spare = 0;
  let hasSpare = false;
  for (let row = 0; row < size; row++) {
    // The anode heel effect: exposure falls off along the tube axis (top to bottom of the film).
    const rowGain = gain * (1 + heel * ((row + 0.5) / size - 0.5));
    for (let col = 0; col < size; col++) {
      const index = row * size + col;
      let attenuation = tissue[index] - air[index] + markings[index] + bone[index] + overlay[index];
      if (attenuation < 0) attenuation = 0;
      let value = (1 - Math.exp(-rowGain * attenuation) - windowLow) * windowScale;
      value = value <= 0 ? 0 : value >= 1 ? 1 : value ** gamma;
      // Fewer photons reach the detector behind dense tissue, so bright regions are noisier.
      let normal: number;
      if (hasSpare) {
        normal = spare;
      } else {
        const radius = Math.sqrt(-2 * Math.log(1 - noise.next()));
        const angle = 2 * Math.PI * noise.next();
        normal = radius * Math.cos(angle);
        spare = radius * Math.sin(angle);
      }
      hasSpare = !hasSpare;
      value += sigma * (0.4 + 0.6 * Math.sqrt(value)) * normal;
      image[index] = value;
    }
  }
  const scratch = layers.stroke;
  const blurPixels = acquisition.blur * size;
  if (blurPixels >= NEGLIGIBLE_BLUR_PIXELS) gaussianBlur(image, size, blurPixels, scratch);
  scratch.fill(0);
  const { amount, radius } = acquisition.sharpen;
  if (amount > 0) {
    const smooth = image.slice();
    gaussianBlur(smooth, size, Math.max(radius * size, 1), scratch);
    scratch.fill(0);
    for (let i = 0; i < image.length; i++) image[i] += amount * (image[i] - smooth[i]);
  }
  const margin = Math.round(acquisition.collimation * size);
  for (let row = 0; row < size; row++) {
    for (let col = 0; col < size; col++) {
      const index = row * size + col;
      let value = image[index];
      if (row < margin || col < margin || row >= size - margin || col >= size - margin)
        value = COLLIMATED_LEVEL;
      image[index] = value <= 0 ? 0 : Math.min(value, 1);
    }
  }
  return image;
}
