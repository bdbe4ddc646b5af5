import type { AccountStore, AccountView } from '../firmware/access/accounts.js'
import type { TokenStore, TokenView } from '../firmware/access/tokens.js'
import type { SessionStore } from '../firmware/access/sessions.js'
import type { CommandHandler } from '../firmware/control/server.js'
import { ControlError } from '../firmware/control/errors.js'
import type { AuditEvent } from '../firmware/policy/index.js'

/**
 * `user add NAME --role R [--address A]...`: the name, role and addresses of the words.
 * @throws ControlError USAGE naming what is wrong
 */
export function userAddArguments(words: readonly string[]): { name: string; role: string; addresses: string[] } {
  const [name, ...rest] = words
  let role: string | undefined
  const addresses: string[] = []
  for (let position = 0; position < rest.length; position += 1) {
    const word = rest[position]!
    const value = rest[position + 1]
    if ((word === '--role' || word === '--address') && value === undefined) throw new ControlError('USAGE', `${word} needs a value`)
    if (word === '--role') role = value
    else if (word === '--address') addresses.push(value!)
    else throw new ControlError('USAGE', `unexpected ${JSON.stringify(word.slice(0, 80))}: user add NAME --role admin|auditor|user [--address ADDR]...`)
    position += 1
  }
  if (!name || name.startsWith('--')) throw new ControlError('USAGE', 'user add NAME --role admin|auditor|user [--address ADDR]...')
  if (!role) throw new ControlError('USAGE', 'user add needs --role admin|auditor|user')
  return { name, role, addresses }
}

/**
 * `token create --name NAME --role R [--address A]...`: the name, role and addresses.
 * @throws ControlError USAGE naming what is wrong
 */
export function tokenCreateArguments(words: readonly string[]): { name: string; role: string; addresses: string[] } {
  let name: string | undefined
  let role: string | undefined
  const addresses: string[] = []
  for (let position = 0; position < words.length; position += 2) {
    const [word, value] = [words[position]!, words[position + 1]]
    if (!['--name', '--role', '--address'].includes(word))
      throw new ControlError('USAGE', `unexpected ${JSON.stringify(word.slice(0, 80))}: token create --name NAME --role admin|auditor|user [--address ADDR]...`)
    if (value === undefined) throw new ControlError('USAGE', `${word} needs a value`)
    if (word === '--name') name = value
    else if (word === '--role') role = value
    else addresses.push(value)
  }
  if (!name || !role) throw new ControlError('USAGE', 'token create --name NAME --role admin|auditor|user [--address ADDR]...')
  return { name, role, addresses }
}

/** `token create|list|revoke` (changes: technician, audited; the token itself is shown once and never audited). */
export function tokenCommandHandlers(deps: { tokens: TokenStore; audit(event: AuditEvent): void }): [string, CommandHandler][] {
  const audited = <T extends TokenView>(action: string, token: T): T => {
    deps.audit({ actor: 'technician', action, details: { token: token.name, role: token.role, addresses: token.addresses } })
    return token
  }
  return [
    ['token list', () => deps.tokens.list()],
    ['token create', async (args) => audited('token.create', await deps.tokens.create(tokenCreateArguments(args)))],
    ['token revoke', async ([name]) => audited('token.revoke', await deps.tokens.revoke(name!))],
  ]
}

/** The new password a command was sent apart from its arguments. @throws ControlError USAGE without one */
function secretOf(request: { secret?: string }): string {
  if (request.secret === undefined) throw new ControlError('USAGE', 'the new password is missing (give it on a terminal or as the second line of --password-stdin)')
  return request.secret
}

/** `user add|list|remove|passwd|disable|enable`: local accounts (changes: technician, audited without passwords). */
export function accountCommandHandlers(deps: { accounts: AccountStore; sessions?: Pick<SessionStore, 'endAllOf'>; audit(event: AuditEvent): void }): [string, CommandHandler][] {
  const { accounts } = deps
  const audited = (action: string, account: AccountView): AccountView => {
    // A removed or disabled account, or one with a new password, is signed out everywhere.
    if (action !== 'account.add' && action !== 'account.enable') deps.sessions?.endAllOf(account.name)
    deps.audit({ actor: 'technician', action, details: { account: account.name, role: account.role, addresses: account.addresses, disabled: account.disabled } })
    return account
  }
  return [
    ['user list', () => accounts.list()],
    [
      'user add',
      async (args, request) => {
        const input = userAddArguments(args)
        return audited('account.add', await accounts.add(input, secretOf(request)))
      },
    ],
    ['user remove', async ([name]) => audited('account.remove', await accounts.remove(name!))],
    ['user passwd', async ([name], request) => audited('account.password', await accounts.setPassword(name!, secretOf(request)))],
    ['user disable', async ([name]) => audited('account.disable', await accounts.setDisabled(name!, true))],
    ['user enable', async ([name]) => audited('account.enable', await accounts.setDisabled(name!, false))],
  ]
}
