// Seeds 0–499 of the mirror simulation (CI); npm run sim -- --seeds N runs more on demand.
import t from 'tap'
import { sweep } from './sweep.js'

t.test('mirror simulation, seeds 0–499', (t) => sweep(t, 0, 500))
