/**
 * The SMTP listener (push source). Named exports only; the composition root calls
 * createSmtpSource with the `smtp` config section.
 */
export { createSmtpSource } from './smtp-source.js'
export { resolveSmtpOptions, validateSmtpOptions } from './smtp-options.js'
export { smtpCloseGraceMs } from './listener-lifecycle.js'
export { SmtpError, formatReply, smtpErrorForIngestFailure, type SmtpErrorCode, type SmtpReply } from './errors.js'
export { createRecipientPolicy, type RecipientPolicy } from './recipient-policy.js'
export {
  smtpStopTimeoutMsDefault,
  smtpSubmitTimeoutMsDefault,
  smtpCommandLineBytesMaxDefault,
  smtpBufferedBytesMaxDefault,
  smtpUnrecognizedCommandsMax,
  type SmtpSource,
  type SmtpSourceDeps,
  type SmtpSourceOptions,
  type SmtpStats,
  type SmtpHealth,
  type SmtpTlsMaterial,
  type SmtpMessageRefusal,
  type SmtpRecipientRefusal,
  type SmtpConnectionRefusal,
} from './types.js'
