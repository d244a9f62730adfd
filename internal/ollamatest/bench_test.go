package ollamatest

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"
)

// BenchmarkStream measures how many tokens per second the fake streams to a
// real HTTP client over loopback: one 1000-token /api/chat reply per
// iteration, every line read and flushed separately.
func BenchmarkStream(b *testing.B) {
	const nTokens = 1000
	tokens := make([]string, nTokens)
	for i := range tokens {
		tokens[i] = " tok"
	}
	s := NewServer(Config{
		Models:   []Model{{Name: "stories"}},
		NoRecord: true,
		Respond:  func(ChatRequest) Reply { return Reply{Tokens: tokens} },
	})
	defer s.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8, DisableCompression: true}}
	defer client.CloseIdleConnections()
	body := []byte(`{"model":"stories","messages":[{"role":"user","content":"go"}]}`)
	br := bufio.NewReaderSize(nil, 64<<10)
	done := []byte(`"done":true`)

	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		resp, err := client.Post(s.URL+"/api/chat", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		br.Reset(resp.Body)
		n := 0
		for {
			line, err := br.ReadSlice('\n')
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if bytes.Contains(line, done) {
				continue
			}
			n++
		}
		resp.Body.Close()
		if n != nTokens {
			b.Fatalf("got %d token lines, want %d", n, nTokens)
		}
	}
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N*nTokens)/elapsed.Seconds(), "tokens/s")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(b.N*nTokens), "ns/token")
}

// BenchmarkStreamParallel is BenchmarkStream with several concurrent
// streams, reporting the aggregate tokens/s.
func BenchmarkStreamParallel(b *testing.B) {
	const nTokens = 1000
	tokens := make([]string, nTokens)
	for i := range tokens {
		tokens[i] = " tok"
	}
	s := NewServer(Config{
		Models:   []Model{{Name: "stories"}},
		NoRecord: true,
		Respond:  func(ChatRequest) Reply { return Reply{Tokens: tokens} },
	})
	defer s.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	defer client.CloseIdleConnections()
	body := []byte(`{"model":"stories","messages":[{"role":"user","content":"go"}]}`)
	b.SetParallelism(4)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		br := bufio.NewReaderSize(nil, 64<<10)
		for pb.Next() {
			resp, err := client.Post(s.URL+"/api/chat", "application/json", bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			br.Reset(resp.Body)
			n := 0
			for {
				_, err := br.ReadSlice('\n')
				if err != nil {
					break
				}
				n++
			}
			resp.Body.Close()
			if n != nTokens+1 {
				b.Errorf("got %d lines, want %d", n, nTokens+1)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N*nTokens)/elapsed.Seconds(), "tokens/s")
}
