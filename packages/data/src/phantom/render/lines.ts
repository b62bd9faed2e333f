/**
 * The stroke pass: support devices (tubes, lines, electrodes, pacemaker, sternotomy wires) and thin
 * line findings (Kerley B septal lines of edema, plate-like atelectasis). Strokes are rasterised along
 * their own length, so their cost does not grow with the image area.
 */
import type { Anatomy, Device, Finding, Segment } from "../types.ts";
import { cubicBezier, flushStroke, type Layers, strokePolyline } from "./canvas.ts";
import type { BodyFrame } from "./frame.ts";

/** Radio-opaque plastic and metal, in the attenuation units of anatomy.ts. */
const TUBE_WALL_DENSITY = 0.07;
const TUBE_STRIPE_DENSITY = 0.45;
const CATHETER_DENSITY = 0.4;
const WIRE_DENSITY = 0.3;
const ELECTRODE_DENSITY = 0.6;
const METAL_DENSITY = 1.4;
const LEAD_DENSITY = 0.6;
const STERNAL_WIRE_DENSITY = 0.9;
const SEPTAL_LINE_DENSITY = 0.12;
const PLATE_DENSITY = 0.22;
/** The tracheal midline sits a little to the patient's right. */
const TRACHEA_X = -0.015;

type Vec = readonly [number, number];

function segmentsOf(segments: readonly Segment[], layers: Layers, frame: BodyFrame, density: number): void {
  for (const segment of segments) {
    strokePolyline(layers.stroke, frame, [segment.x0, segment.y0, segment.x1, segment.y1], segment.halfWidth);
    flushStroke(layers, layers.overlay, density);
  }
}

function curve(layers: Layers, frame: BodyFrame, points: number[], halfWidth: number, density: number): void {
  strokePolyline(layers.stroke, frame, points, halfWidth);
  flushStroke(layers, layers.overlay, density);
}

function circle(x: number, y: number, radiusX: number, radiusY: number, segments: number): number[] {
  const points: number[] = [];
  for (let i = 0; i <= segments; i++) {
    const angle = (2 * Math.PI * i) / segments;
    points.push(x + radiusX * Math.cos(angle), y + radiusY * Math.sin(angle));
  }
  return points;
}

/** Tubes: a faint plastic wall with a dense radio-opaque stripe along one side. */
function tube(layers: Layers, frame: BodyFrame, points: number[], halfWidth: number): void {
  curve(layers, frame, points, halfWidth, TUBE_WALL_DENSITY);
  const stripe = points.map((value, i) => (i % 2 === 0 ? value + halfWidth * 0.4 : value));
  curve(layers, frame, stripe, Math.max(halfWidth * 0.22, 0.004), TUBE_STRIPE_DENSITY);
}

function drawDevice(
  layers: Layers,
  frame: BodyFrame,
  device: Device,
  anatomy: Anatomy,
  lungHeight: number,
): void {
  const heart = anatomy.heart;
  switch (device.kind) {
    case "endotrachealTube": {
      const points = cubicBezier(
        [TRACHEA_X - 0.02, -1.8],
        [TRACHEA_X + 0.02, -0.8],
        [TRACHEA_X, device.tipY - 0.4],
        [TRACHEA_X, device.tipY],
        24,
      );
      tube(layers, frame, points, 0.03);
      return;
    }
    case "entericTube": {
      const diaphragmLevel = lungHeight - anatomy.domeRise.left + 0.05;
      const chest = cubicBezier(
        [0.03, -1.8],
        [0.02, 0.3],
        [0.05, diaphragmLevel - 0.4],
        [0.1, diaphragmLevel],
        32,
      );
      const abdomen = cubicBezier(
        [0.1, diaphragmLevel],
        [0.14, diaphragmLevel + 0.15],
        [device.tipX - 0.15, device.tipY - 0.08],
        [device.tipX, device.tipY],
        16,
      );
      curve(layers, frame, chest.concat(abdomen.slice(2)), 0.011, CATHETER_DENSITY);
      return;
    }
    case "centralLine": {
      const sign = device.side === "right" ? -1 : 1;
      const tip: Vec = [-0.07, device.tipY];
      const points =
        device.entry === "jugular"
          ? cubicBezier([sign * 0.34, -1.4], [sign * 0.26, -0.4], [-0.02 + sign * 0.08, 0.15], tip, 32)
          : cubicBezier([sign * 1.4, 0.04], [sign * 0.7, 0.1], [sign * 0.1, 0.05], tip, 32);
      curve(layers, frame, points, 0.009, CATHETER_DENSITY);
      return;
    }
    case "ecgLeads": {
      for (const electrode of device.electrodes) {
        curve(layers, frame, circle(electrode.x, electrode.y, 0.045, 0.045, 16), 0.009, ELECTRODE_DENSITY);
        curve(
          layers,
          frame,
          [electrode.x, electrode.y, electrode.x + 0.001, electrode.y],
          0.014,
          ELECTRODE_DENSITY,
        );
        const outward = electrode.x < 0 ? -1 : 1;
        const wire = cubicBezier(
          [electrode.x, electrode.y],
          [electrode.x + outward * 0.3, electrode.y + 0.25],
          [outward * 1.4, electrode.y - 0.2],
          [outward * 2.2, electrode.y + 0.1],
          24,
        );
        curve(layers, frame, wire, 0.005, WIRE_DENSITY);
      }
      return;
    }
    case "pacemaker": {
      const sign = device.side === "right" ? -1 : 1;
      curve(layers, frame, [device.x - 0.05, device.y, device.x + 0.05, device.y], 0.085, METAL_DENSITY);
      const superiorVenaCava: Vec = [-0.06, lungHeight * 0.3];
      const tips: Vec[] = [
        [heart.centerX + 0.55 * heart.halfWidth, heart.centerY + 0.45 * heart.halfHeight],
        [heart.centerX - 0.75 * heart.halfWidth, heart.centerY - 0.55 * heart.halfHeight],
      ];
      for (let lead = 0; lead < device.leads && lead < tips.length; lead++) {
        const start: Vec = [device.x - sign * 0.1, device.y];
        const venous = cubicBezier(start, [sign * 0.25, device.y - 0.05], [0.05, 0.0], superiorVenaCava, 20);
        const intracardiac = cubicBezier(
          superiorVenaCava,
          [-0.08, heart.centerY - 0.1],
          [tips[lead][0] - 0.1, tips[lead][1] + 0.05],
          tips[lead],
          20,
        );
        curve(layers, frame, venous.concat(intracardiac.slice(2)), 0.013, LEAD_DENSITY);
      }
      return;
    }
    case "sternotomyWires": {
      for (let i = 0; i < device.count; i++) {
        const y = device.top + ((device.bottom - device.top) * i) / Math.max(1, device.count - 1);
        curve(layers, frame, circle(0, y, 0.035, 0.02, 12), 0.008, STERNAL_WIRE_DENSITY);
        curve(layers, frame, [0.035, y, 0.07, y + 0.01], 0.008, STERNAL_WIRE_DENSITY);
      }
      return;
    }
    case "chestTube": {
      const sign = device.side === "right" ? -1 : 1;
      const points = cubicBezier(
        [sign * 1.25, device.entryY],
        [sign * 0.95, device.entryY - 0.15],
        [device.tipX + sign * 0.2, device.tipY + 0.35],
        [device.tipX, device.tipY],
        32,
      );
      tube(layers, frame, points, 0.026);
      return;
    }
  }
}

export function drawLines(
  layers: Layers,
  frame: BodyFrame,
  findings: readonly Finding[],
  devices: readonly Device[],
  anatomy: Anatomy,
): void {
  const lungHeight = Math.max(anatomy.lungHeight.right, anatomy.lungHeight.left);
  for (const finding of findings) {
    if (finding.kind === "edema") segmentsOf(finding.septalLines, layers, frame, SEPTAL_LINE_DENSITY);
    if (finding.kind === "atelectasis") segmentsOf(finding.plates, layers, frame, PLATE_DENSITY);
  }
  for (const device of devices) drawDevice(layers, frame, device, anatomy, lungHeight);
}
