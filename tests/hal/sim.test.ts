import assert from 'node:assert/strict'
import t from 'tap'
import { knownModels } from '../../config/models.js'
import { createRandom } from '../../firmware/common/clock.js'
import { createMemoryLogger } from '../../firmware/common/logger.js'
import { hasCode } from '../../firmware/common/errors.js'
import { createSimHal, type SimHalOptions } from '../../hal/sim/sim-hal.js'
import { isBeyondRedundancy } from '../../hal/raid-redundancy.js'
import type { RaidArray } from '../../hal/types.js'
import { checkArrayConsistency, halContract } from './contract.js'
import { VirtualTime } from '../sim/virtual-time.js'

const volumePath = process.cwd()

function makeSim(over: Partial<SimHalOptions> = {}, logger = createMemoryLogger()) {
  return createSimHal({ logger }, { firmwareVersion: '1.0.0', model: 650, serial: null, seed: 1, tickMs: 1000, rebuildTicks: 4, ...over })
}

async function onlyArray(hal: ReturnType<typeof makeSim>): Promise<RaidArray> {
  const raid = await hal.raid()
  assert.equal(raid.arrays.length, 1, 'the sim has one array')
  return raid.arrays[0]!
}

function stateOf(array: RaidArray, device: string): string | undefined {
  return array.members.find((member) => member.device === device)?.state
}

for (const model of [...knownModels(), 999]) {
  t.test(`contract: sim model ${model}`, (t) =>
    halContract(
      t,
      (firmwareVersion) => createSimHal({ logger: createMemoryLogger() }, { firmwareVersion, model, serial: null, seed: 3, tickMs: 1000, rebuildTicks: 3, dataDir: volumePath }),
      volumePath,
    ),
  )
}

t.test('contract: sim with a failed, a rebuilding and a missing member', (t) =>
  halContract(
    t,
    (firmwareVersion) => {
      const hal = createSimHal({ logger: createMemoryLogger() }, { firmwareVersion, model: 850, serial: null, seed: 4, tickMs: 1000, rebuildTicks: 3, diskCount: 5 })
      hal.faults.failDisk(0)
      hal.faults.replaceDisk(1)
      hal.faults.tick()
      hal.faults.setLink('eth2', false)
      return hal
    },
    volumePath,
  ),
)

t.test('layout follows the model profile', async (t) => {
  const hal = makeSim({ model: 1050 })
  const disks = await hal.disks()
  t.equal(disks.length, 12, '1050 has 12 disks')
  t.same(disks.map((disk) => disk.device).slice(0, 3), ['/dev/sda', '/dev/sdb', '/dev/sdc'])
  t.ok(
    disks.every((disk) => disk.sizeBytes === 16_000_000_000_000 && disk.health === 'ok' && disk.smart === 'passed'),
    '16 TB disks, healthy',
  )
  const array = await onlyArray(hal)
  t.match(array, { name: 'md0', level: 'raid10', state: 'clean', memberCountExpected: 12, rebuildPercent: null })
  const nics = await hal.nics()
  t.same(
    nics.map((nic) => nic.name),
    ['eth0', 'eth1', 'eth2', 'eth3'],
  )
  t.equal(new Set(nics.map((nic) => nic.mac)).size, 4, 'MACs are unique')
  t.ok(
    nics.every((nic) => nic.link === 'up' && nic.speedMbps === 1000),
    'links up at 1000 Mbps',
  )
  t.ok(
    nics.every((nic) => nic.addresses.some((address) => address.startsWith('10.'))),
    'each NIC has a 10.x address',
  )
})

t.test('model 150 has no RAID at all', async (t) => {
  const hal = makeSim({ model: 150 })
  t.same(await hal.raid(), { present: false, arrays: [] })
  hal.faults.failDisk(0)
  t.equal((await hal.disks())[0]!.health, 'failed', 'the disk fails')
  t.same(await hal.raid(), { present: false, arrays: [] }, 'still no array to degrade')
})

t.test('failing a disk degrades the array', async (t) => {
  const hal = makeSim()
  hal.faults.failDisk(1)
  const disk = (await hal.disks())[1]!
  t.match(disk, { device: '/dev/sdb', health: 'failed', smart: 'failed' })
  const array = await onlyArray(hal)
  t.equal(array.state, 'degraded')
  t.equal(stateOf(array, '/dev/sdb'), 'faulty')
  t.equal(array.members.filter((member) => member.state === 'active').length, 3, 'the other three stay active')
  hal.faults.failDisk(1)
  t.equal((await onlyArray(hal)).state, 'degraded', 'failing the same disk again changes nothing')
  checkArrayConsistency(t, array)
})

t.test('redundancy per level', async (t) => {
  const cases: Array<{ model: number; fail: number[]; state: RaidArray['state'] }> = [
    { model: 650, fail: [0, 2], state: 'failed' }, // raid5 tolerates one
    { model: 450, fail: [0], state: 'degraded' }, // raid1 of two tolerates one
    { model: 450, fail: [0, 1], state: 'failed' },
    { model: 850, fail: [0, 5], state: 'degraded' }, // raid6 tolerates two
    { model: 850, fail: [0, 3, 5], state: 'failed' },
    { model: 1050, fail: [0, 2, 4], state: 'degraded' }, // raid10: one per mirror pair
    { model: 1050, fail: [6, 7], state: 'failed' },
  ]
  for (const { model, fail, state } of cases) {
    const hal = makeSim({ model })
    for (const index of fail) hal.faults.failDisk(index)
    t.equal((await onlyArray(hal)).state, state, `model ${model}, disks ${fail.join('+')} failed → ${state}`)
  }
})

t.test('a failed array stays failed: replaced disks join as spares', async (t) => {
  const hal = makeSim()
  hal.faults.failDisk(0)
  hal.faults.failDisk(1)
  hal.faults.replaceDisk(0)
  hal.faults.tick()
  const array = await onlyArray(hal)
  t.equal(array.state, 'failed')
  t.equal(stateOf(array, '/dev/sda'), 'spare')
  t.equal(array.rebuildPercent, null)
})

t.test('replace → rebuilding → progress over ticks → clean', async (t) => {
  const hal = makeSim({ rebuildTicks: 4 })
  const before = (await hal.disks())[2]!
  hal.faults.failDisk(2)
  hal.faults.replaceDisk(2)
  const after = (await hal.disks())[2]!
  t.not(after.id, before.id, 'the new disk has a new serial')
  t.match(after, { device: '/dev/sdc', health: 'ok', smart: 'passed' })
  const percents: Array<number | null> = []
  const states: string[] = []
  for (let tick = 0; tick < 5; tick++) {
    const array = await onlyArray(hal)
    checkArrayConsistency(t, array)
    percents.push(array.rebuildPercent)
    states.push(array.state)
    hal.faults.tick()
  }
  t.same(states, ['rebuilding', 'rebuilding', 'rebuilding', 'rebuilding', 'clean'])
  t.same(percents, [0, 25, 50, 75, null])
  t.equal(stateOf(await onlyArray(hal), '/dev/sdc'), 'active', 'the new member is active')
})

t.test('replacing a healthy disk also rebuilds; failing during the rebuild loses a raid5', async (t) => {
  const hal = makeSim()
  hal.faults.replaceDisk(3)
  t.equal((await onlyArray(hal)).state, 'rebuilding')
  hal.faults.failDisk(0)
  t.equal((await onlyArray(hal)).state, 'failed', 'the rebuilding member held no data yet')
})

t.test('links and NICs', async (t) => {
  const hal = makeSim()
  hal.faults.setLink('eth1', false)
  let nics = await hal.nics()
  t.match(nics[1], { name: 'eth1', link: 'down', speedMbps: null })
  t.match(nics[0], { name: 'eth0', link: 'up', speedMbps: 1000 })
  hal.faults.setLink('eth1', true)
  t.match((await hal.nics())[1], { link: 'up', speedMbps: 1000 })
  hal.faults.removeNic('eth0')
  nics = await hal.nics()
  t.same(
    nics.map((nic) => nic.name),
    ['eth1'],
  )
  t.throws(() => hal.faults.removeNic('eth0'), { code: 'SIM_NO_SUCH_NIC' }, 'a removed NIC is gone')
  t.throws(() => hal.faults.setLink('eth7', true), { code: 'SIM_NO_SUCH_NIC' })
})

t.test('fault knobs refuse what does not exist', async (t) => {
  const hal = makeSim()
  for (const index of [-1, 4, 1.5, Number.NaN]) {
    t.throws(() => hal.faults.failDisk(index), { code: 'SIM_NO_SUCH_DISK' }, `failDisk(${index})`)
    t.throws(() => hal.faults.replaceDisk(index), { code: 'SIM_NO_SUCH_DISK' }, `replaceDisk(${index})`)
  }
  for (const bytes of [-1, 1.5, Number.NaN]) {
    t.throws(() => hal.faults.setVolumeFreeBytes(bytes), { code: 'SIM_BAD_VALUE' }, `setVolumeFreeBytes(${bytes})`)
  }
  t.equal((await onlyArray(hal)).state, 'clean', 'refused knobs changed nothing')
})

t.test('volume: real statfs, free-bytes override capped at the total', async (t) => {
  const hal = makeSim({ dataDir: volumePath })
  const real = await hal.volume(volumePath)
  hal.faults.setVolumeFreeBytes(1234)
  t.same(await hal.volume(volumePath), { totalBytes: real.totalBytes, freeBytes: 1234 })
  hal.faults.setVolumeFreeBytes(real.totalBytes * 10)
  t.equal((await hal.volume(volumePath)).freeBytes, real.totalBytes, 'never more free than total')
  hal.faults.setVolumeFreeBytes(null)
  t.equal((await hal.volume(volumePath)).totalBytes, real.totalBytes, 'back to the real volume')
  // The same filesystem; its free space moves with whatever else writes to it meanwhile.
  const [missing, viaDataDir] = [await hal.volume('/nonexistent/mailkeep-data'), await hal.volume(volumePath)]
  t.equal(missing.totalBytes, viaDataDir.totalBytes, 'a missing path falls back to dataDir')
  t.ok(Math.abs(missing.freeBytes - viaDataDir.freeBytes) < 256 * 1024 * 1024, 'with its free space (within what others wrote meanwhile)')
  await t.rejects(makeSim().volume('/nonexistent/mailkeep-data'), { code: 'HAL_VOLUME_UNAVAILABLE' }, 'without dataDir a missing path is an error')
})

t.test('determinism: same seed, same appliance', async (t) => {
  const facts = async (seed: number) => {
    const hal = makeSim({ seed, model: 850 })
    hal.faults.replaceDisk(0)
    return { disks: await hal.disks(), nics: await hal.nics(), identity: await hal.identity() }
  }
  const first = await facts(7)
  t.same(await facts(7), first, 'seed 7 twice: same serials, MACs, addresses (replacements included)')
  const other = await facts(8)
  t.not(other.disks[1]!.id, first.disks[1]!.id, 'another seed gives other serials')
  t.not(other.nics[0]!.mac, first.nics[0]!.mac, 'and other MACs')
  const injected = createSimHal({ logger: createMemoryLogger(), random: createRandom(8) }, { firmwareVersion: '1', model: 850, serial: null, seed: 7, tickMs: 1000, rebuildTicks: 2 })
  t.same((await injected.disks()).map((disk) => disk.id).slice(1), other.disks.map((disk) => disk.id).slice(1), 'an injected Random drives the layout')
  t.equal((await injected.identity()).serial, 'MK850-000007', 'while the serial still follows the seed')
})

t.test('identity serial', async (t) => {
  t.equal((await makeSim({ seed: 1 }).identity()).serial, 'MK650-000001')
  t.equal((await makeSim({ seed: 4_000_000_000, model: 450 }).identity()).serial, 'MK450-4000000000')
  t.equal((await makeSim({ serial: 'FACTORY-42' }).identity()).serial, 'FACTORY-42', 'the override wins')
})

t.test('unknown model: minimal layout, model reported as given', async (t) => {
  const logger = createMemoryLogger()
  const hal = makeSim({ model: 999 }, logger)
  await hal.start()
  await hal.stop()
  t.equal((await hal.identity()).model, 999)
  t.equal((await hal.disks()).length, 1)
  t.equal((await hal.nics()).length, 1)
  t.same(await hal.raid(), { present: false, arrays: [] })
  t.ok(
    logger.records.some((record) => record.level === 'warn' && /unknown model/.test(record.msg)),
    'start() warns about the unknown model',
  )
})

t.test('disk and NIC count overrides', async (t) => {
  const short = await onlyArray(makeSim({ diskCount: 3 }))
  t.equal(short.state, 'degraded', 'a missing disk degrades the array')
  t.equal(stateOf(short, 'slot 3'), 'missing')
  t.equal(short.memberCountExpected, 4)
  const long = makeSim({ diskCount: 5 })
  const array = await onlyArray(long)
  t.equal(array.state, 'clean')
  t.equal(stateOf(array, '/dev/sde'), 'spare', 'an extra disk is a spare')
  t.equal((await long.disks()).length, 5)
  t.equal((await makeSim({ nicCount: 1 }).nics()).length, 1)
  t.same(
    await makeSim({ model: 450, diskCount: 0 })
      .raid()
      .then((raid) => raid.arrays[0]?.state),
    'failed',
    'no disks at all: failed',
  )
})

t.test('start() drives the clock, stop() halts it', async (t) => {
  // The sim's interval runs on virtual timers (as in the mirror simulation): the test moves
  // time on, so "no tick after stop()" is shown over many periods without sleeping.
  const time = new VirtualTime()
  time.install()
  try {
    const hal = makeSim({ tickMs: 10, rebuildTicks: 2 })
    await hal.start()
    hal.faults.replaceDisk(0)
    await time.runUntil(2 * 10)
    t.equal((await onlyArray(hal)).state, 'clean', 'the rebuild completed on its own')
    await hal.stop()
    hal.faults.replaceDisk(1)
    await time.runUntil(time.now + 60)
    t.equal((await onlyArray(hal)).rebuildPercent, 0, 'no ticks after stop()')
  } finally {
    VirtualTime.uninstall()
  }
})

t.test('errors are typed', async (t) => {
  const hal = makeSim()
  let caught: unknown
  try {
    hal.faults.failDisk(9)
  } catch (error) {
    caught = error
  }
  t.ok(hasCode(caught, 'SIM_NO_SUCH_DISK'), 'a MailkeepError with a stable code')
  t.match((caught as Error).message, /disks 0 to 3/, 'the message says which disks exist')
})

t.test('redundancy rule', async (t) => {
  t.equal(isBeyondRedundancy('raid1', [false, true]), false)
  t.equal(isBeyondRedundancy('raid1', [false, false]), true)
  t.equal(isBeyondRedundancy('raid1', [false, false, true]), false, 'a three-way mirror survives two failures')
  t.equal(isBeyondRedundancy('raid5', [true, false, true]), false)
  t.equal(isBeyondRedundancy('raid5', [false, false, true]), true)
  t.equal(isBeyondRedundancy('raid6', [false, false, true, true]), false)
  t.equal(isBeyondRedundancy('raid6', [false, false, false, true]), true)
  t.equal(isBeyondRedundancy('raid10', [true, false, false, true]), false, 'one of each pair left')
  t.equal(isBeyondRedundancy('raid10', [false, false, true, true]), true, 'a whole pair gone')
  t.equal(isBeyondRedundancy('raid10', [false, true, false, true, true, false], 3), false, 'three copies: one per group of three')
  t.equal(isBeyondRedundancy('raid0', [true, false]), true)
  t.equal(isBeyondRedundancy('unknown', [true, true]), false)
})
