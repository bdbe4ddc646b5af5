/**
 * Docid set algebra. A set of docids is an ascending `Uint32Array` without duplicates;
 * queries combine the sets of their terms with these.
 */

/** Turns docids gathered from chunks into a set: sorts and removes duplicates only when needed. */
export function toDocidSet(docids: number[]): Uint32Array {
  let sorted = true
  for (let index = 1; index < docids.length; index++) {
    if (docids[index]! <= docids[index - 1]!) {
      sorted = false
      break
    }
  }
  const array = Uint32Array.from(docids)
  if (sorted) return array
  array.sort()
  let write = 0
  for (let read = 0; read < array.length; read++) {
    if (write === 0 || array[read] !== array[write - 1]) array[write++] = array[read]!
  }
  return array.subarray(0, write)
}

/** Docids in both sets. Gallops through the larger set when the sizes differ a lot. */
export function intersect(left: Uint32Array, right: Uint32Array): Uint32Array {
  const [small, large] = left.length <= right.length ? [left, right] : [right, left]
  const out = new Uint32Array(small.length)
  let count = 0
  let position = 0
  for (let index = 0; index < small.length && position < large.length; index++) {
    const value = small[index]!
    if (large[position]! < value) {
      // Exponential search, then binary search, for the first element ≥ value.
      let step = 1
      let high = position + 1
      while (high < large.length && large[high]! < value) {
        position = high
        step *= 2
        high = position + step
      }
      let low = position + 1
      high = Math.min(high, large.length)
      while (low < high) {
        const middle = (low + high) >>> 1
        if (large[middle]! < value) low = middle + 1
        else high = middle
      }
      position = low
    }
    if (position < large.length && large[position] === value) out[count++] = value
  }
  return out.subarray(0, count)
}

/** Docids in either set. */
export function union(left: Uint32Array, right: Uint32Array): Uint32Array {
  const out = new Uint32Array(left.length + right.length)
  let count = 0
  let i = 0
  let j = 0
  while (i < left.length && j < right.length) {
    const a = left[i]!
    const b = right[j]!
    if (a < b) {
      out[count++] = a
      i++
    } else if (b < a) {
      out[count++] = b
      j++
    } else {
      out[count++] = a
      i++
      j++
    }
  }
  while (i < left.length) out[count++] = left[i++]!
  while (j < right.length) out[count++] = right[j++]!
  return out.subarray(0, count)
}

/** Docids in `left` and not in `right`. */
export function difference(left: Uint32Array, right: Uint32Array): Uint32Array {
  if (right.length === 0) return left
  const out = new Uint32Array(left.length)
  let count = 0
  let j = 0
  for (let i = 0; i < left.length; i++) {
    const value = left[i]!
    while (j < right.length && right[j]! < value) j++
    if (j < right.length && right[j] === value) continue
    out[count++] = value
  }
  return out.subarray(0, count)
}

/** `a` followed by `b` (a itself when b is empty): the set of `a` grown at its end, every docid of `b` above `a`'s. */
export function concatenated(a: Uint32Array, b: ArrayLike<number>): Uint32Array {
  if (b.length === 0) return a
  const out = new Uint32Array(a.length + b.length)
  out.set(a)
  out.set(b, a.length)
  return out
}
