/**
 * The bone pass: thoracic spine, posterior and anterior ribs (with fractures), calcified costal
 * cartilage, clavicles, scapulae and humeral heads. Ribs are one family of curves per side, offset
 * vertically, so a pixel finds its rib by arithmetic instead of by testing every rib.
 */
import type { Acquisition, Anatomy, FractureFinding, Habitus } from "../types.ts";
import type { Layers } from "./canvas.ts";
import type { BodyFrame } from "./frame.ts";
import { diaphragmDepth, type Hemithorax, ramp, smoothstep } from "./geometry.ts";
import { valueNoise } from "./texture.ts";

const SPINE_DENSITY = 0.1;
const RIB_DENSITY = 0.16;
const ANTERIOR_RIB_DENSITY = 0.09;
const CARTILAGE_DENSITY = 0.16;
const CLAVICLE_DENSITY = 0.3;
const SCAPULA_DENSITY = 0.07;
const HUMERUS_DENSITY = 0.32;
/** Vertebral body height including its disc, body units. */
const VERTEBRA_PITCH = 0.16;

/** A tube seen side-on: dense cortex at the rims, lighter marrow between. */
function corticalProfile(offset: number): number {
  if (offset >= 1) return 0;
  const chord = Math.sqrt(1 - offset * offset);
  return 0.55 * chord + 0.45 * Math.exp(-(((1 - offset) / 0.22) ** 2));
}

/** Posterior ribs leave the spine slightly upwards, then fall laterally. */
function posteriorRibDrop(u: number, slope: number): number {
  return slope * (1.1 * u * u - 0.35 * u);
}

export interface BonePassInputs {
  anatomy: Anatomy;
  habitus: Habitus;
  acquisition: Acquisition;
  right: Hemithorax;
  left: Hemithorax;
  fractures: readonly FractureFinding[];
}

export function drawBones(layers: Layers, frame: BodyFrame, inputs: BonePassInputs): void {
  const { anatomy, habitus, acquisition, right, left, fractures } = inputs;
  const { size, pixel } = frame;
  const bone = layers.bone;
  const ribs = anatomy.ribs;
  const density = habitus.boneDensity;
  const lungHeight = Math.max(right.height, left.height);
  const spineHalf = anatomy.spineHalfWidth;
  const ap = acquisition.view === "AP";
  // On AP films the clavicles project higher and the scapulae over the lungs.
  const clavicleY = anatomy.clavicleY - (ap ? 0.1 : 0);
  const anteriorSpacing = ribs.spacing * 1.25;
  const anteriorFirst = ribs.firstY + 0.3;
  const seed = anatomy.textureSeed ^ 0x5bd1e995;
  const cartilage = habitus.cartilageCalcification;
  for (let row = 0; row < size; row++) {
    let x = frame.x0 + row * frame.dxdRow;
    let y = frame.y0 + row * frame.dydRow;
    for (let col = 0; col < size; col++, x += frame.dxdCol, y += frame.dydCol) {
      const u = x < 0 ? -x : x;
      const sideIsRight = x < 0;
      let value = 0;

      // Spine: vertebral bodies with disc spaces, pedicles as cortical rings.
      if (u < spineHalf + 2 * pixel && y > -1.2 && y < lungHeight + 1.5) {
        const level = (y + 1.2) / VERTEBRA_PITCH;
        const phase = level - Math.floor(level);
        const disc =
          ramp((phase - 0.14) * VERTEBRA_PITCH, pixel) * ramp((0.98 - phase) * VERTEBRA_PITCH, pixel);
        const body = ramp(spineHalf - u, pixel) * (0.6 + 0.4 * disc);
        value += SPINE_DENSITY * body * (0.7 + 0.3 * corticalProfile(u / spineHalf));
        const pedicleX = (u - spineHalf * 0.72) / (spineHalf * 0.22);
        const pedicleY = (phase - 0.45) / 0.2;
        const pedicle = Math.sqrt(pedicleX * pedicleX + pedicleY * pedicleY);
        if (pedicle < 1.2) value += 0.12 * SPINE_DENSITY * Math.exp(-(((pedicle - 0.85) / 0.25) ** 2));
      }

      // Posterior ribs.
      if (u > 0.06 && u < 1.2) {
        const drop = posteriorRibDrop(u, ribs.slope);
        const t = (y - ribs.firstY - drop) / ribs.spacing;
        const k = Math.round(t);
        if (k >= 0 && k < ribs.count) {
          let offset = (t - k) * ribs.spacing;
          let visible = smoothstep(0.06, 0.16, u) * smoothstep(1.2, 1.04, u);
          // The lowest ribs are short and hidden in the dense upper abdomen.
          if (k >= ribs.count - 2) visible *= smoothstep(0.2, 0.8, u) * (k === ribs.count - 1 ? 0.5 : 0.8);
          // The first rib is short: it turns forward under the clavicle.
          if (k === 0) visible *= smoothstep(0.85, 0.6, u);
          for (const finding of fractures) {
            if ((finding.side === "right") !== sideIsRight) continue;
            for (const fracture of finding.fractures) {
              if (fracture.rib !== k) continue;
              const gap = u - fracture.position;
              if (gap > 0) offset -= fracture.displacement;
              visible *= 1 - ramp(0.012 - Math.abs(gap), pixel * 0.7);
            }
          }
          const halfWidth = ribs.halfWidth * (1 + 0.25 * u);
          const distance = Math.abs(offset);
          if (distance < halfWidth + pixel) {
            const coverage = ramp(halfWidth - distance, pixel);
            value +=
              RIB_DENSITY * visible * coverage * corticalProfile(Math.min(distance / halfWidth, 0.999));
          }
        }
      }

      // Anterior ribs run down and inwards from the chest wall to the costal cartilages.
      if (u > 0.15 && u < 1.1) {
        const t = (y - anteriorFirst + 0.55 * (u - 1)) / anteriorSpacing;
        const k = Math.round(t);
        if (k >= 0 && k < 7) {
          const offset = Math.abs((t - k) * anteriorSpacing);
          const halfWidth = ribs.halfWidth * 1.1;
          if (offset < halfWidth + pixel) {
            const coverage =
              ramp(halfWidth - offset, pixel) * corticalProfile(Math.min(offset / halfWidth, 0.999));
            const medialEnd = 0.42 + 0.03 * k;
            const bony = smoothstep(medialEnd - 0.02, medialEnd + 0.08, u) * smoothstep(1.1, 0.95, u);
            value += ANTERIOR_RIB_DENSITY * bony * coverage;
            if (cartilage > 0 && u < medialEnd + 0.02) {
              const patchy = valueNoise(u * 25, y * 25, seed);
              value += CARTILAGE_DENSITY * cartilage * coverage * smoothstep(0.55, 0.8, patchy) * (1 - bony);
            }
          }
        }
      }

      // Clavicles: S-shaped, from the sternal end up and out to the acromion.
      if (u > 0.1 && u < 1.35) {
        const center = clavicleY - 0.24 * (u - 0.12) + 0.07 * Math.sin((Math.PI * (u - 0.12)) / 1.2);
        const halfWidth = 0.052 - 0.016 * u;
        const offset = Math.abs(y - center);
        if (offset < halfWidth + pixel) {
          const fade = smoothstep(0.1, 0.16, u);
          value +=
            CLAVICLE_DENSITY *
            fade *
            ramp(halfWidth - offset, pixel) *
            corticalProfile(Math.min(offset / halfWidth, 0.999));
        }
      }

      // Scapulae: projected over the lateral upper lungs on AP films, lateral to them on PA films.
      const scapulaBorder = (ap ? 0.78 : 1.08) + 0.12 * (y / lungHeight);
      if (y > -0.05 && y < lungHeight * 0.65 && u > scapulaBorder - pixel) {
        const inside = ramp(u - scapulaBorder, pixel) * smoothstep(lungHeight * 0.65, lungHeight * 0.4, y);
        const rim = Math.exp(-(((u - scapulaBorder - 0.02) / 0.02) ** 2));
        value += SCAPULA_DENSITY * inside * (1 + 1.5 * rim);
      }

      // Humeral heads at the shoulders.
      const hx = (u - 1.34) / 0.17;
      const hy = (y + 0.02) / 0.17;
      const head = Math.sqrt(hx * hx + hy * hy);
      if (head < 1.05) value += HUMERUS_DENSITY * ramp((1 - head) * 0.17, pixel) * corticalProfile(head);

      // Bone over the upper abdomen is barely seen: the abdomen is already dense.
      const diaphragm = diaphragmDepth(sideIsRight ? right : left, u);
      const abdominal = smoothstep(diaphragm - 0.02, diaphragm + 0.2, y);
      bone[index(row, col, size)] = value * density * (1 - 0.6 * abdominal);
    }
  }
}

function index(row: number, col: number, size: number): number {
  return row * size + col;
}
