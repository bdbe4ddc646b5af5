/**
 * What the two posting accumulators share: a flush's (flush-postings.ts) and the search
 * tail's (posting-groups.ts) are both fed postings a document at a time.
 */

/** What a flush or the search tail is fed: postings, a document at a time (docids ascending). */
export interface PostingSink {
  /** Adds a posting; the same token again for the same (latest) docid ORs its mask in. */
  add(token: string, docid: number, mask: number): void
  /**
   * Adds a document's packed terms (tokens joined by spaces, a mask per token, their
   * tokenHash if known) as `add` would each. Returns false, adding nothing, when the counts
   * of tokens and masks differ.
   */
  addPacked(tokens: string, masks: Uint8Array, docid: number, hashes?: Int32Array): boolean
}

/** The sizes a flush's postings start at (tokens, postings): a flush passes the last flush's. */
export interface PostingSizes {
  tokens: number
  postings: number
}
