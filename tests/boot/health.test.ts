import t from 'tap'
import { evaluateHealth, type HardwareFacts } from '../../boot/health.js'
import { modelProfile } from '../../config/models.js'

const facts = (over: Partial<HardwareFacts> = {}): HardwareFacts => ({
  identity: { model: 450, serial: 'S1', firmwareVersion: '1.0.0', provider: 'sim' },
  profile: modelProfile(450),
  disks: [0, 1].map((index) => ({
    id: `d${index}`,
    device: `/dev/sd${'ab'[index]}`,
    sizeBytes: 8e12,
    vendorModel: null,
    health: 'ok' as const,
    smart: 'passed' as const,
    temperatureCelsius: null,
  })),
  raid: {
    present: true,
    arrays: [
      {
        name: 'md0',
        level: 'raid1',
        state: 'clean',
        memberCountExpected: 2,
        members: [
          { device: '/dev/sda', state: 'active' },
          { device: '/dev/sdb', state: 'active' },
        ],
        rebuildPercent: null,
      },
    ],
  },
  nics: ['eth0', 'eth1'].map((name) => ({ name, mac: '02:00:00:00:00:01', link: 'up' as const, speedMbps: 1000, addresses: [] })),
  volume: { totalBytes: 1e12, freeBytes: 5e11 },
  freeBytesMin: 1e9,
  enforceProfile: true,
  ...over,
})

t.test('healthy appliance', async (t) => {
  t.same(evaluateHealth(facts()), { state: 'ok', reasons: [] })
})

t.test('each non-fatal problem degrades with its reason', async (t) => {
  const base = facts()
  const degradedRaid = {
    present: true,
    arrays: [
      {
        ...base.raid.arrays[0]!,
        state: 'degraded' as const,
        members: [
          { device: '/dev/sda', state: 'active' as const },
          { device: '/dev/sdb', state: 'faulty' as const },
        ],
      },
    ],
  }
  t.same(evaluateHealth(facts({ raid: degradedRaid })).reasons, ['raid md0 degraded (/dev/sdb faulty)'])
  const rebuilding = {
    present: true,
    arrays: [
      {
        ...base.raid.arrays[0]!,
        state: 'rebuilding' as const,
        rebuildPercent: 40,
        members: [
          { device: '/dev/sda', state: 'active' as const },
          { device: '/dev/sdb', state: 'rebuilding' as const },
        ],
      },
    ],
  }
  t.same(evaluateHealth(facts({ raid: rebuilding })).reasons, ['raid md0 rebuilding 40% (/dev/sdb rebuilding)'])
  t.same(evaluateHealth(facts({ nics: [{ ...base.nics[0]!, link: 'down' }, base.nics[1]!] })).reasons, ['nic eth0 link down'])
  t.same(evaluateHealth(facts({ nics: [base.nics[0]!] })).reasons, ['1 NIC(s), model 450 has 2'])
  t.same(evaluateHealth(facts({ nics: [base.nics[0]!], enforceProfile: false })).reasons, [], 'not enforced on real non-appliance hardware')
  t.same(evaluateHealth(facts({ identity: { ...base.identity, model: 999 }, profile: undefined })).reasons, ['unknown model 999'])
  t.same(evaluateHealth(facts({ volume: { totalBytes: 1e12, freeBytes: 5e8 } })).reasons, ['data volume free 500.0 MB below 1.0 GB: new mail is refused'])
  t.same(evaluateHealth(facts(), { smtp: { ok: false, detail: 'not listening' }, control: { ok: true, detail: '' } }), {
    state: 'degraded',
    reasons: ['service smtp: not listening'],
  })
  const failedDisk = [{ ...base.disks[0]!, health: 'failed' as const }, base.disks[1]!]
  t.same(evaluateHealth(facts({ disks: failedDisk })).state, 'degraded')
})
