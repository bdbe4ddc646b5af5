import type { Clock } from '../common/clock.js'
import type { MirrorChannel } from './channel.js'
import type { InboundPeerStatus } from './types.js'

/** Inbound peers remembered for status (the config allows 64 peers). */
export const inboundPeersRememberedMax = 128

type InboundPeerEntry = InboundPeerStatus & { openChannels: number }

/**
 * The receiver's view of the peers copying to this system, by serial: connected now, or seen
 * since start (at most inboundPeersRememberedMax; one without an open channel is forgotten
 * beyond). Pure until a channel opens.
 */
export function createInboundPeers(clock: Clock) {
  const peers = new Map<string, InboundPeerEntry>()

  function entryOf(channel: MirrorChannel): InboundPeerEntry {
    const serial = channel.peer.serial
    let status = peers.get(serial)
    if (!status) {
      status = {
        serial,
        address: channel.peer.address,
        connected: false,
        connectedSinceMs: clock.now(),
        messagesStored: 0,
        messagesDuplicate: 0,
        messagesRejected: 0,
        bytesReceived: 0,
        lastBatchAtMs: null,
        policyMismatch: [],
        peerPolicyFingerprint: null,
        queuedMessages: null,
        queuedBytes: null,
        queueEstimated: false,
        queueAsOfMs: null,
        openChannels: 0,
      }
      peers.set(serial, status)
      if (peers.size > inboundPeersRememberedMax) {
        const oldest = [...peers.values()].find((candidate) => candidate.openChannels === 0)
        if (oldest) peers.delete(oldest.serial)
      }
    }
    return status
  }

  return {
    /**
     * Counts `channel` as open (its peer connected) until it closes. Returns the peer's status,
     * which the channel's session updates in place.
     */
    open(channel: MirrorChannel): InboundPeerStatus {
      const status = entryOf(channel)
      status.openChannels++
      status.connected = true
      status.address = channel.peer.address
      status.connectedSinceMs = clock.now()
      void channel.closed.then(() => {
        status.openChannels--
        status.connected = status.openChannels > 0
      })
      return status
    },

    /** Inbound peers: connected now, or seen since start (copies). */
    list(): InboundPeerStatus[] {
      return [...peers.values()].map(({ openChannels: _open, ...status }) => ({ ...status }))
    },
  }
}
