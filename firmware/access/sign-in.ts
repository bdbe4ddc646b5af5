import type { AccountCheck } from './accounts.js'
import type { Principal } from './roles.js'

/**
 * Who a user name and password are: the one place that decides which account source
 * answers for a name. `admin` is the first admin only (http.adminPasswordHash or the
 * generated initial password); a name with a local account is checked there only (a
 * directory account of the same name cannot shadow it); any other name goes to the
 * directory when one is configured. A directory that cannot be reached answers
 * `unavailable`: never a sign-in, never a fallback to something weaker.
 */

/** The outcome of one sign-in. */
export type SignInResult =
  | { outcome: 'ok'; principal: Principal }
  | { outcome: 'failed'; reason: 'unknown' | 'wrong-password' | 'disabled' | 'no-role' }
  | { outcome: 'unavailable'; reason: string }

/** A source of accounts beyond the local ones (the LDAP directory). */
export interface DirectorySource {
  check(name: string, password: string): Promise<AccountCheck | { outcome: 'unavailable'; reason: string }>
}

export interface SignInSources {
  /** The first admin's credential. */
  firstAdmin: { verify(user: string, password: string): Promise<boolean> }
  /** Local accounts. */
  accounts?: { has(name: string): boolean; check(name: string, password: string): Promise<AccountCheck> }
  directory?: DirectorySource
  /** API tokens (`Authorization: Bearer`). */
  tokens?: { check(bearer: string): Principal | undefined }
}

/** The name of the first admin. */
export const firstAdminName = 'admin'

const firstAdmin: Principal = Object.freeze({ name: firstAdminName, role: 'admin', addresses: [], source: 'first-admin' })

/** Checks `name` and `password` against the source that answers for the name. */
export async function signIn(sources: SignInSources, name: string, password: string): Promise<SignInResult> {
  if (name === firstAdminName) {
    return (await sources.firstAdmin.verify(name, password)) ? { outcome: 'ok', principal: firstAdmin } : { outcome: 'failed', reason: 'wrong-password' }
  }
  const answer = sources.accounts?.has(name) || !sources.directory ? await sources.accounts?.check(name, password) : await sources.directory.check(name, password)
  if (!answer) return { outcome: 'failed', reason: 'unknown' }
  if (answer.outcome === 'ok' || answer.outcome === 'unavailable') return answer
  return { outcome: 'failed', reason: answer.outcome }
}
