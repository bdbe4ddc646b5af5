/**
 * The web interface's only asset: one style sheet, shipped in the firmware (no CDN, no
 * build step, no font or image fetched). Pages carry no script at all.
 */
export const styleSheet = `
:root { color-scheme: light; --ink: #1d2330; --muted: #5b6475; --line: #d9dee7; --accent: #1f5fbf; --warn: #9a5b00; --bad: #a32020; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); background: var(--bg); }
header { display: flex; gap: 1.5em; align-items: center; padding: .6em 1.2em; background: #fff; border-bottom: 1px solid var(--line); }
header .brand { font-weight: 700; }
header nav a { margin-right: 1em; color: var(--accent); text-decoration: none; }
header .who { margin-left: auto; color: var(--muted); font-size: .9em; }
header form { display: inline; }
main { max-width: 72em; margin: 1.2em auto; padding: 0 1.2em; }
h1 { font-size: 1.3em; margin: 0 0 .8em; }
.narrow { max-width: 26em; }
.panel { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 1em 1.2em; margin-bottom: 1em; }
input[type=text], input[type=password], input[type=search] { font: inherit; padding: .45em .6em; border: 1px solid var(--line); border-radius: 4px; width: 100%; }
button { font: inherit; padding: .45em 1em; border: 1px solid var(--accent); background: var(--accent); color: #fff; border-radius: 4px; cursor: pointer; }
button.link { background: none; border: none; color: var(--accent); padding: 0; }
.search-form { display: flex; gap: .6em; }
.hits { list-style: none; padding: 0; margin: 0; }
.hits li { padding: .7em 0; border-bottom: 1px solid var(--line); }
.hits .meta { color: var(--muted); font-size: .88em; }
.hits .snippet { margin-top: .2em; }
.notice { border-left: 4px solid var(--warn); padding: .5em .8em; background: #fff8ec; margin-bottom: 1em; }
.error { border-left: 4px solid var(--bad); padding: .5em .8em; background: #fff1f1; margin-bottom: 1em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; width: 12em; }
iframe.html-body { width: 100%; height: 28em; border: 1px solid var(--line); background: #fff; }
.filters { margin-top: .6em; font-size: .9em; color: var(--muted); }
.filters input[type=text] { width: auto; }
.holds form { display: inline; }
.save-search { margin: .4em 0 1em; font-size: .9em; color: var(--muted); }
.save-search input[type=text] { width: auto; }
.saved ul { padding-left: 1.2em; }
.saved form { display: inline; }
table.audit code { font-size: .82em; word-break: break-all; }
.ok-box { border-left-color: #1e6b34; background: #e6f4ea; }
pre.body { white-space: pre-wrap; word-break: break-word; font: 14px/1.5 ui-monospace, monospace; margin: 0; }
.flags span, .state { display: inline-block; padding: 0 .5em; border-radius: 3px; background: #eef1f6; margin-right: .3em; font-size: .88em; }
.state.degraded { background: #fff1d6; color: var(--warn); }
.state.ok { background: #e6f4ea; color: #1e6b34; }
.syntax { color: var(--muted); font-size: .88em; margin-top: .4em; }
`
