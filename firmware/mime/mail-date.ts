/**
 * Date header parsing of our own, so that Node and Bun (whose `Date.parse` accept
 * different strings) read every message the same way.
 */

/** Characters of a Date value looked at; real values are under 60. */
const dateCharsMax = 256

const monthIndex: Record<string, number> = {
  jan: 0,
  feb: 1,
  mar: 2,
  apr: 3,
  may: 4,
  jun: 5,
  jul: 6,
  aug: 7,
  sep: 8,
  oct: 9,
  nov: 10,
  dec: 11,
}
const weekdays = new Set(['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'])
/**
 * Zone names in minutes east of UTC: RFC 5322 4.3 (obs-zone) plus a few common ones
 * mailers write anyway. Other alphabetic zones count as UTC, as RFC 5322 says of unknown
 * military zones.
 */
const zoneOffsetMinutes: Record<string, number> = {
  ut: 0,
  utc: 0,
  gmt: 0,
  z: 0,
  est: -300,
  edt: -240,
  cst: -360,
  cdt: -300,
  mst: -420,
  mdt: -360,
  pst: -480,
  pdt: -420,
  cet: 60,
  cest: 120,
  met: 60,
  mest: 120,
  bst: 60,
  eet: 120,
  eest: 180,
  wet: 0,
  west: 60,
  jst: 540,
  kst: 540,
  hkt: 480,
  sgt: 480,
  aest: 600,
  aedt: 660,
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

/** A date in ISO 8601 form (`2002-08-22T12:36:23Z`): its time, null when it is no valid date, undefined when `text` is not in that form. */
function parseIsoDate(text: string): number | null | undefined {
  const iso = isoPattern.exec(text)
  if (!iso) return undefined
  let offset = 0
  const zone = iso[7]
  if (zone && zone.toUpperCase() !== 'Z') offset = zoneFromNumeric(numericZonePattern.exec(zone)!)
  return build(Number(iso[1]), Number(iso[2]) - 1, Number(iso[3]), Number(iso[4] ?? 0), Number(iso[5] ?? 0), Number(iso[6] ?? 0), offset)
}

/** The words of an RFC 5322 date: comments and commas dropped, split at blanks. */
function dateTokens(text: string): string[] {
  return text
    .replace(/\([^()]*\)/g, ' ')
    .replace(/,/g, ' ')
    .split(/\s+/)
    .filter((token) => token.length > 0)
}

/** The fields of a date read so far, token by token; null until its token was seen. */
interface DateFields {
  day: number | null
  month: number | null
  year: number | null
  time: [number, number, number] | null
  offset: number | null
}

/** What one token did to the fields: taken (or skipped as noise), or it shows the value is not a date. */
type TokenOutcome = 'taken' | 'not-a-date'

/** True once day, month, year, time and zone are known: what follows is a comment or junk. */
function dateComplete(fields: DateFields): boolean {
  return fields.day !== null && fields.month !== null && fields.year !== null && fields.time !== null && fields.offset !== null
}

/** Date forms in one token (`2002/08/22`, `22-Aug-2002`); false when `token` is neither (or a date was read already). */
function readCompactDate(fields: DateFields, token: string): TokenOutcome | false {
  if (fields.day !== null || fields.month !== null || fields.year !== null) return false
  const ymd = yearMonthDayPattern.exec(token)
  if (ymd) {
    fields.year = Number(ymd[1])
    fields.month = Number(ymd[2]) - 1
    fields.day = Number(ymd[3])
    return 'taken'
  }
  const dmy = dayMonthYearPattern.exec(token)
  if (!dmy) return false
  const named = monthIndex[dmy[2]!.slice(0, 3).toLowerCase()]
  if (named === undefined) return 'not-a-date'
  fields.day = Number(dmy[1])
  fields.month = named
  fields.year = fullYear(dmy[3]!)
  return 'taken'
}

/** `GMT+1` after the time; false when `token` is no such zone. */
function readNamedOffset(fields: DateFields, token: string): TokenOutcome | false {
  const namedOffset = namedOffsetPattern.exec(token)
  if (!namedOffset || fields.time === null || fields.offset !== null) return false
  const minutes = Number(namedOffset[2]) * 60 + Number(namedOffset[3] ?? 0)
  fields.offset = namedOffset[1] === '-' ? -minutes : minutes
  return 'taken'
}

/** `AM`/`PM` after a 12-hour time; false otherwise. */
function readMeridiem(fields: DateFields, lower: string): TokenOutcome | false {
  const time = fields.time
  if ((lower !== 'am' && lower !== 'pm') || time === null || time[0] < 1 || time[0] > 12) return false
  // 12 AM is midnight, 12 PM is noon.
  time[0] = (time[0] % 12) + (lower === 'pm' ? 12 : 0)
  return 'taken'
}

/** An alphabetic token: a weekday (skipped), a month, or a zone name after the time. */
function readWord(fields: DateFields, lower: string): TokenOutcome {
  if (weekdays.has(lower.slice(0, 3)) && lower.length <= 9 && fields.time === null) return 'taken'
  const named = monthIndex[lower.slice(0, 3)]
  if (named !== undefined && fields.month === null && lower.length <= 9) {
    fields.month = named
    return 'taken'
  }
  if (fields.time === null) return 'not-a-date'
  // A zone name after a numeric zone (`+0000 GMT`) only repeats it.
  if (fields.offset === null) fields.offset = zoneOffsetMinutes[lower] ?? 0
  return 'taken'
}

/** A time, a numeric zone, a day or a year; anything else is not part of a date. */
function readNumeric(fields: DateFields, token: string): TokenOutcome {
  const clock = timePattern.exec(token)
  if (clock && fields.time === null) {
    fields.time = [Number(clock[1]), Number(clock[2]), Number(clock[3] ?? 0)]
    return 'taken'
  }
  const zone = numericZonePattern.exec(token)
  if (zone && fields.offset === null && (fields.time !== null || fields.year !== null)) {
    fields.offset = zoneFromNumeric(zone)
    return 'taken'
  }
  if (!/^\d+$/.test(token)) return 'not-a-date'
  if (token.length <= 2 && fields.day === null) fields.day = Number(token)
  else if (token.length >= 2 && token.length <= 4 && fields.year === null) fields.year = fullYear(token)
  else return 'not-a-date'
  return 'taken'
}

/** Reads one token of an RFC 5322 (or asctime-order) date into `fields`. */
function readDateToken(fields: DateFields, rawToken: string): TokenOutcome {
  const doubled = doubledSignZonePattern.exec(rawToken)
  const token = doubled ? doubled[1]! : rawToken
  const lower = token.toLowerCase().replace(/\.$/, '')
  const compact = readCompactDate(fields, token)
  if (compact !== false) return compact
  const read = readNamedOffset(fields, token) || readMeridiem(fields, lower)
  if (read !== false) return read
  if (/^[a-z]+$/.test(lower)) return readWord(fields, lower)
  return readNumeric(fields, token)
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
  const iso = parseIsoDate(text)
  if (iso !== undefined) return iso
  const fields: DateFields = { day: null, month: null, year: null, time: null, offset: null }
  for (const token of dateTokens(text)) {
    // Everything after a complete date with its zone is a trailing comment or junk.
    if (dateComplete(fields)) break
    if (readDateToken(fields, token) === 'not-a-date') return null
  }
  const { day, month, year, time, offset } = fields
  if (day === null || month === null || year === null) return null
  const [hour, minute, second] = time ?? [0, 0, 0]
  return build(year, month, day, hour, minute, second, offset ?? 0)
}
