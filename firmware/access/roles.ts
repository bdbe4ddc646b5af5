import { everything, addressScope, inScope, type Scope, type ScopedMessage } from './scope.js'

/**
 * Roles and what each may do (README: the roles table). Every API route names the one
 * permission it needs; a role without it is answered 403. Which messages a permitted
 * route may show is the scope's business (scope.ts): a `user` gets 404 for mail outside it.
 */

export const roles = ['admin', 'auditor', 'user'] as const
export type Role = (typeof roles)[number]

export const permissions = [
  /** One's own session: who am I, sign in, sign out. */
  'session.own',
  /** Appliance status: health, listeners, store figures, mirror. */
  'status.read',
  /** Search, within the caller's scope. */
  'mail.search',
  /** A message's metadata, raw bytes or attachments, within the caller's scope. */
  'mail.read',
  /** An export of a query's messages with a signed manifest, within the caller's scope. */
  'mail.export',
  /** Retention policies, the purge preview and holds: read. */
  'policy.read',
  /** Retention policies and holds: change. */
  'policy.write',
  /** The audit log and its verification. */
  'audit.read',
  /** The list of local accounts and API tokens (changes stay with the technician). */
  'accounts.read',
] as const
export type Permission = (typeof permissions)[number]

const rolePermissions: Record<Role, ReadonlySet<Permission>> = {
  // Configuration, policies, holds, users, mirror; searches everything.
  admin: new Set(permissions),
  // Searches, reads (and exports) all mail, reads policies, holds and the audit log; changes nothing.
  auditor: new Set<Permission>(['session.own', 'status.read', 'mail.search', 'mail.read', 'mail.export', 'policy.read', 'audit.read']),
  // Searches and reads their own mail only.
  user: new Set<Permission>(['session.own', 'mail.search', 'mail.read', 'mail.export']),
}

/** Whether `role` has `permission`. */
export function roleMay(role: Role, permission: Permission): boolean {
  return rolePermissions[role].has(permission)
}

/** Whether `text` names a role. */
export function isRole(text: string): text is Role {
  return (roles as readonly string[]).includes(text)
}

/** Who is asking: an account (local, directory, the first admin) or an API token acting as a role. */
export interface Principal {
  /** Account name (or `token:NAME`): the actor in the audit log. */
  readonly name: string
  readonly role: Role
  /** The addresses a `user` sees mail of (primary first, then aliases); empty for the others. */
  readonly addresses: readonly string[]
  /** Where the principal comes from. */
  readonly source: 'first-admin' | 'local' | 'directory' | 'token'
}

/** Who a route open to anyone (the sign-in) is handed: a user with no address, who sees nothing. */
export const anonymous: Principal = Object.freeze({ name: 'anonymous', role: 'user', addresses: [], source: 'local' })

/** The messages `principal` may see. */
export function scopeOf(principal: Principal): Scope {
  return principal.role === 'user' ? addressScope(principal.addresses) : everything
}

/**
 * How a search is narrowed for `principal` (the index's SearchScope): undefined for the
 * roles that see everything; for a `user`, their addresses and the rule's last word over
 * each match's metadata (`getMeta`).
 */
export function searchScopeFor(principal: Principal, getMeta: (id: string) => ScopedMessage | undefined): { addresses: string[]; admits(id: string): boolean } | undefined {
  const scope = scopeOf(principal)
  if (scope.kind === 'all') return undefined
  return {
    addresses: [...scope.addresses],
    admits: (id) => {
      const message = getMeta(id)
      return message !== undefined && inScope(scope, message)
    },
  }
}
