/**
 * The field bits of a posting: where in a message a token occurs. A posting carries one
 * mask byte of them, so one posting per (token, document) serves every field.
 */

import type { TextField } from './query.js'

/** Field bits of a posting entry. */
export const fieldBits = {
  subject: 1,
  /** Body text and the text of attachments. */
  body: 2,
  from: 4,
  to: 8,
  /** Attachment file names. */
  attachment: 16,
  /** Markers such as has:attachment. */
  marker: 32,
} as const

/** Every text field: what a word without a field matches. */
export const anyTextBits = fieldBits.subject | fieldBits.body | fieldBits.from | fieldBits.to | fieldBits.attachment

/** Token of the has:attachment marker (cannot collide: tokens never contain control characters). */
export const hasAttachmentToken = '\u0002attachment'

/** The posting bits a word in `field` matches. */
export function bitsOf(field: TextField): number {
  switch (field) {
    case 'any':
      return anyTextBits
    case 'subject':
      return fieldBits.subject
    case 'from':
      return fieldBits.from
    case 'to':
      return fieldBits.to
    case 'attachment':
      return fieldBits.attachment
  }
}
