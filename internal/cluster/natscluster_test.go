package cluster_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/idleclaw/idleclaw/internal/cluster"
	"github.com/idleclaw/idleclaw/internal/cluster/natstest"
)

// TestNATSCluster: routers on different servers of a three-server NATS
// cluster, the buckets kept by all three, are one network; when the
// server one of them is connected to dies, it moves to another (one it
// learnt of from the cluster) and the network goes on, its view whole.
func TestNATSCluster(t *testing.T) {
	s := natstest.StartCluster(t, 3)
	a := newRouterWith(t, cluster.Config{URL: s[0].URL, RouterID: "a", Replicas: 3})
	b := newRouterWith(t, cluster.Config{URL: s[1].URL, RouterID: "b", Replicas: 3})
	c := newRouterWith(t, cluster.Config{URL: s[2].URL, RouterID: "c", Replicas: 3})
	serve(t, b, "mb:latest", 2)
	serve(t, c, "mc:latest", 2)
	// JetStream elects its leaders first: the buckets come with them.
	eventually(t, "router a never saw b's and c's nodes", func() bool { return a.c.NodeCount() == 2 })
	for _, model := range []string{"mb", "mc"} {
		if _, _, text := chatTimes(t, a.url, model); text != "Echo: hi" {
			t.Fatalf("%s through a: %q", model, text)
		}
	}

	// Every bucket is kept by the three servers.
	_, js := natsJS(t, s[0].URL)
	for _, name := range []string{"idleclaw_routers", "idleclaw_bans"} {
		var st jetstream.KeyValueStatus
		eventually(t, "bucket "+name+" never made", func() bool {
			kv, err := js.KeyValue(t.Context(), name)
			if err != nil {
				return false
			}
			st, err = kv.Status(t.Context())
			return err == nil
		})
		if r := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas; r != 3 {
			t.Fatalf("bucket %s has %d replicas, want 3", name, r)
		}
	}

	// c's server dies.
	on := c.c.ConnectedURL()
	s[2].Kill()
	killed := time.Now()
	eventually(t, "c never moved to another server", func() bool {
		u := c.c.ConnectedURL()
		return u != "" && u != on
	})
	t.Logf("c moved from %s to %s in %v", on, c.c.ConnectedURL(), time.Since(killed).Round(time.Millisecond))
	// Until c's subscriptions have reached the other servers, a's
	// forward finds no responder (seen in CI 3 ms after the move) and
	// asks again after a pause (TestNoRespondersAskAgain); the network
	// must answer across again within the bound of eventually.
	eventually(t, "mc never answered through a after c's server died", func() bool {
		resp, err := http.Post(a.url+"/api/chat", "application/json",
			strings.NewReader(`{"model":"mc","messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	t.Logf("mc answered through a %v after c's server died", time.Since(killed).Round(time.Millisecond))
	if _, _, text := chatTimes(t, a.url, "mc"); text != "Echo: hi" {
		t.Fatalf("mc through a after c's server died: %q", text)
	}
	eventually(t, "the views not whole after c moved", func() bool {
		return a.c.NodeCount() == 2 && b.c.NodeCount() == 1
	})
}

// TestLeafNode: a second region as docs/cluster.md sets it up, a
// nats-server of its own that is a leaf node of the main one (which
// alone has JetStream, in the domain "main"): routers on either side,
// told the domain, are one network, answering across both ways.
func TestLeafNode(t *testing.T) {
	hubServer, leafURL := natstest.StartHub(t)
	leaf := natstest.StartLeaf(t, leafURL)
	a := newRouterWith(t, cluster.Config{URL: hubServer.URL, RouterID: "main", JSDomain: "main"})
	b := newRouterWith(t, cluster.Config{URL: leaf.URL, RouterID: "region", JSDomain: "main"})
	serve(t, a, "ma:latest", 2)
	serve(t, b, "mb:latest", 2)
	eventually(t, "the routers never saw each other across the leaf connection", func() bool {
		return a.c.NodeCount() == 1 && b.c.NodeCount() == 1
	})
	for _, tc := range []struct{ at, model string }{{a.url, "mb"}, {b.url, "ma"}} {
		if _, _, text := chatTimes(t, tc.at, tc.model); text != "Echo: hi" {
			t.Fatalf("%s across the leaf connection: %q", tc.model, text)
		}
	}
}
