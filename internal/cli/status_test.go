package cli

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/idleclaw/idleclaw/internal/client"
)

func TestStatus(t *testing.T) {
	t.Parallel()
	network := &fakeRouter{
		health: `{"status":"healthy","uptime_seconds":3723.9,"node_count":2,"version":"x"}`,
		models: []string{"qwen3:32b", "mistral:7b", "llama3.2:3b"},
		caps: map[string]client.Capabilities{
			"qwen3:32b":   {Thinking: true, ToolCalls: true},
			"llama3.2:3b": {ToolCalls: true},
		},
	}
	tests := []struct {
		name   string
		router *fakeRouter
		args   []string // URL and CLOSED are replaced
		env    []string
		code   int
		stdout string
		stderr string
	}{
		{
			name:   "human",
			router: network,
			args:   []string{"--server", "URL/"},
			stdout: "router: URL — reachable\nuptime: 1h2m3s\nnodes online: 2\nmodels (3):\n" +
				"  qwen3:32b    thinking, tools  (default)\n" +
				"  mistral:7b\n" +
				"  llama3.2:3b  tools\n",
		},
		{
			name:   "human, empty network",
			router: &fakeRouter{health: `{"status":"healthy","uptime_seconds":5,"node_count":0}`},
			args:   []string{"--server", "URL"},
			stdout: "router: URL — reachable\nuptime: 5s\nnodes online: 0\nmodels (0): none\n",
		},
		{
			name:   "json",
			router: network,
			args:   []string{"--json", "--server", "URL"},
			stdout: `{"server":"URL","reachable":true,"uptime_seconds":3723,"node_count":2,"models":[` +
				`{"name":"qwen3:32b","thinking":true,"tool_calls":true},` +
				`{"name":"mistral:7b","thinking":false,"tool_calls":false},` +
				`{"name":"llama3.2:3b","thinking":false,"tool_calls":true}]}` + "\n",
		},
		{
			name:   "json, empty network",
			router: &fakeRouter{},
			args:   []string{"--json", "--server", "URL"},
			stdout: `{"server":"URL","reachable":true,"uptime_seconds":3723,"node_count":2,"models":[]}` + "\n",
		},
		{
			name:   "env server",
			router: network,
			args:   []string{"--json"},
			env:    []string{"IDLECLAW_SERVER", "URL"},
			stdout: `{"server":"URL",`,
		},
		{
			name:   "flag server beats env",
			router: network,
			args:   []string{"--json", "--server", "URL"},
			env:    []string{"IDLECLAW_SERVER", "CLOSED"},
			stdout: `{"server":"URL","reachable":true`,
		},
		{
			name:   "unreachable",
			args:   []string{"--server", "CLOSED"},
			code:   1,
			stderr: "router: CLOSED — unreachable: dial tcp",
		},
		{
			name:   "unreachable, json",
			args:   []string{"--server", "CLOSED", "--json"},
			code:   1,
			stdout: `{"server":"CLOSED","reachable":false,"error":"dial tcp`,
		},
		{name: "bad url", args: []string{"--server", "ftp://x"}, code: 2, stderr: "invalid --server"},
		{name: "stray argument", args: []string{"--server", "URL", "now"}, code: 2, stderr: `unexpected argument "now"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			router := tt.router
			if router == nil {
				router = &fakeRouter{}
			}
			url := router.start(t)
			closed := closedServer(t)
			subst := func(s string) string {
				return strings.ReplaceAll(strings.ReplaceAll(s, "CLOSED", closed), "URL", url)
			}
			var args, env []string
			for _, a := range tt.args {
				args = append(args, subst(a))
			}
			for _, e := range tt.env {
				env = append(env, subst(e))
			}
			var stdout, stderr bytes.Buffer
			code := runStatus(t.Context(), args, envOf(env...), Streams{Stdout: &stdout, Stderr: &stderr})
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, stderr.String())
			}
			if want := subst(tt.stdout); !strings.HasPrefix(stdout.String(), want) || (strings.HasSuffix(want, "\n") && stdout.String() != want) {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout.String(), want)
			}
			if want := subst(tt.stderr); !strings.Contains(stderr.String(), want) || (want == "" && stderr.Len() > 0) {
				t.Errorf("stderr = %q, want %q", stderr.String(), want)
			}
		})
	}
}

// TestStatusJSONDecodes checks the --json contract by decoding it.
func TestStatusJSONDecodes(t *testing.T) {
	t.Parallel()
	f := &fakeRouter{
		models: []string{"qwen3:32b", "llama3.2:3b"},
		caps:   map[string]client.Capabilities{"qwen3:32b": {Thinking: true, ToolCalls: true}},
	}
	url := f.start(t)
	var stdout, stderr bytes.Buffer
	if code := runStatus(t.Context(), []string{"--json", "--server", url}, envOf(), Streams{Stdout: &stdout, Stderr: &stderr}); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var got statusReport
	dec := json.NewDecoder(&stdout)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := statusReport{
		Server: url, Reachable: true, UptimeSeconds: 3723, NodeCount: 2,
		Models: []statusModel{{Name: "qwen3:32b", Thinking: true, ToolCalls: true}, {Name: "llama3.2:3b"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if stderr.Len() > 0 {
		t.Errorf("stderr = %q", stderr.String())
	}
}

func TestStatusErrorAnswer(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		routerJSON(w, http.StatusInternalServerError, `{"detail":"boom"}`)
	}))
	defer srv.Close()
	for _, asJSON := range []bool{false, true} {
		args := []string{"--server", srv.URL}
		if asJSON {
			args = append(args, "--json")
		}
		var stdout, stderr bytes.Buffer
		code := runStatus(t.Context(), args, envOf(), Streams{Stdout: &stdout, Stderr: &stderr})
		if code != 1 {
			t.Errorf("json=%v: exit %d", asJSON, code)
		}
		out := stderr.String()
		if asJSON {
			var fail statusFailure
			if err := json.Unmarshal(stdout.Bytes(), &fail); err != nil || fail.Reachable || fail.Server != srv.URL {
				t.Errorf("json=%v: stdout %q (%v)", asJSON, stdout.String(), err)
			}
			out = fail.Error
		}
		if !strings.Contains(out, "500 Internal Server Error: boom") {
			t.Errorf("json=%v: message %q", asJSON, out)
		}
	}
}

// TestStatusShowsNodesAndTrust: against our router, status says per model
// how many nodes serve it, how many slots are free and what canaries made
// of those nodes (/api/network); the JSON carries the same.
func TestStatusShowsNodesAndTrust(t *testing.T) {
	t.Parallel()
	ollama := storiesOllama(t)
	base := routerBase(t, start(t, "serve", "--listen", "127.0.0.1:0", "--records", "none", "--rate-limit-default-rpm", "0")) // polled below
	start(t, "contribute", "--server", base, "--ollama", ollama.URL, "--control", "none", "--identity", "none",
		"--owner-poll", "0", "--max-concurrent", "3")
	var out string
	waitFor(t, "the node listed", 10*time.Second, func() bool {
		_, out, _ = run(t, "", "status", "--server", base)
		return strings.Contains(out, "stories:latest")
	})
	if !strings.Contains(out, "stories:latest  (default)  1 node (1 unverified), 3 free slots") {
		t.Errorf("status:\n%s", out)
	}
	_, js, _ := run(t, "", "status", "--server", base, "--json")
	var r statusReport
	if err := json.Unmarshal([]byte(js), &r); err != nil {
		t.Fatal(err)
	}
	if m := r.Models[0]; m.Nodes == nil || *m.Nodes != 1 || *m.FreeSlots != 3 || m.Trust == nil || *m.Trust != (statusTrust{Unverified: 1}) {
		t.Errorf("status --json: %s", js)
	}
}
