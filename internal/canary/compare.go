package canary

import (
	"strings"
	"unicode"
)

// The comparison of answers. At temperature 0 with a fixed seed, two nodes
// that run the same model (the same digest) give the same answer up to the
// point where numerics differ: another thread count, batch size, KV-cache
// type or CPU can make a token's logits tie-break differently, and from
// there the answers part. So answers are compared on their beginning, not
// whole: two answers agree when their first words are the same for at
// least agreeWords words, or for all of the shorter one when it is shorter
// than that. A node that serves another model, or makes text up, parts at
// once.

// agreeWords is how many leading words two answers must share.
const agreeWords = 8

// words splits an answer into words, folding case and dropping
// punctuation at their ends, so that spacing or a trailing stop does not
// decide.
func words(s string) []string {
	f := strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return unicode.IsSpace(r) })
	out := f[:0]
	for _, w := range f {
		w = strings.TrimFunc(w, func(r rune) bool { return unicode.IsPunct(r) })
		if w != "" {
			out = append(out, w)
		}
	}
	return out
}

// agree reports whether two answers agree (see above). Two empty answers
// agree; an empty and a non-empty one do not.
func agree(a, b string) bool {
	wa, wb := words(a), words(b)
	n := min(len(wa), len(wb), agreeWords)
	if n == 0 {
		return len(wa) == len(wb)
	}
	for i := 0; i < n; i++ {
		if wa[i] != wb[i] {
			return false
		}
	}
	// The shorter one ended before agreeWords: the longer must not be
	// much longer (a node that answers one word and stops does not agree
	// with a full answer that happens to begin with it).
	return n == agreeWords || max(len(wa), len(wb)) <= 2*n
}

// verdicts judges one canary round: the answers of nodes that registered
// the model with the same digest, to the same prompt. If trusted nodes
// answered, a node agrees when its answer agrees with a trusted one's.
// Otherwise the answers are grouped (a node joins a group when it agrees
// with any member), and when one group is strictly larger than every other
// and has at least two members, its nodes agree and the others do not;
// without such a group there is no verdict (two nodes that disagree cannot
// say which is wrong). Trusted nodes get no verdict.
func verdicts(answers map[string]string, trusted map[string]bool) map[string]bool {
	out := map[string]bool{}
	var refs []string
	for id, a := range answers {
		if trusted[id] {
			refs = append(refs, a)
		}
	}
	if len(refs) > 0 {
		for id, a := range answers {
			if trusted[id] {
				continue
			}
			ok := false
			for _, r := range refs {
				if agree(a, r) {
					ok = true
					break
				}
			}
			out[id] = ok
		}
		return out
	}
	ids := make([]string, 0, len(answers))
	for id := range answers {
		ids = append(ids, id)
	}
	// Union-find over "agrees with".
	parent := make(map[string]string, len(ids))
	find := func(x string) string {
		for parent[x] != x {
			parent[x] = parent[parent[x]]
			x = parent[x]
		}
		return x
	}
	for _, id := range ids {
		parent[id] = id
	}
	for i := range ids {
		for j := i + 1; j < len(ids); j++ {
			if agree(answers[ids[i]], answers[ids[j]]) {
				parent[find(ids[i])] = find(ids[j])
			}
		}
	}
	size := map[string]int{}
	for _, id := range ids {
		size[find(id)]++
	}
	best, second := "", 0
	for root, n := range size {
		switch {
		case best == "" || n > size[best]:
			if best != "" {
				second = max(second, size[best])
			}
			best = root
		default:
			second = max(second, n)
		}
	}
	if best == "" || size[best] < 2 || size[best] == second {
		return out
	}
	for _, id := range ids {
		out[id] = find(id) == best
	}
	return out
}
