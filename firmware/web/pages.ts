import type { MessageMeta } from '../archive/types.js'
import type { Principal } from '../access/roles.js'
import { roleMay } from '../access/roles.js'
import { html, trustedHtml, type Html } from './html.js'

/**
 * The pages, as pure functions of what the routes read (web-routes.ts): no archive logic,
 * no I/O. Every archived string goes through `html`'s escaping; the only markup from
 * elsewhere is a search snippet, admitted by `safeSnippet` only as text and <mark>.
 */

/** The signed-in reader: who, and the CSRF token the sign-out form carries. */
export interface Viewer {
  principal: Principal
  csrfToken: string
  expiresAt: string
  idleExpiresAt: string
}

export function layout(title: string, viewer: Viewer | undefined, body: Html): Html {
  const nav = viewer
    ? html`<nav><a href="/search">Search</a>${roleMay(viewer.principal.role, 'status.read') ? html`<a href="/status">Status</a>` : ''}${roleMay(viewer.principal.role, 'policy.read') ? html`<a href="/holds">Holds</a>` : ''}${roleMay(viewer.principal.role, 'audit.read') ? html`<a href="/audit">Audit log</a>` : ''}${roleMay(viewer.principal.role, 'accounts.read') ? html`<a href="/accounts">Accounts</a>` : ''}</nav>
      <span class="who">${viewer.principal.name} (${viewer.principal.role}) · session ends ${viewer.idleExpiresAt.replace('T', ' ').slice(0, 16)} UTC if idle</span>
      <form method="post" action="/signout"><input type="hidden" name="_csrf" value="${viewer.csrfToken}"><button class="link" type="submit">Sign out</button></form>`
    : ''
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · mailkeep</title><link rel="stylesheet" href="/assets/app.css"></head>
<body><header><span class="brand">mailkeep</span>${nav}</header><main>${body}</main></body></html>`
}

export function signInPage(problem: string | undefined, user: string): Html {
  return layout(
    'Sign in',
    undefined,
    html`<div class="panel narrow">
  <h1>Sign in</h1>
  ${problem ? html`<div class="error" role="alert">${problem}</div>` : ''}
  <form method="post" action="/signin">
    <p><label>User<br><input type="text" name="user" autocomplete="username" value="${user}" required autofocus></label></p>
    <p><label>Password<br><input type="password" name="password" autocomplete="current-password" required></label></p>
    <button type="submit">Sign in</button>
  </form></div>`,
  )
}

/** A snippet as the index made it (escaped text with <mark>): admitted only when it is exactly that. */
export function safeSnippet(snippet: string): Html {
  const parts = snippet.split(/(<\/?mark>)/)
  const clean = parts.every((part) => part === '<mark>' || part === '</mark>' || !/[<>"]/.test(part))
  return clean ? trustedHtml(snippet) : html`${snippet}`
}

export interface SearchView {
  query: string
  total: number
  hits: { id: string; dateMs: number; from: string; subject: string; snippet: string }[]
  nextCursor: string | null
  incomplete: string[]
  problem?: string
}

const day = (ms: number) => new Date(ms).toISOString().replace('T', ' ').slice(0, 16)

export function searchPage(viewer: Viewer, view: SearchView | undefined, query: string, saved: readonly { label: string; query: string }[] = []): Html {
  const csrf = html`<input type="hidden" name="_csrf" value="${viewer.csrfToken}">`
  const savedPanel = saved.length
    ? html`<div class="panel saved"><h1>Saved searches</h1><ul>${saved.map(
        (entry) =>
          html`<li><a href="/search?q=${encodeURIComponent(entry.query)}">${entry.label}</a> <span class="meta">${entry.query}</span>
          <form method="post" action="/saved/delete">${csrf}<input type="hidden" name="label" value="${entry.label}"><button class="link" type="submit">delete</button></form></li>`,
      )}</ul></div>`
    : ''
  const saveForm = query
    ? html`<form class="save-search" method="post" action="/saved">${csrf}<input type="hidden" name="q" value="${query}">
  <label>Save as <input type="text" name="label" size="24" maxlength="100" required></label> <button type="submit">Save search</button></form>`
    : ''
  const results = view
    ? html`<p class="meta">${view.total} message${view.total === 1 ? '' : 's'}</p>
  ${view.total > 0 ? html`<p class="export"><a href="/api/v1/export?q=${encodeURIComponent(view.query)}" download>Export these ${view.total} as a zip with a signed manifest</a></p>` : ''}
  ${view.incomplete.map((line) => html`<div class="notice">${line}</div>`)}
  <ul class="hits">${view.hits.map(
    (hit) => html`<li><a href="/messages/${hit.id}">${hit.subject || '(no subject)'}</a>
    <div class="meta">${hit.from} · ${day(hit.dateMs)} UTC</div><div class="snippet">${safeSnippet(hit.snippet)}</div></li>`,
  )}</ul>
  ${view.nextCursor ? html`<p><a rel="next" href="/search?q=${encodeURIComponent(view.query)}&amp;cursor=${encodeURIComponent(view.nextCursor)}">Next page</a></p>` : ''}`
    : ''
  return layout(
    query ? `Search: ${query}` : 'Search',
    viewer,
    html`<div class="panel"><form class="search-form" method="get" action="/search" role="search">
  <input type="search" name="q" value="${query}" aria-label="Query" placeholder="from:alice@example.com after:2024-01-01 contract" autofocus>
  <button type="submit">Search</button></form>
  <form class="filters" method="get" action="/search"><input type="hidden" name="q" value="${query}">
  <label>From <input type="text" name="from" size="18"></label> <label>To <input type="text" name="to" size="18"></label>
  <label>After <input type="date" name="after"></label> <label>Before <input type="date" name="before"></label>
  <label><input type="checkbox" name="attachment" value="1"> has attachment</label> <button type="submit">Filter</button></form>
  <div class="syntax">words (all must match) · "exact phrase" · a OR b · -word · from: to: subject: attachment: has:attachment · after:YYYY-MM-DD before:YYYY-MM-DD</div></div>
  ${view?.problem ? html`<div class="error" role="alert">${view.problem}</div>` : ''}
  ${saveForm}${results}${savedPanel}`,
  )
}

export function messagePage(viewer: Viewer, meta: MessageMeta, bodyText: string | null, hasHtml: boolean): Html {
  const row = (name: string, value: Html | string | null | undefined) => (value ? html`<tr><th>${name}</th><td>${value}</td></tr>` : '')
  const list = (values: readonly string[]) => (values.length ? values.join(', ') : null)
  const envelopeTo = [...new Set(meta.deliveries.flatMap((delivery) => delivery.envelopeTo))]
  const envelopeBcc = [...new Set(meta.deliveries.flatMap((delivery) => delivery.envelopeBcc))]
  return layout(
    meta.subject ?? '(no subject)',
    viewer,
    html`<div class="panel"><h1>${meta.subject ?? '(no subject)'}</h1>
  <table>
    ${row('From', list(meta.from))}${row('To', list(meta.to))}${row('Cc', list(meta.cc))}${row('Bcc', list(meta.bcc))}
    ${row('Envelope recipients', list(envelopeTo))}${row('Envelope Bcc', list(envelopeBcc))}
    ${row('Date', meta.dateMs === null ? null : `${day(meta.dateMs)} UTC`)}${row('Archived', `${day(meta.firstArchivedAtMs)} UTC`)}
    ${row('Message-ID', meta.messageId)}${row('Size', `${meta.sizeBytes} bytes`)}
    ${row('Deliveries', meta.deliveries.map((delivery) => `${delivery.source}${delivery.sourceName ? ` (${delivery.sourceName})` : ''} ${day(delivery.receivedAtMs)}`).join('; '))}
    ${row('Flags', meta.flags.length ? html`<span class="flags">${meta.flags.map((flag) => html`<span>${flag}</span>`)}</span>` : null)}
    ${row('Original', html`<a href="/api/v1/messages/${meta.id}/raw" download>Download .eml</a>`)}
  </table></div>
  ${
    meta.attachments.length
      ? html`<div class="panel"><h1>Attachments</h1><table>${meta.attachments.map(
          (attachment, index) =>
            html`<tr><td><a href="/api/v1/messages/${meta.id}/attachments/${index}" download>${attachment.filename ?? `attachment ${index + 1}`}</a></td><td>${attachment.contentType}</td><td>${attachment.sizeBytes} bytes</td></tr>`,
        )}</table></div>`
      : ''
  }
  ${hasHtml ? html`<div class="panel"><h1>HTML body</h1><iframe class="html-body" sandbox src="/messages/${meta.id}/html" title="The HTML body, sanitized; no script, no remote content"></iframe></div>` : ''}
  <div class="panel"><pre class="body">${bodyText ?? '(no text body)'}</pre></div>`,
  )
}

/** A hold as the holds page lists it. */
export interface HoldRow {
  name: string
  reason: string
  query?: string
  custodians?: string[]
  placedBy: string
  placedAtMs: number
  active: boolean
  releasedAtMs?: number
  releasedBy?: string
}

export function holdsPage(viewer: Viewer, holds: readonly HoldRow[], problem: string | undefined): Html {
  const mayChange = roleMay(viewer.principal.role, 'policy.write')
  const csrf = html`<input type="hidden" name="_csrf" value="${viewer.csrfToken}">`
  return layout(
    'Litigation holds',
    viewer,
    html`${problem ? html`<div class="error" role="alert">${problem}</div>` : ''}
  <div class="panel"><h1>Litigation holds</h1>
  <table class="holds"><tr><th>Name</th><th>Reason</th><th>What it holds</th><th>Placed</th><th>State</th></tr>
  ${holds.map(
    (
      hold,
    ) => html`<tr><td>${hold.name}</td><td>${hold.reason}</td><td>${[hold.query ? `query: ${hold.query}` : '', hold.custodians?.length ? `custodians: ${hold.custodians.join(', ')}` : ''].filter(Boolean).join('; ')}</td>
      <td>${hold.placedBy}, ${day(hold.placedAtMs)} UTC</td>
      <td>${hold.active ? (mayChange ? html`<form method="post" action="/holds/${hold.name}/release">${csrf}<button type="submit">Release</button></form>` : 'active') : `released by ${hold.releasedBy ?? '?'} ${hold.releasedAtMs ? day(hold.releasedAtMs) : ''}`}</td></tr>`,
  )}</table></div>
  ${
    mayChange
      ? html`<div class="panel"><h1>Place a hold</h1><form method="post" action="/holds" class="place-hold">${csrf}
    <p><label>Name (a-z 0-9 . _ -)<br><input type="text" name="name" required></label></p>
    <p><label>Reason<br><input type="text" name="reason" required></label></p>
    <p><label>Query (the search language)<br><input type="text" name="query"></label></p>
    <p><label>Custodians (addresses or @domains, comma-separated)<br><input type="text" name="custodians"></label></p>
    <button type="submit">Place hold</button></form></div>`
      : ''
  }`,
  )
}

/** One audit entry as the audit page lists it. */
export interface AuditRow {
  seq: number
  atMs: number
  actor: string
  action: string
  details: Record<string, unknown>
}

export function auditPage(
  viewer: Viewer,
  entries: readonly AuditRow[],
  actor: string,
  verify: { ok: boolean; entries: number; problems: { seq: number | null; message: string }[] } | undefined,
): Html {
  return layout(
    'Audit log',
    viewer,
    html`<div class="panel"><h1>Audit log</h1>
  <form class="filters" method="get" action="/audit"><label>Account <input type="text" name="actor" value="${actor}" size="24"></label> <button type="submit">Filter</button></form>
  <form class="filters" method="get" action="/audit"><input type="hidden" name="verify" value="1"><button type="submit">Verify the chain</button></form>
  ${
    verify
      ? html`<div class="${verify.ok ? 'notice ok-box' : 'error'}" role="status">${verify.ok ? `The chain verifies: ${verify.entries} entries, each hash and MAC intact.` : `The chain is damaged: ${verify.problems.map((problem) => `${problem.seq ?? '-'}: ${problem.message}`).join('; ')}`}</div>`
      : ''
  }
  <table class="audit"><tr><th>#</th><th>When (UTC)</th><th>Who</th><th>What</th><th>Details</th></tr>
  ${entries.map((entry) => html`<tr><td>${entry.seq}</td><td>${day(entry.atMs)}</td><td>${entry.actor}</td><td>${entry.action}</td><td><code>${JSON.stringify(entry.details).slice(0, 300)}</code></td></tr>`)}
  </table></div>`,
  )
}

/** Accounts and tokens as the accounts page lists them (never a hash or a secret). */
export interface AccountsView {
  accounts: { name: string; role: string; addresses: string[]; disabled: boolean; changedAt: string }[]
  tokens: { name: string; role: string; addresses: string[]; createdAt: string; lastUsedAt: string | null }[]
}

export function accountsPage(viewer: Viewer, view: AccountsView): Html {
  return layout(
    'Accounts',
    viewer,
    html`<div class="panel"><h1>Local accounts</h1>
  <p class="meta">The first admin is <code>admin</code>; directory accounts sign in through the directory. Accounts are added and changed by a technician (<code>mailkeep user add|passwd|disable|enable|remove</code>).</p>
  <table class="accounts"><tr><th>Name</th><th>Role</th><th>Addresses</th><th>State</th><th>Changed</th></tr>
  ${view.accounts.map((account) => html`<tr><td>${account.name}</td><td>${account.role}</td><td>${account.addresses.join(', ')}</td><td>${account.disabled ? 'disabled' : 'active'}</td><td>${account.changedAt.replace('T', ' ').slice(0, 16)}</td></tr>`)}
  </table></div>
  <div class="panel"><h1>API tokens</h1><p class="meta">Created and revoked by a technician (<code>mailkeep token create|revoke</code>).</p>
  <table class="tokens"><tr><th>Name</th><th>Role</th><th>Addresses</th><th>Created</th><th>Last used</th></tr>
  ${view.tokens.map((token) => html`<tr><td>${token.name}</td><td>${token.role}</td><td>${token.addresses.join(', ')}</td><td>${token.createdAt.replace('T', ' ').slice(0, 16)}</td><td>${token.lastUsedAt ? token.lastUsedAt.replace('T', ' ').slice(0, 16) : 'never (since start)'}</td></tr>`)}
  </table></div>`,
  )
}

export function statusPage(viewer: Viewer, status: Record<string, unknown>): Html {
  const reasons = (status.reasons as string[] | undefined) ?? []
  const state = String(status.state ?? 'unknown')
  const store = (status.store ?? {}) as Record<string, unknown>
  const mirror = (status.mirror ?? {}) as { peers?: Record<string, unknown>[] }
  return layout(
    'Status',
    viewer,
    html`<div class="panel"><h1>Status <span class="state ${state === 'ok' ? 'ok' : 'degraded'}">${state}</span></h1>
  ${reasons.map((reason) => html`<div class="notice">${reason}</div>`)}
  <table>
    <tr><th>Model</th><td>${String(status.model ?? '')}</td></tr><tr><th>Serial</th><td>${String(status.serial ?? '')}</td></tr>
    <tr><th>Firmware</th><td>${String(status.firmwareVersion ?? '')}</td></tr><tr><th>Mode</th><td>${String(status.mode ?? '')}</td></tr>
    <tr><th>Messages</th><td>${String(store.messages ?? '')}</td></tr><tr><th>Deliveries</th><td>${String(store.deliveries ?? '')}</td></tr>
    <tr><th>Raw bytes</th><td>${String(store.rawBytes ?? '')}</td></tr>
  </table></div>
  <div class="panel"><h1>Mirror peers</h1>${
    mirror.peers?.length
      ? html`<table>${mirror.peers.map((peer) => html`<tr><th>${String(peer.serial ?? peer.address ?? '')}</th><td>${String(peer.state ?? '')}</td><td>${String(peer.queuedMessages ?? '')} queued</td></tr>`)}</table>`
      : html`<p>none</p>`
  }</div>`,
  )
}

export function errorPage(viewer: Viewer | undefined, title: string, message: string): Html {
  return layout(title, viewer, html`<div class="panel"><h1>${title}</h1><p>${message}</p></div>`)
}
