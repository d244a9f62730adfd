#!/usr/bin/env python3
"""Split `perf record -g` samples of the relay processes into legs.

Usage: perf script -i FILE.data -F ip,sym > FILE.script, then
  legs.py serve ROUTER.script agents AGENTS.script proxy PROXY1.script proxy PROXY2.script

Each sample is put in the first class whose frames it contains (the
order below); syscall vs user is whether the sample is inside
internal/poll.(*FD).Read or .Write.
"""
import collections, sys

def load(fn):
    samples, cur = [], []
    for line in open(fn):
        line = line.strip()
        if not line:
            if cur:
                samples.append(cur)
                cur = []
            continue
        parts = line.split(None, 1)
        cur.append(parts[1] if len(parts) > 1 else parts[0])
    if cur:
        samples.append(cur)
    return samples

def has(s, pat):
    return any(pat in f for f in s)

def sc(s, kind):
    return 'syscall' if has(s, 'internal/poll.(*FD).' + kind) else 'user'

RULES = {
    'serve': [
        ('write to consumer', lambda s: has(s, 'server.(*streamOut).write'), 'Write'),
        ('read node frames', lambda s: has(s, 'hub.(*Node).run') and (has(s, 'internal/poll.(*FD).Read') or has(s, 'coder/websocket')), 'Read'),
        ('decode node frames', lambda s: has(s, 'wire.DecodeNodeFrame'), None),
        ('deliver, push, wake', lambda s: has(s, 'hub.(*Node).run'), None),
        ('shape, filter, encode, wait', lambda s: has(s, 'dispatch.(*Dispatcher).relay'), None),
        ('other websocket', lambda s: has(s, 'coder/websocket'), None),
    ],
    'agents': [
        ('write to router', lambda s: has(s, 'websocket.(*Conn).Write'), 'Write'),
        ('read Ollama', lambda s: has(s, 'ollama.readLine') or has(s, 'net/http.(*body).Read') or has(s, 'persistConn).readLoop'), 'Read'),
        ('decode, whitelist, encode, coalesce', lambda s: has(s, 'agent.(*session).relay'), None),
        ('read router frames', lambda s: has(s, 'session).readLoop'), None),
    ],
    'proxy': [
        ('write to consumer', lambda s: has(s, 'ResponseController).Flush') or has(s, 'net/http.(*response).Write'), 'Write'),
        ('read upstream', lambda s: has(s, 'net/http.(*body).Read') or has(s, 'persistConn).readLoop'), 'Read'),
    ],
}
COMMON = [
    ('scheduler (g0)', lambda s: has(s, 'runtime.mcall') or has(s, 'runtime.morestack'), None),
    ('sysmon', lambda s: has(s, 'runtime.sysmon'), None),
    ('gc', lambda s: has(s, 'gcBgMarkWorker'), None),
    ('requests: accept, parse, set up, end', lambda s: has(s, 'net/http.(*conn).serve') or has(s, 'agent.(*session)'), None),
]

args = sys.argv[1:]
for kind, fn in zip(args[::2], args[1::2]):
    ss = load(fn)
    rules = RULES[kind] + COMMON
    c = collections.Counter()
    for s in ss:
        for name, match, split in rules:
            if match(s):
                c[(name, sc(s, split) if split else '')] += 1
                break
        else:
            c[('other', '')] += 1
    print('== %s %s: %d samples' % (kind, fn, len(ss)))
    for name, _, split in rules + [('other', None, None)]:
        parts = ['syscall', 'user'] if split else ['']
        for p in parts:
            print('  %6d  %s%s' % (c[(name, p)], name, ' (' + p + ')' if p else ''))
