import { writeFileSync } from "node:fs";
import { join } from "node:path";
import sharp from "sharp";
import { describe, expect, it } from "vitest";
import { decodeImage, type GrayImage, ImageReadError } from "../../packages/data/src/images/decode.ts";
import { encodeGrayPng, writeGrayPng } from "../../packages/data/src/images/encode.ts";
import { padToSquare, resizeBilinear, toModelInput } from "../../packages/data/src/images/resize.ts";
import { fixtures, scratchFolder } from "./helpers.ts";

const scratch = scratchFolder("images");

function image(width: number, height: number, values: number[]): GrayImage {
  return { width, height, pixels: Float32Array.from(values) };
}

/** Every value within 1e-6 (float32 rounding); the failure names the first pixel off. */
function expectClose(actual: Float32Array, expected: number[]): void {
  expect(actual.length).toBe(expected.length);
  const firstOff = expected.findIndex((value, index) => !(Math.abs(actual[index] - value) <= 1e-6));
  expect(
    firstOff === -1 ? null : { index: firstOff, actual: actual[firstOff], expected: expected[firstOff] },
  ).toBeNull();
}

describe("PNG round trips", () => {
  it("8-bit: every level comes back exactly as level / 255", async () => {
    const levels = Array.from({ length: 256 }, (_, level) => level);
    const path = join(scratch, "levels8.png");
    await writeGrayPng(
      path,
      image(
        16,
        16,
        levels.map((level) => level / 255),
      ),
      8,
    );
    const decoded = await decodeImage(path);
    expect([decoded.width, decoded.height, decoded.bitDepth]).toEqual([16, 16, 8]);
    expect(Array.from(decoded.pixels)).toEqual(levels.map((level) => Math.fround(level / 255)));
  });

  it("16-bit: levels 8-bit cannot hold survive, e.g. 1/65535 and 65534/65535", async () => {
    const levels = [0, 1, 2, 255, 256, 257, 4095, 32767, 32768, 65279, 65534, 65535];
    const path = join(scratch, "levels16.png");
    await writeGrayPng(
      path,
      image(
        4,
        3,
        levels.map((level) => level / 65535),
      ),
      16,
    );
    const metadata = await sharp(path).metadata();
    expect([metadata.depth, metadata.channels]).toEqual(["ushort", 1]);
    const decoded = await decodeImage(path);
    expect(decoded.bitDepth).toBe(16);
    expect(Array.from(decoded.pixels)).toEqual(levels.map((level) => Math.fround(level / 65535)));
  });

  it("clamps out-of-range intensities when encoding and checks the pixel count", async () => {
    const decoded = await sharp(await encodeGrayPng(image(3, 1, [-0.5, 0.5, 1.5]), 8))
      .toColourspace("b-w")
      .raw()
      .toBuffer();
    expect(Array.from(decoded)).toEqual([0, 128, 255]);
    await expect(encodeGrayPng(image(3, 2, [0, 0]), 8)).rejects.toThrow("image has 2 pixels, expected 3x2=6");
  });

  it("decodes JPEG and colour PNG to one gray channel", async () => {
    const jpeg = await decodeImage(
      join(fixtures, "chexpert/CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"),
    );
    expect([jpeg.width, jpeg.height, jpeg.bitDepth, jpeg.pixels.length]).toEqual([8, 8, 8, 64]);
    const path = join(scratch, "rgba.png");
    await sharp({
      create: { width: 2, height: 2, channels: 4, background: { r: 51, g: 51, b: 51, alpha: 1 } },
    })
      .png()
      .toFile(path);
    expect(Array.from((await decodeImage(path)).pixels)).toEqual(new Array(4).fill(Math.fround(51 / 255)));
  });

  it("a truncated file, a non-image and a missing file fail with their path", async () => {
    const truncated = join(fixtures, "folder/truncated.png");
    await expect(decodeImage(truncated)).rejects.toThrow(
      `${truncated}: cannot read image: vipspng: libpng read error`,
    );
    const text = join(scratch, "not-an-image.png");
    writeFileSync(text, "hello");
    await expect(decodeImage(text)).rejects.toThrow(
      `${text}: cannot read image: Input buffer contains unsupported image format`,
    );
    const missing = join(scratch, "missing.png");
    const error = await decodeImage(missing).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ImageReadError);
    expect((error as ImageReadError).kind).toBe("missing-image");
    expect((error as ImageReadError).message).toMatch(new RegExp(`^${missing}: image not found: ENOENT`));
  });
});

describe("pad to square", () => {
  it("centres a wide image vertically", () => {
    expect(Array.from(padToSquare(image(3, 1, [1, 2, 3])).pixels)).toEqual([0, 0, 0, 1, 2, 3, 0, 0, 0]);
  });

  it("centres a tall image horizontally, the odd margin on the right", () => {
    const padded = padToSquare(image(1, 4, [1, 2, 3, 4]));
    expect([padded.width, padded.height]).toEqual([4, 4]);
    expect(Array.from(padded.pixels)).toEqual([0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0]);
  });
});

describe("bilinear resize", () => {
  it("upscaling interpolates between pixel centres and clamps at the edges", () => {
    expectClose(resizeBilinear(image(2, 1, [0, 1]), 4, 1).pixels, [0, 0.25, 0.75, 1]);
    expectClose(
      resizeBilinear(image(2, 2, [0, 1, 1, 0]), 4, 4).pixels,
      [0, 0.25, 0.75, 1, 0.25, 0.375, 0.625, 0.75, 0.75, 0.625, 0.375, 0.25, 1, 0.75, 0.25, 0],
    );
  });

  it("downscaling widens the triangle (antialiasing): 4 -> 2 weighs 3/7, 3/7, 1/7 at the edge", () => {
    expectClose(resizeBilinear(image(4, 1, [0, 1, 2, 3]), 2, 1).pixels, [5 / 7, 16 / 7]);
    expectClose(resizeBilinear(image(1, 4, [0, 1, 2, 3]), 1, 2).pixels, [5 / 7, 16 / 7]);
  });

  it("keeps a constant image constant at any scale", () => {
    const constant = image(7, 5, new Array(35).fill(0.3));
    for (const [width, height] of [
      [3, 3],
      [11, 2],
      [64, 64],
    ]) {
      expectClose(resizeBilinear(constant, width, height).pixels, new Array(width * height).fill(0.3));
    }
  });
});

describe("model input", () => {
  it("pads, resizes and scales to [-1, 1]", () => {
    // [[1, 0.5]] pads to [[1, 0.5], [0, 0]], then grows to 4x4.
    const input = toModelInput(image(2, 1, [1, 0.5]), 4);
    const row0 = [1, 0.875, 0.625, 0.5];
    const expected = [...row0, ...row0.map((v) => 0.75 * v), ...row0.map((v) => 0.25 * v), 0, 0, 0, 0];
    expectClose(
      input,
      expected.map((v) => v * 2 - 1),
    );
  });

  it("does not change the caller's image when no resize is needed", () => {
    const source = image(2, 2, [0, 0.5, 1, 0.25]);
    expectClose(toModelInput(source, 2), [-1, 0, 1, -0.5]);
    expectClose(source.pixels, [0, 0.5, 1, 0.25]);
  });
});

describe("fused pad and resize", () => {
  it("equals padding then resizing, for wide and tall images, up and down", () => {
    let state = 12345;
    const random = () => (state = (state * 1103515245 + 12345) % 2147483648) / 2147483648;
    for (const [width, height, size] of [
      [37, 23, 16],
      [23, 37, 16],
      [5, 9, 32],
      [64, 40, 64],
      [30, 30, 7],
    ]) {
      const source = image(width, height, Array.from({ length: width * height }, random));
      const reference = resizeBilinear(padToSquare(source), size, size).pixels;
      expectClose(
        toModelInput(source, size),
        Array.from(reference, (value) => value * 2 - 1),
      );
    }
  });
});
