package bench

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// sourceAddrs is how many loopback source addresses client sockets are
// spread over (127.0.1.1 ...), so that 10,000s of connections to one router
// port never run short of ephemeral ports.
const sourceAddrs = 64

// netKit makes the bench's client sockets: every dial binds one of
// sourceAddrs loopback addresses in turn. Safe for concurrent use.
type netKit struct {
	next atomic.Uint32
}

func (nk *netKit) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	i := nk.next.Add(1) % sourceAddrs
	d := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i))},
		Timeout:   30 * time.Second,
		Control:   bindNoPort,
	}
	return d.DialContext(ctx, network, addr)
}

// transport is an HTTP/1.1 client transport for up to conns concurrent
// requests to one host, each keeping its connection.
func (nk *netKit) transport(conns int) *http.Transport {
	return &http.Transport{
		DialContext:         nk.dial,
		MaxIdleConns:        conns + 16,
		MaxIdleConnsPerHost: conns + 16,
		IdleConnTimeout:     2 * time.Minute,
		DisableCompression:  true,
	}
}
