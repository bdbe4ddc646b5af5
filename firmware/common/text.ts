/** `text` cut to at most `charsMax` UTF-16 code units, never inside a surrogate pair. */
export function cutToChars(text: string, charsMax: number): string {
  if (text.length <= charsMax) return text
  let end = charsMax
  const last = text.charCodeAt(end - 1)
  // Do not leave half of a surrogate pair at the end.
  if (last >= 0xd800 && last <= 0xdbff) end--
  return text.slice(0, end)
}
