/**
 * Date header parsing of our own, so that Node and Bun (whose `Date.parse` accept
 * different strings) read every message the same way.
 */

/** Characters of a Date value looked at; real values are under 60. */
const dateCharsMax = 256

const monthIndex: Record<string, number> = {
  jan: 0, feb: 1, mar: 2, apr: 3, may: 4, jun: 5, jul: 6, aug: 7, sep: 8, oct: 9, nov: 10, dec: 11,
}
const weekdays = new Set(['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'])
/**
 * Zone names in minutes east of UTC: RFC 5322 4.3 (obs-zone) plus a few common ones
 * mailers write anyway. Other alphabetic zones count as UTC, as RFC 5322 says of unknown
 * military zones.
 */
const zoneOffsetMinutes: Record<string, number> = {
  ut: 0, utc: 0, gmt: 0, z: 0,
  est: -300, edt: -240, cst: -360, cdt: -300, mst: -420, mdt: -360, pst: -480, pdt: -420,
  cet: 60, cest: 120, met: 60, mest: 120, bst: 60, eet: 120, eest: 180, wet: 0, west: 60,
  jst: 540, kst: 540, hkt: 480, sgt: 480, aest: 600, aedt: 660,
}

const isoPattern = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?\s*(Z|[+-]\d{2}:?\d{2})?$/i
// Single-digit minutes and seconds (`16:54:6`) occur in real mail.
const timePattern = /^(\d{1,2}):(\d{1,2})(?::(\d{1,2}))?(?:\.\d+)?$/
const numericZonePattern = /^([+-])(\d{2}):?(\d{2})$/
const dayMonthYearPattern = /^(\d{1,2})-([a-z]{3,9})-(\d{2,4})$/i
const yearMonthDayPattern = /^(\d{4})\/(\d{1,2})\/(\d{1,2})$/
// `GMT+1`, `UTC-05:00`: a named zone with an hour offset.
const namedOffsetPattern = /^(?:gmt|utc|ut)([+-])(\d{1,2})(?::?(\d{2}))?$/i
// `+-0500` (seen in real mail): a sign typed twice; the second one counts.
const doubledSignZonePattern = /^[+-]([+-]\d{4})$/

function zoneFromNumeric(match: RegExpExecArray): number {
  const minutes = Number(match[2]) * 60 + Number(match[3])
  return match[1] === '-' ? -minutes : minutes
}

function fullYear(text: string): number {
  const value = Number(text)
  // RFC 5322 4.3: two-digit years 00–49 are 20xx, 50–99 are 19xx; three digits add 1900.
  // `0102` is the same three-digit year printed with a leading zero (the classic
  // tm_year bug of Y2K-era mailers, common in real mail), so it is read as 2002.
  if (text.length === 2) return value < 50 ? 2000 + value : 1900 + value
  if (value >= 100 && value <= 999) return 1900 + value
  return value
}

function build(year: number, month: number, day: number, hour: number, minute: number, second: number, offsetMinutes: number): number | null {
  if (year < 1000 || year > 9999 || month < 0 || month > 11 || day < 1 || day > 31) return null
  if (hour > 23 || minute > 59 || second > 60) return null
  // A leap second is folded into the second before it.
  const utc = Date.UTC(year, month, day, hour, minute, Math.min(second, 59))
  const check = new Date(utc)
  // Date.UTC rolls 31 Feb over into March: reject days the month does not have.
  if (check.getUTCDate() !== day || check.getUTCMonth() !== month) return null
  return utc - offsetMinutes * 60_000
}

/**
 * Parses an RFC 5322 date (`Thu, 22 Aug 2002 12:36:23 +0100 (IST)`), leniently: the
 * weekday, seconds, comments and the zone are optional, fields may come in asctime order
 * (`Thu Aug 22 12:36:23 2002`), two-digit years follow RFC 5322 4.3, and ISO 8601
 * (`2002-08-22T12:36:23Z`) is accepted. A missing zone is taken as UTC.
 *
 * @param value the header value
 * @returns milliseconds since the epoch, or null when the value is not a date (never throws)
 */
export function parseMailDate(value: string): number | null {
  const text = value.slice(0, dateCharsMax).trim()
  const iso = isoPattern.exec(text)
  if (iso) {
    let offset = 0
    const zone = iso[7]
    if (zone && zone.toUpperCase() !== 'Z') offset = zoneFromNumeric(numericZonePattern.exec(zone)!)
    return build(Number(iso[1]), Number(iso[2]) - 1, Number(iso[3]), Number(iso[4] ?? 0), Number(iso[5] ?? 0), Number(iso[6] ?? 0), offset)
  }
  const tokens = text
    .replace(/\([^()]*\)/g, ' ')
    .replace(/,/g, ' ')
    .split(/\s+/)
    .filter((token) => token.length > 0)
  let day: number | null = null
  let month: number | null = null
  let year: number | null = null
  let time: [number, number, number] | null = null
  let offset: number | null = null
  for (const rawToken of tokens) {
    // Everything after a complete date with its zone is a trailing comment or junk.
    if (day !== null && month !== null && year !== null && time !== null && offset !== null) break
    const doubled = doubledSignZonePattern.exec(rawToken)
    const token = doubled ? doubled[1]! : rawToken
    const lower = token.toLowerCase().replace(/\.$/, '')
    const ymd = yearMonthDayPattern.exec(token)
    if (ymd && day === null && month === null && year === null) {
      year = Number(ymd[1])
      month = Number(ymd[2]) - 1
      day = Number(ymd[3])
      continue
    }
    const namedOffset = namedOffsetPattern.exec(token)
    if (namedOffset && time !== null && offset === null) {
      const minutes = Number(namedOffset[2]) * 60 + Number(namedOffset[3] ?? 0)
      offset = namedOffset[1] === '-' ? -minutes : minutes
      continue
    }
    if ((lower === 'am' || lower === 'pm') && time !== null && time[0] >= 1 && time[0] <= 12) {
      // 12 AM is midnight, 12 PM is noon.
      time[0] = (time[0] % 12) + (lower === 'pm' ? 12 : 0)
      continue
    }
    const dmy = dayMonthYearPattern.exec(token)
    if (dmy && day === null && month === null && year === null) {
      const named = monthIndex[dmy[2]!.slice(0, 3).toLowerCase()]
      if (named === undefined) return null
      day = Number(dmy[1])
      month = named
      year = fullYear(dmy[3]!)
      continue
    }
    if (/^[a-z]+$/.test(lower)) {
      if (weekdays.has(lower.slice(0, 3)) && lower.length <= 9 && time === null) continue
      const named = monthIndex[lower.slice(0, 3)]
      if (named !== undefined && month === null && lower.length <= 9) {
        month = named
        continue
      }
      if (time !== null) {
        // A zone name after a numeric zone (`+0000 GMT`) only repeats it.
        if (offset === null) offset = zoneOffsetMinutes[lower] ?? 0
        continue
      }
      return null
    }
    const clock = timePattern.exec(token)
    if (clock && time === null) {
      time = [Number(clock[1]), Number(clock[2]), Number(clock[3] ?? 0)]
      continue
    }
    const zone = numericZonePattern.exec(token)
    if (zone && offset === null && (time !== null || year !== null)) {
      offset = zoneFromNumeric(zone)
      continue
    }
    if (/^\d+$/.test(token)) {
      if (token.length <= 2 && day === null) day = Number(token)
      else if (token.length >= 2 && token.length <= 4 && year === null) year = fullYear(token)
      else return null
      continue
    }
    return null
  }
  if (day === null || month === null || year === null) return null
  const [hour, minute, second] = time ?? [0, 0, 0]
  return build(year, month, day, hour, minute, second, offset ?? 0)
}
