/**
 * An Exchange envelope journal report (X-MS-Journal-Report) wrapping `original`: the envelope
 * names alice as sender, bob and dave as To, carol.hidden as BCC and team@ as an expanded
 * distribution list. The original's final CRLF is the one before the closing boundary.
 */
export function exchangeJournalReport(original: Buffer): Buffer {
  return Buffer.from(
    [
      'From: Microsoft Exchange <journal@corp.example>',
      'To: journal@archive.local',
      'Subject: quarterly numbers',
      'X-MS-Journal-Report:',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="jr-boundary"',
      '',
      '--jr-boundary',
      'Content-Type: text/plain; charset="us-ascii"',
      '',
      'Sender: alice@example.com',
      'Subject: quarterly numbers',
      'Message-Id: <q@example.com>',
      'To: bob@example.com',
      'Bcc: carol.hidden@example.com',
      'To: dave@example.com, Expanded: team@example.com',
      '',
      '--jr-boundary',
      'Content-Type: message/rfc822',
      '',
      original.toString('latin1').replace(/\r\n$/, ''),
      '--jr-boundary--',
      '',
    ].join('\r\n'),
    'latin1',
  )
}
