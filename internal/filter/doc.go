// Package filter owns IdleClaw's content filtering (protocol.md section 5):
// the inbound filter that refuses consumer messages matching a pattern, and
// the outbound filter that rewrites what untrusted nodes send (answer text,
// thinking text, error strings) before consumers see it, replacing every
// match with [Replacement]. The outbound filter works on whole strings
// ([Outbound.Replace]) and on chunked streams ([Stream]), where it matches
// across chunk boundaries while holding back only the trailing characters
// that could still begin a match.
//
// All patterns are Go regular expressions (regexp/syntax, Perl flags),
// compiled case-insensitively. Patterns that can match the empty string are
// refused, since they would refuse every message or rewrite every position.
// Matching runs on a small Pike VM over the regexp/syntax program (engine.go)
// with the leftmost-first semantics of package regexp, which the tests and
// fuzz targets check against package regexp; it is what lets a stream tell
// which trailing characters could still grow into a match.
//
// The render-safety filter ([Render], render.go) runs after the outbound
// patterns: it neutralises what can run script or fetch when an answer is
// rendered as Markdown or HTML, with small local edits, and leaves Markdown
// code and ordinary text as they are. It reads tags as the HTML tokenizer
// does (render_tag.go) and looks at the text NFKC-folded as well
// (render_fold.go).
//
// Not here: stripping <tool_call> tags (the tools code owns that), and the
// choice of which messages to check (callers check consumer messages only,
// not the assistant's own earlier answers).
package filter
