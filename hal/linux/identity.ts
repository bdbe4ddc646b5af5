import { createHash } from 'node:crypto'

/**
 * Identity rules of hal/linux, pure so they are tested without DMI tables.
 *
 * Appliance detection: the factory programs the DMI system vendor as `mailkeep` and the
 * product name with the model number (e.g. `mailkeep 650`, `MK650`). A machine whose vendor
 * does not contain "mailkeep" is not an appliance (a VM, a development box): its model is
 * the configured `identity.model` override, or 0, which every consumer treats as an unknown
 * model (it is in no profile). On an appliance the DMI model wins over the override, so a
 * configuration cannot make a 350 pass as a 650 towards its mirror peers; the disagreement is
 * logged by the caller.
 */

/** The model number reported when neither DMI nor configuration gives one. */
export const unknownModel = 0

/** Values firmware vendors leave in DMI fields that are not set; they identify nothing. */
const placeholderPattern =
  /^(|-|0+|none|n\/a|not (specified|applicable|available|settable|present)|to be filled by o\.?e\.?m\.?|default string|system serial number|system product name|0123456789|123456789|x+|[0f-]{32,36}|03000200-0400-0500-0006-000700080009)$/i

/** `value` trimmed, or null when it is empty or a known DMI placeholder. */
export function meaningfulDmiValue(value: string | null | undefined): string | null {
  const trimmed = (value ?? '').trim()
  return placeholderPattern.test(trimmed) ? null : trimmed
}

/**
 * The model number programmed into an appliance's DMI, or null when the machine is not a
 * mailkeep appliance (see the module comment for the convention).
 */
export function applianceModelFromDmi(manufacturer: string, product: string): number | null {
  if (!/mailkeep/i.test(manufacturer)) return null
  const match = /(\d{3,5})/.exec(product)
  return match ? Number(match[1]) : null
}

/**
 * A stable serial derived from /etc/machine-id: `LNX-` and 12 upper-case hex digits of a
 * SHA-256 over the id. The id itself is not exposed (machine-id(5) asks applications to use
 * a hash of it), and the prefix tells a technician the serial is not a factory one.
 */
export function serialFromMachineId(machineId: string): string {
  const digest = createHash('sha256').update(`mailkeep-serial:${machineId.trim()}`).digest('hex')
  return `LNX-${digest.slice(0, 12).toUpperCase()}`
}
