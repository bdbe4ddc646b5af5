import models from './models.json' with { type: 'json' }

/**
 * Hardware profile of one appliance model, from config/models.json. Sizes are decimal
 * bytes as disk vendors state them. `usableBytes` is the data volume's capacity after RAID.
 */
export interface ModelProfile {
  model: number
  diskCount: number
  raidLevel: 'none' | 'raid1' | 'raid5' | 'raid6' | 'raid10'
  nicCount: number
  /** Size of each member disk, in bytes. */
  diskBytes: number
  usableBytes: number
  /** Only models 450 and up may mirror (product specification). */
  mirroringAllowed: boolean
}

/** The lowest model that may mirror. */
export const mirroringModelMin = 450

const profiles: ReadonlyMap<number, ModelProfile> = new Map(
  Object.entries(models).map(([model, profile]) => [Number(model), Object.freeze({ model: Number(model), ...profile } as ModelProfile)]),
)

/** The profile of `model`, or undefined for a model this firmware does not know. */
export function modelProfile(model: number): ModelProfile | undefined {
  return profiles.get(model)
}

/** Every known model number, ascending. */
export function knownModels(): number[] {
  return [...profiles.keys()].sort((a, b) => a - b)
}
