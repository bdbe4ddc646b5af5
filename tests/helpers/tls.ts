import { execFileSync } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

/** A CA and a server certificate it issued, made by the openssl command line tool. */
export async function opensslChain(dir: string): Promise<{ caPem: string; leafPem: string; leafKeyPem: string; otherCaPem: string }> {
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
  for (const name of ['ca', 'other-ca']) {
    run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '30', '-subj', `/CN=${name} test authority`)
  }
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=archive.example.com')
  await writeFile(join(dir, 'leaf.ext'), 'subjectAltName=DNS:archive.example.com\n')
  run('x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'leaf.pem', '-days', '10', '-extfile', 'leaf.ext')
  const read = (name: string) => readFile(join(dir, name), 'utf8')
  return { caPem: await read('ca.pem'), leafPem: await read('leaf.pem'), leafKeyPem: await read('leaf.key'), otherCaPem: await read('other-ca.pem') }
}
