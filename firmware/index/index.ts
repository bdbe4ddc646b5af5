/**
 * firmware/index public surface: the search index service, its query language and
 * tokenizer, and the errors they throw. Importing this file does nothing by itself.
 */
export {
  createIndex,
  defaultIndexOptions,
  indexDatabaseNames,
  indexLayoutVersion,
  type IndexOptions,
  type IndexStats,
  type SearchHit,
  type SearchIndex,
  type SearchOptions,
  type SearchResult,
  type Source,
  type VerifyReport,
} from './search-index.js'
export type { SearchCounters } from './query-executor.js'
export { indexInputFromMeta, type IndexInput } from './index-input.js'
export { parseQuery, queryCharsMax, queryNestingMax, queryTermsMax, phraseTokensMax, type QueryNode, type TextField } from './query.js'
export { tokenize, tokenCharsMax } from './tokenize.js'
export { IndexError, QuerySyntaxError, type IndexErrorCode } from './errors.js'
export { createArchiveIndexer, type ArchiveIndexer } from './archive-indexer.js'
export { createSearchRoute } from './search-route.js'
export { archiveIds, archiveInput, archiveInputs, createIndexMaintenance, type ArchiveForIndex, type ParserForIndex } from './maintenance.js'
