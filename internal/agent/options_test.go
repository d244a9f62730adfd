package agent

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/ollama"
	"github.com/idleclaw/idleclaw/internal/ollamatest"
	"github.com/idleclaw/idleclaw/internal/wire"
)

// TestHostileRouterOptions plays a router that asks the contributor's
// Ollama for everything it has: the node forwards only sampling options,
// clamped to the owner's limits.
func TestHostileRouterOptions(t *testing.T) {
	l := Limits{}.withDefaults()
	req := ollama.ChatRequest{
		Model:     "stories",
		Messages:  []ollama.Message{{Role: "user", Content: "hi"}},
		KeepAlive: json.RawMessage(`"8760h"`),
		Options: json.RawMessage(`{"num_ctx":1000000,"num_gpu":999,"num_thread":64,"main_gpu":3,"use_mmap":false,
			"use_mlock":true,"numa":true,"num_batch":100000,"low_vram":false,"num_predict":-1,"temperature":99,
			"top_k":-5,"top_p":7,"seed":42,"stop":["a","","` + strings.Repeat("x", 300) + `","b","c","d","e","f","g","h","i"]}`),
		Think:  json.RawMessage(`"ultra"`),
		Format: json.RawMessage(`[1,2]`),
	}
	if err := l.shape(&req, false, 0); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(req.Options, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"num_ctx": float64(8192), "num_predict": float64(2048), "temperature": float64(5),
		"top_k": float64(0), "top_p": float64(1), "seed": float64(42),
		"stop": []any{"a", "b", "c", "d", "e", "f", "g", "h"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("options forwarded %v\nwant %v", got, want)
	}
	if string(req.KeepAlive) != `"4m57s"` || req.Think != nil || req.Format != nil {
		t.Errorf("keep_alive %s think %s format %s", req.KeepAlive, req.Think, req.Format)
	}
}

// TestLimitsKeepAlive: keep_alive clamped to the owner's bound and to at
// least minKeepAlive (a router's keep_alive of 0 would unload a model the
// owner may be using), and (from 6 s up) shortened by ownKeepAliveMark,
// which tells the node's expiries from the owner's.
func TestLimitsKeepAlive(t *testing.T) {
	l := Limits{MaxKeepAlive: 10 * time.Minute}.withDefaults()
	for in, want := range map[string]string{
		``: `"9m57s"`, `null`: `"9m57s"`, `"-1"`: `"9m57s"`, `-1`: `"9m57s"`, `"8760h"`: `"9m57s"`,
		`"2m"`: `"1m57s"`, `90`: `"1m27s"`, `30`: `"57s"`, `"45"`: `"57s"`, `"6s"`: `"57s"`, `"5s"`: `"57s"`, `"0"`: `"57s"`, `0`: `"57s"`,
		`"soon"`: `"9m57s"`, `1e300`: `"9m57s"`, `-1e300`: `"9m57s"`, `true`: `"9m57s"`,
	} {
		if got := string(l.keepAlive(json.RawMessage(in))); got != want {
			t.Errorf("keep_alive %s → %s, want %s", in, got, want)
		}
	}
	// An owner's bound under minKeepAlive is the floor too.
	short := Limits{MaxKeepAlive: 5 * time.Second}.withDefaults()
	for in, want := range map[string]string{`"0"`: `"5s"`, `"2s"`: `"5s"`, `"1h"`: `"5s"`} {
		if got := string(short.keepAlive(json.RawMessage(in))); got != want {
			t.Errorf("with a 5 s bound, keep_alive %s → %s, want %s", in, got, want)
		}
	}
}

func TestLimitsImages(t *testing.T) {
	msgs := func() []ollama.Message {
		return []ollama.Message{{Role: "user", Content: "look", Images: []string{"aGk="}}}
	}
	for _, tc := range []struct {
		allow, vision, ok bool
	}{{false, false, false}, {false, true, false}, {true, false, false}, {true, true, true}} {
		req := ollama.ChatRequest{Model: "m", Messages: msgs()}
		err := Limits{AllowImages: tc.allow}.withDefaults().shape(&req, tc.vision, 0)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, wire.ErrRefused)) {
			t.Errorf("allow %v vision %v: %v", tc.allow, tc.vision, err)
		}
	}
}

// TestAgentClampsWhatReachesOllama: the same hostile options, through the
// agent to a fake Ollama.
func TestAgentClampsWhatReachesOllama(t *testing.T) {
	h := newHarness(t, ollamatest.Config{}, func(c *Config) {
		c.Limits = Limits{MaxContext: 4096, MaxPredict: 256, MaxKeepAlive: time.Minute}
	})
	rc, _ := h.connect(t)
	rc.request(t, "r1", map[string]any{
		"model": "stories", "messages": []map[string]string{{"role": "user", "content": "hi"}},
		"keep_alive": "8760h",
		"options":    map[string]any{"num_ctx": 1_000_000, "num_gpu": 999, "num_thread": 64, "num_predict": -1},
	})
	for {
		f := rc.expectFor(t, "r1")
		if f.m["chunk"].(map[string]any)["done"] == true {
			break
		}
	}
	reqs := h.fake.Requests()
	if len(reqs) != 1 {
		t.Fatalf("ollama got %d requests", len(reqs))
	}
	opts := reqs[0].Options
	if opts["num_ctx"] != float64(4096) || opts["num_predict"] != float64(256) || opts["num_gpu"] != nil || opts["num_thread"] != nil {
		t.Errorf("Ollama got options %v", opts)
	}
	if string(reqs[0].KeepAlive) != `"57s"` { // 1m, less the node's mark
		t.Errorf("Ollama got keep_alive %s", reqs[0].KeepAlive)
	}
}

// FuzzLimitsShape: whatever a router sends, what reaches Ollama is within
// the owner's limits and has no other option.
func FuzzLimitsShape(f *testing.F) {
	for _, s := range []string{`{}`, `null`, `{"num_ctx":1e9,"num_gpu":1}`, `{"stop":["a",1]}`, `[1]`, `{"temperature":"x"}`,
		`{"num_predict":9223372036854775807}`, `{"seed":-1e30}`} {
		f.Add(s, `"5m"`)
	}
	allowedKeys := map[string]bool{"temperature": true, "top_p": true, "min_p": true, "typical_p": true, "repeat_penalty": true,
		"presence_penalty": true, "frequency_penalty": true, "top_k": true, "seed": true, "repeat_last_n": true,
		"num_ctx": true, "stop": true, "num_predict": true}
	l := Limits{}.withDefaults()
	f.Fuzz(func(t *testing.T, opts, keepAlive string) {
		req := ollama.ChatRequest{Model: "m", Messages: []ollama.Message{{Role: "user", Content: "x"}},
			Options: json.RawMessage(opts), KeepAlive: json.RawMessage(keepAlive)}
		if err := l.shape(&req, false, 0); err != nil {
			if !errors.Is(err, wire.ErrRefused) {
				t.Fatalf("error %v does not wrap ErrRefused", err)
			}
			return
		}
		var got map[string]any
		if err := json.Unmarshal(req.Options, &got); err != nil {
			t.Fatalf("options %s: %v", req.Options, err)
		}
		for k, v := range got {
			if !allowedKeys[k] {
				t.Fatalf("option %q forwarded", k)
			}
			if n, ok := v.(float64); ok && (k == "num_ctx" && n > float64(l.MaxContext) || k == "num_predict" && (n > float64(l.MaxPredict) || n < 1)) {
				t.Fatalf("%s = %v", k, n)
			}
		}
		d, ok := parseKeepAlive(req.KeepAlive)
		if !ok || d < 0 || d > l.MaxKeepAlive {
			t.Fatalf("keep_alive %s", req.KeepAlive)
		}
	})
}

// TestLimitsModelPredict: a request that sets no answer length gets the
// model's own (its Modelfile's num_predict), within the owner's bound, so
// that the network answers as the contributor's Ollama would directly.
func TestLimitsModelPredict(t *testing.T) {
	l := Limits{MaxPredict: 100}.withDefaults()
	for _, tc := range []struct {
		opts  string
		model int
		want  float64
	}{
		{`{}`, 64, 64}, {`{}`, 0, 100}, {`{}`, 5000, 100}, {`{"num_predict":-1}`, 64, 100}, {`{"num_predict":"x"}`, 64, 64},
		{`{"num_predict":80}`, 64, 80}, {`{"num_predict":500}`, 64, 100},
	} {
		out, err := l.options(json.RawMessage(tc.opts), tc.model)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		if got["num_predict"] != tc.want {
			t.Errorf("options %s, model num_predict %d: num_predict %v, want %v", tc.opts, tc.model, got["num_predict"], tc.want)
		}
	}
	for params, want := range map[string]int{
		"num_ctx                        512\nnum_predict                    64\nstop \"<s>\"": 64,
		"num_predict -1": 0, "": 0, "num_predictx 5": 0, "num_predict 12 13": 0,
	} {
		if got := (ollama.ShowResponse{Parameters: params}).NumPredict(); got != want {
			t.Errorf("parameters %q: NumPredict %d, want %d", params, got, want)
		}
	}
}
