import { QuerySyntaxError } from './errors.js'
import { addressQueryToken, isAddressLike, tokenize } from './tokenize.js'

/**
 * The search query language (documented for users in README.md and docs/index-layout.md):
 *
 *   word                 every word must match (AND is implicit; `AND` may be written)
 *   a OR b               either; OR binds tighter than AND: `a OR b c` = `(a OR b) c`
 *   -word, NOT word      must not match
 *   "exact phrase"       the words adjacent, in order, inside one field
 *   from:x  to:x         sender; any recipient (To, Cc, Bcc, envelope and journal BCC).
 *                        `x` with `@` or `.` is an exact address, local part or domain
 *                        (`to:example.com` also matches `mail.example.com`); otherwise
 *                        words of names and addresses
 *   subject:x            words (or a "phrase") in the subject
 *   attachment:x         words of an attachment's file name (`attachment:report.pdf`)
 *   has:attachment       has at least one attachment
 *   after:YYYY-MM-DD     dated on or after that day (00:00 UTC)
 *   before:YYYY-MM-DD    dated before that day (00:00 UTC)
 *   ( … )                grouping
 *
 * A word without a field matches subject, body, attachment text, attachment names and the
 * names and addresses of sender and recipients. A word that tokenizes into several tokens
 * (`e-mail`, `john.smith`, a CJK word) is matched as a phrase. `OR`, `AND` and `NOT` are
 * operators only in capitals; field names are case-insensitive; an unknown `name:` is
 * plain text (so URLs can be searched).
 *
 * Every query must have at least one positive (not negated) term, and each side of an OR
 * must be positive: a purely negative query would be a scan of the whole archive. A date
 * bound counts as positive (it is answered from the date column, which is bounded by the
 * number of documents, not by a full-text scan).
 */

/** Longest query accepted, in characters. */
export const queryCharsMax = 1_024
/** Most terms (words, phrases, field terms, dates) in one query. */
export const queryTermsMax = 32
/** Most tokens in one phrase or field value. */
export const phraseTokensMax = 16
/** Deepest nesting of parentheses and negations. */
export const queryNestingMax = 8

/** The text fields a term can be matched in; `any` is the union of all of them. */
export type TextField = 'any' | 'subject' | 'from' | 'to' | 'attachment'

export type QueryNode =
  | { kind: 'and'; children: QueryNode[]; position: number }
  | { kind: 'or'; children: QueryNode[]; position: number }
  | { kind: 'not'; child: QueryNode; position: number }
  /** Tokens in `field`; more than one token means adjacent, in order (a phrase). */
  | { kind: 'match'; field: TextField; tokens: string[]; position: number }
  /** One exact address token (whole address, local part or domain) in from/to. */
  | { kind: 'address'; field: 'from' | 'to'; token: string; position: number }
  | { kind: 'has'; what: 'attachment'; position: number }
  /** `after`: dateMs ≥ ms; `before`: dateMs < ms. */
  | { kind: 'date'; bound: 'before' | 'after'; ms: number; position: number }

const fieldNames = new Set(['from', 'to', 'subject', 'attachment', 'has', 'before', 'after'])

type Lexeme =
  | { type: 'open' | 'close' | 'or' | 'and' | 'not' | 'minus'; position: number }
  | { type: 'word'; text: string; position: number }
  | { type: 'phrase'; text: string; position: number }
  | { type: 'field'; name: string; value: string; quoted: boolean; position: number; valuePosition: number }

function isSpace(char: string): boolean {
  return /\s/u.test(char)
}

/** Cuts the query into lexemes. @throws QuerySyntaxError on an unterminated quote or an empty field value */
function lex(query: string): Lexeme[] {
  const lexemes: Lexeme[] = []
  let index = 0
  const readQuoted = (start: number): { text: string; end: number } => {
    const close = query.indexOf('"', start + 1)
    if (close === -1) throw new QuerySyntaxError(start, 'unterminated quote: a phrase needs a closing "')
    return { text: query.slice(start + 1, close), end: close + 1 }
  }
  while (index < query.length) {
    const char = query[index]!
    if (isSpace(char)) {
      index++
      continue
    }
    if (char === '(' || char === ')') {
      lexemes.push({ type: char === '(' ? 'open' : 'close', position: index })
      index++
      continue
    }
    if (char === '"') {
      const { text, end } = readQuoted(index)
      lexemes.push({ type: 'phrase', text, position: index })
      index = end
      continue
    }
    if (char === '-') {
      const next = query[index + 1]
      if (next === undefined || isSpace(next) || next === ')') throw new QuerySyntaxError(index, "'-' must be followed by a term")
      lexemes.push({ type: 'minus', position: index })
      index++
      continue
    }
    let end = index
    while (end < query.length && !isSpace(query[end]!) && query[end] !== '(' && query[end] !== ')' && query[end] !== '"') end++
    const text = query.slice(index, end)
    const colon = text.indexOf(':')
    const name = colon > 0 ? text.slice(0, colon).toLowerCase() : ''
    if (fieldNames.has(name)) {
      const valuePosition = index + colon + 1
      if (colon === text.length - 1) {
        if (query[end] === '"') {
          const { text: value, end: quoteEnd } = readQuoted(end)
          lexemes.push({ type: 'field', name, value, quoted: true, position: index, valuePosition: end })
          index = quoteEnd
          continue
        }
        throw new QuerySyntaxError(valuePosition, `${name}: needs a value`)
      }
      lexemes.push({ type: 'field', name, value: text.slice(colon + 1), quoted: false, position: index, valuePosition })
    } else if (text === 'OR' || text === 'AND' || text === 'NOT') {
      lexemes.push({ type: text === 'OR' ? 'or' : text === 'AND' ? 'and' : 'not', position: index })
    } else {
      lexemes.push({ type: 'word', text, position: index })
    }
    index = end
  }
  return lexemes
}

const datePattern = /^(\d{4})-(\d{2})-(\d{2})$/

/** 00:00 UTC of a `YYYY-MM-DD` day, or null when it is not a real date. */
function parseDay(value: string): number | null {
  const match = datePattern.exec(value)
  if (!match) return null
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])]
  const ms = Date.UTC(year, month - 1, day)
  const check = new Date(ms)
  if (check.getUTCFullYear() !== year || check.getUTCMonth() !== month - 1 || check.getUTCDate() !== day) return null
  return ms
}

/** Parser state over the lexemes. */
class Parser {
  private index = 0
  private terms = 0
  constructor(
    private readonly lexemes: Lexeme[],
    private readonly queryLength: number,
  ) {}

  private peek(): Lexeme | undefined {
    return this.lexemes[this.index]
  }

  private position(): number {
    return this.peek()?.position ?? this.queryLength
  }

  private countTerm(position: number): void {
    this.terms++
    if (this.terms > queryTermsMax) throw new QuerySyntaxError(position, `too many terms: at most ${queryTermsMax}`)
  }

  /** and := or+ ; stops at ')' or the end. Returns null when every term had no searchable words. */
  parseAnd(depth: number, start: number): QueryNode | null {
    const children: QueryNode[] = []
    let sawTerm = false
    for (;;) {
      const next = this.peek()
      if (next === undefined || next.type === 'close') break
      if (next.type === 'and') {
        this.index++
        const after = this.peek()
        if (!sawTerm || after === undefined || after.type === 'close' || after.type === 'or' || after.type === 'and') {
          throw new QuerySyntaxError(next.position, 'AND needs a term on each side')
        }
        continue
      }
      if (next.type === 'or') throw new QuerySyntaxError(next.position, 'OR needs a term on each side')
      sawTerm = true
      const child = this.parseOr(depth)
      if (child) children.push(child)
    }
    if (!sawTerm) return null
    if (children.length === 0) return null
    return children.length === 1 ? children[0]! : { kind: 'and', children, position: start }
  }

  /** or := unary ('OR' unary)* */
  private parseOr(depth: number): QueryNode | null {
    const start = this.position()
    const first = this.parseUnary(depth)
    const branches: Array<{ node: QueryNode | null; position: number }> = [{ node: first, position: start }]
    while (this.peek()?.type === 'or') {
      const orPosition = this.position()
      this.index++
      const next = this.peek()
      if (next === undefined || next.type === 'close' || next.type === 'or' || next.type === 'and') {
        throw new QuerySyntaxError(orPosition, 'OR needs a term on each side')
      }
      const position = this.position()
      branches.push({ node: this.parseUnary(depth), position })
    }
    if (branches.length === 1) return first
    for (const branch of branches) {
      if (branch.node === null) throw new QuerySyntaxError(branch.position, 'this side of OR has no searchable words')
    }
    return { kind: 'or', children: branches.map((branch) => branch.node!), position: start }
  }

  /** unary := ('-' | 'NOT') unary | primary */
  private parseUnary(depth: number): QueryNode | null {
    const next = this.peek()
    if (next === undefined) throw new QuerySyntaxError(this.queryLength, 'expected a term')
    if (next.type === 'minus' || next.type === 'not') {
      if (depth + 1 > queryNestingMax) throw new QuerySyntaxError(next.position, `nesting deeper than ${queryNestingMax}`)
      this.index++
      const after = this.peek()
      if (after === undefined || after.type === 'close' || after.type === 'or' || after.type === 'and') {
        throw new QuerySyntaxError(next.position, `${next.type === 'not' ? 'NOT' : "'-'"} must be followed by a term`)
      }
      const child = this.parseUnary(depth + 1)
      return child === null ? null : { kind: 'not', child, position: next.position }
    }
    return this.parsePrimary(depth)
  }

  private parsePrimary(depth: number): QueryNode | null {
    const lexeme = this.peek()!
    this.index++
    switch (lexeme.type) {
      case 'open': {
        if (depth + 1 > queryNestingMax) throw new QuerySyntaxError(lexeme.position, `nesting deeper than ${queryNestingMax}`)
        if (this.peek()?.type === 'close') throw new QuerySyntaxError(lexeme.position, 'empty parentheses')
        const inner = this.parseAnd(depth + 1, this.position())
        if (this.peek()?.type !== 'close') throw new QuerySyntaxError(lexeme.position, 'unclosed parenthesis: expected )')
        this.index++
        return inner
      }
      case 'close':
        throw new QuerySyntaxError(lexeme.position, 'unexpected ): no parenthesis to close')
      case 'word':
        return this.textMatch('any', lexeme.text, lexeme.position)
      case 'phrase':
        return this.textMatch('any', lexeme.text, lexeme.position)
      case 'field':
        return this.field(lexeme)
      default:
        throw new QuerySyntaxError(lexeme.position, `unexpected ${lexeme.type.toUpperCase()}`)
    }
  }

  private textMatch(field: TextField, text: string, position: number): QueryNode | null {
    const tokens = tokenize(text, phraseTokensMax + 1)
    if (tokens.length === 0) return null
    if (tokens.length > phraseTokensMax) throw new QuerySyntaxError(position, `phrase longer than ${phraseTokensMax} words`)
    this.countTerm(position)
    return { kind: 'match', field, tokens, position }
  }

  private field(lexeme: Extract<Lexeme, { type: 'field' }>): QueryNode {
    const { name, value, valuePosition, position } = lexeme
    const required = (node: QueryNode | null): QueryNode => {
      if (node === null) throw new QuerySyntaxError(valuePosition, `${name}: value has no searchable words`)
      return node
    }
    switch (name) {
      case 'from':
      case 'to':
        if (!lexeme.quoted && isAddressLike(value)) {
          this.countTerm(position)
          return { kind: 'address', field: name, token: addressQueryToken(value), position }
        }
        return required(this.textMatch(name, value, position))
      case 'subject':
      case 'attachment':
        return required(this.textMatch(name, value, position))
      case 'has':
        if (value.toLowerCase() !== 'attachment') throw new QuerySyntaxError(valuePosition, `unknown has: value '${value}' (expected has:attachment)`)
        this.countTerm(position)
        return { kind: 'has', what: 'attachment', position }
      default: {
        const ms = parseDay(value)
        if (ms === null) throw new QuerySyntaxError(valuePosition, `${name}: expects a date YYYY-MM-DD, got '${value}'`)
        this.countTerm(position)
        return { kind: 'date', bound: name === 'before' ? 'before' : 'after', ms, position }
      }
    }
  }

  /** Parses the whole input. */
  parseQuery(): QueryNode | null {
    const node = this.parseAnd(0, 0)
    const rest = this.peek()
    if (rest !== undefined) throw new QuerySyntaxError(rest.position, 'unexpected ): no parenthesis to close')
    return node
  }
}

/** True when the node selects documents by itself (see the module doc). */
export function isPositive(node: QueryNode): boolean {
  switch (node.kind) {
    case 'not':
      return false
    case 'and':
      return node.children.some(isPositive)
    case 'or':
      return node.children.every(isPositive)
    default:
      return true
  }
}

function checkPositive(node: QueryNode): void {
  if (node.kind === 'or') {
    for (const child of node.children) {
      if (!isPositive(child)) throw new QuerySyntaxError(child.position, 'each side of OR needs a term that is not negated')
      checkPositive(child)
    }
  } else if (node.kind === 'and') {
    if (!isPositive(node)) throw new QuerySyntaxError(node.position, 'a query needs at least one term that is not negated')
    for (const child of node.children) checkPositive(child)
  } else if (node.kind === 'not') {
    // The negated part is computed as a set and then removed, so it must be positive itself.
    if (!isPositive(node.child)) throw new QuerySyntaxError(node.position, 'a negated term must not itself be only negations')
    checkPositive(node.child)
  } else if (!isPositive(node)) {
    throw new QuerySyntaxError(node.position, 'a query needs at least one term that is not negated')
  }
}

/**
 * Parses a query into its syntax tree.
 *
 * @param query what the user typed
 * @returns the tree; `and`/`or` nodes have at least two children
 * @throws QuerySyntaxError with the position of the first problem: empty query, over
 *   `queryCharsMax` characters, `queryTermsMax` terms, `phraseTokensMax` words in a phrase
 *   or `queryNestingMax` levels; unterminated quote; unbalanced or empty parentheses; OR,
 *   AND or NOT without a term; a field without a value; an unknown `has:` value; a date
 *   that is not YYYY-MM-DD; no searchable word; a query (or a side of OR) with only
 *   negated terms
 */
export function parseQuery(query: string): QueryNode {
  if (query.length > queryCharsMax) throw new QuerySyntaxError(queryCharsMax, `query longer than ${queryCharsMax} characters`)
  if (query.trim().length === 0) throw new QuerySyntaxError(0, 'empty query')
  const parser = new Parser(lex(query), query.length)
  const node = parser.parseQuery()
  if (node === null) throw new QuerySyntaxError(0, 'the query has no searchable words')
  checkPositive(node)
  if (!isPositive(node)) throw new QuerySyntaxError(node.position, 'a query needs at least one term that is not negated')
  return node
}

/** Every positive token per field in the tree (for highlighting); negated terms are left out. */
export function positiveTokens(node: QueryNode, into: Set<string> = new Set()): Set<string> {
  switch (node.kind) {
    case 'and':
    case 'or':
      for (const child of node.children) positiveTokens(child, into)
      break
    case 'match':
      for (const token of node.tokens) into.add(token)
      break
    default:
      break
  }
  return into
}
