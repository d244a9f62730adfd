// Command fakeprovider serves providertest's fake paid provider on a
// loopback port for shell scripts (scripts/e2e-gateway.sh): it answers
// every chat request in one failure mode (providertest.ByName), which
// POST /control/mode (the mode's name as the body) changes while it runs;
// GET /control/count is the number of chat requests so far.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/idleclaw/idleclaw/internal/providertest"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	mode := flag.String("mode", "ok", "how to answer: ok, insufficient_quota, rate_limit, payment_required, credit_too_low, server_error, hang, cut, ...")
	key := flag.String("key", "", "the only API key accepted (empty: any)")
	flag.Parse()
	if _, err := providertest.ByName(*mode, providertest.Request{}); err != nil {
		fmt.Fprintln(os.Stderr, "fakeprovider:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	current := *mode
	fake := providertest.NewHandler(providertest.Config{Key: *key, Respond: func(r providertest.Request) providertest.Reply {
		mu.Lock()
		m := current
		mu.Unlock()
		rep, _ := providertest.ByName(m, r)
		return rep
	}})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /control/mode", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 64))
		m := strings.TrimSpace(string(b))
		if _, err := providertest.ByName(m, providertest.Request{}); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		current = m
		mu.Unlock()
		fmt.Fprintln(w, m)
	})
	mux.HandleFunc("GET /control/count", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, fake.Count())
	})
	mux.Handle("/v1/", fake)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakeprovider:", err)
		os.Exit(1)
	}
	fmt.Printf("fake provider listening on http://%s/v1 (mode %s)\n", ln.Addr(), *mode)
	if err := http.Serve(ln, mux); err != nil {
		fmt.Fprintln(os.Stderr, "fakeprovider:", err)
		os.Exit(1)
	}
}
