import { isIP } from 'node:net'
import type tap from 'tap'
import type { Hal, RaidArray } from '../../hal/types.js'

/** The `t` a tap subtest callback receives. */
export type TestContext = Parameters<Parameters<typeof tap.test>[0]>[0]

const diskHealths = ['ok', 'failing', 'failed', 'unknown']
const smartStates = ['passed', 'failed', 'unavailable']
const raidStates = ['clean', 'degraded', 'rebuilding', 'failed']
const memberStates = ['active', 'faulty', 'spare', 'rebuilding', 'missing']
const macPattern = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/
const contractFirmwareVersion = '9.8.7-contract'

/** Checks the invariants between an array's state, its members and its rebuild percent. */
export function checkArrayConsistency(t: TestContext, array: RaidArray): void {
  const where = `${array.name} (${array.state})`
  t.ok(array.name.length > 0, `${where}: has a name`)
  t.ok(array.level.length > 0, `${where}: has a level`)
  t.ok(raidStates.includes(array.state), `${where}: state is one of ${raidStates.join(', ')}`)
  t.ok(Number.isInteger(array.memberCountExpected) && array.memberCountExpected >= 0, `${where}: memberCountExpected is a count`)
  for (const member of array.members) {
    t.ok(member.device.length > 0 && memberStates.includes(member.state), `${where}: member ${member.device} ${member.state} is well-formed`)
  }
  const active = array.members.filter((member) => member.state === 'active').length
  const count = (state: string): number => array.members.filter((member) => member.state === state).length
  if (array.state === 'rebuilding') {
    t.ok(array.rebuildPercent !== null && array.rebuildPercent >= 0 && array.rebuildPercent <= 100, `${where}: rebuildPercent within 0–100`)
  } else {
    t.equal(array.rebuildPercent, null, `${where}: rebuildPercent only while rebuilding`)
  }
  if (array.state === 'clean') {
    t.equal(active, array.memberCountExpected, `${where}: every role is active`)
    t.equal(count('missing') + count('rebuilding'), 0, `${where}: nothing missing or rebuilding`)
  }
  if (array.state === 'degraded') t.ok(active < array.memberCountExpected, `${where}: fewer active members than expected`)
}

/**
 * The contract every Hal implementation satisfies (STYLE 20). `makeHal(firmwareVersion)`
 * builds a fresh HAL that must report that firmware version; `volumePath` is a directory
 * that exists. Runs as subtests of `t`.
 */
export async function halContract(t: TestContext, makeHal: (firmwareVersion: string) => Hal, volumePath: string): Promise<void> {
  const hal = makeHal(contractFirmwareVersion)
  t.ok(hal.provider === 'sim' || hal.provider === 'linux', 'provider is sim or linux')

  await t.test('start is idempotent', async (t) => {
    await hal.start()
    await hal.start()
    t.equal((await hal.identity()).provider, hal.provider, 'a started HAL answers')
  })

  await t.test('identity is well-formed and stable', async (t) => {
    const identity = await hal.identity()
    t.equal(identity.firmwareVersion, contractFirmwareVersion, 'firmwareVersion is what was passed')
    t.equal(identity.provider, hal.provider, 'identity names its provider')
    t.ok(Number.isInteger(identity.model) && identity.model >= 0, `model ${identity.model} is a non-negative integer`)
    t.match(identity.serial, /^[\x21-\x7e]{1,64}$/, 'serial is 1–64 printable characters without spaces')
    t.same(await hal.identity(), identity, 'asking again gives the same identity')
  })

  await t.test('disks are well-formed', async (t) => {
    const disks = await hal.disks()
    t.equal(new Set(disks.map((disk) => disk.id)).size, disks.length, 'disk ids are unique')
    t.equal(new Set(disks.map((disk) => disk.device)).size, disks.length, 'disk devices are unique')
    for (const disk of disks) {
      t.ok(disk.id.length > 0, `${disk.device}: has an id`)
      t.match(disk.device, /^\/dev\/\S+$/, `${disk.device}: device is a /dev path`)
      t.ok(Number.isSafeInteger(disk.sizeBytes) && disk.sizeBytes > 0, `${disk.device}: size ${disk.sizeBytes} is a positive byte count`)
      t.ok(diskHealths.includes(disk.health), `${disk.device}: health ${disk.health} is valid`)
      t.ok(smartStates.includes(disk.smart), `${disk.device}: smart ${disk.smart} is valid`)
      if (disk.smart === 'failed') t.not(disk.health, 'ok', `${disk.device}: a SMART failure is never ok`)
      if (disk.temperatureCelsius !== null) t.ok(disk.temperatureCelsius > -40 && disk.temperatureCelsius < 150, `${disk.device}: temperature plausible`)
    }
  })

  await t.test('raid status is consistent', async (t) => {
    const raid = await hal.raid()
    t.equal(raid.present, raid.arrays.length > 0, 'present exactly when there are arrays')
    t.equal(new Set(raid.arrays.map((array) => array.name)).size, raid.arrays.length, 'array names are unique')
    for (const array of raid.arrays) checkArrayConsistency(t, array)
  })

  await t.test('nics are well-formed', async (t) => {
    const nics = await hal.nics()
    t.equal(new Set(nics.map((nic) => nic.name)).size, nics.length, 'NIC names are unique')
    for (const nic of nics) {
      t.ok(nic.name.length > 0, 'has a name')
      t.match(nic.mac, macPattern, `${nic.name}: MAC ${nic.mac} is aa:bb:cc:dd:ee:ff, lower case`)
      t.ok(nic.link === 'up' || nic.link === 'down', `${nic.name}: link is up or down`)
      if (nic.speedMbps !== null) t.ok(Number.isInteger(nic.speedMbps) && nic.speedMbps > 0, `${nic.name}: speed is positive Mbps`)
      if (nic.link === 'down') t.equal(nic.speedMbps, null, `${nic.name}: no speed while the link is down`)
      for (const address of nic.addresses) t.ok(isIP(address) !== 0, `${nic.name}: ${address} is an IP address`)
    }
  })

  await t.test('volume reports free <= total', async (t) => {
    const volume = await hal.volume(volumePath)
    t.ok(Number.isSafeInteger(volume.totalBytes) && volume.totalBytes > 0, 'total is a positive byte count')
    t.ok(Number.isSafeInteger(volume.freeBytes) && volume.freeBytes >= 0, 'free is a byte count')
    t.ok(volume.freeBytes <= volume.totalBytes, 'free <= total')
  })

  await t.test('stop is idempotent', async (t) => {
    await hal.stop()
    await hal.stop()
    t.equal((await hal.identity()).firmwareVersion, contractFirmwareVersion, 'a stopped HAL still answers reads')
  })
}
