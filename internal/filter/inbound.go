package filter

import "sync"

// DefaultInboundPatterns returns the default inbound patterns: the v1 list
// from protocol.md section 5, anchored so that ordinary text passes.
//
// Word-boundary decisions (\b is the RE2 ASCII word boundary: letters,
// digits and '_' are word characters):
//
//   - Every pattern that begins with a letter starts with \b, so a keyword
//     hidden inside a longer word never matches: "medieval (", "retrieval(",
//     "my_eval(" pass. A '.' is not a word character, so qualified calls such
//     as "obj.eval(" or "os.exec (" are still refused.
//   - eval/exec: v1 refuses `eval\s*\(`. We keep the optional whitespace
//     before the parenthesis (v1 behaviour, required for "os.exec ("), but an
//     empty argument list "()" passes: "model.eval()" (PyTorch) is ordinary
//     code and cannot run anything. An unterminated "eval(" at the very end
//     of a message is still refused.
//   - Phrase patterns end with \b, so "You are now DANGEROUS" passes while
//     "You are now DAN" is refused; "jailbr" stays a prefix (jailbroken,
//     jailbreak...).
//   - javascript: is refused only when something other than whitespace
//     follows the colon, so a URL like "javascript:alert(1)" is refused but
//     prose such as "JavaScript: The Good Parts" passes. (The inbound filter
//     protects the model prompt; the outbound filter is what keeps such URLs
//     away from consumers.)
//   - <script accepts '/' as well as whitespace or '>' after the tag name,
//     the usual "<script/src=..." variant.
//
// Known remaining false positives, inherent to the v1 list: "I can't do
// anything now", "the eval (MMLU) results", and code that calls a method
// named exec/eval with arguments (e.g. RegExp.exec(s)).
func DefaultInboundPatterns() []string {
	return []string{
		`<script[\s/>]`,
		`\bjavascript:\S`,
		`\bdata:text/html`,
		`\bignore\s+(?:all\s+)?(?:previous|prior|above)\s+(?:instructions|prompts)\b`,
		`\byou\s+are\s+now\s+(?:dan\b|evil\b|unrestricted\b|jailbr)`,
		`\bdo\s+anything\s+now\b`,
		`\bdisregard\s+(?:your|all|any)\s+(?:rules|guidelines|instructions)\b`,
		`\beval\s*\((?:[^)]|$)`,
		`\bexec\s*\((?:[^)]|$)`,
	}
}

// Inbound refuses consumer messages that match a pattern. Safe for
// concurrent use. A nil *Inbound refuses nothing.
type Inbound struct {
	p    *program // nil: no patterns
	pool sync.Pool
}

// NewInbound compiles patterns (Go regexps, case-insensitive). The error
// names the first bad pattern. Zero patterns give a filter that refuses
// nothing.
func NewInbound(patterns []string) (*Inbound, error) {
	f := &Inbound{}
	if len(patterns) == 0 {
		return f, nil
	}
	p, err := compileProgram("inbound", patterns)
	if err != nil {
		return nil, err
	}
	f.p = p
	f.pool.New = func() any { return newMachine(p) }
	return f, nil
}

// Match reports whether text matches any pattern (true = refuse).
func (f *Inbound) Match(text string) bool {
	if f == nil || f.p == nil || !f.p.hasCandidate(text) {
		return false
	}
	m := f.pool.Get().(*machine)
	_, _, found, _ := m.search(text, 0, len(text), -1, true, true)
	f.pool.Put(m)
	return found
}
