/**
 * The findings pass: modifies the anatomy layers where a radiologist would look.
 * - pleural effusion: fluid fills the costophrenic angle and climbs the lateral wall (meniscus), or
 *   layers as a veil on a supine film;
 * - pneumothorax: the lung falls away from the apex and chest wall; beyond the thin visceral pleural
 *   line there is only air, without vessels;
 * - consolidation and opacity: fluffy air-space filling inside one lung zone;
 * - edema: bilateral perihilar haze with upper-zone vessel prominence;
 * - lesion: a round nodule or a lobulated mass;
 * - lobar atelectasis: a dense triangle at the base (its volume loss is in the anatomy);
 * - pleural thickening and plaques along the lateral chest wall.
 * Thin line findings (septal lines, plate atelectasis) are strokes, drawn in lines.ts.
 */
import type { Finding } from "../types.ts";
import { LUNG_AIR_FRACTION } from "./anatomy.ts";
import type { Layers } from "./canvas.ts";
import type { BodyFrame } from "./frame.ts";
import {
  cavityDistance,
  type Hemithorax,
  HILUM_DEPTH,
  HILUM_LATERAL,
  lateralMargin,
  ramp,
  smoothstep,
} from "./geometry.ts";
import { valueNoise } from "./texture.ts";

/** Where a collapsing lung stays attached: near the hilum and the base. */
const COLLAPSE_ANCHOR_LATERAL = 0.18;
const COLLAPSE_ANCHOR_DEPTH = 0.82;
const PLEURAL_LINE_DENSITY = 0.18;
/** Pleural air relative to the air of normal lung at the same place, before removing parenchyma. */
const PLEURAL_AIR_GAIN = 1.3;
/** Airless collapsed lobe: denser than the heart it lies behind. */
const COLLAPSED_LOBE_DENSITY = 0.14;
const LESION_DENSITY = 1.6;
const CALCIFIED_PLAQUE_DENSITY = 0.3;

export interface FindingsPassInputs {
  findings: readonly Finding[];
  right: Hemithorax;
  left: Hemithorax;
  textureSeed: number;
}

function hasAreaEffect(finding: Finding): boolean {
  return (
    finding.kind !== "cardiomegaly" && finding.kind !== "mediastinalWidening" && finding.kind !== "fracture"
  );
}

export function drawFindings(layers: Layers, frame: BodyFrame, inputs: FindingsPassInputs): void {
  const findings = inputs.findings.filter(hasAreaEffect);
  if (findings.length === 0) return;
  const { right, left, textureSeed } = inputs;
  const { size, pixel } = frame;
  const { tissue, air, markings } = layers;
  const edge = Math.max(pixel, 0.012);
  for (let row = 0; row < size; row++) {
    let x = frame.x0 + row * frame.dxdRow;
    let y = frame.y0 + row * frame.dydRow;
    for (let col = 0; col < size; col++, x += frame.dxdCol, y += frame.dydCol) {
      const index = row * size + col;
      const sideIsRight = x < 0;
      const side = sideIsRight ? right : left;
      const u = sideIsRight ? -x : x;
      const cavity = cavityDistance(side, u, y);
      if (cavity < -0.15) continue;
      const inCavity = ramp(cavity, edge);
      let aeration = 1;
      let markingScale = 1;
      let extraTissue = 0;
      let extraMarkings = 0;
      for (const finding of findings) {
        switch (finding.kind) {
          case "pleuralEffusion": {
            if ((finding.side === "right") !== sideIsRight) break;
            let fluid: number;
            if (finding.veil > 0) {
              const veil = finding.veil * (0.35 + 0.65 * Math.min(1, Math.max(0, y / side.height)));
              const basal = smoothstep(-0.02, 0.08, y - (side.height - 0.1));
              fluid = Math.min(1, veil + basal);
            } else {
              const top = side.height - finding.height - finding.meniscus * u * u * u;
              fluid = smoothstep(-0.03, 0.09, y - top);
            }
            fluid *= inCavity;
            aeration *= 1 - fluid;
            markingScale *= 1 - fluid;
            break;
          }
          case "pneumothorax": {
            if ((finding.side === "right") !== sideIsRight) break;
            const keep = 1 - finding.collapse;
            const anchorU = COLLAPSE_ANCHOR_LATERAL;
            const anchorY = COLLAPSE_ANCHOR_DEPTH * side.height;
            const collapsed =
              cavityDistance(side, anchorU + (u - anchorU) / keep, anchorY + (y - anchorY) / keep) * keep;
            const pleuralSpace = ramp(-collapsed, pixel) * inCavity;
            // Pleural air has no parenchyma and spans the full depth of the hemithorax: it is darker than
            // aerated lung, and has no vessels. The collapsed lung is denser than normal lung.
            aeration *= 1 + pleuralSpace * (PLEURAL_AIR_GAIN / LUNG_AIR_FRACTION - 1);
            aeration *= 1 - 0.6 * finding.collapse * (1 - pleuralSpace);
            markingScale *= 1 - pleuralSpace;
            const lineWidth = Math.max(pixel * 0.7, 0.008);
            extraMarkings += PLEURAL_LINE_DENSITY * inCavity * Math.exp(-((collapsed / lineWidth) ** 2));
            break;
          }
          case "consolidation":
          case "opacity": {
            if ((finding.side === "right") !== sideIsRight) break;
            let amount = 0;
            for (const blob of finding.blobs) {
              const dx = x - blob.x;
              const dy = y - blob.y;
              amount += Math.exp((-2 * (dx * dx + dy * dy)) / (blob.radius * blob.radius));
            }
            if (amount < 0.01) break;
            amount = Math.min(amount, 1);
            const fluffy = 0.6 + 0.4 * valueNoise(x * 16, y * 16, textureSeed ^ 0x3c6ef372);
            const filled = finding.density * smoothstep(0.05, 0.6, amount * fluffy) * inCavity;
            aeration *= 1 - filled;
            markingScale *= 1 - 0.5 * filled;
            break;
          }
          case "edema": {
            const hx = u - HILUM_LATERAL;
            const hy = y - HILUM_DEPTH * side.height;
            // Bat-wing: densest at the hila, fading towards the periphery, sparing the lateral rim.
            const perihilar = Math.exp(-((hx * hx) / 0.3 + (hy * hy) / 0.45));
            const haze = finding.haze * perihilar * inCavity;
            aeration *= 1 - haze;
            // Congested upper-zone vessels ("cephalisation").
            const upper = 1 - Math.min(1, Math.max(0, y / side.height));
            markingScale *= 1 + 1.2 * finding.haze * upper;
            break;
          }
          case "lesion": {
            if ((finding.side === "right") !== sideIsRight) break;
            const dx = x - finding.x;
            const dy = y - finding.y;
            const distance = Math.sqrt(dx * dx + dy * dy);
            if (distance > finding.radius * 1.6 + pixel) break;
            const angle = Math.atan2(dy, dx);
            const radius =
              finding.radius *
              (1 +
                finding.lobulation *
                  (0.5 * Math.sin(3 * angle + finding.phase) +
                    0.3 * Math.sin(5 * angle + 2 * finding.phase)));
            const inside = ramp(radius - distance, pixel);
            const chord = Math.sqrt(Math.max(0, radius * radius - distance * distance));
            extraTissue += LESION_DENSITY * (0.3 * radius * inside + chord) * inCavity;
            aeration *= 1 - 0.45 * inside * inCavity;
            break;
          }
          case "atelectasis": {
            if (finding.pattern !== "lobar" || (finding.side === "right") !== sideIsRight) break;
            // Collapsed lower lobe: a triangle against the spine, widening down to the diaphragm.
            const top = side.height * 0.45;
            const depth = (y - top) / (side.height - top);
            if (depth <= 0) break;
            const width = 0.15 + 0.55 * Math.min(depth, 1);
            const triangle = ramp(width - u, edge * 2) * smoothstep(0, 0.15, depth) * inCavity;
            aeration *= 1 - 0.85 * triangle;
            markingScale *= 1 - 0.7 * triangle;
            extraTissue += COLLAPSED_LOBE_DENSITY * triangle;
            break;
          }
          case "pleuralThickening": {
            if ((finding.side === "right") !== sideIsRight) break;
            const wall = lateralMargin(side, y) - u;
            for (const plaque of finding.plaques) {
              const along = (y - plaque.y) / (plaque.length / 2);
              if (along <= -1 || along >= 1) continue;
              const thickness = plaque.thickness * Math.sqrt(1 - along * along);
              const inside = ramp(thickness - wall, pixel) * ramp(wall + 0.02, pixel);
              aeration *= 1 - inside;
              if (plaque.calcified) extraTissue += CALCIFIED_PLAQUE_DENSITY * inside;
            }
            break;
          }
          default:
            break;
        }
      }
      air[index] *= aeration;
      markings[index] = markings[index] * markingScale + extraMarkings;
      tissue[index] += extraTissue;
    }
  }
}
