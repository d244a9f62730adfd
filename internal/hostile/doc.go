// Package hostile is the hostile-node and hostile-consumer suite: its tests
// build the idleclaw binary, run `idleclaw serve` as a child process on a
// loopback port, and play attackers against it over real sockets — nodes
// that register floods of capabilities, lie about their speed, answer with
// endless thinking or megabytes of text, call tools without end, send
// absurd metrics, take over ids and flood bad frames; consumers that send
// huge, deep or slow bodies, never read their streams or hold many
// connections — while honest nodes (the real `idleclaw contribute` against
// a fake Ollama, or an in-test node speaking the protocol) and honest
// consumers use the same router. Each test asserts the bound that stops its
// attack, from what the router answers, what it logs and what its process
// costs (VmRSS, VmHWM from /proc).
//
// Clients bind distinct loopback addresses (127.x.y.z) as their source, so
// that the router's per-IP limits see distinct clients where a test means
// them to. The package has no non-test code besides this comment.
//
// IDLECLAW_HOSTILE_SECONDS sets the length of the load scenario (default
// 20); IDLECLAW_HOSTILE_REPORT names a file the suite writes its
// observations to, one Markdown table row per attack.
package hostile
