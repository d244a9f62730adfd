package filter

import (
	"errors"
	"fmt"
	"regexp/syntax"
	"unicode"
	"unicode/utf8"
)

// This file holds the matching engine shared by Inbound and Outbound: a
// Pike VM over a regexp/syntax program with exactly the leftmost-first
// semantics of package regexp (the tests and fuzz targets check it against
// regexp), extended so that a search can stop at the end of the input seen
// so far and report where a match could still begin.

// program is the combined, compiled pattern list (?i:p1|p2|...).
type program struct {
	prog *syntax.Prog
	// ascii[pc] is the set of ASCII runes that rune instruction pc accepts.
	ascii [][2]uint64
	// first lists the ASCII bytes that can start a match; firstNonASCII
	// says whether some non-ASCII rune (or utf8.RuneError for an invalid
	// byte) can.
	first         [utf8.RuneSelf]bool
	firstNonASCII bool
	// start[cond] is the closure of the start instruction under the
	// context flags cond (in priority order), and startASCII[cond] the
	// ASCII runes its threads accept.
	start      [64][]entry
	startASCII [64][2]uint64
}

// compileProgram compiles patterns as one alternation. kind ("inbound" or
// "outbound") goes into error messages, which name the bad pattern.
func compileProgram(kind string, patterns []string) (*program, error) {
	subs := make([]*syntax.Regexp, 0, len(patterns))
	for _, p := range patterns {
		re, err := syntax.Parse(p, syntax.Perl|syntax.FoldCase) // = regexp.Compile("(?i)" + p)
		if err == nil {
			var prog *syntax.Prog
			if prog, err = syntax.Compile(re.Simplify()); err == nil && canMatchEmpty(prog) {
				err = errors.New("pattern can match the empty string")
			}
		}
		if err != nil {
			return nil, fmt.Errorf("filter: %s pattern %q: %w", kind, p, err)
		}
		subs = append(subs, re)
	}
	all := subs[0]
	if len(subs) > 1 {
		all = &syntax.Regexp{Op: syntax.OpAlternate, Sub: subs}
	}
	prog, err := syntax.Compile(all.Simplify())
	if err != nil {
		return nil, fmt.Errorf("filter: %s patterns: %w", kind, err)
	}
	p := &program{prog: prog, ascii: make([][2]uint64, len(prog.Inst))}
	for pc := range prog.Inst {
		p.ascii[pc] = asciiMask(&prog.Inst[pc])
	}
	p.first, p.firstNonASCII = firstSet(prog)
	m := newMachine(p)
	for cond := range p.start {
		q := &m.q0
		q.dense = q.dense[:0]
		m.add(q, uint32(prog.Start), 0, syntax.EmptyOp(cond))
		p.start[cond] = append([]entry(nil), q.dense...)
		for _, e := range q.dense {
			if e.thread {
				p.startASCII[cond][0] |= p.ascii[e.pc][0]
				p.startASCII[cond][1] |= p.ascii[e.pc][1]
			}
		}
	}
	return p, nil
}

// canMatchEmpty reports whether prog can reach a match without consuming a
// rune, assuming every empty-width assertion (^, $, \b, ...) may hold.
func canMatchEmpty(prog *syntax.Prog) bool {
	seen := make([]bool, len(prog.Inst))
	stack := []uint32{uint32(prog.Start)}
	for len(stack) > 0 {
		pc := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[pc] {
			continue
		}
		seen[pc] = true
		inst := &prog.Inst[pc]
		switch inst.Op {
		case syntax.InstMatch:
			return true
		case syntax.InstAlt, syntax.InstAltMatch:
			stack = append(stack, inst.Out, inst.Arg)
		case syntax.InstEmptyWidth, syntax.InstNop, syntax.InstCapture:
			stack = append(stack, inst.Out)
		}
	}
	return false
}

// firstSet computes which ASCII bytes, and whether any non-ASCII rune, can
// be the first rune of a match, assuming every empty-width assertion may
// hold. Every match consumes at least one rune (empty matches are refused).
func firstSet(prog *syntax.Prog) (ascii [utf8.RuneSelf]bool, nonASCII bool) {
	seen := make([]bool, len(prog.Inst))
	stack := []uint32{uint32(prog.Start)}
	for len(stack) > 0 {
		pc := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[pc] {
			continue
		}
		seen[pc] = true
		inst := &prog.Inst[pc]
		switch inst.Op {
		case syntax.InstAlt, syntax.InstAltMatch:
			stack = append(stack, inst.Out, inst.Arg)
		case syntax.InstEmptyWidth, syntax.InstNop, syntax.InstCapture:
			stack = append(stack, inst.Out)
		case syntax.InstMatch: // an empty match; refused at compile time
			for c := range ascii {
				ascii[c] = true
			}
			nonASCII = true
		case syntax.InstRune, syntax.InstRune1, syntax.InstRuneAny, syntax.InstRuneAnyNotNL:
			m := asciiMask(inst)
			for c := range ascii {
				if m[c>>6]&(1<<(c&63)) != 0 {
					ascii[c] = true
				}
			}
			if instMatchesNonASCII(inst) {
				nonASCII = true
			}
		}
	}
	return ascii, nonASCII
}

// asciiMask returns the set of ASCII runes that inst accepts, computed as
// syntax.Inst.MatchRune would.
func asciiMask(inst *syntax.Inst) (m [2]uint64) {
	set := func(lo, hi rune) {
		for c := max(lo, 0); c <= min(hi, utf8.RuneSelf-1); c++ {
			m[c>>6] |= 1 << (c & 63)
		}
	}
	switch inst.Op {
	case syntax.InstRune:
		if len(inst.Rune) == 1 {
			r0 := inst.Rune[0]
			set(r0, r0)
			if syntax.Flags(inst.Arg)&syntax.FoldCase != 0 {
				for f := unicode.SimpleFold(r0); f != r0; f = unicode.SimpleFold(f) {
					set(f, f)
				}
			}
			break
		}
		for i := 0; i+1 < len(inst.Rune); i += 2 {
			set(inst.Rune[i], inst.Rune[i+1])
		}
	case syntax.InstRune1:
		set(inst.Rune[0], inst.Rune[0])
	case syntax.InstRuneAny:
		set(0, utf8.RuneSelf-1)
	case syntax.InstRuneAnyNotNL:
		set(0, utf8.RuneSelf-1)
		m[0] &^= 1 << '\n'
	}
	return m
}

func instMatches(inst *syntax.Inst, r rune) bool {
	switch inst.Op {
	case syntax.InstRune:
		return inst.MatchRune(r)
	case syntax.InstRune1:
		return r == inst.Rune[0]
	case syntax.InstRuneAny:
		return true
	case syntax.InstRuneAnyNotNL:
		return r != '\n'
	}
	return false
}

func instMatchesNonASCII(inst *syntax.Inst) bool {
	switch inst.Op {
	case syntax.InstRuneAny, syntax.InstRuneAnyNotNL:
		return true
	case syntax.InstRune1:
		return inst.Rune[0] >= utf8.RuneSelf
	case syntax.InstRune:
		if len(inst.Rune) == 1 {
			r0 := inst.Rune[0]
			if r0 >= utf8.RuneSelf {
				return true
			}
			if syntax.Flags(inst.Arg)&syntax.FoldCase != 0 {
				// e.g. (?i)k also matches U+212A KELVIN SIGN.
				for f := unicode.SimpleFold(r0); f != r0; f = unicode.SimpleFold(f) {
					if f >= utf8.RuneSelf {
						return true
					}
				}
			}
			return false
		}
		for i := 1; i < len(inst.Rune); i += 2 {
			if inst.Rune[i] >= utf8.RuneSelf {
				return true
			}
		}
	}
	return false
}

// hasCandidate reports whether some byte of s could start a match.
func (p *program) hasCandidate(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < utf8.RuneSelf {
			if p.first[c] {
				return true
			}
		} else if p.firstNonASCII {
			return true
		}
	}
	return false
}

// skip returns the first position in [i, end) where a match could start,
// or end. i must be a rune boundary and prev the rune before it; the result
// is a boundary too (ASCII bytes always are, and a non-ASCII byte is only
// returned when it is reached from a boundary without skipping anything).
// An ASCII byte only counts if a thread started there, under the actual
// context (\b, ^...), accepts it: so the 'd' in "and" is no candidate for
// `\bdata:`.
func (p *program) skip(buf string, i, end int, prev rune) int {
	for j := i; j < end; j++ {
		c := buf[j]
		if c >= utf8.RuneSelf {
			if p.firstNonASCII {
				return j
			}
			continue
		}
		if !p.first[c] {
			continue
		}
		if j > i {
			prev = lastRune(buf[:j])
		}
		cond := syntax.EmptyOpContext(prev, rune(c))
		if p.startASCII[cond][c>>6]&(1<<(c&63)) != 0 {
			return j
		}
	}
	return end
}

// addStart adds a thread started at i under cond to q: the same as
// m.add(q, Start, i, cond), because every entry already in q was added
// under the same cond, so its closure is in q as well.
func (m *machine) addStart(q *queue, i int, cond syntax.EmptyOp) {
	for _, e := range m.p.start[cond] {
		if !q.contains(e.pc) {
			q.insert(e.pc, e.thread, i)
		}
	}
}

// entry is a queue slot: a program counter visited at the current position
// and, for rune-consuming and match instructions, a live thread whose
// match attempt started at input position start.
type entry struct {
	pc     uint32
	thread bool
	start  int
}

// queue is a sparse set of program counters that keeps insertion (that is,
// priority) order, as in package regexp's NFA.
type queue struct {
	sparse []uint32
	dense  []entry
}

func (q *queue) contains(pc uint32) bool {
	j := q.sparse[pc]
	return j < uint32(len(q.dense)) && q.dense[j].pc == pc
}

func (q *queue) insert(pc uint32, thread bool, start int) {
	q.sparse[pc] = uint32(len(q.dense))
	q.dense = append(q.dense, entry{pc: pc, thread: thread, start: start})
}

// machine is the per-user state of a search. Not safe for concurrent use.
type machine struct {
	p      *program
	q0, q1 queue
	stack  []uint32

	// unknownUsed is set when add consults an assertion that depends on
	// the next rune.
	unknownUsed bool
}

func newMachine(p *program) *machine {
	n := len(p.prog.Inst)
	return &machine{
		p:  p,
		q0: queue{sparse: make([]uint32, n), dense: make([]entry, 0, n)},
		q1: queue{sparse: make([]uint32, n), dense: make([]entry, 0, n)},
	}
}

// add follows empty transitions from pc under cond and records the reached
// instructions in q, in priority order (like regexp's machine.add).
func (m *machine) add(q *queue, pc uint32, start int, cond syntax.EmptyOp) {
	insts := m.p.prog.Inst
	stk := append(m.stack[:0], pc)
	for len(stk) > 0 {
		pc := stk[len(stk)-1]
		stk = stk[:len(stk)-1]
		for pc != 0 && !q.contains(pc) {
			inst := &insts[pc]
			switch inst.Op {
			case syntax.InstAlt, syntax.InstAltMatch:
				q.insert(pc, false, start)
				stk = append(stk, inst.Arg)
				pc = inst.Out
			case syntax.InstEmptyWidth:
				q.insert(pc, false, start)
				op := syntax.EmptyOp(inst.Arg)
				if op&unknownNext != 0 {
					m.unknownUsed = true
				}
				if op&^cond == 0 {
					pc = inst.Out
				} else {
					pc = 0
				}
			case syntax.InstNop, syntax.InstCapture:
				q.insert(pc, false, start)
				pc = inst.Out
			case syntax.InstFail:
				q.insert(pc, false, start)
				pc = 0
			default: // InstMatch and the rune instructions
				q.insert(pc, true, start)
				pc = 0
			}
		}
	}
	m.stack = stk
}

// unknownNext is added to the context flags at a position whose next rune
// has not arrived: any assertion that depends on it may hold.
const unknownNext = syntax.EmptyEndLine | syntax.EmptyEndText |
	syntax.EmptyWordBoundary | syntax.EmptyNoWordBoundary

// search runs one leftmost-first search of buf from pos, a rune boundary
// whose preceding input rune is prev (-1 at the start of the input). Only
// buf[:end] is read. If final, end is the end of the input; otherwise more
// input may follow, and buf[:end] holds only complete runes.
//
// It returns found with the match [a, b) once the match is decided,
// whatever input follows. Otherwise no match starts before hold, and hold
// is the earliest position where one still could (end if none).
//
// With first set, the search returns the first match it records, which is
// enough to tell whether there is one but may not be the leftmost-first
// match.
func (m *machine) search(buf string, pos, end int, prev rune, final, first bool) (a, b int, found bool, hold int) {
	p := m.p
	insts := p.prog.Inst
	runq, nextq := &m.q0, &m.q1
	runq.dense = runq.dense[:0]
	nextq.dense = nextq.dense[:0]
	matched := false
	i := pos
	for {
		if len(runq.dense) == 0 {
			if matched {
				return a, b, true, 0
			}
			j := p.skip(buf, i, end, prev)
			if j >= end {
				return 0, 0, false, end
			}
			if j > i {
				i, prev = j, lastRune(buf[:j])
			}
		}
		if i >= end {
			break
		}
		r, w := decode(buf[i:end])
		next := i + w
		var cond syntax.EmptyOp
		spec := false
		switch {
		case next < end:
			r1, _ := decode(buf[next:end])
			cond = syntax.EmptyOpContext(r, r1)
		case final:
			cond = syntax.EmptyOpContext(r, -1)
		default:
			spec = true
			cond = syntax.EmptyOpContext(r, -1) | unknownNext
		}
		if !matched {
			m.addStart(runq, i, syntax.EmptyOpContext(prev, r))
		}
		m.unknownUsed = false
		for j := 0; j < len(runq.dense); j++ {
			d := &runq.dense[j]
			if !d.thread {
				continue
			}
			inst := &insts[d.pc]
			if inst.Op == syntax.InstMatch {
				// Leftmost-first: this match beats every lower-priority
				// thread, so they are cut.
				matched, a, b = true, d.start, i
				if first {
					return a, b, true, 0
				}
				break
			}
			var ok bool
			if uint32(r) < utf8.RuneSelf {
				ok = p.ascii[d.pc][r>>6]&(1<<(r&63)) != 0
			} else {
				ok = instMatches(inst, r)
			}
			if ok {
				m.add(nextq, inst.Out, d.start, cond)
			}
		}
		runq.dense = runq.dense[:0]
		runq, nextq = nextq, runq
		i, prev = next, r
		if spec {
			// runq is a superset of the threads alive at end, whatever
			// the next rune turns out to be.
			if len(runq.dense) == 0 {
				if matched {
					return a, b, true, 0
				}
				return 0, 0, false, end
			}
			if !m.unknownUsed {
				// runq is exact. If its highest-priority thread is a
				// match, the next step records it and cuts every other
				// thread, whatever the next rune is.
				for _, d := range runq.dense {
					if d.thread {
						if insts[d.pc].Op == syntax.InstMatch {
							return d.start, end, true, 0
						}
						break
					}
				}
			}
			hold = end
			if matched {
				hold = a
			}
			for _, d := range runq.dense {
				if d.thread && d.start < hold {
					hold = d.start
				}
			}
			return 0, 0, false, hold
		}
	}
	// End of input with threads still alive: only a match instruction can
	// still succeed, and the first one in priority order wins.
	for _, d := range runq.dense {
		if d.thread && insts[d.pc].Op == syntax.InstMatch {
			return d.start, end, true, 0
		}
	}
	if matched {
		return a, b, true, 0
	}
	return 0, 0, false, end
}

// decode decodes the rune at the start of s (non-empty) as regexp does.
func decode(s string) (rune, int) {
	if c := s[0]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s)
}

// lastRune returns the rune that ends s (non-empty), as regexp's context
// does.
func lastRune(s string) rune {
	if c := s[len(s)-1]; c < utf8.RuneSelf {
		return rune(c)
	}
	r, _ := utf8.DecodeLastRuneInString(s)
	return r
}

// decodableEnd returns the length of s without a trailing incomplete UTF-8
// sequence, which more input could still complete.
func decodableEnd(s string) int {
	for i := len(s) - 1; i >= 0 && i >= len(s)-utf8.UTFMax; i-- {
		if !utf8.RuneStart(s[i]) {
			continue
		}
		if utf8.FullRuneInString(s[i:]) {
			return len(s)
		}
		return i
	}
	return len(s)
}

// nextBoundary returns the first rune boundary at or after target, decoding
// from i (a boundary).
func nextBoundary(s string, i, target int) int {
	for i < target {
		_, w := decode(s[i:])
		i += w
	}
	return i
}
