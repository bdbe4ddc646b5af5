/**
 * CPU time per thread of this process, from /proc (Linux): lets a benchmark say which
 * thread (the event loop, a parse worker, LMDB's writer) spends the time it measures.
 * Elsewhere it returns an empty snapshot, and the difference is empty.
 */
import { readdirSync, readFileSync } from 'node:fs'

export interface ThreadCpu {
  tid: number
  name: string
  userMs: number
  systemMs: number
}

const ticksPerSecond = 100

/** One reading of every live thread of this process. */
export function threadCpuSnapshot(): Map<number, ThreadCpu> {
  const out = new Map<number, ThreadCpu>()
  let tids: string[]
  try {
    tids = readdirSync('/proc/self/task')
  } catch {
    return out
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
      // The name is in parentheses and may hold spaces: fields count from after it.
      const close = stat.lastIndexOf(')')
      const name = stat.slice(stat.indexOf('(') + 1, close)
      const fields = stat.slice(close + 2).split(' ')
      out.set(Number(tid), { tid: Number(tid), name, userMs: (Number(fields[11]) * 1000) / ticksPerSecond, systemMs: (Number(fields[12]) * 1000) / ticksPerSecond })
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out
}

/** CPU spent per thread between two snapshots (threads that ended before `after` are lost), busiest first. */
export function threadCpuBetween(before: Map<number, ThreadCpu>, after: Map<number, ThreadCpu>): ThreadCpu[] {
  const out: ThreadCpu[] = []
  for (const [tid, now] of after) {
    const then = before.get(tid)
    out.push({ tid, name: tid === process.pid ? `${now.name} (main)` : now.name, userMs: now.userMs - (then?.userMs ?? 0), systemMs: now.systemMs - (then?.systemMs ?? 0) })
  }
  return out.filter((entry) => entry.userMs + entry.systemMs > 0).sort((a, b) => b.userMs + b.systemMs - (a.userMs + a.systemMs))
}
