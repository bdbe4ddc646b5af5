// Seeds 500–999 of the mirror simulation (CI); npm run sim -- --seeds N runs more on demand.
import t from 'tap'
import { sweep } from './sweep.js'

t.test('mirror simulation, seeds 500–999', (t) => sweep(t, 500, 500))
