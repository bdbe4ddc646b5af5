/**
 * firmware/policy public surface: retention policies, litigation holds, purge planning and
 * execution, and the hash-chained audit log. Importing this file does nothing by itself.
 */
export { createPolicyService, type PolicyService, type PolicyServiceDeps, type PolicyServiceOptions, type PurgePreview, type PurgeRunReport } from './policy-service.js'
export { policyDatabaseName } from './policy-settings.js'
export { previewItemsMax } from './purge-planner.js'
export { createAuditLog, auditDatabaseNames, genesisHash, type AuditLog } from './audit-log.js'
export { describePolicySettings, diffPolicySettings } from './fingerprint.js'
export {
  planPurge,
  validatePolicy,
  validateHold,
  factsOf,
  governingPolicy,
  holdCovers,
  defaultPolicyName,
  policyInputSchema,
  holdInputSchema,
  dayMs,
  type PlanInput,
  type PolicyInput,
  type HoldInput,
} from './rules.js'
export { withArchiveDatabases, type ArchiveDatabaseUser } from './storage-hook.js'
export { canonicalJson } from '../common/canonical.js'
export { PolicyError, type PolicyErrorCode } from './errors.js'
export type * from './types.js'
export { loadOrCreateAuditKey, auditKeyFile } from './audit-key.js'
export { policyCommandHandlers, policyApiRoutes, policyFromArgs, holdFromArgs, type PolicyApiRoute } from './commands.js'
