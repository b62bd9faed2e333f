/**
 * Bearer-token check. Tokens are compared in constant time (SHA-256 of both sides, then
 * timingSafeEqual, so neither the length nor a common prefix leaks), every configured token is
 * compared (no early exit), and no token is ever logged or echoed.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";

const digest = (text: string): Buffer => createHash("sha256").update(text, "utf8").digest();

export class TokenSet {
  private readonly digests: Buffer[];

  constructor(tokens: readonly string[]) {
    this.digests = tokens.map(digest);
  }

  get enabled(): boolean {
    return this.digests.length > 0;
  }

  /** True when the Authorization header carries one of the tokens. */
  accepts(header: string | undefined): boolean {
    if (!header) return false;
    const match = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
    if (!match) return false;
    const offered = digest(match[1]);
    let ok = false;
    for (const known of this.digests) ok = timingSafeEqual(offered, known) || ok;
    return ok;
  }
}

/** Reads tokens from a file: one a line; blank lines and lines starting with `#` are skipped. */
export function readTokenFile(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new Error(
      `--token-file ${path}: cannot read it (${(error as NodeJS.ErrnoException).code ?? "error"})`,
    );
  }
  const tokens = text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith("#"));
  if (tokens.length === 0) throw new Error(`--token-file ${path}: no token in it (one a line)`);
  for (const [index, token] of tokens.entries()) {
    if (token.length < 16 || /\s/.test(token)) {
      throw new Error(
        `--token-file ${path}: token number ${index + 1} must be 16+ characters without spaces`,
      );
    }
  }
  return tokens;
}
