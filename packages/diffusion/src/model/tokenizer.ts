/**
 * A word-level tokenizer for the phantom models: the vocabulary is built from the training prompts
 * and saved with the model (tokenizer.json). Text is lower-cased and split into words, numbers and
 * single punctuation marks. Each prompt becomes `[start] tokens... [end] [pad]...` of exactly
 * `maxLength` ids, as CLIP's tokenizer pads for Stable Diffusion. Words outside the vocabulary map
 * to `[unk]`; a prompt longer than the context is truncated (keeping the end token) with a warning,
 * as transformers' CLIP tokenizer does, never an error. The empty prompt encodes to
 * `[start] [end] [pad]...`: the unconditional input of classifier-free guidance.
 */

export const SPECIAL_TOKENS = ["[pad]", "[unk]", "[start]", "[end]"] as const;
export const PAD_ID = 0;
export const UNKNOWN_ID = 1;
export const START_ID = 2;
export const END_ID = 3;

const WORD_PATTERN = /[a-z]+|[0-9]+|[^\sa-z0-9]/g;

export class TokenizerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TokenizerError";
  }
}

/** Lower-cased words, numbers and punctuation marks, in order. */
export function splitWords(text: string): string[] {
  return text.toLowerCase().match(WORD_PATTERN) ?? [];
}

export interface TokenizerOptions {
  /** Context length including start and end tokens (the text encoder's maxPositions). */
  maxLength: number;
  /** Largest vocabulary including the 4 special tokens; the most frequent words are kept. */
  maxVocabulary?: number;
  /** Words seen fewer times are left out (map to [unk]). Default 1. */
  minCount?: number;
}

export interface Encoded {
  /** [prompts.length * maxLength] token ids, row-major [B, L]. */
  ids: Uint32Array;
  /** Tokens per prompt including start and end (before padding). */
  lengths: number[];
  /** Whether each prompt was cut to fit the context. */
  truncated: boolean[];
  /** How many words of each prompt were unknown. */
  unknown: number[];
  /** Each prompt's words that mapped to [unk], in order (repeats kept). */
  unknownWords: string[][];
  /** Each prompt's words cut off by truncation (empty when it fit). */
  dropped: string[][];
}

export interface EncodeOptions {
  /** Called once per truncated prompt; default console.warn. Pass `() => {}` to silence. */
  warn?: (message: string) => void;
}

export interface TokenizerJson {
  kind: "word";
  version: 1;
  maxLength: number;
  /** Index = id; the first four are the special tokens. */
  vocabulary: string[];
}

export class WordTokenizer {
  private readonly ids: Map<string, number>;

  constructor(
    readonly vocabulary: readonly string[],
    readonly maxLength: number,
  ) {
    if (!Number.isInteger(maxLength) || maxLength < 2) {
      throw new TokenizerError(`maxLength must be an integer >= 2 (start and end tokens), got ${maxLength}`);
    }
    SPECIAL_TOKENS.forEach((token, index) => {
      if (vocabulary[index] !== token) {
        throw new TokenizerError(
          `vocabulary[${index}] must be the special token "${token}", got "${vocabulary[index]}"`,
        );
      }
    });
    this.ids = new Map();
    vocabulary.forEach((word, index) => {
      if (typeof word !== "string" || word.length === 0) {
        throw new TokenizerError(`vocabulary[${index}] is not a non-empty string`);
      }
      if (this.ids.has(word))
        throw new TokenizerError(`vocabulary has "${word}" twice (ids ${this.ids.get(word)} and ${index})`);
      this.ids.set(word, index);
    });
  }

  /** Vocabulary from training prompts: the 4 special tokens, then words by falling frequency (ties alphabetical). */
  static fromPrompts(prompts: Iterable<string>, options: TokenizerOptions): WordTokenizer {
    const counts = new Map<string, number>();
    for (const prompt of prompts) {
      for (const word of splitWords(prompt)) counts.set(word, (counts.get(word) ?? 0) + 1);
    }
    const minCount = options.minCount ?? 1;
    let words = [...counts]
      .filter(([, count]) => count >= minCount)
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
      .map(([word]) => word);
    if (options.maxVocabulary !== undefined) {
      if (options.maxVocabulary < SPECIAL_TOKENS.length) {
        throw new TokenizerError(
          `maxVocabulary ${options.maxVocabulary} leaves no room for the special tokens`,
        );
      }
      words = words.slice(0, options.maxVocabulary - SPECIAL_TOKENS.length);
    }
    return new WordTokenizer([...SPECIAL_TOKENS, ...words], options.maxLength);
  }

  get vocabularySize(): number {
    return this.vocabulary.length;
  }

  idOf(word: string): number {
    return this.ids.get(word) ?? UNKNOWN_ID;
  }

  encode(prompts: readonly string[], options: EncodeOptions = {}): Encoded {
    const length = this.maxLength;
    const ids = new Uint32Array(prompts.length * length); // PAD_ID is 0
    const lengths: number[] = [];
    const truncated: boolean[] = [];
    const unknown: number[] = [];
    const unknownWords: string[][] = [];
    const dropped: string[][] = [];
    prompts.forEach((prompt, row) => {
      if (typeof prompt !== "string") {
        throw new TokenizerError(`prompt ${row} is not a string (got ${typeof prompt})`);
      }
      const words = splitWords(prompt);
      const room = length - 2;
      const kept = words.slice(0, room);
      const base = row * length;
      ids[base] = START_ID;
      const missing: string[] = [];
      kept.forEach((word, index) => {
        const id = this.idOf(word);
        if (id === UNKNOWN_ID) missing.push(word);
        ids[base + 1 + index] = id;
      });
      ids[base + 1 + kept.length] = END_ID;
      lengths.push(kept.length + 2);
      unknown.push(missing.length);
      unknownWords.push(missing);
      const cut = words.length > room;
      truncated.push(cut);
      dropped.push(words.slice(room));
      if (cut) {
        const message =
          `The following part of prompt ${row} was truncated because the text encoder can only handle ` +
          `sequences up to ${length} tokens: "${words.slice(room).join(" ")}"`;
        (options.warn ?? console.warn)(message);
      }
    });
    return { ids, lengths, truncated, unknown, unknownWords, dropped };
  }

  /** Words back from ids (special tokens shown, padding dropped). */
  decode(ids: ArrayLike<number>): string {
    const words: string[] = [];
    for (let index = 0; index < ids.length; index++) {
      if (ids[index] === PAD_ID) continue;
      words.push(this.vocabulary[ids[index]] ?? "[unk]");
    }
    return words.join(" ");
  }

  toJSON(): TokenizerJson {
    return { kind: "word", version: 1, maxLength: this.maxLength, vocabulary: [...this.vocabulary] };
  }

  /** From `toJSON()` output; `where` names the source in errors (e.g. the file). */
  static fromJSON(json: unknown, where = "tokenizer"): WordTokenizer {
    const value = json as Partial<TokenizerJson> | null;
    if (typeof value !== "object" || value === null) throw new TokenizerError(`${where}: not a JSON object`);
    if (value.kind !== "word" || value.version !== 1) {
      throw new TokenizerError(
        `${where}: expected kind "word" version 1, got ${JSON.stringify(value.kind)} ${value.version}`,
      );
    }
    if (!Array.isArray(value.vocabulary))
      throw new TokenizerError(`${where}: vocabulary must be a list of words`);
    try {
      return new WordTokenizer(value.vocabulary, value.maxLength as number);
    } catch (error) {
      throw new TokenizerError(`${where}: ${(error as Error).message}`);
    }
  }
}
