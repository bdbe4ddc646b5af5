import t from 'tap'
import { escapeHtml, html, trustedHtml } from '../../../firmware/web/html.js'
import { safeSnippet } from '../../../firmware/web/pages.js'
import { filteredQuery } from '../../../firmware/web/web-routes.js'
import { sanitizeMailHtml } from '../../../firmware/web/html-body.js'

t.test('the template escapes every interpolated value unless it is Html', async (t) => {
  t.equal(escapeHtml(`<a href="x" onclick='y'>&</a>`), '&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;')
  const evil = '"><script>alert(1)</script>'
  t.equal(String(html`<input value="${evil}">`), '<input value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;">')
  t.equal(String(html`<ul>${['<b>', html`<li>${'&'}</li>`]}</ul>`), '<ul>&lt;b&gt;<li>&amp;</li></ul>', 'arrays joined, Html kept, strings escaped')
  t.equal(String(html`${null}${undefined}${false}${0}`), '0')
  t.equal(String(html`${trustedHtml('<hr>')}`), '<hr>')
})

t.test('a snippet is admitted only as escaped text with <mark>', async (t) => {
  t.equal(String(safeSnippet('the <mark>quarterly</mark> &lt;b&gt;')), 'the <mark>quarterly</mark> &lt;b&gt;')
  for (const bad of ['<img src=x onerror=alert(1)>', '<mark onclick="x">a</mark>', 'a"b', '<script>x</script>']) {
    t.notMatch(String(safeSnippet(bad)), /<(?!\/?mark>)/, `${bad}: no tag but <mark> survives`)
  }
})

t.test('filters add up to a query; bad fields are refused with a sentence', async (t) => {
  const query = (fields: Record<string, string>) => filteredQuery(new URLSearchParams(fields))
  t.same(query({ q: 'budget', from: 'alice@x.example', to: 'corp.example', after: '2024-01-01', before: '2025-01-01', attachment: '1' }), {
    query: 'budget from:alice@x.example to:corp.example after:2024-01-01 before:2025-01-01 has:attachment',
  })
  t.same(query({ from: 'alice' }), { query: 'from:alice' })
  t.match(query({ q: 'a', from: 'a b' }), { problem: /from: one address/ })
  t.match(query({ q: 'a', to: 'x") OR ("' }), { problem: /to:/ })
  t.match(query({ q: 'a', after: 'yesterday' }), { problem: /after: a date YYYY-MM-DD/ })
})

t.test('mail HTML keeps its formatting and loses everything active', async (t) => {
  const out = sanitizeMailHtml(
    '<p style="color:red">Hi <b>there</b></p><script>x()</script><img src="https://track.example/p.gif" onerror="x()"><img src="data:image/png;base64,AAAA"><a href="javascript:x()">j</a><a href="https://ok.example/">ok</a><form><input></form><iframe src="https://x"></iframe>',
  )
  t.match(out, /<p>Hi <b>there<\/b><\/p>/)
  t.notMatch(out, /script|onerror|style=|track\.example|javascript:|<form|<input|<iframe/)
  t.match(out, /<img src="data:image\/png;base64,AAAA" \/>/, 'an inline image stays')
  t.match(out, /<a href="https:\/\/ok\.example\/" target="_blank" rel="noopener noreferrer">ok<\/a>/)
})
