/**
 * How one study is acquired at an institution: view (portable AP for the critically ill and for
 * infants), positioning, exposure, noise, blur, markers.
 */

import type { Rng } from "../../random.ts";
import type { InstitutionProfile, MarkerStyle } from "../institutions.ts";
import { BODY_DEPTH_BASE, BODY_DEPTH_PER_SOFT_TISSUE } from "../render/anatomy.ts";
import { markerWidth } from "../render/markers.ts";
import type { Acquisition, Habitus, Marker, ViewPosition } from "../types.ts";

/** Body-frame unit (half the inner thoracic width) as a fraction of the image for an average adult. */
export const ADULT_THORAX_UNIT = 0.385;
const MARKER_MARGIN = 0.03;

function placeMarker(style: MarkerStyle, rng: Rng): Marker {
  const width = markerWidth(style.text, style.height);
  const jitterX = rng.uniform(0, 0.02);
  const jitterY = rng.uniform(0, 0.02);
  const left = style.corner.endsWith("left");
  const top = style.corner.startsWith("top");
  return {
    text: style.text,
    x: left ? MARKER_MARGIN + jitterX : 1 - MARKER_MARGIN - width - jitterX,
    y: top ? MARKER_MARGIN + jitterY : 1 - MARKER_MARGIN - style.height - jitterY,
    height: style.height,
  };
}

export interface AcquisitionContext {
  institution: InstitutionProfile;
  habitus: Habitus;
  age: number;
  critical: boolean;
  lungHeight: number;
}

export function sampleAcquisition(context: AcquisitionContext, rng: Rng): Acquisition {
  const { institution, habitus, age, critical, lungHeight } = context;
  const profile = institution.acquisition;
  const infant = age < 2;
  const apProbability = critical ? 0.92 : infant ? 0.8 : profile.apShare;
  const view: ViewPosition = rng.chance(apProbability) ? "AP" : "PA";
  const ap = view === "AP";
  const supine = ap && rng.chance(critical ? 0.6 : infant ? 0.8 : 0.15);
  const { shift, tilt, scale } = profile.positioning;
  const unit =
    ADULT_THORAX_UNIT * habitus.thoraxScale * rng.clampedNormal(1, scale, 1 - 2.5 * scale, 1 + 2 * scale);
  // Centre the lungs a little above the image centre, as technologists do.
  const originY = rng.normal(0.45, shift) - (unit * lungHeight) / 2;
  const markers = [placeMarker(profile.lateralityMarker, rng)];
  if (ap && profile.portableMarker !== null) markers.push(placeMarker(profile.portableMarker, rng));
  return {
    view,
    supine,
    armsAtSides: ap && rng.chance(0.7),
    placement: {
      originX: rng.normal(0.5, shift),
      originY,
      unit,
      tilt: rng.clampedNormal(0, tilt, -3 * tilt, 3 * tilt),
    },
    exposure: {
      // Automatic exposure control: thicker patients get more dose, so their lungs are not washed out.
      gain:
        rng.clampedNormal(
          profile.exposureGain.mean,
          profile.exposureGain.sd,
          0.5 * profile.exposureGain.mean,
          1.5 * profile.exposureGain.mean,
        ) /
        (BODY_DEPTH_BASE + BODY_DEPTH_PER_SOFT_TISSUE * habitus.softTissue),
      gamma: profile.gamma * rng.uniform(0.96, 1.04),
      windowLow: profile.window.low,
      windowHigh: profile.window.high * rng.uniform(0.97, 1.03),
      heel: profile.heel * rng.uniform(0.5, 1.5),
    },
    // Larger patients scatter more and get noisier films.
    noise: {
      sigma: profile.noiseSigma * rng.uniform(0.85, 1.15) * Math.sqrt(habitus.softTissue),
      seed: rng.nextUint32(),
    },
    blur: profile.blur * rng.uniform(0.8, 1.2),
    sharpen: { ...profile.sharpen },
    collimation: profile.collimation,
    markers,
  };
}
