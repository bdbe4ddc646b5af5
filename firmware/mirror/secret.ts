import assert from 'node:assert/strict'
import { hkdf, randomBytes, scrypt } from 'node:crypto'
import { inspect } from 'node:util'
import { MirrorError } from './errors.js'

/**
 * The mirror shared secret: how it is generated, judged, and turned into the two proof
 * keys of the handshake. The secret string never leaves this module in any form but the
 * derived keys, which stay inside a `MirrorSecret` that redacts itself when logged,
 * inspected or serialised.
 */

/** Shortest secret accepted, in characters (the config schema enforces the same floor). */
export const sharedSecretLengthMin = 20
/** Longest secret accepted, in characters (as the config schema): bounds the work per derivation. */
export const sharedSecretLengthMax = 1024
/**
 * Fewest distinct characters in an accepted secret: refuses `aaaaaaaaaaaaaaaaaaaa` and
 * `12121212…`, which pass the length rule but hold almost no entropy.
 */
export const sharedSecretDistinctCharactersMin = 8
/** Random bytes in a generated secret: 160 bits, above the 128-bit floor of the specification. */
export const generatedSecretRandomBytes = 20

/** Domain-separation label of protocol version 1; any change of construction needs a new one. */
export const mirrorKeyLabel = 'mailkeep-mirror-v1'
/**
 * scrypt cost for stretching the secret before HKDF. The proofs on the wire are HMACs, so a
 * party that sees one (a malicious listener at a peer's address) can test guesses offline;
 * stretching makes each guess cost ~50–100 ms instead of a microsecond. The listener derives
 * once at start, so unauthenticated connections never cost a scrypt.
 */
export const secretStretchCost = { N: 32768, r: 8, p: 1 } as const
const proofKeyBytes = 32

const base32Alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'

/** RFC 4648 base32 without padding: only letters and digits 2–7, easy to read aloud and paste. */
function encodeBase32(bytes: Uint8Array): string {
  let out = ''
  let buffer = 0
  let bits = 0
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte
    bits += 8
    while (bits >= 5) {
      out += base32Alphabet[(buffer >>> (bits - 5)) & 31]
      bits -= 5
    }
    buffer &= (1 << bits) - 1
  }
  if (bits > 0) out += base32Alphabet[(buffer << (5 - bits)) & 31]
  return out
}

/**
 * A new shared secret for `mirror.sharedSecret`: 160 bits from the system CSPRNG, printed as
 * 32 base32 characters. Used by the CLI; copy it unchanged to every peer.
 */
export function generateSharedSecret(): string {
  return encodeBase32(randomBytes(generatedSecretRandomBytes))
}

/**
 * Judges a shared secret. Returns undefined when it is acceptable, otherwise the reason in
 * one sentence — which never contains the secret itself.
 */
export function checkSharedSecret(secret: unknown): string | undefined {
  if (typeof secret !== 'string') return 'the shared secret must be a string'
  if (secret.length < sharedSecretLengthMin) {
    return `the shared secret must be at least ${sharedSecretLengthMin} characters (got ${secret.length}); generate one with the CLI`
  }
  if (secret.length > sharedSecretLengthMax) {
    return `the shared secret must be at most ${sharedSecretLengthMax} characters (got ${secret.length})`
  }
  // Control characters are almost always a copy-paste accident (a newline from a file).
  if (/[\u0000-\u001f\u007f]/.test(secret)) return 'the shared secret contains control characters'
  if (new Set(secret).size < sharedSecretDistinctCharactersMin) {
    return `the shared secret must use at least ${sharedSecretDistinctCharactersMin} distinct characters`
  }
  return undefined
}

/** The two HMAC keys of the handshake proofs, one per role so a proof cannot be reflected. */
export interface MirrorProofKeys {
  readonly client: Buffer
  readonly server: Buffer
}

const keysOf = new WeakMap<MirrorSecret, MirrorProofKeys>()

/**
 * The shared secret in derived form. Holds no copy of the secret string; prints, inspects
 * and serialises as `[redacted]`. Create with `deriveMirrorSecret`.
 */
export class MirrorSecret {
  private constructor() {}

  /** @internal used by deriveMirrorSecret only */
  static create(keys: MirrorProofKeys): MirrorSecret {
    const secret = new MirrorSecret()
    keysOf.set(secret, keys)
    return secret
  }

  toJSON(): string {
    return '[redacted]'
  }

  toString(): string {
    return '[redacted]'
  }

  [inspect.custom](): string {
    return 'MirrorSecret [redacted]'
  }
}

/** The proof keys inside a MirrorSecret (handshake use only). */
export function proofKeysOf(secret: MirrorSecret): MirrorProofKeys {
  const keys = keysOf.get(secret)
  assert.ok(keys, 'MirrorSecret must come from deriveMirrorSecret')
  return keys
}

function stretch(secret: string): Promise<Buffer> {
  const { N, r, p } = secretStretchCost
  return new Promise((resolve, reject) => {
    scrypt(secret, `${mirrorKeyLabel} secret`, proofKeyBytes, { N, r, p, maxmem: 256 * N * r + 1024 * 1024 }, (error, key) => (error ? reject(error) : resolve(key)))
  })
}

function expand(stretched: Buffer, role: 'client' | 'server'): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    hkdf('sha256', stretched, mirrorKeyLabel, `${mirrorKeyLabel} ${role} proof`, proofKeyBytes, (error, key) => (error ? reject(error) : resolve(Buffer.from(key))))
  })
}

/**
 * Derives the proof keys from a shared secret: ikm = scrypt(secret, "mailkeep-mirror-v1
 * secret", N=2^15, r=8, p=1, 32 bytes); key(role) = HKDF-SHA256(ikm, salt =
 * "mailkeep-mirror-v1", info = "mailkeep-mirror-v1 <role> proof", 32 bytes). Takes ~50–100 ms;
 * derive once and pass the result to connectToPeer/createMirrorListener.
 *
 * @throws MirrorError SECRET_WEAK when checkSharedSecret refuses the secret
 */
export async function deriveMirrorSecret(secret: string): Promise<MirrorSecret> {
  const problem = checkSharedSecret(secret)
  if (problem !== undefined) throw new MirrorError('SECRET_WEAK', problem, { retryable: false })
  const stretched = await stretch(secret)
  const [client, server] = await Promise.all([expand(stretched, 'client'), expand(stretched, 'server')])
  stretched.fill(0)
  return MirrorSecret.create({ client, server })
}

/** Accepts a secret string or an already derived MirrorSecret. @throws MirrorError SECRET_WEAK */
export async function toMirrorSecret(secret: string | MirrorSecret): Promise<MirrorSecret> {
  return secret instanceof MirrorSecret ? secret : deriveMirrorSecret(secret)
}
