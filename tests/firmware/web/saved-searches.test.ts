import t from 'tap'
import { mkdtemp, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSavedSearches, savedPerAccountMax, savedSearchesFile } from '../../../firmware/web/saved-searches.js'

t.test('saved searches: per account, persisted (0600), bounded, replaced by label', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'mailkeep-saved-'))
  const saved = createSavedSearches({ clock: { now: () => 1_000 } }, { dataDir })
  await saved.add('bob', ' Q3 ', 'quarterly from:alice@example.com')
  await saved.add('carol', 'mine', 'budget')
  await saved.add('bob', 'Q3', 'quarterly')
  t.same(await saved.list('bob'), [{ label: 'Q3', query: 'quarterly', savedAtMs: 1_000 }], 'the same label replaces; labels are trimmed')
  t.equal((await stat(join(dataDir, savedSearchesFile))).mode & 0o777, 0o600)
  const reloaded = createSavedSearches({ clock: { now: () => 2_000 } }, { dataDir })
  t.same(
    (await reloaded.list('carol')).map((entry) => entry.query),
    ['budget'],
    'kept across a restart, apart per account',
  )
  await t.rejects(reloaded.add('bob', '', 'x'), { code: 'INVALID' })
  await t.rejects(reloaded.add('bob', 'empty', '  '), { code: 'INVALID' })
  for (let index = 1; index < savedPerAccountMax; index++) await reloaded.add('bob', `s${index}`, 'x')
  await t.rejects(reloaded.add('bob', 'one too many', 'x'), { code: 'TOO_MANY' })
  await t.rejects(reloaded.remove('bob', 'nope'), { code: 'NOT_FOUND' })
  await reloaded.remove('bob', 'Q3')
  t.equal((await reloaded.list('bob')).length, savedPerAccountMax - 1)
})
