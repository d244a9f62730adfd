package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// counters are the requests and tokens the node served for the network:
// today (the machine's local day) and since it started.
type counters struct {
	mu                       sync.Mutex
	day                      string
	todayRequests, todayToks int64
	totalRequests, totalToks int64
}

func (c *counters) add(now time.Time, tokens int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := now.Format("2006-01-02"); d != c.day {
		c.day, c.todayRequests, c.todayToks = d, 0, 0
	}
	c.todayRequests++
	c.todayToks += int64(tokens)
	c.totalRequests++
	c.totalToks += int64(tokens)
}

func (c *counters) read(now time.Time) (todayReq, todayTok, totalReq, totalTok int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Format("2006-01-02") != c.day {
		return 0, 0, c.totalRequests, c.totalToks
	}
	return c.todayRequests, c.todayToks, c.totalRequests, c.totalToks
}

// Status is the node's state as `idleclaw contribute status` shows it.
type Status struct {
	NodeID      string    `json:"node_id"`
	Router      string    `json:"router"`
	Connected   bool      `json:"connected"`
	State       string    `json:"state"`         // "serving", "paused" or "unavailable" (Ollama cannot serve)
	Why         []string  `json:"why,omitempty"` // the reasons it is paused
	PausedUntil time.Time `json:"paused_until,omitzero"`
	InFlight    int       `json:"in_flight"`
	Models      []string  `json:"models"`
	Today       Served    `json:"today"`
	Total       Served    `json:"total"`
	Limits      struct {
		MaxConcurrent int    `json:"max_concurrent"`
		MaxContext    int    `json:"max_context"`
		MaxPredict    int    `json:"max_predict"`
		MaxKeepAlive  string `json:"max_keep_alive"`
		AllowImages   bool   `json:"allow_images"`
	} `json:"limits"`
}

// Served counts requests and tokens.
type Served struct {
	Requests int64 `json:"requests"`
	Tokens   int64 `json:"tokens"`
}

// Status reports the node's state.
func (a *Agent) Status() Status {
	now := a.cfg.Now()
	st := Status{NodeID: a.cfg.NodeID, Router: a.URL()}
	a.mu.Lock()
	st.Connected = a.current != nil
	for _, m := range a.models {
		st.Models = append(st.Models, m.Name)
	}
	for _, n := range a.active {
		st.InFlight += n
	}
	a.mu.Unlock()
	st.Why = a.gate.why()
	switch {
	case len(st.Why) > 0:
		st.State = "paused"
		st.PausedUntil = a.gate.until(PauseManual)
	case !a.available():
		st.State = "unavailable"
	default:
		st.State = "serving"
	}
	tr, tt, ar, at := a.stats.read(now)
	st.Today, st.Total = Served{tr, tt}, Served{ar, at}
	st.Limits.MaxConcurrent = a.cfg.MaxConcurrent
	st.Limits.MaxContext, st.Limits.MaxPredict = a.cfg.Limits.MaxContext, a.cfg.Limits.MaxPredict
	st.Limits.MaxKeepAlive, st.Limits.AllowImages = a.cfg.Limits.MaxKeepAlive.String(), a.cfg.Limits.AllowImages
	return st
}

// Pause stops the node taking network work until until (zero: until
// Resume); requests in flight finish.
func (a *Agent) Pause(until time.Time) { a.gate.set(PauseManual, until) }

// Resume lifts the owner's pause, and the owner-activity pause with it
// (the owner says the machine is free); a busy machine or a closed
// schedule still keep the node paused.
func (a *Agent) Resume() {
	a.gate.clear(PauseManual)
	a.gate.clear(PauseOwner)
}

// ServeControl answers the local control socket on ln until ctx ends:
// GET /status, POST /pause (optional ?for=DURATION), POST /resume. The
// socket is the owner's: contribute listens on a Unix socket only its
// user can open, never on the network.
func (a *Agent) ServeControl(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeControl(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("POST /pause", func(w http.ResponseWriter, r *http.Request) {
		var until time.Time
		if v := r.URL.Query().Get("for"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				writeControl(w, http.StatusBadRequest, map[string]string{"error": "for: a positive duration such as 1h"})
				return
			}
			until = a.cfg.Now().Add(d)
		}
		a.Pause(until)
		writeControl(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("POST /resume", func(w http.ResponseWriter, r *http.Request) {
		a.Resume()
		writeControl(w, http.StatusOK, a.Status())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
		return nil
	case err := <-done:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

func writeControl(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// watchSchedule pauses the node outside the owner's schedule, looking
// every 15 s on the agent's clock, until ctx ends.
func (a *Agent) watchSchedule(ctx context.Context) {
	if a.cfg.Schedule.Always() {
		return
	}
	a.checkSchedule()
	t := time.NewTicker(15 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.checkSchedule()
	}
}

// checkSchedule sets or lifts the schedule's pause for the time now.
func (a *Agent) checkSchedule() {
	if a.cfg.Schedule.Open(a.cfg.Now()) {
		a.gate.clear(PauseSchedule)
	} else {
		a.gate.set(PauseSchedule, time.Time{})
	}
}
