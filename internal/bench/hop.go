package bench

import (
	"net"
	"time"
)

// Hop is this machine's loopback round trip between two sockets served by
// different threads: the floor under every hop the network adds (consumer
// to router, router to node, node to Ollama and back).
type Hop struct {
	// BusyP50US and BusyP99US: round trips back to back (threads awake).
	BusyP50US float64 `json:"busy_p50_us"`
	BusyP99US float64 `json:"busy_p99_us"`
	// IdleP50US and IdleP99US: one round trip every 10 ms, as a stream's
	// tokens come, so that the threads sleep in between and must be woken.
	IdleP50US float64 `json:"idle_p50_us"`
	IdleP99US float64 `json:"idle_p99_us"`
}

// measureHop echoes one byte over loopback TCP, back to back and then
// with 10 ms gaps (about 1.5 s in all).
func measureHop() (Hop, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return Hop{}, err
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b := make([]byte, 1)
		for {
			if _, err := c.Read(b); err != nil {
				return
			}
			if _, err := c.Write(b); err != nil {
				return
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return Hop{}, err
	}
	measure := func(n int, gap time.Duration) ([]time.Duration, error) {
		b := make([]byte, 1)
		out := make([]time.Duration, 0, n)
		for range n {
			if gap > 0 {
				time.Sleep(gap)
			}
			t := time.Now()
			if _, err := c.Write(b); err != nil {
				return nil, err
			}
			if _, err := c.Read(b); err != nil {
				return nil, err
			}
			out = append(out, time.Since(t))
		}
		return out, nil
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	var h Hop
	busy, err := measure(1000, 0)
	if err == nil {
		var idle []time.Duration
		idle, err = measure(150, 10*time.Millisecond)
		h = Hop{BusyP50US: us(percentile(busy, 50)), BusyP99US: us(percentile(busy, 99)),
			IdleP50US: us(percentile(idle, 50)), IdleP99US: us(percentile(idle, 99))}
	}
	c.Close()
	<-done
	return h, err
}
