package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A second sign of the owner, for while the node has requests of its own
// in flight (Ollama moves a model's expiry only when its last request
// ends, so /api/ps cannot show an owner's request that overlaps the
// node's), and for a short request right after one of the node's (which
// leaves an expiry the node's own explains): a connection to Ollama's
// port that is not the node's. Linux lists every TCP connection of the
// machine's network namespace in /proc/net/tcp{,6}, closed ones too for a
// minute (TIME_WAIT), so even a request that came and went between two
// looks shows. The node's own connections are those its Ollama client
// dialed (dialLog records their local addresses). Only connections not
// seen at the last look count, so that a client's idle keep-alive
// connection is one sign, not a lasting one.

// maxConnLines bounds the lines read from one /proc/net/tcp file.
const maxConnLines = 1 << 16

// connWatch remembers the connections to Ollama seen at the last look.
type connWatch struct {
	port   uint16
	own    *dialLog
	seen   map[[2]netip.AddrPort]bool
	primed bool
}

// newConnWatch watches connections to the Ollama at base, the node's own
// being those in own, or returns nil when it cannot: Ollama is not on
// this machine (a host name that is not localhost, an address that is
// not loopback or unspecified).
func newConnWatch(base string, own *dialLog) *connWatch {
	u, err := url.Parse(base)
	if err != nil || own == nil {
		return nil
	}
	host := u.Hostname()
	if host != "localhost" {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.IsLoopback() && !ip.IsUnspecified() {
			return nil
		}
	}
	port, err := strconv.ParseUint(u.Port(), 10, 16)
	if err != nil || port == 0 {
		return nil
	}
	return &connWatch{port: uint16(port), own: own, seen: map[[2]netip.AddrPort]bool{}}
}

// stateListen is a listening socket's state in /proc/net/tcp.
const stateListen = "0A"

// look reads the connections once and reports whether one that is not
// the node's came up since the last look (the first look only learns).
func (w *connWatch) look(root string) bool {
	own := w.own.addrs()
	current := map[[2]netip.AddrPort]bool{}
	fresh := false
	for _, name := range []string{"tcp", "tcp6"} {
		readConns(filepath.Join(root, "net", name), func(local, peer netip.AddrPort, state string) {
			server := local.Port() == w.port
			client := peer.Port() == w.port && peer.Addr().IsLoopback()
			if state == stateListen || !server && !client || own[local] || own[peer] {
				return
			}
			key := [2]netip.AddrPort{local, peer}
			if peer.Compare(local) < 0 {
				key = [2]netip.AddrPort{peer, local} // both sides, one connection
			}
			current[key] = true
			if !w.seen[key] {
				fresh = true
			}
		})
	}
	w.seen = current
	if !w.primed {
		w.primed = true
		return false
	}
	return fresh
}

// dialLog records the local addresses of the connections the node's
// Ollama client dials, and keeps each for ownLinger after it closes (the
// kernel lists a closed connection for a minute).
type dialLog struct {
	mu    sync.Mutex
	now   func() time.Time
	conns map[netip.AddrPort]time.Time // closed at; zero while open
}

// ownLinger outlasts TIME_WAIT (60 s on Linux).
const ownLinger = 2 * time.Minute

// maxDialLog bounds the addresses kept.
const maxDialLog = 4096

func newDialLog(now func() time.Time) *dialLog {
	return &dialLog{now: now, conns: map[netip.AddrPort]time.Time{}}
}

// wrap makes tr record what it dials.
func (d *dialLog) wrap(tr *http.Transport) {
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		local, err := netip.ParseAddrPort(c.LocalAddr().String())
		if err != nil {
			return c, nil
		}
		local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
		d.mu.Lock()
		if len(d.conns) >= maxDialLog {
			d.pruneLocked()
		}
		d.conns[local] = time.Time{}
		d.mu.Unlock()
		return &loggedConn{Conn: c, log: d, local: local}, nil
	}
}

func (d *dialLog) closed(local netip.AddrPort) {
	d.mu.Lock()
	if _, ok := d.conns[local]; ok {
		d.conns[local] = d.now()
	}
	d.mu.Unlock()
}

// pruneLocked forgets connections closed over ownLinger ago. d.mu held.
func (d *dialLog) pruneLocked() {
	cut := d.now().Add(-ownLinger)
	for a, at := range d.conns {
		if !at.IsZero() && at.Before(cut) {
			delete(d.conns, a)
		}
	}
}

// addrs is a copy of the addresses the node's connections have (had).
func (d *dialLog) addrs() map[netip.AddrPort]bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pruneLocked()
	out := make(map[netip.AddrPort]bool, len(d.conns))
	for a := range d.conns {
		out[a] = true
	}
	return out
}

// loggedConn tells the dialLog when it closes.
type loggedConn struct {
	net.Conn
	log   *dialLog
	local netip.AddrPort
	once  sync.Once
}

func (c *loggedConn) Close() error {
	c.once.Do(func() { c.log.closed(c.local) })
	return c.Conn.Close()
}

// readConns calls fn for each well-formed line of a /proc/net/tcp file.
func readConns(path string, fn func(local, peer netip.AddrPort, state string)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 512), 4096)
	for n := 0; sc.Scan() && n < maxConnLines; n++ {
		fields := bytes.Fields(sc.Bytes())
		if len(fields) < 4 {
			continue
		}
		local, ok1 := procAddr(string(fields[1]))
		peer, ok2 := procAddr(string(fields[2]))
		if !ok1 || !ok2 {
			continue // the header line, or garbage
		}
		fn(local, peer, string(fields[3]))
	}
}

// procAddr reads an address of /proc/net/tcp{,6}: the IP in hex as 32-bit
// words in the machine's byte order, a colon, the port in hex.
func procAddr(s string) (netip.AddrPort, bool) {
	ipHex, portHex, ok := strings.Cut(s, ":")
	if !ok || len(portHex) != 4 || len(ipHex) != 8 && len(ipHex) != 32 {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(ipHex)
	if err != nil {
		return netip.AddrPort{}, false
	}
	// Each 32-bit word was printed as a number: undo the byte order.
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(raw[i:], binary.NativeEndian.Uint32(raw[i:]))
	}
	ip, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)), true
}
