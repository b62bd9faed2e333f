/**
 * CLIP's byte-level BPE tokenizer, as transformers' `CLIPTokenizer` runs it for Stable Diffusion,
 * from the published `tokenizer/` files: vocab.json (token -> id), merges.txt (one merge per line
 * in rank order, after a `#version` line), tokenizer_config.json and special_tokens_map.json.
 *
 * Steps, in transformers' order (without ftfy, which transformers also falls back from):
 *  1. special tokens (bos, eos, unk, pad) found verbatim in the text are split out as their ids;
 *  2. each piece between them is cleaned like BERT's BasicTokenizer with `strip_accents=False,
 *     do_split_on_punc=False`: NFC normalisation, control characters, U+0000 and U+FFFD removed,
 *     whitespace (incl. Unicode Zs) to spaces, spaces around CJK ideographs, lower-casing, runs of
 *     whitespace collapsed;
 *  3. CLIP's pre-tokenisation pattern splits words, single digits and punctuation runs;
 *  4. each pre-token's UTF-8 bytes are mapped to printable characters (GPT-2's bytes_to_unicode),
 *     its last symbol gets the `</w>` word end, and pairs are merged by lowest merge rank;
 *  5. bos + ids (+ eos), truncated to the context (77) with a warning and padded with the pad token
 *     (SD 1.x: `<|endoftext|>`; SD 2.x: `!`, id 0, from its special_tokens_map.json).
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import * as z from "zod";
import { writeFileAtomic } from "../model/model.ts";
import { tokenizerConfigSchema } from "./configs.ts";
import { describeIssues, PretrainedError } from "./folder.ts";

/** GPT-2 / CLIP: every byte to a printable Unicode character (printable Latin-1 kept as is). */
export function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let byte = 0x21; byte <= 0x7e; byte++) printable.push(byte);
  for (let byte = 0xa1; byte <= 0xac; byte++) printable.push(byte);
  for (let byte = 0xae; byte <= 0xff; byte++) printable.push(byte);
  const table = new Array<string>(256);
  for (const byte of printable) table[byte] = String.fromCodePoint(byte);
  let next = 0;
  for (let byte = 0; byte < 256; byte++) {
    if (table[byte] === undefined) table[byte] = String.fromCodePoint(256 + next++);
  }
  return table;
}

const BYTE_TO_UNICODE = bytesToUnicode();
const UNICODE_TO_BYTE = new Map(BYTE_TO_UNICODE.map((char, byte) => [char, byte]));

/** CLIP's pre-tokenisation pattern (transformers' `self.pat`, case-insensitive). */
const CLIP_PATTERN =
  /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+/giu;

/** CLIP's merges file holds more lines than the vocabulary uses: transformers reads 48,894. */
export const CLIP_MAX_MERGES = 49152 - 256 - 2;

const isCjk = (cp: number) =>
  (cp >= 0x4e00 && cp <= 0x9fff) ||
  (cp >= 0x3400 && cp <= 0x4dbf) ||
  (cp >= 0x20000 && cp <= 0x2a6df) ||
  (cp >= 0x2a700 && cp <= 0x2b73f) ||
  (cp >= 0x2b740 && cp <= 0x2b81f) ||
  (cp >= 0x2b820 && cp <= 0x2ceaf) ||
  (cp >= 0xf900 && cp <= 0xfaff) ||
  (cp >= 0x2f800 && cp <= 0x2fa1f);

/**
 * The text cleaning transformers applies when ftfy is absent (BasicTokenizer, no accent stripping,
 * no punctuation split), lower-cased and with whitespace collapsed to single spaces.
 */
export function cleanText(text: string, lowerCase = true): string {
  let cleaned = "";
  for (const char of text.normalize("NFC")) {
    const cp = char.codePointAt(0) ?? 0;
    if (char === " " || char === "\t" || char === "\n" || char === "\r" || /\p{Zs}/u.test(char)) {
      cleaned += " ";
    } else if (cp === 0 || cp === 0xfffd || /\p{C}/u.test(char)) {
      // control, format, unassigned, private use and surrogate characters are dropped
    } else if (isCjk(cp)) {
      cleaned += ` ${char} `;
    } else {
      cleaned += char;
    }
  }
  const words = cleaned.split(/\s+/).filter((word) => word.length > 0);
  return (lowerCase ? words.map((word) => word.toLowerCase()) : words).join(" ");
}

export interface ClipTokenizerFiles {
  vocab: string;
  merges: string;
  tokenizerConfig?: string | null;
  specialTokensMap?: string | null;
}

export interface ClipTokenizerOptions {
  /** Context length including bos and eos (tokenizer_config.json's model_max_length; CLIP: 77). */
  maxLength: number;
  lowerCase: boolean;
  bosToken: string;
  eosToken: string;
  padToken: string;
  unkToken: string;
}

export interface Encoding {
  /** Token ids, bos first; padded to maxLength when padding was asked for. */
  ids: number[];
  /** 1 for real tokens (bos and eos included), 0 for padding. */
  attentionMask: number[];
  /** Tokens dropped by truncation (empty when the prompt fit). */
  truncated: string[];
}

const tokenContent = (value: unknown): string | undefined =>
  typeof value === "string"
    ? value
    : value && typeof value === "object" && typeof (value as { content?: unknown }).content === "string"
      ? (value as { content: string }).content
      : undefined;

const vocabSchema = z.record(z.string(), z.number().int().nonnegative());

function readJson(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, "utf8"));
  } catch (error) {
    throw new PretrainedError(
      file,
      existsSync(file) ? `not valid JSON (${(error as Error).message})` : "file not found",
    );
  }
}

export class ClipTokenizer {
  private readonly ranks = new Map<string, number>();
  private readonly decoder = new Map<number, string>();
  private readonly cache = new Map<string, string[]>();
  private readonly specials: string[];
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly unkId: number;

  constructor(
    readonly vocab: ReadonlyMap<string, number>,
    /** Merge pairs in rank order. */
    merges: readonly (readonly [string, string])[],
    readonly options: ClipTokenizerOptions,
    /** Where the vocabulary came from, for messages. */
    readonly source = "vocab.json",
  ) {
    merges.forEach(([a, b], rank) => {
      const key = `${a} ${b}`;
      if (!this.ranks.has(key)) this.ranks.set(key, rank);
    });
    for (const [token, id] of vocab) this.decoder.set(id, token);
    const idOf = (role: string, token: string) => {
      const id = vocab.get(token);
      if (id === undefined)
        throw new PretrainedError(
          source,
          `the ${role} token ${JSON.stringify(token)} is not in the vocabulary`,
        );
      return id;
    };
    this.bosId = idOf("bos", options.bosToken);
    this.eosId = idOf("eos", options.eosToken);
    this.padId = idOf("pad", options.padToken);
    this.unkId = idOf("unk", options.unkToken);
    if (options.maxLength < 2)
      throw new PretrainedError(
        source,
        `model_max_length ${options.maxLength} leaves no room for bos and eos`,
      );
    // Longest first, so that one special token inside another is not matched first.
    this.specials = [
      ...new Set([options.bosToken, options.eosToken, options.unkToken, options.padToken]),
    ].sort((a, b) => b.length - a.length);
  }

  /** Reads vocab.json, merges.txt and (when given) tokenizer_config.json and special_tokens_map.json. */
  static fromFiles(files: ClipTokenizerFiles): ClipTokenizer {
    const rawVocab = readJson(files.vocab);
    const parsedVocab = vocabSchema.safeParse(rawVocab);
    if (!parsedVocab.success)
      throw new PretrainedError(files.vocab, describeIssues(rawVocab, parsedVocab.error));
    let mergesText: string;
    try {
      mergesText = readFileSync(files.merges, "utf8");
    } catch (error) {
      throw new PretrainedError(files.merges, `cannot read: ${(error as Error).message}`);
    }
    // transformers: read().strip().split("\n")[1 : 49152 - 256 - 2 + 1]; the first line is "#version: ...".
    const lines = mergesText.trim().split("\n");
    const merges: [string, string][] = [];
    const body = lines[0]?.startsWith("#version") ? lines.slice(1) : lines;
    for (const [index, line] of body.slice(0, CLIP_MAX_MERGES).entries()) {
      const parts = line.trim().split(/\s+/);
      if (parts.length !== 2) {
        throw new PretrainedError(
          files.merges,
          `line ${index + (body === lines ? 1 : 2)} is not a merge of two symbols: ${JSON.stringify(line)}`,
        );
      }
      merges.push([parts[0], parts[1]]);
    }
    let config: z.infer<typeof tokenizerConfigSchema> = tokenizerConfigSchema.parse({});
    if (files.tokenizerConfig) {
      const raw = readJson(files.tokenizerConfig);
      const parsed = tokenizerConfigSchema.safeParse(raw);
      if (!parsed.success)
        throw new PretrainedError(files.tokenizerConfig, describeIssues(raw, parsed.error));
      config = parsed.data;
    }
    // special_tokens_map.json overrides tokenizer_config.json, as in transformers' from_pretrained.
    const special: Record<string, string | undefined> = {};
    for (const key of ["bos_token", "eos_token", "pad_token", "unk_token"] as const)
      special[key] = tokenContent(config[key]);
    if (files.specialTokensMap) {
      const raw = readJson(files.specialTokensMap) as Record<string, unknown>;
      for (const key of ["bos_token", "eos_token", "pad_token", "unk_token"] as const) {
        const value = tokenContent(raw?.[key]);
        if (raw?.[key] !== undefined && value === undefined) {
          throw new PretrainedError(
            files.specialTokensMap,
            `key "${key}" must be a string or {content: string}`,
          );
        }
        if (value !== undefined) special[key] = value;
      }
    }
    return new ClipTokenizer(
      new Map(Object.entries(parsedVocab.data)),
      merges,
      {
        maxLength: config.model_max_length,
        lowerCase: config.do_lower_case,
        bosToken: special.bos_token ?? "<|startoftext|>",
        eosToken: special.eos_token ?? "<|endoftext|>",
        // CLIPTokenizer's default pad token is <|endoftext|> (what SD 1.x uses).
        padToken: special.pad_token ?? "<|endoftext|>",
        unkToken: special.unk_token ?? "<|endoftext|>",
      },
      files.vocab,
    );
  }

  /** BPE of one pre-token already mapped to byte characters; returns its symbols. */
  bpe(token: string): string[] {
    const cached = this.cache.get(token);
    if (cached) return cached;
    const chars = Array.from(token);
    let word = [...chars.slice(0, -1), `${chars[chars.length - 1]}</w>`];
    while (word.length > 1) {
      let best = -1;
      let bestRank = Number.POSITIVE_INFINITY;
      for (let index = 0; index + 1 < word.length; index++) {
        const rank = this.ranks.get(`${word[index]} ${word[index + 1]}`);
        if (rank !== undefined && rank < bestRank) {
          bestRank = rank;
          best = index;
        }
      }
      if (best < 0) break;
      const first = word[best];
      const second = word[best + 1];
      // Merge every occurrence of the pair, left to right (as transformers does).
      const merged: string[] = [];
      for (let index = 0; index < word.length; index++) {
        if (index + 1 < word.length && word[index] === first && word[index + 1] === second) {
          merged.push(first + second);
          index++;
        } else {
          merged.push(word[index]);
        }
      }
      word = merged;
    }
    this.cache.set(token, word);
    return word;
  }

  /** The BPE tokens of a text (no bos/eos), special tokens in it kept as themselves. */
  tokenize(text: string): string[] {
    const tokens: string[] = [];
    for (const piece of this.splitSpecials(text)) {
      if (piece.special) {
        tokens.push(piece.text);
        continue;
      }
      const cleaned = cleanText(piece.text, this.options.lowerCase);
      for (const match of cleaned.matchAll(CLIP_PATTERN)) {
        const bytes = new TextEncoder().encode(match[0]);
        let mapped = "";
        for (const byte of bytes) mapped += BYTE_TO_UNICODE[byte];
        tokens.push(...this.bpe(mapped));
      }
    }
    return tokens;
  }

  private splitSpecials(text: string): { text: string; special: boolean }[] {
    const pieces: { text: string; special: boolean }[] = [];
    let rest = text;
    while (rest.length > 0) {
      let at = -1;
      let found = "";
      for (const special of this.specials) {
        const index = rest.indexOf(special);
        if (index >= 0 && (at < 0 || index < at)) {
          at = index;
          found = special;
        }
      }
      if (at < 0) {
        pieces.push({ text: rest, special: false });
        break;
      }
      if (at > 0) pieces.push({ text: rest.slice(0, at), special: false });
      pieces.push({ text: found, special: true });
      rest = rest.slice(at + found.length);
    }
    return pieces;
  }

  /** Token -> id; tokens outside the vocabulary become the unk id. */
  tokenToId(token: string): number {
    return this.vocab.get(token) ?? this.unkId;
  }

  /**
   * Encodes a prompt as the Stable Diffusion pipelines do (`padding="max_length", truncation=True`):
   * bos, the ids (cut to maxLength - 2 with a warning naming what was dropped), eos, then padding.
   */
  encode(
    text: string,
    options: { padding?: boolean; maxLength?: number; onWarning?: (message: string) => void } = {},
  ): Encoding {
    const maxLength = options.maxLength ?? this.options.maxLength;
    const tokens = this.tokenize(text);
    const room = maxLength - 2;
    const kept = tokens.slice(0, room);
    const truncated = tokens.slice(room);
    if (truncated.length > 0) {
      const dropped = this.tokensToText(truncated);
      (options.onWarning ?? ((message: string) => console.warn(message)))(
        `prompt has ${tokens.length} tokens, CLIP's context holds ${room} (+ start and end); dropped: "${dropped}"`,
      );
    }
    const ids = [this.bosId, ...kept.map((token) => this.tokenToId(token)), this.eosId];
    const attentionMask = ids.map(() => 1);
    if (options.padding ?? true) {
      while (ids.length < maxLength) {
        ids.push(this.padId);
        attentionMask.push(0);
      }
    }
    return { ids, attentionMask, truncated };
  }

  /** Encodes several prompts to one [n, maxLength] id array (row-major) for the text encoder. */
  encodeBatch(texts: readonly string[], onWarning?: (message: string) => void): Int32Array {
    const maxLength = this.options.maxLength;
    const out = new Int32Array(texts.length * maxLength);
    for (const [row, text] of texts.entries()) out.set(this.encode(text, { onWarning }).ids, row * maxLength);
    return out;
  }

  private tokensToText(tokens: readonly string[]): string {
    const bytes: number[] = [];
    for (const token of tokens) {
      for (const char of token.replace(/<\/w>$/, " ")) {
        const byte = UNICODE_TO_BYTE.get(char);
        if (byte !== undefined) bytes.push(byte);
        else bytes.push(...new TextEncoder().encode(char));
      }
    }
    return new TextDecoder().decode(Uint8Array.from(bytes)).trim();
  }

  /** Ids back to text (special and padding tokens left out). */
  decode(ids: readonly number[]): string {
    const skip = new Set([this.bosId, this.eosId, this.padId]);
    return this.tokensToText(ids.filter((id) => !skip.has(id)).map((id) => this.decoder.get(id) ?? ""));
  }
}

/** OpenAI CLIP's own vocabulary file, as published in openai/CLIP (`clip/bpe_simple_vocab_16e6.txt.gz`). */
export const CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz";

export interface ClipVocabulary {
  /** Token -> id, in CLIP's order: 256 byte characters, the same with `</w>`, one per merge, bos, eos. */
  vocab: Map<string, number>;
  /** Merge pairs in rank order (at most `CLIP_MAX_MERGES`). */
  merges: [string, string][];
}

/**
 * Builds the vocabulary that transformers' CLIPTokenizer files (vocab.json + merges.txt) hold from
 * OpenAI's original BPE text, as OpenAI's `SimpleTokenizer` does: the first line is a header, the
 * next `CLIP_MAX_MERGES` lines are merges; the vocabulary is the 256 byte characters (printable bytes
 * first, in `bytes_to_unicode` order), the same 256 with the `</w>` word end, each merge's joined
 * symbols, then `<|startoftext|>` and `<|endoftext|>` (49,408 entries for the published file).
 * `source` names the file in error messages.
 */
export function clipVocabularyFromBpe(text: string, source: string): ClipVocabulary {
  const lines = text.split("\n");
  if (lines.length < 2 || !lines[0].includes("#version"))
    throw new PretrainedError(
      source,
      `not a CLIP BPE merges file: its first line should hold "#version", found ${JSON.stringify(lines[0]?.slice(0, 60) ?? "")}`,
    );
  const merges: [string, string][] = [];
  for (let index = 1; index < lines.length && merges.length < CLIP_MAX_MERGES; index++) {
    const line = lines[index];
    if (line.trim() === "" && index === lines.length - 1) break;
    const parts = line.split(" ");
    if (parts.length !== 2 || parts[0] === "" || parts[1] === "")
      throw new PretrainedError(
        source,
        `line ${index + 1} is not a merge of two symbols: ${JSON.stringify(line)}`,
      );
    merges.push([parts[0], parts[1]]);
  }
  const table = bytesToUnicode();
  const printable = (byte: number) =>
    (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || (byte >= 0xae && byte <= 0xff);
  const byteOrder = [...Array(256).keys()].sort(
    (a, b) => Number(printable(b)) - Number(printable(a)) || a - b,
  );
  const tokens = byteOrder.map((byte) => table[byte]);
  tokens.push(...tokens.map((token) => `${token}</w>`));
  for (const [a, b] of merges) tokens.push(a + b);
  tokens.push("<|startoftext|>", "<|endoftext|>");
  const vocab = new Map<string, number>();
  tokens.forEach((token, id) => {
    if (!vocab.has(token)) vocab.set(token, id);
  });
  return { vocab, merges };
}

/**
 * Reads OpenAI's BPE file (gzip-compressed or plain) and writes vocab.json and merges.txt in the
 * published transformers layout into `outDir` (each written atomically; existing files are replaced
 * only when the new ones are complete). Returns the paths and sizes.
 */
export function writeClipVocabulary(
  bpePath: string,
  outDir: string,
): { vocabPath: string; mergesPath: string; tokens: number; merges: number } {
  let raw: Buffer;
  try {
    raw = readFileSync(bpePath);
  } catch (error) {
    throw new PretrainedError(bpePath, `cannot read: ${(error as Error).message}`);
  }
  let text: string;
  try {
    text = (raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw) : raw).toString("utf8");
  } catch (error) {
    throw new PretrainedError(bpePath, `not a readable gzip file: ${(error as Error).message}`);
  }
  const { vocab, merges } = clipVocabularyFromBpe(text, bpePath);
  mkdirSync(outDir, { recursive: true });
  const vocabPath = join(outDir, "vocab.json");
  const mergesPath = join(outDir, "merges.txt");
  writeFileAtomic(vocabPath, JSON.stringify(Object.fromEntries(vocab)));
  writeFileAtomic(mergesPath, `#version: 0.2\n${merges.map(([a, b]) => `${a} ${b}`).join("\n")}\n`);
  return { vocabPath, mergesPath, tokens: vocab.size, merges: merges.length };
}
