import { existsSync, readFileSync } from 'node:fs'
import { chmod, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { createMemoryLogger } from '../../firmware/common/logger.js'
import { createLinuxHal, type LinuxHalOptions } from '../../hal/linux/linux-hal.js'
import { diskNameOfPartition, faultyDiskNames, toDisks, type BlockDevice, type LayoutDisk } from '../../hal/linux/disks.js'
import { applianceModelFromDmi, meaningfulDmiValue, serialFromMachineId } from '../../hal/linux/identity.js'
import { parseMdadmDetail } from '../../hal/linux/mdadm-detail.js'
import { parseMdstat } from '../../hal/linux/mdstat.js'
import { toNics, type SiInterface } from '../../hal/linux/nics.js'
import type { RaidArray } from '../../hal/types.js'
import { checkArrayConsistency, halContract } from './contract.js'

const fixtureDir = fileURLToPath(new URL('./fixtures/', import.meta.url))
const fixture = (name: string): string => readFileSync(join(fixtureDir, name), 'utf8')
const volumePath = process.cwd()

const linuxOptions = (over: Partial<LinuxHalOptions> = {}): LinuxHalOptions => ({
  firmwareVersion: '1.0.0',
  model: null,
  serial: null,
  mdstatPath: '/proc/mdstat',
  mdadmPath: 'mdadm',
  commandTimeoutMs: 10_000,
  ...over,
})

const active = (device: string) => ({ device, state: 'active' as const })

/** Writes an executable stand-in for mdadm that prints a fixture per array, or sleeps. */
async function fakeMdadm(dir: string, outputs: Record<string, string>, sleepSeconds = 0): Promise<string> {
  const cases = Object.entries(outputs)
    .map(([device, name]) => `  ${device}) cat '${join(fixtureDir, name)}' ;;`)
    .join('\n')
  const path = join(dir, 'mdadm')
  const body = `#!/bin/sh\n${sleepSeconds ? `sleep ${sleepSeconds}\n` : ''}[ "$1" = --detail ] || exit 2\ncase "$2" in\n${cases}\n  *) echo "mdadm: cannot open $2: No such file or directory" >&2; exit 1 ;;\nesac\n`
  await writeFile(path, body)
  await chmod(path, 0o755)
  return path
}

t.test('parseMdstat on every fixture', async (t) => {
  t.same(parseMdstat(fixture('mdstat-empty.txt')), [], 'Personalities without arrays: none')
  t.same(parseMdstat(''), [], 'empty text: none')

  t.same(parseMdstat(fixture('mdstat-raid1-clean.txt')), [
    { name: 'md0', level: 'raid1', state: 'clean', memberCountExpected: 2, members: [active('/dev/sda1'), active('/dev/sdb1')], rebuildPercent: null },
  ])
  t.same(parseMdstat(fixture('mdstat-raid1-degraded.txt')), [
    { name: 'md0', level: 'raid1', state: 'degraded', memberCountExpected: 2, members: [active('/dev/sda1'), { device: 'slot 1', state: 'missing' }], rebuildPercent: null },
  ])
  t.same(parseMdstat(fixture('mdstat-raid1-faulty.txt')), [
    { name: 'md0', level: 'raid1', state: 'degraded', memberCountExpected: 2, members: [active('/dev/sda1'), { device: '/dev/sdb1', state: 'faulty' }], rebuildPercent: null },
  ])
  t.same(
    parseMdstat(fixture('mdstat-raid1-resync.txt')),
    [
      { name: 'md1', level: 'raid1', state: 'rebuilding', memberCountExpected: 2, members: [active('/dev/sda2'), active('/dev/sdb2')], rebuildPercent: 0 },
      { name: 'md0', level: 'raid1', state: 'rebuilding', memberCountExpected: 2, members: [active('/dev/sda1'), active('/dev/sdb1')], rebuildPercent: 12.6 },
    ],
    'resync=DELAYED is a rebuild at 0%',
  )
  t.same(
    parseMdstat(fixture('mdstat-raid5-recovery.txt')),
    [
      {
        name: 'md0',
        level: 'raid5',
        state: 'rebuilding',
        memberCountExpected: 4,
        members: [active('/dev/sda1'), active('/dev/sdb1'), active('/dev/sdc1'), { device: '/dev/sde1', state: 'rebuilding' }],
        rebuildPercent: 37.5,
      },
    ],
    'the newly added member (highest descriptor) is the one rebuilding',
  )
  t.same(parseMdstat(fixture('mdstat-raid5-spare.txt')), [
    {
      name: 'md0',
      level: 'raid5',
      state: 'clean',
      memberCountExpected: 3,
      members: [active('/dev/sda1'), active('/dev/sdb1'), active('/dev/sdc1'), { device: '/dev/sdd1', state: 'spare' }],
      rebuildPercent: null,
    },
  ])

  const several = parseMdstat(fixture('mdstat-several.txt'))
  t.same(
    several.map((array) => [array.name, array.level, array.state, array.rebuildPercent]),
    [
      ['md3', 'raid1', 'clean', null],
      ['md2', 'raid1', 'clean', null],
      ['md1', 'raid6', 'degraded', null],
      ['md0', 'raid1', 'clean', null],
    ],
    'auto-read-only is skipped to find the level; a check is not a rebuild',
  )
  t.same(
    several[2]?.members.filter((member) => member.state !== 'active'),
    [{ device: '/dev/sde2', state: 'faulty' }],
  )
  t.equal(several[2]?.members.length, 6)

  const raid10 = parseMdstat(fixture('mdstat-raid10.txt'))
  t.same(
    raid10.map((array) => [array.name, array.state, array.memberCountExpected, array.members.length]),
    [
      ['md1', 'degraded', 4, 4],
      ['md0', 'clean', 12, 12],
    ],
  )
  t.equal(raid10[0]?.members.find((member) => member.device === '/dev/sdn1')?.state, 'faulty')
  t.equal(raid10[1]?.members[11]?.device, '/dev/sdl1', 'members sorted naturally')

  t.same(
    parseMdstat(fixture('mdstat-failed.txt')),
    [
      {
        name: 'md127',
        level: 'unknown',
        state: 'failed',
        memberCountExpected: 3,
        members: [
          { device: '/dev/sda1', state: 'spare' },
          { device: '/dev/sdb1', state: 'spare' },
          { device: '/dev/sdc1', state: 'spare' },
        ],
        rebuildPercent: null,
      },
      {
        name: 'md1',
        level: 'raid5',
        state: 'failed',
        memberCountExpected: 3,
        members: [{ device: '/dev/sdd1', state: 'faulty' }, { device: '/dev/sde1', state: 'faulty' }, active('/dev/sdf1')],
        rebuildPercent: null,
      },
    ],
    'an inactive array and a raid5 with two faulty members are failed',
  )

  for (const name of [
    'mdstat-raid1-clean.txt',
    'mdstat-raid1-degraded.txt',
    'mdstat-raid1-faulty.txt',
    'mdstat-raid1-resync.txt',
    'mdstat-raid5-recovery.txt',
    'mdstat-raid5-spare.txt',
    'mdstat-several.txt',
    'mdstat-raid10.txt',
    'mdstat-failed.txt',
  ]) {
    for (const array of parseMdstat(fixture(name))) checkArrayConsistency(t, array)
  }
})

t.test('parseMdstat corner cases', async (t) => {
  const raid0 = parseMdstat('Personalities : [raid0]\nmd0 : active raid0 sdb1[1] sda1[0]\n      1953260544 blocks super 1.2 512k chunks\n\nunused devices: <none>\n')
  t.match(raid0, [{ level: 'raid0', state: 'clean', memberCountExpected: 2 }], 'raid0 prints no role string')
  const journal = parseMdstat('md0 : active raid5 sdd1[3](J) sdc1[2] sdb1[1] sda1[0]\n      100 blocks super 1.2 level 5, 512k chunk, algorithm 2 [3/3] [UUU]\n')
  t.equal(journal[0]?.members.length, 3, 'a journal device is not a member')
  const replacement = parseMdstat(
    'md0 : active raid1 sdc1[2](R) sdb1[1] sda1[0]\n      100 blocks super 1.2 [2/2] [UU]\n      [=>...................]  recovery =  9.0% (9/100) finish=1.0min speed=1K/sec\n',
  )
  t.match(replacement, [{ state: 'rebuilding', rebuildPercent: 9 }])
  t.equal(replacement[0]?.members.find((member) => member.device === '/dev/sdc1')?.state, 'rebuilding', 'a replacement device is rebuilding')
})

t.test('parseMdadmDetail on every fixture', async (t) => {
  t.same(parseMdadmDetail(fixture('mdadm-detail-clean.txt')), {
    name: 'md0',
    level: 'raid5',
    state: 'clean',
    memberCountExpected: 4,
    members: ['/dev/sda1', '/dev/sdb1', '/dev/sdc1', '/dev/sdd1'].map(active),
    rebuildPercent: null,
  })
  t.same(parseMdadmDetail(fixture('mdadm-detail-degraded.txt')), {
    name: 'md0',
    level: 'raid1',
    state: 'degraded',
    memberCountExpected: 2,
    members: [active('/dev/sda1'), { device: 'slot 1', state: 'missing' }],
    rebuildPercent: null,
  })
  t.same(parseMdadmDetail(fixture('mdadm-detail-rebuilding.txt')), {
    name: 'md0',
    level: 'raid5',
    state: 'rebuilding',
    memberCountExpected: 4,
    members: [active('/dev/sda1'), active('/dev/sdb1'), active('/dev/sdc1'), { device: '/dev/sde1', state: 'rebuilding' }],
    rebuildPercent: 42,
  })
  t.same(parseMdadmDetail(fixture('mdadm-detail-faulty.txt')), {
    name: 'md1',
    level: 'raid6',
    state: 'degraded',
    memberCountExpected: 6,
    members: [
      active('/dev/sda2'),
      active('/dev/sdb2'),
      active('/dev/sdc2'),
      active('/dev/sdd2'),
      { device: 'slot 4', state: 'missing' },
      active('/dev/sdf2'),
      { device: '/dev/sde2', state: 'faulty' },
    ],
    rebuildPercent: null,
  })
  const failed = parseMdadmDetail(fixture('mdadm-detail-failed.txt'))
  t.match(failed, { name: 'md1', level: 'raid5', state: 'failed', rebuildPercent: null })
  t.same(
    failed.members.map((member) => member.state),
    ['missing', 'missing', 'active', 'faulty', 'faulty'],
  )
  for (const name of ['clean', 'degraded', 'rebuilding', 'faulty', 'failed']) checkArrayConsistency(t, parseMdadmDetail(fixture(`mdadm-detail-${name}.txt`)))

  t.throws(() => parseMdadmDetail('mdadm: cannot open /dev/md0: Permission denied\n'), { code: 'HAL_PROBE_FAILED' }, 'an error message is not a description')
  const delayed = fixture('mdadm-detail-clean.txt').replace('State : clean ', 'State : clean, resyncing (DELAYED) ')
  t.match(parseMdadmDetail(delayed), { state: 'rebuilding', rebuildPercent: 0 }, 'a delayed resync is a rebuild at 0%')
})

t.test('identity rules', async (t) => {
  t.equal(applianceModelFromDmi('mailkeep', 'MK650'), 650)
  t.equal(applianceModelFromDmi('Mailkeep Systems', 'mailkeep 1050 rev B'), 1050)
  t.equal(applianceModelFromDmi('Dell Inc.', 'PowerEdge R650'), null, 'another vendor is not an appliance, whatever its product name')
  t.equal(applianceModelFromDmi('', 'Docker Container'), null)
  for (const placeholder of ['', '-', '  ', 'To Be Filled By O.E.M.', 'Default string', 'Not Specified', '0', '00000000-0000-0000-0000-000000000000', 'System Serial Number']) {
    t.equal(meaningfulDmiValue(placeholder), null, `"${placeholder}" identifies nothing`)
  }
  t.equal(meaningfulDmiValue(' CZJ1234ABC '), 'CZJ1234ABC')
  t.equal(meaningfulDmiValue(undefined), null)
  const serial = serialFromMachineId('3d1219c7c4c5404aaa1f6d2a48adfda4\n')
  t.match(serial, /^LNX-[0-9A-F]{12}$/)
  t.equal(serialFromMachineId('3d1219c7c4c5404aaa1f6d2a48adfda4'), serial, 'stable, whitespace ignored')
  t.not(serialFromMachineId('4d1219c7c4c5404aaa1f6d2a48adfda4'), serial)
  t.notMatch(serial, /3d1219/i, 'the machine-id itself is not exposed')
})

t.test('disk conversion', async (t) => {
  t.equal(diskNameOfPartition('/dev/sda1'), 'sda')
  t.equal(diskNameOfPartition('sdab12'), 'sdab')
  t.equal(diskNameOfPartition('nvme0n1p2'), 'nvme0n1')
  t.equal(diskNameOfPartition('nvme0n1'), 'nvme0n1')
  t.equal(diskNameOfPartition('mmcblk0p1'), 'mmcblk0')
  t.equal(diskNameOfPartition('vdb'), 'vdb')
  t.same([...faultyDiskNames(parseMdstat(fixture('mdstat-several.txt')))], ['sde'])

  const layoutDisk = (over: Partial<LayoutDisk>): LayoutDisk => ({
    device: '/dev/sda',
    name: 'WDC WD80EFZZ-68BTXN0',
    vendor: 'Western Digital',
    size: 8001563222016,
    serialNum: 'WD-CA1',
    smartStatus: 'Ok',
    temperature: 34,
    ...over,
  })
  const block = (over: Partial<BlockDevice>): BlockDevice => ({ name: 'vda', type: 'disk', size: 274877906944, model: '', serial: '', removable: false, device: '/dev/vda', ...over })
  const disks = toDisks(
    [
      layoutDisk({}),
      layoutDisk({ device: '/dev/sdb', serialNum: 'WD-CA2', smartStatus: 'Predicted Failure', vendor: 'WDC' }),
      layoutDisk({ device: '/dev/sde', serialNum: ' ', smartStatus: 'unknown', temperature: null }),
      layoutDisk({ device: '/dev/sdf', size: 0 }),
    ],
    [
      block({}),
      block({ name: 'sda', device: '/dev/sda' }),
      block({ name: 'loop0', device: '/dev/loop0' }),
      block({ name: 'zram0', device: '/dev/zram0' }),
      block({ name: 'sdz', device: '/dev/sdz', removable: true }),
      block({ name: 'sr0', device: '/dev/sr0', type: 'rom' }),
    ],
    new Set(['sde']),
  )
  t.same(
    disks.map((disk) => [disk.device, disk.id, disk.health, disk.smart]),
    [
      ['/dev/sda', 'WD-CA1', 'ok', 'passed'],
      ['/dev/sdb', 'WD-CA2', 'failing', 'failed'],
      ['/dev/sde', '/dev/sde', 'failed', 'unavailable'],
      ['/dev/vda', '/dev/vda', 'unknown', 'unavailable'],
    ],
    'SMART and md marks give health; loop, zram, removable, optical and empty devices are left out',
  )
  t.equal(disks[0]?.vendorModel, 'Western Digital WDC WD80EFZZ-68BTXN0')
  t.equal(disks[1]?.vendorModel, 'WDC WD80EFZZ-68BTXN0', 'the vendor is not repeated')
  t.equal(disks[0]?.temperatureCelsius, 34)
  t.equal(disks[3]?.vendorModel, null)
})

t.test('NIC conversion', async (t) => {
  const entry = (over: Partial<SiInterface>): SiInterface => ({
    iface: 'eth0',
    mac: '02:FC:00:00:00:01',
    internal: false,
    virtual: false,
    operstate: 'up',
    speed: 1000,
    ip4: '192.0.2.2',
    ip6: 'fd00::2',
    ...over,
  })
  const nics = toNics(
    [
      entry({ iface: 'lo', mac: '00:00:00:00:00:00', internal: true }),
      entry({ iface: 'eth1', mac: '02:fc:00:00:00:02', operstate: 'down', ip4: '', ip6: '' }),
      entry({}),
      entry({ iface: 'eth2', mac: '02:fc:00:00:00:03', speed: -1 }),
      entry({ iface: 'docker0', virtual: true }),
      entry({ iface: 'tun0', mac: '' }),
    ],
    {
      eth0: [
        { address: '192.0.2.2', netmask: '255.255.255.0', family: 'IPv4', mac: '02:fc:00:00:00:01', internal: false, cidr: '192.0.2.2/24' },
        { address: 'fe80::1', netmask: 'ffff:ffff:ffff:ffff::', family: 'IPv6', mac: '02:fc:00:00:00:01', internal: false, cidr: 'fe80::1/64', scopeid: 2 },
      ],
    },
  )
  t.same(
    nics,
    [
      { name: 'eth0', mac: '02:fc:00:00:00:01', link: 'up', speedMbps: 1000, addresses: ['192.0.2.2', 'fe80::1'] },
      { name: 'eth1', mac: '02:fc:00:00:00:02', link: 'down', speedMbps: null, addresses: [] },
      { name: 'eth2', mac: '02:fc:00:00:00:03', link: 'up', speedMbps: null, addresses: ['192.0.2.2', 'fd00::2'] },
    ],
    'loopback, virtual and MAC-less interfaces are no ports; MACs lower-cased; unknown speed is null',
  )
})

t.test('contract: linux on this machine', (t) => halContract(t, (firmwareVersion) => createLinuxHal({ logger: createMemoryLogger() }, linuxOptions({ firmwareVersion })), volumePath))

t.test('linux on this machine: no md RAID is not an error', async (t) => {
  const hal = createLinuxHal({ logger: createMemoryLogger() }, linuxOptions({ mdstatPath: '/nonexistent/mdstat' }))
  t.same(await hal.raid(), { present: false, arrays: [] }, 'no mdstat file')
  if (!existsSync('/proc/mdstat') || parseMdstat(readFileSync('/proc/mdstat', 'utf8')).length === 0) {
    t.same(await createLinuxHal({ logger: createMemoryLogger() }, linuxOptions()).raid(), { present: false, arrays: [] }, 'this machine has no arrays')
  }
  const dir = t.testdir({ mdstat: fixture('mdstat-empty.txt') })
  t.same(await createLinuxHal({ logger: createMemoryLogger() }, linuxOptions({ mdstatPath: join(dir, 'mdstat') })).raid(), { present: false, arrays: [] }, 'mdstat without arrays')
})

t.test('linux identity on this machine', async (t) => {
  const withOverrides = await createLinuxHal({ logger: createMemoryLogger() }, linuxOptions({ model: 450, serial: 'FACTORY-7' })).identity()
  t.equal(withOverrides.serial, 'FACTORY-7', 'the serial override wins')
  t.equal(withOverrides.model, 450, 'not an appliance: the model override is used')
  const bare = await createLinuxHal({ logger: createMemoryLogger() }, linuxOptions()).identity()
  t.equal(bare.model, 0, 'not an appliance, no override: 0 = unknown')
  t.ok(bare.serial.length > 0, `a serial from DMI or machine-id (${bare.serial})`)
  t.equal((await createLinuxHal({ logger: createMemoryLogger() }, linuxOptions()).identity()).serial, bare.serial, 'the same serial on every start')
})

t.test('linux RAID through mdstat and mdadm (fixtures, fake mdadm)', async (t) => {
  // One testdir per test: tap wipes and reuses the same folder on a second testdir() call.
  const root = t.testdir({ recovering: { mdstat: fixture('mdstat-raid5-recovery.txt') }, slow: {}, refusing: { mdstat: fixture('mdstat-raid1-faulty.txt') } })
  const dir = join(root, 'recovering')
  const mdstatPath = join(dir, 'mdstat')

  const mdadmPath = await fakeMdadm(dir, { '/dev/md0': 'mdadm-detail-rebuilding.txt' })
  const withMdadm = createLinuxHal({ logger: createMemoryLogger() }, linuxOptions({ mdstatPath, mdadmPath }))
  const detailed = await withMdadm.raid()
  t.equal(detailed.present, true)
  t.match(detailed.arrays, [{ name: 'md0', state: 'rebuilding', rebuildPercent: 42 }], "mdadm's view is preferred over mdstat's 37.5%")
  await halContract(t, (firmwareVersion) => createLinuxHal({ logger: createMemoryLogger() }, linuxOptions({ firmwareVersion, mdstatPath, mdadmPath })), volumePath)

  const missingLogger = createMemoryLogger()
  const withoutMdadm = createLinuxHal({ logger: missingLogger }, linuxOptions({ mdstatPath, mdadmPath: join(dir, 'no-such-mdadm') }))
  const fromMdstat = (await withoutMdadm.raid()).arrays as RaidArray[]
  t.match(fromMdstat, [{ name: 'md0', state: 'rebuilding', rebuildPercent: 37.5 }], 'without mdadm: the mdstat view')
  await withoutMdadm.raid()
  t.equal(missingLogger.records.filter((record) => /mdadm not found/.test(record.msg)).length, 1, 'a missing mdadm is logged once')

  const slowDir = join(root, 'slow')
  const slowMdadm = await fakeMdadm(slowDir, { '/dev/md0': 'mdadm-detail-rebuilding.txt' }, 5)
  const slowLogger = createMemoryLogger()
  const slow = createLinuxHal({ logger: slowLogger }, linuxOptions({ mdstatPath, mdadmPath: slowMdadm, commandTimeoutMs: 300 }))
  const started = Date.now()
  t.match((await slow.raid()).arrays, [{ rebuildPercent: 37.5 }], 'a hung mdadm falls back to mdstat')
  t.ok(Date.now() - started < 3000, `bounded by the timeout (${Date.now() - started} ms)`)
  t.match(slowLogger.records, [{ level: 'warn', msg: /mdadm --detail failed/, reason: /timed out after 300 ms/ }])
  await slow.raid()
  t.equal(slowLogger.records.filter((record) => record.level === 'warn').length, 1, 'repeated failures are not warned again')

  const failingDir = join(root, 'refusing')
  const refusing = createLinuxHal({ logger: createMemoryLogger() }, linuxOptions({ mdstatPath: join(failingDir, 'mdstat'), mdadmPath: await fakeMdadm(failingDir, {}) }))
  t.match(
    (await refusing.raid()).arrays,
    [{ state: 'degraded', members: [{ device: '/dev/sda1' }, { device: '/dev/sdb1', state: 'faulty' }] }],
    'mdadm exiting 1 (not root): the mdstat view',
  )
})

t.test('linux volume errors are typed', async (t) => {
  const hal = createLinuxHal({ logger: createMemoryLogger() }, linuxOptions())
  await t.rejects(hal.volume('/nonexistent/mailkeep-data'), { code: 'HAL_VOLUME_UNAVAILABLE' })
})
