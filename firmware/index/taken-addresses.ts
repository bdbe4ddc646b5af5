/** Sender and recipient addresses as indexed: de-duplicated, within the address budget, as streams and exact tokens. */

import type { Address } from '../mime/types.js'
import { addressExactTokens, tokenize } from './tokenize.js'
import type { TermTable } from './term-table.js'
import { fieldBits } from './field-bits.js'
import { streamOf } from './forward-record.js'

export function addressLabel(address: Address): string {
  if (address.name && address.address) return `${address.name} <${address.address}>`
  return address.name || address.address
}

/** One address as indexed. */
export interface TakenAddress {
  /** Dedup key: lower-case address, newline, display name. */
  key: string
  /** Its word tokens (name and address) within the budget. */
  tokens: string[]
  /** The address's segment: ` tok tok ` of those tokens ('' when it has none). */
  stream: string
  /** Its exact address tokens (addressExactTokens). */
  exact: string[]
}

export function exactTokensOf(addresses: readonly TakenAddress[]): string[] {
  return [...new Set(addresses.flatMap((address) => address.exact))]
}

/**
 * Takes addresses (de-duplicated by address and name) while `addressesMax` allows,
 * tokenizing each through `take`; calls `onTruncated` when the limit cuts the list.
 */
export function addressTaker(addressesMax: number, take: (text: string) => string[], onTruncated: () => void): (list: readonly Address[]) => TakenAddress[] {
  let left = addressesMax
  return (list) => {
    const seen = new Set<string>()
    const out: TakenAddress[] = []
    for (const address of list) {
      const key = `${address.address.toLowerCase()}\n${address.name}`
      if (seen.has(key)) continue
      if (left <= 0) {
        onTruncated()
        break
      }
      seen.add(key)
      left--
      const tokens = take(`${address.name} ${address.address}`)
      out.push({ key, tokens, stream: streamOf([tokens]), exact: addressExactTokens(address.address) })
    }
    return out
  }
}

/** Adds the word and exact tokens of sender and recipient addresses with the from and to bits. */
export function addAddressTerms(table: TermTable, from: readonly TakenAddress[], to: readonly TakenAddress[]): void {
  for (const [list, bit] of [
    [from, fieldBits.from],
    [to, fieldBits.to],
  ] as const) {
    for (const address of list) {
      table.addAll(address.tokens, bit)
      table.addAll(address.exact, bit)
    }
  }
}

export function envelopeAddress(address: string): TakenAddress {
  const tokens = tokenize(` ${address}`)
  return { key: `${address.toLowerCase()}\n`, tokens, stream: streamOf([tokens]), exact: addressExactTokens(address) }
}
