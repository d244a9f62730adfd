package hub

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// Breaker states.
const (
	breakerClosed   = iota // requests flow
	breakerOpen            // out of rotation until the cool-down ends
	breakerHalfOpen        // one trial request in flight
)

// BreakerConfig tunes the per-node circuit breaker.
type BreakerConfig struct {
	Threshold int           // consecutive failures that open it (default 3; negative: never)
	Cooldown  time.Duration // time out of rotation before a trial (default 30s)
}

// record is what the router knows of a node from its own observation: the
// circuit breaker, the reputation and the measured speed, and when each of
// its models last served. It outlives connections. A keyless node's
// record is keyed by its address and announced id, and a record made for
// a new id inherits the breaker and reputation of the node that last left
// the same address (Hub.recordLocked), so that reconnecting under a fresh
// id does not wipe a bad history. Not safe for concurrent use: the hub
// guards it with its mutex.
type record struct {
	key string // address and announced id
	ip  string

	state    int
	failures int       // consecutive
	openedAt time.Time // when it last opened
	trial    bool      // the half-open trial is in flight

	// Reputation: successes and failures over the node's life, decayed.
	ok, bad float64

	// Measured on the router's clock from the chunks it relayed.
	tps      float64 // tokens per second, exponentially weighted; 0 unknown
	lastPick time.Time
	seen     map[string]served // by normalized model, at most wire.MaxModelsPerNode
	updated  time.Time
	live     int // connections that hold this record now
	// known is updated as it was when the first of the connections
	// that hold the record now registered: what other routers saw of
	// the node later is history this router had not heard of then.
	known time.Time

	// canary evidence by normalized model, at most maxSeenModels.
	canary map[string]*evidence
	dirty  bool // changed since the store last saved it
}

// evidence is what canaries told of one node's answers for one model:
// the last canaryWindow verdicts (agreed with the reference answers or
// not), oldest first, and the state they led to.
type evidence struct {
	Verdicts    []bool    `json:"verdicts"`
	Verified    bool      `json:"verified"`
	Quarantined bool      `json:"quarantined"`
	Last        time.Time `json:"last"`
}

// The evidence rules. A node is verified for a model once at least
// verifyAgree of its last canaryWindow canaries agreed and at most
// verifyDisagree disagreed; it is quarantined once quarantineDisagree of
// them disagreed and they are at least quarantineShare of the verdicts.
// A quarantined node leaves quarantine only when it qualifies as
// verified again. One odd answer, which temperature 0 across different
// hardware allows, moves nothing.
const (
	canaryWindow       = 20
	verifyAgree        = 3
	verifyDisagree     = 1
	quarantineDisagree = 4
	quarantineShare    = 0.6
)

// add records one verdict and returns whether the state changed.
func (e *evidence) add(agree bool, now time.Time) (changed bool) {
	e.Verdicts = append(e.Verdicts, agree)
	if len(e.Verdicts) > canaryWindow {
		e.Verdicts = e.Verdicts[len(e.Verdicts)-canaryWindow:]
	}
	e.Last = now
	a, d := 0, 0
	for _, v := range e.Verdicts {
		if v {
			a++
		} else {
			d++
		}
	}
	verified := a >= verifyAgree && d <= verifyDisagree
	quarantined := e.Quarantined
	switch {
	case d >= quarantineDisagree && float64(d) >= quarantineShare*float64(a+d):
		quarantined = true
	case verified:
		quarantined = false
	}
	if quarantined {
		verified = false
	}
	changed = verified != e.Verified || quarantined != e.Quarantined
	e.Verified, e.Quarantined = verified, quarantined
	return changed
}

// quarantined reports whether canaries took the node out of rotation for
// model.
func (r *record) quarantined(model string) bool {
	e := r.canary[model]
	return e != nil && e.Quarantined
}

// verified reports whether canaries bore out the node's answers for model.
func (r *record) verified(model string) bool {
	e := r.canary[model]
	return e != nil && e.Verified
}

// judge adds a canary verdict for model; it reports whether the node's
// state for the model changed.
func (r *record) judge(model string, agree bool, now time.Time) bool {
	if r.canary == nil {
		r.canary = map[string]*evidence{}
	}
	e := r.canary[model]
	if e == nil {
		if len(r.canary) >= maxSeenModels {
			var oldest string
			for k, v := range r.canary {
				if oldest == "" || v.Last.Before(r.canary[oldest].Last) {
					oldest = k
				}
			}
			delete(r.canary, oldest)
		}
		e = &evidence{}
		r.canary[model] = e
	}
	r.dirty = true
	return e.add(agree, now)
}

// recordData is a record as the store keeps it: what must survive a
// restart (the breaker, the reputation, the measured speed, the canary
// evidence), never anything of consumers.
type recordData struct {
	Key      string               `json:"key"`
	IP       string               `json:"ip,omitempty"`
	State    int                  `json:"state"`
	Failures int                  `json:"failures"`
	OpenedAt time.Time            `json:"opened_at,omitzero"`
	OK       float64              `json:"ok"`
	Bad      float64              `json:"bad"`
	TPS      float64              `json:"tps,omitempty"`
	Updated  time.Time            `json:"updated"`
	Canary   map[string]*evidence `json:"canary,omitempty"`
}

func (r *record) data() recordData {
	state := r.state
	if state == breakerHalfOpen {
		state = breakerOpen // a trial in flight does not survive a restart
	}
	d := recordData{Key: r.key, IP: r.ip, State: state, Failures: r.failures, OpenedAt: r.openedAt,
		OK: r.ok, Bad: r.bad, TPS: r.tps, Updated: r.updated}
	if len(r.canary) > 0 {
		d.Canary = make(map[string]*evidence, len(r.canary))
		for k, v := range r.canary {
			c := *v
			c.Verdicts = append([]bool(nil), v.Verdicts...)
			d.Canary[k] = &c
		}
	}
	return d
}

// The bounds of a record as it is encoded (the store's file, the
// network's bucket): what the router itself can write, so that anything
// larger is damaged or not a record at all.
const (
	maxRecordIP  = 64                                           // an IPv6 address with a zone, with room
	maxRecordKey = len("a:") + maxRecordIP + 1 + wire.MaxNodeID // "a:" address NUL id; "k:" id is shorter
	maxModelKey  = wire.MaxModelName + len(":latest")           // a normalized model name

	// Worst-case JSON: every string byte escaped as \u00XX (6 bytes),
	// numbers at their longest (24 bytes: -1.2345678901234567e-308, or
	// an int64), times in RFC 3339 with nanoseconds and an offset, quoted.
	jsonNumber = 24
	jsonTime   = len(`"2006-01-02T15:04:05.999999999-07:00"`)
	jsonCanary = 6*maxModelKey + 2 + len(`:{"verdicts":[],"verified":false,"quarantined":false,"last":},`) +
		canaryWindow*len("false,") + jsonTime

	// MaxRecordBytes bounds one encoded record; a longer one is refused
	// wherever records are decoded.
	MaxRecordBytes = len(`{"key":,"ip":,"state":,"failures":,"opened_at":,"ok":,"bad":,"tps":,"updated":,"canary":{}}`) +
		6*maxRecordKey + 2 + 6*maxRecordIP + 2 + 5*jsonNumber + 2*jsonTime + maxSeenModels*jsonCanary

	// maxDecayed bounds ok and bad: a sum decayed by 0.98 a step never
	// passes 1/(1-0.98) = 50.
	maxDecayed = 50.001
	maxTPS     = 1e7 // tokens per second no node reaches
)

// decodeRecord decodes one stored record kept under key: the store's own,
// at start, or another router's, from the network. What is damaged, too
// large, filed under another key or out of bounds is refused (false);
// times later than now are taken as now, so that no record stays newest
// forever.
func decodeRecord(key string, b []byte, now time.Time) (*record, bool) {
	if len(b) > MaxRecordBytes || len(key) > maxRecordKey {
		return nil, false
	}
	var d recordData
	if json.Unmarshal(b, &d) != nil || d.Key != key || len(d.IP) > maxRecordIP {
		return nil, false
	}
	switch {
	case strings.HasPrefix(key, "k:"):
		if len(key) == 2 || len(key) > 2+wire.MaxNodeID {
			return nil, false
		}
	case strings.HasPrefix(key, "a:"):
		// An address's record names the address it is kept for.
		id, ok := strings.CutPrefix(key, "a:"+d.IP+"\x00")
		if !ok || id == "" || len(id) > wire.MaxNodeID {
			return nil, false
		}
	default:
		return nil, false
	}
	if d.Failures < 0 || !bounded(d.OK, maxDecayed) || !bounded(d.Bad, maxDecayed) || !bounded(d.TPS, maxTPS) {
		return nil, false
	}
	for k, e := range d.Canary {
		if len(k) > maxModelKey {
			delete(d.Canary, k)
		} else if e != nil && e.Last.After(now) {
			e.Last = now
		}
	}
	if d.Updated.After(now) {
		d.Updated = now
	}
	if d.OpenedAt.After(now) {
		d.OpenedAt = now
	}
	return recordFrom(d), true
}

// bounded reports whether v is a number in [0, limit].
func bounded(v, limit float64) bool { return v >= 0 && v <= limit }

func recordFrom(d recordData) *record {
	r := &record{key: d.Key, ip: d.IP, state: d.State, failures: d.Failures, openedAt: d.OpenedAt,
		ok: d.OK, bad: d.Bad, tps: d.TPS, updated: d.Updated, canary: d.Canary}
	if r.state != breakerOpen {
		r.state = breakerClosed
	}
	for k, e := range r.canary {
		if e == nil || len(e.Verdicts) > canaryWindow || len(r.canary) > maxSeenModels {
			delete(r.canary, k)
		}
	}
	return r
}

// served is the router's last observation of one model on one node.
type served struct {
	at         time.Time     // when its last answer started
	firstToken time.Duration // how long the node took to its first chunk
	claimed    bool          // the node claimed the model loaded when it was sent the request
}

// inherit copies what must survive a change of announced id.
func (r *record) inherit(from *record) {
	r.state, r.failures, r.openedAt = from.state, from.failures, from.openedAt
	if r.state == breakerHalfOpen {
		r.state = breakerOpen // the trial belongs to the old record
	}
	r.ok, r.bad = from.ok, from.bad
}

// allow reports whether a new request may go to the node now, and whether
// it is the half-open trial.
func (r *record) allow(cfg BreakerConfig, now time.Time) (ok, trial bool) {
	switch r.state {
	case breakerOpen:
		if now.Sub(r.openedAt) < cfg.Cooldown {
			return false, false
		}
		r.state = breakerHalfOpen
		fallthrough
	case breakerHalfOpen:
		if r.trial {
			return false, false
		}
		return true, true
	}
	return true, false
}

// blocked reports, without changing the state, whether the breaker keeps
// every request away from the node now.
func (r *record) blocked(cfg BreakerConfig, now time.Time) bool {
	switch r.state {
	case breakerOpen:
		return now.Sub(r.openedAt) < cfg.Cooldown
	case breakerHalfOpen:
		return r.trial
	}
	return false
}

// started records that a request was sent (the half-open trial, if so).
func (r *record) started(trial bool, now time.Time) {
	if trial {
		r.trial = true
	}
	r.lastPick = now
}

// success records a request the node answered in full, with what the
// router measured of it.
func (r *record) success(m measure) {
	r.dirty = true
	r.failures = 0
	r.state = breakerClosed
	r.trial = false
	r.ok = r.ok*0.98 + 1
	r.bad *= 0.98
	if m.tps > 0 {
		if r.tps == 0 {
			r.tps = m.tps
		} else {
			r.tps = 0.8*r.tps + 0.2*m.tps
		}
	}
}

// observe notes when a model served and how fast its first chunk came.
func (r *record) observe(model string, m measure) {
	if m.firstToken <= 0 {
		return
	}
	if r.seen == nil {
		r.seen = map[string]served{}
	}
	if _, ok := r.seen[model]; !ok && len(r.seen) >= maxSeenModels {
		var oldest string
		var at time.Time
		for k, v := range r.seen {
			if oldest == "" || v.at.Before(at) {
				oldest, at = k, v.at
			}
		}
		delete(r.seen, oldest)
	}
	r.seen[model] = served{at: m.sent, firstToken: m.firstToken, claimed: m.claimedWarm}
}

// maxSeenModels bounds a record's per-model observations.
const maxSeenModels = 20

// failure records a request the node failed; it reports whether the
// breaker opened.
func (r *record) failure(cfg BreakerConfig, now time.Time) (opened bool) {
	r.dirty = true
	r.failures++
	r.ok *= 0.98
	r.bad = r.bad*0.98 + 1
	r.trial = false
	if r.state == breakerHalfOpen || (cfg.Threshold > 0 && r.failures >= cfg.Threshold && r.state == breakerClosed) {
		r.state = breakerOpen
		r.openedAt = now
		return true
	}
	return false
}

// neutral records a request that ended for reasons not the node's (the
// consumer left): a half-open trial is given back.
func (r *record) neutral() {
	r.trial = false
}

// reputation is the decayed success ratio; 0.5 for a node never seen.
func (r *record) reputation() float64 {
	if r.ok+r.bad == 0 {
		return 0.5
	}
	return r.ok / (r.ok + r.bad)
}

// warm reports what the router itself saw of model on the node: whether
// it answered for it within window (Ollama keeps a model loaded for the
// keep_alive after its last request), and whether it ever did (measured).
func (r *record) warm(model string, now time.Time, window time.Duration) (warm, measured bool) {
	s, ok := r.seen[model]
	return ok && now.Sub(s.at) <= window, ok
}

// claimHolds reports whether a node's claim that model is loaded may still
// count as a hint: not when the last request sent on the strength of such
// a claim took longer than cold to its first chunk.
func (r *record) claimHolds(model string, cold time.Duration) bool {
	s, ok := r.seen[model]
	return !(ok && s.claimed && s.firstToken > cold)
}

// measure is what the router measured of one answer.
type measure struct {
	sent        time.Time     // when the request was queued for the node
	firstToken  time.Duration // to the first chunk with content; 0 none
	tps         float64       // tokens per second over the answer; 0 unknown
	claimedWarm bool
}

// takeFrom makes r another router's record in: what a store keeps of it
// (the breaker, the reputation, the speed, the canary evidence). What
// this router measured itself of the node's models (seen) stays.
func (r *record) takeFrom(in *record) {
	r.ip = in.ip
	r.state, r.failures, r.openedAt, r.trial = in.state, in.failures, in.openedAt, false
	r.ok, r.bad, r.tps = in.ok, in.bad, in.tps
	r.updated = in.updated
	r.canary = in.canary
}

// worsen takes from another router's record in what it observed against
// the node and r does not know yet: a breaker that opened later than r's
// last opened, a quarantine for a model decided after r's last verdict
// for it, and a lower reputation from a record newer than the one the
// node's connection here started with (the node's last failures
// elsewhere, shared after it moved here). Nothing in takes away what r
// observed (a quarantine here, an open breaker, a trial in flight, a
// lower reputation), and the speed stays r's own measurement. It reports
// whether the node's schedulability may have changed.
func (r *record) worsen(in *record) (changed bool) {
	if in.updated.After(r.known) {
		r.known = in.updated
		if in.reputation() < r.reputation() {
			r.ok, r.bad = in.ok, in.bad
			changed = true
		}
	}
	if in.state == breakerOpen && in.openedAt.After(r.openedAt) && !(r.state == breakerHalfOpen && r.trial) {
		r.state, r.openedAt = breakerOpen, in.openedAt
		r.failures = max(r.failures, in.failures)
		changed = true
	}
	for model, e := range in.canary {
		if e == nil || !e.Quarantined {
			continue
		}
		mine := r.canary[model]
		if mine != nil && (mine.Quarantined || !e.Last.After(mine.Last)) {
			continue
		}
		if r.canary == nil {
			r.canary = map[string]*evidence{}
		}
		if mine == nil && len(r.canary) >= maxSeenModels {
			var oldest string
			for k, v := range r.canary {
				if oldest == "" || v.Last.Before(r.canary[oldest].Last) {
					oldest = k
				}
			}
			delete(r.canary, oldest)
		}
		c := *e
		c.Verdicts = append([]bool(nil), e.Verdicts...)
		r.canary[model] = &c
		changed = true
	}
	return changed
}
