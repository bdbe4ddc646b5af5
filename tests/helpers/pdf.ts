/**
 * A minimal one-page PDF whose page shows `text` in Helvetica (no xref table: pdf.js
 * rebuilds it, as it does for many PDFs found in real mail). `text` must not contain
 * parentheses or backslashes.
 */
export function tinyPdf(text: string): Uint8Array {
  const content = `BT /F1 12 Tf 10 50 Td (${text}) Tj ET`
  return new TextEncoder().encode(
    [
      '%PDF-1.4',
      '1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj',
      '2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj',
      '3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 600 100]/Contents 4 0 R/Resources<</Font<</F1 5 0 R>>>>>>endobj',
      `4 0 obj<</Length ${content.length}>>stream`,
      content,
      'endstream endobj',
      '5 0 obj<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>endobj',
      'trailer<</Root 1 0 R>>',
      '%%EOF',
      '',
    ].join('\n'),
  )
}
