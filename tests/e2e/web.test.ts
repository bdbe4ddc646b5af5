import t from 'tap'
import { X509Certificate, createHash } from 'node:crypto'
import { createServer } from 'node:http'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { chromium, type Browser } from 'playwright-core'
import { hashPassword } from '../../firmware/common/password.js'
import { tempDir, writeConfig, startService, cliJson, portOf } from '../helpers/service.js'
import { SmtpSession, archivedId } from '../helpers/smtp.js'
import { unzip } from '../helpers/zip.js'

/** Debian's chromium (playwright-core never downloads a browser). */
const chromiumPath = '/usr/lib/chromium/chromium'
const technicianPassword = 'e2e-web-pass'
const attachmentText = 'quarter,total\nq3,1200\n'

const plainMail = (from: string, to: string, subject: string, body: string) =>
  Buffer.from(
    [
      `From: ${from}`,
      `To: ${to}`,
      `Subject: ${subject}`,
      `Message-ID: <${createHash('sha1').update(subject).digest('hex')}@e2e>`,
      'Date: Sat, 28 Nov 2026 11:00:00 +0000',
      '',
      body,
      '',
    ].join('\r\n'),
  )

/** A message whose every shown part carries markup meant to run, and an image from a "remote" host. */
const hostileMail = (remote: string) =>
  Buffer.from(
    [
      'From: "<img src=x onerror=window.__pwned=2>" <evil@bad.example>',
      'To: bob@example.com',
      'Subject: quarterly <script>window.__pwned=1</script><b onmouseover="window.__pwned=3">x</b>',
      'Message-ID: <hostile@e2e>',
      'X-Evil: <script>window.__pwned=4</script>',
      'Date: Sat, 28 Nov 2026 12:00:00 +0000',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="h"',
      '',
      '--h',
      'Content-Type: text/plain',
      '',
      'quarterly <script>window.__pwned=5</script> <a href="javascript:window.__pwned=6">click</a>',
      '--h',
      'Content-Type: text/html',
      '',
      `<html><body style="background:url(${remote}/css-bg)"><script>window.__pwned=7</script><img src="${remote}/pixel.gif"><div style="width:expression(alert(1))">quarterly</div><a href="javascript:alert(2)">x</a></body></html>`,
      '--h',
      'Content-Type: text/plain; name="<svg onload=window.__pwned=8>.txt"',
      'Content-Disposition: attachment; filename="<svg onload=window.__pwned=8>.txt"',
      '',
      'payload',
      '--h--',
      '',
    ].join('\r\n'),
  )

const withAttachment = () =>
  Buffer.from(
    [
      'From: Alice <alice@example.com>',
      'To: bob@example.com',
      'Subject: quarterly numbers',
      'Message-ID: <numbers@e2e>',
      'Date: Sat, 28 Nov 2026 10:00:00 +0000',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="a"',
      '',
      '--a',
      'Content-Type: text/plain',
      '',
      'the quarterly numbers are attached',
      '--a',
      'Content-Type: text/csv; name="numbers.csv"',
      'Content-Disposition: attachment; filename="numbers.csv"',
      'Content-Transfer-Encoding: base64',
      '',
      Buffer.from(attachmentText).toString('base64'),
      '--a--',
      '',
    ].join('\r\n'),
  )

t.test('the web interface in a real Chromium over HTTPS: sign in, search, read, download, scope, hostile mail, sign out', async (t) => {
  // The "remote" host a hostile message points at: it must never be asked for anything.
  const remoteRequests: string[] = []
  const remote = createServer((request, response) => {
    remoteRequests.push(request.url ?? '')
    response.end()
  })
  await new Promise<void>((resolve) => remote.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => remote.close(() => resolve())))
  const remoteBase = `http://127.0.0.1:${(remote.address() as { port: number }).port}`

  const dir = await tempDir()
  const config = await writeConfig(dir, { technician: { passwordHash: await hashPassword(technicianPassword) } })
  const service = await startService(config)
  t.teardown(() => service.stop())
  for (const [name, role, address] of [
    ['bob', 'user', 'bob@example.com'],
    ['aud', 'auditor', null],
    ['adm', 'admin', null],
  ] as const) {
    const added = await cliJson(config, ['user', 'add', name, '--role', role, ...(address ? ['--address', address] : []), '--password-stdin'], {
      input: `${technicianPassword}\n${name}-web-password\n`,
    })
    t.equal(added.code, 0, added.stderr)
  }
  const session = await SmtpSession.open(portOf(service, 'smtp'))
  const send = async (raw: Buffer, to: string) => archivedId(await session.send('sender@example.com', [to], raw))!
  const ids = {
    numbers: await send(withAttachment(), 'bob@example.com'),
    hostile: await send(hostileMail(remoteBase), 'bob@example.com'),
    other: await send(plainMail('carol@example.com', 'dave@example.com', 'quarterly other', 'not bob’s'), 'dave@example.com'),
  }
  session.close()

  // Chromium trusts exactly the appliance's key (SPKI pin), as a client that pinned it would.
  const certificate = new X509Certificate(await readFile(join(service.dataDir, 'tls', 'cert.pem'), 'utf8'))
  const spki = createHash('sha256')
    .update(certificate.publicKey.export({ type: 'spki', format: 'der' }))
    .digest('base64')
  const browser: Browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox', `--ignore-certificate-errors-spki-list=${spki}`] })
  t.teardown(() => browser.close())
  const base = `https://127.0.0.1:${portOf(service, 'https')}`

  const signedIn = async (name: string) => {
    const context = await browser.newContext()
    const page = await context.newPage()
    const dialogs: string[] = []
    page.on('dialog', (dialog) => {
      dialogs.push(dialog.message())
      void dialog.dismiss()
    })
    await page.goto(`${base}/search`)
    t.match(page.url(), /\/signin$/, `${name}: sent to sign in first`)
    await page.fill('input[name=user]', name)
    await page.fill('input[name=password]', `${name}-web-password`)
    await Promise.all([page.waitForURL(/\/search$/, { timeout: 10_000 }), page.click('button[type=submit]')]).catch(async (error) => {
      throw new Error(`${name} did not get to /search: ${(await page.textContent('main'))?.slice(0, 300)} (${(error as Error).message.slice(0, 100)})`)
    })
    return { context, page, dialogs }
  }

  const { context, page, dialogs } = await signedIn('bob')
  const cookies = await context.cookies()
  t.match(cookies, [{ name: '__Host-mailkeep-session', httpOnly: true, secure: true, sameSite: 'Strict' }], 'the session cookie as the browser keeps it')
  await page.fill('input[name=q]', 'quarterly')
  await Promise.all([page.waitForURL(/\/search\?q=quarterly/), page.click('.search-form button')])
  t.match(await page.textContent('p.meta'), /^2 messages$/, 'bob sees his two messages, not the third')
  const links = await page.$$eval('.hits a', (anchors) => anchors.map((anchor) => anchor.getAttribute('href')))
  t.same([...links].sort(), [`/messages/${ids.hostile}`, `/messages/${ids.numbers}`].sort())
  const shots = t.testdir()
  await page.screenshot({ path: join(shots, 'search.png'), fullPage: true })
  t.comment(`screenshots in ${shots}`)

  await page.goto(`${base}/messages/${ids.hostile}`)
  await page.screenshot({ path: join(shots, 'hostile-message.png'), fullPage: true })
  await page.goBack()
  await Promise.all([page.waitForURL(new RegExp(ids.numbers)), page.click(`a[href="/messages/${ids.numbers}"]`)])
  t.equal(await page.textContent('h1'), 'quarterly numbers')
  t.match(await page.textContent('pre.body'), /the quarterly numbers are attached/)
  const downloaded = async (selector: string): Promise<{ name: string; bytes: Buffer }> => {
    const [download] = await Promise.all([page.waitForEvent('download'), page.click(selector)])
    return { name: download.suggestedFilename(), bytes: await readFile((await download.path())!) }
  }
  const attachment = await downloaded(`a[href="/api/v1/messages/${ids.numbers}/attachments/0"]`)
  t.same([attachment.name, attachment.bytes.toString()], ['numbers.csv', attachmentText], 'the attachment link downloads its bytes (the session cookie signs the API request in)')
  const raw = await downloaded(`a[href="/api/v1/messages/${ids.numbers}/raw"]`)
  t.same(raw.bytes, withAttachment(), 'the .eml download is byte-identical')
  const foreign = await page.goto(`${base}/messages/${ids.other}`)
  t.equal(foreign?.status(), 404, "another's message by URL: 404")
  t.match(await page.textContent('main'), /There is no such message/)
  t.equal((await page.goto(`${base}/api/v1/messages/${ids.other}/raw`))?.status(), 404, 'nor its raw bytes')

  await page.goto(`${base}/messages/${ids.hostile}`)
  t.match(await page.textContent('h1'), /<script>window\.__pwned=1<\/script>/, 'the subject is shown as text')
  // The HTML body: sanitized, in a sandboxed frame whose document may run nothing and fetch nothing.
  const frame = page.frameLocator('iframe.html-body')
  t.match(await frame.locator('body').textContent(), /quarterly/, 'the HTML body is shown in its frame')
  for (const [selector, what] of [
    ['script', 'script elements'],
    ['[onerror], [onload], [onmouseover], [onclick]', 'event handlers'],
    ['[style]', 'style attributes (CSS expressions, url())'],
    ['img[src]', 'remote images'],
    ['a[href^="javascript"]', 'javascript: links'],
  ] as const) {
    t.equal(await frame.locator(selector).count(), 0, `sanitized: no ${what}`)
  }
  t.equal(await page.getAttribute('iframe.html-body', 'sandbox'), '', 'the frame is sandboxed with nothing allowed')
  await page.goto(`${base}/search?q=quarterly`)
  t.equal(await page.evaluate(() => (globalThis as unknown as { __pwned?: number }).__pwned), undefined, 'no script of the message ran')
  t.same(dialogs, [], 'no dialog opened')
  t.equal(await page.locator('script').count(), 0, 'no script element on any page')
  t.same(remoteRequests, [], 'the remote host was never asked for anything')
  const policy = (await page.goto(`${base}/search`))?.headers()['content-security-policy']
  t.match(policy, /default-src 'none'/, 'a strict Content-Security-Policy')
  t.equal((await page.goto(`${base}/status`))?.status(), 404, 'a user has no status page')

  // Sign out with the form (its CSRF token); the cookie no longer works.
  // The filter fields add up to a query in the language, shown in the box.
  await page.goto(`${base}/search?q=quarterly`)
  await page.fill('.filters input[name=from]', 'alice@example.com')
  await page.check('.filters input[name=attachment]')
  await Promise.all([page.waitForURL(/q=quarterly%20from%3Aalice%40example\.com%20has%3Aattachment$/), page.click('.filters button')])
  t.equal(await page.inputValue('input[name=q]'), 'quarterly from:alice@example.com has:attachment')
  t.match(await page.textContent('p.meta'), /^1 message$/, 'filtered to the one from alice with an attachment')
  t.equal((await page.goto(`${base}/holds`))?.status(), 404, 'a user has no holds page')
  t.equal((await page.goto(`${base}/audit`))?.status(), 404, 'nor an audit page')
  t.equal((await page.goto(`${base}/accounts`))?.status(), 404, 'nor the accounts page')

  // Export from the results: the zip holds bob's two messages and a manifest naming them.
  await page.goto(`${base}/search?q=quarterly`)
  const [exported] = await Promise.all([page.waitForEvent('download'), page.click('p.export a')])
  const zipFiles = await unzip(await readFile((await exported.path())!))
  const exportedManifest = JSON.parse(zipFiles.get('manifest.json')!.toString()) as { exportedBy: string; messages: { id: string }[] }
  t.same(exportedManifest.messages.map((message) => message.id).sort(), [ids.hostile, ids.numbers].sort(), 'the export from the page holds his two messages')
  t.equal(exportedManifest.exportedBy, 'bob')

  // Saved searches: bob's own, run from the list, deleted.
  await page.goto(`${base}/search?q=quarterly`)
  await page.fill('form.save-search input[name=label]', 'Q3 numbers')
  await Promise.all([page.waitForURL(/\/search\?q=quarterly$/), page.click('form.save-search button')])
  await page.goto(`${base}/search`)
  t.equal(await page.textContent('.saved a'), 'Q3 numbers', 'the saved search is listed on the empty search page')
  await Promise.all([page.waitForURL(/\/search\?q=quarterly$/), page.click('.saved a')])
  t.match(await page.textContent('p.meta'), /^2 messages$/, 'running it searches again, in his scope')
  await Promise.all([page.waitForURL(/\/search$/), page.click('.saved form button')])
  t.equal(await page.locator('.saved').count(), 0, 'deleted')

  await Promise.all([page.waitForURL(/\/signin$/), page.click('header form button')])
  await page.goto(`${base}/search`)
  t.match(page.url(), /\/signin$/, 'signed out')
  await context.close()

  const auditor = await signedIn('aud')
  await auditor.page.goto(`${base}/search?q=quarterly`)
  t.match(await auditor.page.textContent('p.meta'), /^3 messages$/, 'the auditor sees all three')
  await auditor.page.goto(`${base}/status`)
  t.match(await auditor.page.textContent('h1'), /Status/)
  await auditor.page.screenshot({ path: join(shots, 'status.png'), fullPage: true })
  await auditor.context.close()

  // Holds: the auditor reads them; the admin places and releases one.
  const auditorHolds = await signedIn('aud')
  await auditorHolds.page.goto(`${base}/holds`)
  t.equal(await auditorHolds.page.locator('form.place-hold').count(), 0, 'an auditor sees no form to place a hold')
  await auditorHolds.context.close()
  const admin = await signedIn('adm')
  await admin.page.goto(`${base}/holds`)
  await admin.page.fill('form.place-hold input[name=name]', 'Bad Name')
  await admin.page.fill('form.place-hold input[name=reason]', 'matter 7')
  await admin.page.click('form.place-hold button')
  t.match(await admin.page.textContent('.error'), /name/, 'a bad hold name is refused with the reason')
  await admin.page.fill('form.place-hold input[name=name]', 'matter-7')
  await admin.page.fill('form.place-hold input[name=reason]', 'regulator inquiry 7')
  await admin.page.fill('form.place-hold input[name=query]', 'quarterly')
  await Promise.all([admin.page.waitForURL(/\/holds$/), admin.page.click('form.place-hold button')])
  t.match(await admin.page.textContent('table.holds'), /matter-7.*regulator inquiry 7.*query: quarterly.*adm/s, 'the hold is placed')
  await Promise.all([admin.page.waitForURL(/\/holds$/), admin.page.click('form[action="/holds/matter-7/release"] button')])
  t.match(await admin.page.textContent('table.holds'), /released by adm@127\.0\.0\.1/, 'and released')
  // Accounts and tokens, listed for the admin only (no hash, no secret).
  await admin.page.goto(`${base}/accounts`)
  t.match(await admin.page.textContent('table.accounts'), /bob.*user.*bob@example\.com.*active/s)
  t.notMatch(await admin.page.content(), /scrypt\$/, 'no password hash on the page')

  // The audit log: filtered by account, and verified from the page.
  await admin.page.goto(`${base}/audit?actor=adm`)
  const whos = await admin.page.$$eval('table.audit tr td:nth-child(3)', (cells) => cells.map((cell) => cell.textContent ?? ''))
  t.ok(whos.length >= 2 && whos.every((who) => /^adm@/.test(who)), `only adm's entries (${whos.length})`)
  t.match(await admin.page.textContent('table.audit'), /hold\.release.*hold\.place/s, 'newest first')
  await Promise.all([admin.page.waitForURL(/verify=1/), admin.page.click('form.filters input[name=verify] + button')])
  t.match(await admin.page.textContent('[role=status]'), /The chain verifies: \d+ entries/)
  await admin.context.close()
  const holdsNow = (await cliJson(config, ['hold', 'list'])).json
  t.match(holdsNow, [{ name: 'matter-7', active: false, placedBy: 'adm' }], 'the CLI sees the same hold')
  const adminTrail = JSON.stringify((await cliJson(config, ['audit', 'show', '--actor', 'adm', '--limit', '50'])).json)
  t.match(adminTrail, /"action":"hold\.place".*"action":"hold\.release"/s, 'placing and releasing are audited under the admin')

  const trail = JSON.stringify((await cliJson(config, ['audit', 'show', '--actor', 'bob', '--limit', '50'])).json)
  t.match(trail, /"action":"mail\.search".*"via":"web"/, "bob's web searches are audited")
  t.match(trail, /"action":"mail\.read".*"part":"view"/, 'and his message views')
})
