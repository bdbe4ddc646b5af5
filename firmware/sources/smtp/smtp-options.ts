import { smtpBufferedBytesMaxDefault, smtpCommandLineBytesMaxDefault, smtpStopTimeoutMsDefault, smtpSubmitTimeoutMsDefault, type SmtpSourceOptions } from './types.js'

/** The listener's options with every default applied. */
export type ResolvedSmtpOptions = Required<Omit<SmtpSourceOptions, 'enabled'>>

/** Options with every default applied. `bufferedBytesMax` defaults to at least one largest message. */
export function resolveSmtpOptions(options: SmtpSourceOptions): ResolvedSmtpOptions {
  return {
    host: options.host,
    port: options.port,
    hostname: options.hostname,
    archiveRecipients: options.archiveRecipients,
    trustedNetworks: options.trustedNetworks,
    sizeBytesMax: options.sizeBytesMax,
    recipientsMax: options.recipientsMax,
    connectionsMax: options.connectionsMax,
    socketTimeoutMs: options.socketTimeoutMs,
    starttls: options.starttls,
    mailFromTimeoutMs: options.mailFromTimeoutMs,
    commandTimeoutMs: options.commandTimeoutMs,
    dataTimeoutMs: options.dataTimeoutMs,
    dataBytesPerSecondMin: options.dataBytesPerSecondMin,
    dataRateGraceMs: options.dataRateGraceMs,
    sessionTimeoutMs: options.sessionTimeoutMs,
    untrustedConnectionsPerAddressMax: options.untrustedConnectionsPerAddressMax,
    trustedConnectionsReserved: options.trustedConnectionsReserved,
    stopTimeoutMs: options.stopTimeoutMs ?? smtpStopTimeoutMsDefault,
    submitTimeoutMs: options.submitTimeoutMs ?? smtpSubmitTimeoutMsDefault,
    commandLineBytesMax: options.commandLineBytesMax ?? smtpCommandLineBytesMaxDefault,
    bufferedBytesMax: options.bufferedBytesMax ?? Math.max(smtpBufferedBytesMaxDefault, options.sizeBytesMax),
    immediateGreeting: options.immediateGreeting ?? true,
  }
}

/** Every problem with the options, each as `smtp.path: reason (got value)`; empty when valid. */
export function validateSmtpOptions(options: ResolvedSmtpOptions): string[] {
  const problems: string[] = []
  const positiveIntegers = [
    'sizeBytesMax',
    'recipientsMax',
    'connectionsMax',
    'socketTimeoutMs',
    'stopTimeoutMs',
    'submitTimeoutMs',
    'commandLineBytesMax',
    'bufferedBytesMax',
    'mailFromTimeoutMs',
    'commandTimeoutMs',
    'dataTimeoutMs',
    'sessionTimeoutMs',
    'untrustedConnectionsPerAddressMax',
  ] as const
  for (const key of positiveIntegers) {
    const value = options[key]
    if (!Number.isSafeInteger(value) || value < 1) problems.push(`smtp.${key}: must be a positive integer (got ${JSON.stringify(value)})`)
  }
  for (const key of ['dataBytesPerSecondMin', 'dataRateGraceMs', 'trustedConnectionsReserved'] as const) {
    const value = options[key]
    if (!Number.isSafeInteger(value) || value < 0) problems.push(`smtp.${key}: must be an integer of 0 or more (got ${JSON.stringify(value)})`)
  }
  if (options.trustedConnectionsReserved > options.connectionsMax) {
    problems.push(`smtp.trustedConnectionsReserved: must be at most connectionsMax ${options.connectionsMax} (got ${options.trustedConnectionsReserved})`)
  }
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65_535) problems.push(`smtp.port: must be 0..65535 (got ${JSON.stringify(options.port)})`)
  if (options.host.trim() === '') problems.push(`smtp.host: must not be empty (got ${JSON.stringify(options.host)})`)
  if (!/^[A-Za-z0-9.-]+$/.test(options.hostname)) problems.push(`smtp.hostname: must be a host name (got ${JSON.stringify(options.hostname)})`)
  if (options.bufferedBytesMax < options.sizeBytesMax) {
    problems.push(`smtp.bufferedBytesMax: must hold at least one message of sizeBytesMax ${options.sizeBytesMax} bytes (got ${options.bufferedBytesMax})`)
  }
  return problems
}
