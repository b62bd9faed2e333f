/**
 * CLIP BPE tokenizer on a small vocabulary and merges file written in the published layout (bytes,
 * bytes + </w>, merges, specials: the order CLIP's own vocab.json has), and against CLIP's real
 * vocabulary when CXR_CLIP_VOCAB_DIR names a folder with its vocab.json and merges.txt.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { CLIP_BPE_SHA256, downloadClipBpe, registerPretrainedCommands } from "@cxr/diffusion/cli-pretrained";
import {
  bytesToUnicode,
  ClipTokenizer,
  cleanText,
  clipVocabularyFromBpe,
  PretrainedFolder,
  writeClipVocabulary,
} from "@cxr/diffusion/pretrained";
import { Command } from "commander";
import { afterAll, describe, expect, it } from "vitest";
import { captureOutput } from "../capture.ts";
import { temporaryFolder, writeJson, writeSd21Configs } from "./pretrained-helpers.ts";

/** The printable bytes first, then the rest: the order of CLIP's first 256 vocabulary entries. */
function byteOrder(): number[] {
  const order: number[] = [];
  for (let byte = 0x21; byte <= 0x7e; byte++) order.push(byte);
  for (let byte = 0xa1; byte <= 0xac; byte++) order.push(byte);
  for (let byte = 0xae; byte <= 0xff; byte++) order.push(byte);
  for (let byte = 0; byte < 256; byte++) if (!order.includes(byte)) order.push(byte);
  return order;
}

const MERGES: [string, string][] = [
  ["c", "a"],
  ["ca", "t</w>"],
  ["o", "f</w>"],
  ["h", "o"],
  ["o", "t"],
  ["p", "ho"],
  ["t", "o</w>"],
  ["pho", "to</w>"],
];

const folders: string[] = [];
afterAll(() => {
  for (const folder of folders) rmSync(folder, { recursive: true, force: true });
});
function scratch(prefix: string): string {
  const folder = temporaryFolder(prefix);
  folders.push(folder);
  return folder;
}

interface Written {
  dir: string;
  vocab: Map<string, number>;
}

function writeTokenizer(
  options: { merges?: [string, string][]; pad?: string; maxLength?: number } = {},
): Written {
  const dir = scratch("tok");
  const table = bytesToUnicode();
  const symbols = byteOrder().map((byte) => table[byte]);
  const merges = options.merges ?? MERGES;
  const tokens = [
    ...symbols,
    ...symbols.map((s) => `${s}</w>`),
    ...merges.map(([a, b]) => a + b),
    "<|startoftext|>",
    "<|endoftext|>",
  ];
  const vocab = new Map(tokens.map((token, id) => [token, id]));
  writeJson(join(dir, "vocab.json"), Object.fromEntries(vocab));
  writeFileSync(
    join(dir, "merges.txt"),
    `#version: 0.2\n${merges.map((pair) => pair.join(" ")).join("\n")}\n`,
  );
  writeJson(join(dir, "tokenizer_config.json"), {
    bos_token: {
      content: "<|startoftext|>",
      lstrip: false,
      normalized: true,
      rstrip: false,
      single_word: false,
    },
    do_lower_case: true,
    eos_token: { content: "<|endoftext|>" },
    model_max_length: options.maxLength ?? 77,
    pad_token: "<|endoftext|>",
    unk_token: { content: "<|endoftext|>" },
  });
  if (options.pad) writeJson(join(dir, "special_tokens_map.json"), { pad_token: options.pad });
  return { dir, vocab };
}

const open = ({ dir }: Written) =>
  ClipTokenizer.fromFiles({
    vocab: join(dir, "vocab.json"),
    merges: join(dir, "merges.txt"),
    tokenizerConfig: join(dir, "tokenizer_config.json"),
    specialTokensMap: existsSync(join(dir, "special_tokens_map.json"))
      ? join(dir, "special_tokens_map.json")
      : null,
  });

describe("CLIP tokenizer on a small published-format vocabulary", () => {
  const written = writeTokenizer();
  const tokenizer = open(written);
  const id = (token: string) => {
    const value = written.vocab.get(token);
    if (value === undefined) throw new Error(`test vocabulary lacks ${token}`);
    return value;
  };
  const bos = id("<|startoftext|>");
  const eos = id("<|endoftext|>");

  it("lays ids out like CLIP's vocabulary (! = 0, a</w> = 320)", () => {
    expect(id("!")).toBe(0);
    expect(id("a</w>")).toBe(320);
    expect(bos).toBe(512 + MERGES.length);
  });

  it("encodes 'a photo of a cat' with merges in rank order, word ends, bos/eos and 77-token padding", () => {
    expect(tokenizer.tokenize("a photo of a cat")).toEqual([
      "a</w>",
      "photo</w>",
      "of</w>",
      "a</w>",
      "cat</w>",
    ]);
    const encoding = tokenizer.encode("a photo of a cat");
    expect(encoding.ids.slice(0, 7)).toEqual([
      bos,
      320,
      id("photo</w>"),
      id("of</w>"),
      320,
      id("cat</w>"),
      eos,
    ]);
    expect(encoding.ids).toHaveLength(77);
    expect(encoding.ids.slice(7).every((value) => value === eos)).toBe(true); // SD 1.x pads with <|endoftext|>
    expect(encoding.attentionMask.reduce((a, b) => a + b)).toBe(7);
    expect(encoding.truncated).toEqual([]);
    expect(tokenizer.decode(encoding.ids)).toBe("a photo of a cat");
  });

  it("applies the lowest-ranked merge first (swapping two ranks changes the result)", () => {
    const swapped = MERGES.slice();
    [swapped[3], swapped[4]] = [swapped[4], swapped[3]]; // "o t" before "h o"
    const otherWritten = writeTokenizer({ merges: swapped });
    const other = open(otherWritten);
    expect(other.tokenize("photo")).toEqual(["p", "h", "ot", "o</w>"]);
    expect(otherWritten.vocab.get("ot")).toBe(512 + 3);
    expect(tokenizer.tokenize("photo")).toEqual(["photo</w>"]);
    // "ot" is a merge result, so it is in that vocabulary (after the 512 byte symbols, at its rank).
    expect(other.encode("photo", { padding: false }).ids).toEqual([
      other.bosId,
      id("p"),
      id("h"),
      512 + 3,
      id("o</w>"),
      other.eosId,
    ]);
  });

  it("cleans text: lower-case, whitespace (incl. no-break space) collapsed, control characters dropped, NFC", () => {
    const expected = tokenizer.encode("a photo of a cat").ids;
    expect(tokenizer.encode("  A\tPHOTO\n\nof\u00a0 a CAT\u0000\u0007 ").ids).toEqual(expected);
    expect(cleanText("Cafe\u0301  \u4e2d\u6587")).toBe("caf\u00e9 \u4e2d \u6587");
    expect(cleanText("x\ufffdy\u200b")).toBe("xy");
  });

  it("splits digits one by one, punctuation runs and contractions with CLIP's pattern", () => {
    expect(tokenizer.tokenize("cat, 74!!")).toEqual(["cat</w>", ",</w>", "7</w>", "4</w>", "!", "!</w>"]);
    expect(tokenizer.tokenize("cat's")).toEqual(["cat</w>", "'", "s</w>"]);
  });

  it("falls back to byte symbols for characters without merges (UTF-8 bytes through bytes_to_unicode)", () => {
    const table = bytesToUnicode();
    // é = C3 A9 (printable Latin-1 bytes map to themselves); 😀 = F0 9F 98 80 (0x98, 0x80, 0x9f are remapped).
    expect(tokenizer.tokenize("é")).toEqual(["Ã", "©</w>"]);
    expect(tokenizer.tokenize("😀")).toEqual([table[0xf0], table[0x9f], table[0x98], `${table[0x80]}</w>`]);
    expect(table[0x80]).not.toBe("\u0080");
    const ids = tokenizer.encode("😀", { padding: false }).ids;
    expect(ids).toEqual([
      bos,
      id(table[0xf0]),
      id(table[0x9f]),
      id(table[0x98]),
      id(`${table[0x80]}</w>`),
      eos,
    ]);
    expect(tokenizer.decode(ids)).toBe("😀");
  });

  it("splits special tokens out of the text before cleaning", () => {
    expect(tokenizer.encode("a<|endoftext|>CAT", { padding: false }).ids).toEqual([
      bos,
      320,
      eos,
      id("cat</w>"),
      eos,
    ]);
  });

  it("truncates a prompt over 77 tokens, keeps eos last and warns with what was dropped", () => {
    const warnings: string[] = [];
    const long = `${Array.from({ length: 80 }, () => "a").join(" ")} photo cat`;
    const encoding = tokenizer.encode(long, { onWarning: (message) => warnings.push(message) });
    expect(encoding.ids).toHaveLength(77);
    expect(encoding.ids[76]).toBe(eos);
    expect(encoding.ids.slice(1, 76).every((value) => value === 320)).toBe(true);
    expect(encoding.truncated).toEqual(["a</w>", "a</w>", "a</w>", "a</w>", "a</w>", "photo</w>", "cat</w>"]);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("82 tokens");
    expect(warnings[0]).toContain('dropped: "a a a a a photo cat"');
    const batch = tokenizer.encodeBatch(["a cat", long], () => {});
    expect(batch.length).toBe(2 * 77);
    expect(Array.from(batch.subarray(0, 4))).toEqual([bos, 320, id("cat</w>"), eos]);
  });

  it("pads with the pad token of special_tokens_map.json (SD 2.x: '!', id 0)", () => {
    const sd2 = open(writeTokenizer({ pad: "!", maxLength: 12 }));
    const encoding = sd2.encode("a cat");
    expect(encoding.ids).toEqual([bos, 320, id("cat</w>"), eos, 0, 0, 0, 0, 0, 0, 0, 0]);
    expect(encoding.attentionMask).toEqual([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it("names the file for a bad vocabulary, a malformed merges line or a missing special token", () => {
    const bad = writeTokenizer();
    writeFileSync(join(bad.dir, "merges.txt"), "#version: 0.2\nc a\nthree part line\n");
    expect(() => open(bad)).toThrow(/merges\.txt: line 3 is not a merge of two symbols/);
    writeJson(join(bad.dir, "vocab.json"), { a: "zero" });
    expect(() => open(bad)).toThrow(/vocab\.json: key "a" = "zero"/);
    writeJson(join(bad.dir, "vocab.json"), { a: 0 });
    writeFileSync(join(bad.dir, "merges.txt"), "#version: 0.2\n");
    expect(() => open(bad)).toThrow(
      /vocab\.json: the bos token "<\|startoftext\|>" is not in the vocabulary/,
    );
  });

  it("opens from a diffusers folder's tokenizer/", () => {
    const root = writeSd21Configs(scratch("sd21tok"));
    const source = writeTokenizer();
    for (const file of ["vocab.json", "merges.txt", "tokenizer_config.json"]) {
      writeFileSync(join(root, "tokenizer", file), readFileSync(join(source.dir, file)));
    }
    const fromFolder = ClipTokenizer.fromFiles(PretrainedFolder.open(root).tokenizerFiles());
    expect(fromFolder.encode("a photo of a cat").ids).toEqual(tokenizer.encode("a photo of a cat").ids);
  });
});

describe("CLIP vocabulary from OpenAI's BPE file (cxr model clip-vocab)", () => {
  // OpenAI's file starts with a header line that is not a merge (in the published one the gzip
  // member name runs into it: "bpe_simple_vocab_16e6.txt#version: 0.2").
  const bpeText = `bpe_simple_vocab_16e6.txt#version: 0.2\n${MERGES.map((pair) => pair.join(" ")).join("\n")}\n`;

  it("builds exactly the vocab.json + merges.txt layout transformers publishes", () => {
    const built = clipVocabularyFromBpe(bpeText, "bpe.txt");
    const published = writeTokenizer();
    expect(built.merges).toEqual(MERGES);
    expect([...built.vocab]).toEqual([...published.vocab]);
  });

  it("writes files the tokenizer reads, from a gzip file, and encodes the same ids", () => {
    const dir = scratch("bpe");
    const gz = join(dir, "bpe_simple_vocab_16e6.txt.gz");
    writeFileSync(gz, gzipSync(Buffer.from(bpeText)));
    const written = writeClipVocabulary(gz, join(dir, "out"));
    expect(written).toMatchObject({ tokens: 512 + MERGES.length + 2, merges: MERGES.length });
    const fromBpe = ClipTokenizer.fromFiles({
      vocab: written.vocabPath,
      merges: written.mergesPath,
      tokenizerConfig: null,
      specialTokensMap: null,
    });
    const published = writeTokenizer();
    const reference = ClipTokenizer.fromFiles({
      vocab: join(published.dir, "vocab.json"),
      merges: join(published.dir, "merges.txt"),
      tokenizerConfig: null,
      specialTokensMap: null,
    });
    expect(fromBpe.encode("a photo of a cat").ids).toEqual(reference.encode("a photo of a cat").ids);
    expect(fromBpe.encode("a photo of a cat").ids.slice(0, 5)).toEqual([
      512 + MERGES.length,
      published.vocab.get("a</w>"),
      published.vocab.get("photo</w>"),
      published.vocab.get("of</w>"),
      published.vocab.get("a</w>"),
    ]);
  });

  it("stops at CLIP's 48,894 merges", () => {
    const many = Array.from({ length: 48_900 }, (_, index) => `x${index} y`).join("\n");
    const built = clipVocabularyFromBpe(`#version: 0.2\n${many}`, "bpe.txt");
    expect(built.merges.length).toBe(48_894);
    expect(built.vocab.size).toBe(49_408);
    expect(built.vocab.get("<|endoftext|>")).toBe(49_407);
  });

  it("names the file and line of bad input", () => {
    expect(() => clipVocabularyFromBpe("i n\nt h\n", "bpe.txt")).toThrow(
      /bpe\.txt: not a CLIP BPE merges file: its first line should hold "#version", found "i n"/,
    );
    expect(() => clipVocabularyFromBpe("#version: 0.2\ni n\nt h e\n", "bpe.txt")).toThrow(
      /bpe\.txt: line 3 is not a merge of two symbols: "t h e"/,
    );
    const dir = scratch("badbpe");
    expect(() => writeClipVocabulary(join(dir, "missing.gz"), dir)).toThrow(/missing\.gz: cannot read/);
    const broken = join(dir, "broken.gz");
    writeFileSync(broken, gzipSync(Buffer.from(bpeText)).subarray(0, 20));
    expect(() => writeClipVocabulary(broken, join(dir, "out"))).toThrow(
      /broken\.gz: not a readable gzip file/,
    );
    expect(existsSync(join(dir, "out", "vocab.json"))).toBe(false);
  });

  it("downloads only a file with the pinned SHA-256, and says why not", async () => {
    const server = createServer((_request, response) => response.end("not CLIP's file"));
    await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
    const { port } = server.address() as AddressInfo;
    const dir = scratch("download");
    try {
      await expect(downloadClipBpe(dir, `http://127.0.0.1:${port}/bpe.gz`)).rejects.toThrow(
        new RegExp(
          `127\\.0\\.0\\.1:${port}/bpe\\.gz: SHA-256 [0-9a-f]{64} is not the pinned ${CLIP_BPE_SHA256}; nothing was written`,
        ),
      );
    } finally {
      await new Promise((done) => server.close(done));
    }
    expect(existsSync(join(dir, "bpe_simple_vocab_16e6.txt.gz"))).toBe(false);
    await expect(downloadClipBpe(dir, `http://127.0.0.1:${port}/bpe.gz`)).rejects.toThrow(
      /cannot download http:\/\/127\.0\.0\.1/,
    );
  });

  it("runs as `cxr model clip-vocab`", async () => {
    const dir = scratch("bpecli");
    const file = join(dir, "bpe.txt");
    writeFileSync(file, bpeText);
    const program = new Command("cxr").exitOverride();
    registerPretrainedCommands(program);
    const { text } = await captureOutput(() =>
      program.parseAsync(["model", "clip-vocab", file, "--out", join(dir, "tok")], { from: "user" }),
    );
    expect(text).toContain(`(${512 + MERGES.length + 2} tokens)`);
    expect(readFileSync(join(dir, "tok", "merges.txt"), "utf8").split("\n")[0]).toBe("#version: 0.2");
  });
});

/**
 * The published vocabulary: CXR_CLIP_VOCAB_DIR, else the folder setup.sh fills from openai/CLIP's
 * bpe_simple_vocab_16e6.txt.gz (`.cache/clip-vocab` in the checkout, when the download worked).
 */
const cachedDir = join(import.meta.dirname, "../../.cache/clip-vocab");
const realDir =
  process.env.CXR_CLIP_VOCAB_DIR ?? (existsSync(join(cachedDir, "vocab.json")) ? cachedDir : undefined);
describe.skipIf(!realDir)(
  "CLIP tokenizer on CLIP's vocabulary (CXR_CLIP_VOCAB_DIR or .cache/clip-vocab)",
  () => {
    it("encodes 'a photo of a cat' as 49406, 320, 1125, 539, 320, 2368, 49407", () => {
      const dir = realDir as string;
      const config = join(dir, "tokenizer_config.json");
      const special = join(dir, "special_tokens_map.json");
      const tokenizer = ClipTokenizer.fromFiles({
        vocab: join(dir, "vocab.json"),
        merges: join(dir, "merges.txt"),
        tokenizerConfig: existsSync(config) ? config : null,
        specialTokensMap: existsSync(special) ? special : null,
      });
      const encoding = tokenizer.encode("a photo of a cat");
      expect(encoding.ids.slice(0, 7)).toEqual([49406, 320, 1125, 539, 320, 2368, 49407]);
      expect(tokenizer.vocab.size).toBe(49408);
    });

    // Ids produced by OpenAI's own CLIP `SimpleTokenizer` (openai/CLIP clip/simple_tokenizer.py, its
    // bpe_simple_vocab_16e6.txt.gz) for RoentGen-style prompts: digits split one per token, upper case
    // lowered, punctuation runs kept together ("?)"), "/" and ";" as their own tokens.
    const golden: [string, number[]][] = [
      [
        "72 year old BLACK female. Cardiomegaly and small left pleural effusion.",
        [
          49406, 278, 273, 935, 896, 1449, 3970, 269, 6211, 3693, 2001, 344, 537, 2442, 1823, 926, 33948,
          1490, 9364, 269, 49407,
        ],
      ],
      [
        "45 year old WHITE male. No acute cardiopulmonary process.",
        [49406, 275, 276, 935, 896, 1579, 2801, 269, 871, 19734, 6211, 39858, 749, 856, 4078, 269, 49407],
      ],
      [
        "30 year old ASIAN female. Large right pneumothorax; chest tube in place, 2.5 cm apical component.",
        [
          49406, 274, 271, 935, 896, 7128, 3970, 269, 3638, 1155, 28714, 617, 4130, 9203, 282, 10563, 3308,
          530, 1445, 267, 273, 269, 276, 3741, 688, 1110, 21284, 269, 49407,
        ],
      ],
      [
        "Support devices: ET tube terminates 4 cm above the carina. Lines/tubes unchanged!",
        [
          49406, 1425, 9067, 281, 875, 3308, 4766, 1150, 275, 3741, 4348, 518, 44357, 269, 3418, 270, 22870,
          34272, 256, 49407,
        ],
      ],
      [
        "88 year old female. Mild pulmonary edema, bibasilar atelectasis vs. consolidation (pneumonia?)",
        [
          49406, 279, 279, 935, 896, 3970, 269, 16085, 39132, 29632, 1226, 267, 717, 19225, 625, 992, 944,
          6538, 533, 1547, 269, 41111, 263, 42906, 9626, 49407,
        ],
      ],
    ];
    it.each(golden)("encodes %j as CLIP's reference tokenizer does", (prompt, ids) => {
      const dir = realDir as string;
      const tokenizer = ClipTokenizer.fromFiles({
        vocab: join(dir, "vocab.json"),
        merges: join(dir, "merges.txt"),
        tokenizerConfig: null,
        specialTokensMap: null,
      });
      expect(tokenizer.encode(prompt).ids.slice(0, ids.length)).toEqual(ids);
    });
  },
);
