import t from 'tap'
import type { Delivery } from '../../../firmware/archive/types.js'
import { addressScope, everything, inScope, normalizeAddress, participantsOf, type ScopedMessage } from '../../../firmware/access/scope.js'
import { testSeed } from '../../helpers/random.js'

/**
 * The reference rule, written apart from firmware/access/scope.ts: a user sees a message when
 * some address of theirs equals, ignoring case, spaces around and one pair of angle
 * brackets, some address of the message — From, To, Cc, Bcc, or a delivery's envelope
 * sender, recipients or BCC recipients.
 */
function referenceSees(userAddresses: readonly string[], message: ScopedMessage): boolean {
  const bare = (text: string): string => {
    let value = text.trim()
    if (value.length >= 2 && value[0] === '<' && value[value.length - 1] === '>') value = value.slice(1, -1).trim()
    return value.toLocaleLowerCase('en-US')
  }
  const mine = userAddresses.map(bare).filter((value) => value.length > 0)
  const theirs: string[] = []
  theirs.push(...message.from, ...message.to, ...message.cc, ...message.bcc)
  for (const delivery of message.deliveries) {
    if (delivery.envelopeFrom !== null) theirs.push(delivery.envelopeFrom)
    theirs.push(...delivery.envelopeTo, ...delivery.envelopeBcc)
  }
  return theirs.some((address) => bare(address).length > 0 && mine.includes(bare(address)))
}

const people = ['alice@corp.example', 'bob@corp.example', 'carol@partner.example', 'dave@corp.example', 'eve@other.example', 'josé@corp.example']
/** Near misses of the people: none of them is any person's address. */
const lookalikes = ['xalice@corp.example', 'alice@corp.example.org', 'alice@corp', 'alice', 'corp.example', 'bob@corp.exampl', 'jose@corp.example', 'carol@partner.example.', '@corp.example']

function delivery(partial: Partial<Delivery>): Delivery {
  return { source: 'smtp', sourceName: null, receivedAtMs: 0, envelopeFrom: null, envelopeTo: [], envelopeBcc: [], remoteAddress: null, journalEnvelopeText: null, ...partial } as Delivery
}

t.test('the rule on hand-picked cases: headers, envelope, journal BCC, case and brackets, near misses', async (t) => {
  const alice = addressScope(['Alice@Corp.Example', ' <alice.smith@corp.example> '])
  const message = (partial: Partial<ScopedMessage>): ScopedMessage => ({ from: [], to: [], cc: [], bcc: [], deliveries: [], ...partial })
  t.ok(inScope(alice, message({ from: ['alice@corp.example'] })), 'sender')
  t.ok(inScope(alice, message({ to: ['ALICE@CORP.EXAMPLE'] })), 'recipient, another case')
  t.ok(inScope(alice, message({ cc: ['<alice.smith@corp.example>'] })), 'an alias in brackets')
  t.ok(inScope(alice, message({ bcc: ['alice@corp.example'] })), 'header Bcc')
  t.ok(inScope(alice, message({ to: ['bob@corp.example'], deliveries: [delivery({ envelopeBcc: ['alice@corp.example'] })] })), 'journal envelope BCC only')
  t.ok(inScope(alice, message({ deliveries: [delivery({}), delivery({ envelopeTo: ['alice.smith@corp.example'] })] })), 'a later delivery')
  t.ok(inScope(alice, message({ deliveries: [delivery({ envelopeFrom: 'alice@corp.example' })] })), 'envelope sender')
  for (const near of lookalikes) t.notOk(inScope(alice, message({ from: [near], to: [near], deliveries: [delivery({ envelopeTo: [near], envelopeBcc: [near] })] })), `not ${near}`)
  t.notOk(inScope(addressScope([]), message({ to: ['alice@corp.example'] })), 'a user without addresses sees nothing')
  t.notOk(inScope(addressScope(['', '  ']), message({ to: ['', ' '] })), 'empty addresses never match each other')
  t.ok(inScope(everything, message({})), 'admins and auditors see everything, even a message naming nobody')
  t.equal(normalizeAddress(' <Bob@Corp.Example> '), 'bob@corp.example')
  t.same([...participantsOf(message({ from: ['A@x.example'], deliveries: [delivery({ envelopeFrom: 'a@X.example', envelopeBcc: ['b@x.example'] })] }))].sort(), [
    'a@x.example',
    'b@x.example',
  ])
})

t.test('the rule agrees with the reference on random messages, recipients and aliases', async (t) => {
  const { random } = testSeed(t, 'the messages and accounts')
  const pick = <T>(list: readonly T[]): T => list[random.int(list.length)]!
  const variant = (address: string): string => {
    const cased = random.int(3) === 0 ? address.toUpperCase() : random.int(2) === 0 ? address[0]!.toUpperCase() + address.slice(1) : address
    const bracketed = random.int(4) === 0 ? `<${cased}>` : cased
    return random.int(5) === 0 ? `  ${bracketed} ` : bracketed
  }
  const address = (): string => variant(random.int(4) === 0 ? pick(lookalikes) : pick(people))
  const addresses = (max: number): string[] => Array.from({ length: random.int(max + 1) }, address)
  let seen = 0
  let rounds = 0
  for (; rounds < 5000; rounds++) {
    const message: ScopedMessage = {
      from: addresses(1),
      to: addresses(3),
      cc: addresses(2),
      bcc: addresses(1),
      deliveries: Array.from({ length: random.int(3) }, () =>
        delivery({ envelopeFrom: random.int(3) === 0 ? null : address(), envelopeTo: addresses(3), envelopeBcc: random.int(2) === 0 ? [] : addresses(2) }),
      ),
    }
    const account = addresses(3)
    const expected = referenceSees(account, message)
    const actual = inScope(addressScope(account), message)
    if (actual !== expected) {
      t.fail(`disagreement on round ${rounds}: account ${JSON.stringify(account)}, message ${JSON.stringify(message)}: rule ${actual}, reference ${expected}`)
      return
    }
    if (expected) seen++
  }
  t.equal(rounds, 5000, 'every round agreed')
  t.ok(seen > 500 && seen < 4500, `both outcomes drawn often (${seen} of 5000 in scope)`)
})
