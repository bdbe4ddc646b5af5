/**
 * What the index keeps of one message, computed purely from the parsed message and its
 * envelope (no I/O): the forward record (token streams per field), the display record
 * (what a hit shows, the indexed text, the date used for ordering) and the terms.
 */

import type { Address } from '../mime/types.js'
import { createTermTable } from './term-table.js'
import type { DocumentLimits, IndexInput } from './index-input.js'
import type { DocumentRecord } from './display-record.js'
import { countTokens, joinTerms, type PackedTerms } from './packed-terms.js'
import { joinStreams, streamOf, type ForwardRecord } from './forward-record.js'
import { addAddressTerms, addressLabel, addressTaker, envelopeAddress, exactTokensOf, type TakenAddress } from './taken-addresses.js'
import { tokenBudget } from './token-budget.js'
import { prepareDocument, type PreparedDocument } from './prepared-document.js'
import { phraseStreamOf } from './phrase-stream.js'

/** A message as the index keeps it: see analyzeDocument. */
export interface AnalyzedDocument {
  /**
   * The forward record. Its body stream `body` is '' when the analysis came from a prepared
   * document (`terms` is then set): it is not stored (bodyStreamOf derives it from the
   * record's text), and a worker need not build and send it. Analyses that are compared
   * with a stored document (re-index, verify) are made by analyzeSequential.
   */
  forward: ForwardRecord
  record: DocumentRecord
  /**
   * The tokens with their field bits, when they came ready from a prepared document: the
   * prepared terms followed by the address terms, so a token may appear twice (its bits
   * are then the OR of both).
   */
  terms?: PackedTerms
  /** The body's phrase stream (phrase-stream.ts). */
  phraseStream: Uint8Array
  /** True when the token budget cut the document short. */
  truncated: boolean
}

/** The date a message is ordered and filtered by (see DocumentLimits.futureDateSkewMsMax). */
export function orderingDateMs(parsedDateMs: number | null, archivedAtMs: number, futureDateSkewMsMax: number): number {
  if (parsedDateMs === null || !Number.isFinite(parsedDateMs)) return archivedAtMs
  if (parsedDateMs > archivedAtMs + futureDateSkewMsMax) return archivedAtMs
  return parsedDateMs
}

/**
 * Computes the forward record and display record of a message, in the order of the token
 * budget: subject, sender, recipients, attachment names, body, attachment texts — so a
 * huge body cannot push the headers out of the index.
 *
 * The result is exactly that of analyzing the message in one pass; it is computed from
 * `prepareDocument` (the part that needs no envelope, which the ingest pipeline may run
 * ahead of the write transaction) when the budgets allow, which is nearly always.
 */
export function analyzeDocument(input: IndexInput, limits: DocumentLimits, prepared?: PreparedDocument): AnalyzedDocument {
  return completeDocument(prepared ?? prepareDocument(input.parsed, limits), input, limits) ?? analyzeSequential(input, limits)
}

/**
 * Adds the envelope (sender, recipients, archive time) to a prepared document.
 *
 * @returns the analysis, or undefined when a budget binds (then only the one-pass
 *   analysis gives the exact result, because envelope addresses come before the body)
 */
export function completeDocument(prepared: PreparedDocument, input: IndexInput, limits: DocumentLimits): AnalyzedDocument | undefined {
  if (prepared.truncated) return undefined
  // Damaged in transit (it never is): the one-pass analysis is always right.
  if (countTokens(prepared.terms) !== prepared.masks.length || prepared.hashes.length !== prepared.masks.length) return undefined
  let tokens = prepared.tokens
  const extraFrom: TakenAddress[] = []
  if (input.envelopeFrom && !prepared.fromKeys.includes(`${input.envelopeFrom.toLowerCase()}\n`)) extraFrom.push(envelopeAddress(input.envelopeFrom))
  const extraTo: TakenAddress[] = []
  const envelopeRecipients = [...(input.envelopeTo ?? []), ...(input.envelopeBcc ?? [])]
  if (envelopeRecipients.length > 0) {
    const named = new Set(prepared.toNamed)
    for (const address of envelopeRecipients) {
      const lower = address.toLowerCase()
      if (named.has(lower)) continue
      named.add(lower)
      extraTo.push(envelopeAddress(address))
    }
  }
  for (const address of extraFrom) tokens += address.tokens.length
  for (const address of extraTo) tokens += address.tokens.length
  if (tokens > limits.tokensPerDocumentMax || prepared.addresses + extraFrom.length + extraTo.length > limits.addressesPerDocumentMax) return undefined
  // The header addresses' terms came prepared; the envelope's follow them (a token may then appear twice).
  let terms: PackedTerms = { tokens: prepared.terms, masks: prepared.masks, hashes: prepared.hashes }
  let forwardAddresses = { from: prepared.fromStream, to: prepared.toStream, fromExact: prepared.fromExact, toExact: prepared.toExact }
  if (extraFrom.length + extraTo.length > 0) {
    const envelopeTerms = createTermTable()
    addAddressTerms(envelopeTerms, extraFrom, extraTo)
    terms = joinTerms(terms, envelopeTerms.pack())
    forwardAddresses = {
      from: joinStreams([prepared.fromStream, ...extraFrom.map((address) => address.stream)]),
      to: joinStreams([prepared.toStream, ...extraTo.map((address) => address.stream)]),
      fromExact: [...new Set([...prepared.fromExact, ...extraFrom.flatMap((address) => address.exact)])],
      toExact: [...new Set([...prepared.toExact, ...extraTo.flatMap((address) => address.exact)])],
    }
  }
  return {
    terms,
    // No body stream (see AnalyzedDocument.forward): the terms carry the body's tokens.
    forward: { subject: prepared.subjectStream, body: '', ...forwardAddresses, attachmentNames: prepared.attachmentNamesStream, hasAttachment: prepared.hasAttachment },
    record: {
      id: input.id,
      dateMs: orderingDateMs(prepared.dateMs, input.archivedAtMs, limits.futureDateSkewMsMax),
      from: prepared.sender ?? input.envelopeFrom ?? '',
      subject: prepared.subject,
      textDeflated: prepared.textDeflated,
      segments: prepared.segments,
    },
    phraseStream: prepared.phraseStream,
    truncated: false,
  }
}

/**
 * The one-pass analysis (see analyzeDocument): for messages a budget cuts short, and where an
 * analysis is compared with a stored document (re-index, verify), since it builds the body
 * stream that analyses from a prepared document leave out.
 */
export function analyzeSequential(input: IndexInput, limits: DocumentLimits): AnalyzedDocument {
  const { parsed } = input
  const budget = tokenBudget(limits.tokensPerDocumentMax, limits.textCharsPerDocumentMax)
  const take = budget.take
  let truncated = false

  const takeAddresses = addressTaker(limits.addressesPerDocumentMax, take, () => (truncated = true))
  const addressSegments = (addresses: readonly Address[]): { segments: string[]; exact: string[] } => {
    const taken = takeAddresses(addresses)
    return { segments: taken.map((address) => address.stream), exact: exactTokensOf(taken) }
  }

  const envelope = (addresses: readonly string[] | undefined): Address[] => (addresses ?? []).map((address) => ({ name: '', address }))
  const subjectTokens = take(parsed.subject ?? '')
  const fromAddresses = [...parsed.from, ...(input.envelopeFrom ? [{ name: '', address: input.envelopeFrom }] : [])]
  // Header addresses first (they carry names), then envelope ones the headers did not name.
  const headerRecipients = [...parsed.to, ...parsed.cc, ...parsed.bcc]
  const named = new Set(headerRecipients.map((address) => address.address.toLowerCase()))
  const envelopeRecipients = [...envelope(input.envelopeTo), ...envelope(input.envelopeBcc)].filter((address) => {
    const lower = address.address.toLowerCase()
    if (named.has(lower)) return false
    named.add(lower)
    return true
  })
  const from = addressSegments(fromAddresses)
  const to = addressSegments([...headerRecipients, ...envelopeRecipients])
  const nameSegments = parsed.attachments.map((attachment) => take(attachment.filename ?? ''))
  const taken = budget.takeBody([parsed.text, ...parsed.attachments.map((attachment) => attachment.text ?? '')])
  const bodySegments = taken.segments
  const sender = parsed.from[0] ? addressLabel(parsed.from[0]) : (input.envelopeFrom ?? '')

  return {
    forward: {
      subject: streamOf([subjectTokens]),
      body: streamOf(bodySegments),
      from: joinStreams(from.segments),
      to: joinStreams(to.segments),
      attachmentNames: streamOf(nameSegments),
      fromExact: from.exact,
      toExact: to.exact,
      hasAttachment: parsed.attachments.length > 0 ? 1 : 0,
    },
    record: {
      id: input.id,
      dateMs: orderingDateMs(parsed.dateMs, input.archivedAtMs, limits.futureDateSkewMsMax),
      from: sender,
      subject: parsed.subject ?? '',
      text: taken.text,
      segments: taken.counts,
    },
    phraseStream: phraseStreamOf(bodySegments),
    truncated: truncated || budget.truncated(),
  }
}
