import t from 'tap'
import { createMemoryLogger } from '../../firmware/common/logger.js'
import { routeConsoleToLogger } from '../../boot/library-console.js'

t.test("a library's console output becomes one JSON record, its error a field", async (t) => {
  const logger = createMemoryLogger()
  const restore = routeConsoleToLogger(logger)
  try {
    // What lmdb-js does when a commit fails (lmdb/write.js).
    console.error(Object.assign(new Error('Input/output error'), { code: 5 }))
    console.warn('low %s', 'space', 42)
  } finally {
    restore()
  }
  t.match(logger.records, [
    { level: 'error', ns: 'console', msg: 'a library wrote to the console', console: 'error', error: { message: 'Input/output error', code: 5 } },
    { level: 'warn', ns: 'console', console: 'warn', text: 'low space 42' },
  ])
  t.equal(logger.records.length, 2)
  t.notOk('text' in logger.records[0]!, 'an error alone has no text')
})
