export { SmtpSession, archivedId, type SmtpReply } from '../../scripts/lib/smtp-client.js'
