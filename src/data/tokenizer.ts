/**
 * The tokenizer interface every data generator, loader and evaluation uses. Lengths in longtune are
 * always counted in the evaluated model's own tokens, so generators take a Tokenizer, never a
 * characters-per-token guess.
 */
export interface Tokenizer {
  /** A stable name for reports, e.g. "byte", "gpt2-bpe:<sha256 prefix>". */
  readonly name: string;
  /** Content hash of the tokenizer's definition (vocabulary, merges, specials). */
  readonly hash: string;
  readonly vocabSize: number;
  /** Token ids of `text`, without special tokens. */
  encode(text: string): number[];
  /** Text of `ids`; special tokens are rendered by name. */
  decode(ids: readonly number[]): string;
  /** Id of a named special token (e.g. "<|endoftext|>", "<bos>"), or undefined. */
  special(name: string): number | undefined;
}
