import { createHash } from 'node:crypto'
import { inlineMessageDepthMax, nestingDepthMax, postalHeadersBytesMax } from './parser-options.js'
import { parseWithBudget } from './postal-adapter.js'

/** Time to find one attachment in a message, in ms (a parse of the raw bytes, and of an attached message). */
export const attachmentLookupBudgetMs = 10_000

type Found = { content: ArrayBuffer | Uint8Array | string; mimeType: string }

const bytesOf = (content: Found['content']): Uint8Array =>
  typeof content === 'string' ? new TextEncoder().encode(content) : content instanceof Uint8Array ? content : new Uint8Array(content)

/**
 * The bytes of the attachment whose SHA-256 is `sha256` (as the archive's metadata lists
 * it), looked for among the message's attachments and, for a journal report or a forward,
 * those of a message attached to it (one level). Undefined when none has that hash.
 *
 * @throws MimeError PARSE_BUDGET_EXCEEDED over attachmentLookupBudgetMs; postal-mime's errors
 */
export async function attachmentBytes(raw: Uint8Array, sha256: string, clock: { monotonicMs(): number }): Promise<Uint8Array | undefined> {
  const deadlineMs = clock.monotonicMs() + attachmentLookupBudgetMs
  const parse = async (bytes: Uint8Array) =>
    (
      await parseWithBudget(bytes, {
        postal: { maxNestingDepth: nestingDepthMax + 1, maxHeadersSize: postalHeadersBytesMax, maxRfc822NestingDepth: inlineMessageDepthMax },
        monotonicMs: () => clock.monotonicMs(),
        deadlineMs,
        budgetMs: attachmentLookupBudgetMs,
      })
    ).email.attachments as Found[]
  const matching = (list: Found[]) => list.map((attachment) => bytesOf(attachment.content)).find((bytes) => createHash('sha256').update(bytes).digest('hex') === sha256)
  const top = await parse(raw)
  const found = matching(top)
  if (found) return found
  for (const attached of top.filter((attachment) => attachment.mimeType.toLowerCase() === 'message/rfc822')) {
    const inner = matching(await parse(bytesOf(attached.content)))
    if (inner) return inner
  }
  return undefined
}
