import type { Delivery } from './types.js'

/**
 * One list of a delivery's fields, in the one order both of its encodings use: the stored
 * delivery record (records.ts: the format version, then these values, the source by its
 * position in deliverySources) and the mirror's copy (firmware/mirror: the wire delivery of a
 * MESSAGE header and the digest in a copied delivery's key). Both are formats already
 * written, on disk and in delivery keys: never reorder the fields; a new one is appended, and
 * it makes a new record version and new delivery keys.
 */

/** Delivery sources; records.ts stores a source as its position here: new ones are appended, never inserted. */
export const deliverySources: readonly Delivery['source'][] = ['smtp', 'journal', 'import', 'mirror']

const isString = (value: unknown): value is string => typeof value === 'string'
const isNullableString = (value: unknown): value is string | null => value === null || typeof value === 'string'
const isStrings = (value: unknown): value is string[] => Array.isArray(value) && value.every(isString)
const isFiniteNumber = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value)
const isSource = (value: unknown): value is Delivery['source'] => deliverySources.includes(value as Delivery['source'])

/**
 * Every field of a delivery, in order, with the check its decoders apply to the value. The
 * type makes every field of Delivery appear here exactly once (an optional one too: absent,
 * it is encoded as null).
 */
const deliveryFieldChecks: { readonly [F in keyof Delivery]-?: (value: unknown) => boolean } = {
  source: isSource,
  sourceName: isNullableString,
  receivedAtMs: isFiniteNumber,
  envelopeFrom: isNullableString,
  envelopeTo: isStrings,
  envelopeBcc: isStrings,
  remoteAddress: isNullableString,
  journalEnvelopeText: isNullableString,
  deliveryKey: isNullableString,
}

/** A field of a delivery. */
export type DeliveryField = keyof Delivery

/** The fields of a delivery in their encoded order. */
export const deliveryFields: readonly DeliveryField[] = Object.keys(deliveryFieldChecks) as DeliveryField[]

/** A delivery with every field present, in field order (what copyDelivery makes). */
export type CompleteDelivery = Required<Omit<Delivery, 'deliveryKey'>> & { deliveryKey: string | null }

/** A field's value; an absent deliveryKey is null. */
function fieldValue(delivery: Delivery, field: DeliveryField): unknown {
  return field === 'deliveryKey' ? (delivery.deliveryKey ?? null) : delivery[field]
}

/**
 * The delivery's values in field order (an absent deliveryKey as null); `encodeSource` turns
 * the source into what is stored (records.ts: its position in deliverySources).
 */
export function deliveryValues(delivery: Delivery, encodeSource: (source: Delivery['source']) => unknown = (source) => source): unknown[] {
  return deliveryFields.map((field) => (field === 'source' ? encodeSource(delivery.source) : fieldValue(delivery, field)))
}

/**
 * The delivery `values` lists in field order (built in that order), or undefined when there
 * are not as many values as fields or one fails its field's check. `decodeSource` turns the
 * stored source back into its name.
 */
export function deliveryFromValues(values: readonly unknown[], decodeSource: (stored: unknown) => unknown = (stored) => stored): CompleteDelivery | undefined {
  if (values.length !== deliveryFields.length) return undefined
  const decoded = deliveryFields.map((field, index) => (field === 'source' ? decodeSource(values[index]) : values[index]))
  if (!deliveryFields.every((field, index) => deliveryFieldChecks[field](decoded[index]))) return undefined
  return Object.fromEntries(deliveryFields.map((field, index) => [field, decoded[index]])) as unknown as CompleteDelivery
}

/** A copy of a delivery with every field, in field order: lists copied, an absent deliveryKey null. */
export function copyDelivery(delivery: Delivery): CompleteDelivery {
  return Object.fromEntries(
    deliveryFields.map((field) => {
      const value = fieldValue(delivery, field)
      return [field, Array.isArray(value) ? [...value] : value]
    }),
  ) as unknown as CompleteDelivery
}
