/**
 * Support devices and where their tips lie. Permanent devices (pacemaker, sternotomy wires) belong to
 * the patient; tubes and lines belong to a study (the critically ill get them, trauma patients with a
 * sizeable pneumothorax get a chest drain).
 */

import type { Rng } from "../../random.ts";
import type { Condition } from "../conditions.ts";
import { CARINA_DEPTH } from "../render/geometry.ts";
import type { Anatomy, Device, Point, Side } from "../types.ts";

export function samplePermanentDevices(conditions: readonly Condition[], age: number, rng: Rng): Device[] {
  const devices: Device[] = [];
  const heartFailure = conditions.includes("heartFailure");
  if (heartFailure && rng.chance(age >= 70 ? 0.25 : 0.12)) {
    const side: Side = rng.chance(0.85) ? "left" : "right";
    devices.push({
      kind: "pacemaker",
      side,
      x: (side === "right" ? -1 : 1) * rng.uniform(0.6, 0.85),
      y: rng.uniform(0.05, 0.2),
      leads: rng.chance(0.7) ? 2 : 1,
    });
  }
  if (conditions.includes("cardiacSurgery")) {
    devices.push({
      kind: "sternotomyWires",
      count: rng.int(5, 7),
      top: rng.uniform(0.2, 0.3),
      bottom: rng.uniform(1.0, 1.15),
    });
  }
  return devices;
}

function electrodes(anatomy: Anatomy, rng: Rng): Point[] {
  const height = anatomy.lungHeight.right;
  const points: Point[] = [];
  const count = rng.int(3, 5);
  for (let i = 0; i < count; i++) {
    const upper = i < 2;
    const side = i % 2 === 0 ? -1 : 1;
    points.push({
      x: side * rng.uniform(upper ? 0.75 : 0.55, upper ? 1.05 : 0.95),
      y: upper ? rng.uniform(-0.08, 0.15) : height + rng.uniform(-0.05, 0.3),
    });
  }
  return points;
}

export interface StudyDeviceContext {
  conditions: readonly Condition[];
  anatomy: Anatomy;
  pneumothoraxSides: readonly Side[];
  pneumothoraxNeedsDrain: boolean;
}

export function sampleStudyDevices(context: StudyDeviceContext, rng: Rng): Device[] {
  const { conditions, anatomy } = context;
  const devices: Device[] = [];
  const height = anatomy.lungHeight.right;
  if (conditions.includes("critical")) {
    const intubated = rng.chance(0.55);
    if (intubated) {
      devices.push({ kind: "endotrachealTube", tipY: CARINA_DEPTH * height - rng.uniform(0.08, 0.3) });
    }
    if (rng.chance(intubated ? 0.85 : 0.25)) {
      devices.push({
        kind: "entericTube",
        tipX: rng.uniform(0.35, 0.6),
        tipY: anatomy.lungHeight.left - anatomy.domeRise.left + rng.uniform(0.15, 0.35),
      });
    }
    if (rng.chance(0.65)) {
      devices.push({
        kind: "centralLine",
        side: rng.chance(0.7) ? "right" : "left",
        entry: rng.chance(0.6) ? "jugular" : "subclavian",
        tipY: height * rng.uniform(0.3, 0.5),
      });
    }
    if (rng.chance(0.6)) devices.push({ kind: "ecgLeads", electrodes: electrodes(anatomy, rng) });
  } else if (conditions.includes("heartFailure") && rng.chance(0.15)) {
    devices.push({ kind: "ecgLeads", electrodes: electrodes(anatomy, rng) });
  }
  if (context.pneumothoraxNeedsDrain && rng.chance(0.5)) {
    const side = context.pneumothoraxSides[0];
    const outward = side === "right" ? -1 : 1;
    devices.push({
      kind: "chestTube",
      side,
      entryY: height * rng.uniform(0.7, 0.85),
      tipX: outward * rng.uniform(0.35, 0.6),
      tipY: rng.uniform(0.12, 0.3),
    });
  }
  return devices;
}
