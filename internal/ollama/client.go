package ollama

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// DefaultPort is the port Ollama listens on unless told otherwise.
const DefaultPort = "11434"

// MaxLineBytes bounds one NDJSON line of a streamed answer, as Ollama's own
// client does.
const MaxLineBytes = 8 << 20

// maxBodyBytes bounds a non-streamed JSON answer (tags, show, ps, version).
const maxBodyBytes = 32 << 20

// maxErrorBytes bounds how much of an error answer is read.
const maxErrorBytes = 64 << 10

// ErrUnreachable marks a failure to reach Ollama at all (connection refused,
// unknown host, no route): the server is not running or the address is
// wrong. Protocol errors (bad status, bad JSON) do not wrap it.
var ErrUnreachable = errors.New("ollama unreachable")

// ErrStreamIncomplete reports a streamed answer that ended before its final
// (done) line.
var ErrStreamIncomplete = errors.New("ollama stream ended before done")

// StatusError is a non-200 answer from Ollama. Message is Ollama's "error"
// text (or the start of a non-JSON body).
type StatusError struct {
	Status  int
	Message string
}

func (e *StatusError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("status %d", e.Status)
	}
	return fmt.Sprintf("status %d: %s", e.Status, e.Message)
}

// StreamError is an {"error": ...} line received after a 200 answer started
// streaming.
type StreamError struct {
	Message string
}

func (e *StreamError) Error() string { return "stream error: " + e.Message }

// Client is a small typed client of Ollama's HTTP API. The zero value is not
// usable: BaseURL is required (see [BaseURL]). A nil HTTP uses
// http.DefaultClient; the client must have no Timeout, since Chat streams for
// as long as the model writes: bound calls with their context instead.
// A Client is safe for concurrent use.
type Client struct {
	BaseURL string // "http://localhost:11434", no trailing slash
	HTTP    *http.Client

	lines sync.Pool // *bufio.Reader of Chat's answers, reused
}

// BaseURL turns an OLLAMA_HOST value into a base URL. It accepts
// "http://host:port", "https://host:port", "host:port", "host", ":port" and
// an empty string (localhost). Without a scheme the port defaults to 11434;
// with an explicit scheme and no port it follows Ollama's own client (80 for
// http, 443 for https). An unspecified address (0.0.0.0, ::), which is how
// a server is told to listen everywhere, is dialed on the loopback address.
// A path (Ollama behind a reverse proxy) is kept.
func BaseURL(host string) (string, error) {
	s := strings.TrimSpace(host)
	scheme, rest, ok := strings.Cut(s, "://")
	defPort := DefaultPort
	switch {
	case !ok:
		scheme, rest = "http", s
	case strings.EqualFold(scheme, "http"):
		scheme, defPort = "http", "80"
	case strings.EqualFold(scheme, "https"):
		scheme, defPort = "https", "443"
	default:
		return "", fmt.Errorf("ollama host %q: scheme must be http or https", host)
	}
	hostport, path, _ := strings.Cut(rest, "/")
	h, port, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port (or a bare IPv6 address).
		h, port = strings.Trim(hostport, "[]"), defPort
		if strings.ContainsAny(h, "[]") || (strings.Contains(h, ":") && net.ParseIP(h) == nil) {
			return "", fmt.Errorf("ollama host %q: invalid address", host)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("ollama host %q: invalid port %q", host, port)
	}
	switch h {
	case "":
		h = "localhost"
	case "0.0.0.0":
		h = "127.0.0.1"
	case "::":
		h = "::1"
	}
	if strings.ContainsAny(h, " \t/?#@") {
		return "", fmt.Errorf("ollama host %q: invalid host", host)
	}
	u := url.URL{Scheme: scheme, Host: net.JoinHostPort(h, port)}
	if p := strings.TrimRight(path, "/"); p != "" {
		u.Path = "/" + p
	}
	return u.String(), nil
}

// Version returns Ollama's version (GET /api/version).
func (c *Client) Version(ctx context.Context) (string, error) {
	var v struct {
		Version string `json:"version"`
	}
	if err := c.getJSON(ctx, http.MethodGet, "/api/version", nil, &v); err != nil {
		return "", fmt.Errorf("ollama version: %w", err)
	}
	return v.Version, nil
}

// Tags lists the models Ollama has pulled (GET /api/tags).
func (c *Client) Tags(ctx context.Context) (TagsResponse, error) {
	var v TagsResponse
	if err := c.getJSON(ctx, http.MethodGet, "/api/tags", nil, &v); err != nil {
		return TagsResponse{}, fmt.Errorf("ollama tags: %w", err)
	}
	return v, nil
}

// Show describes one model (POST /api/show).
func (c *Client) Show(ctx context.Context, model string) (ShowResponse, error) {
	var v ShowResponse
	body := map[string]string{"model": model}
	if err := c.getJSON(ctx, http.MethodPost, "/api/show", body, &v); err != nil {
		return ShowResponse{}, fmt.Errorf("ollama show %q: %w", model, err)
	}
	return v, nil
}

// PS lists the models loaded in memory (GET /api/ps).
func (c *Client) PS(ctx context.Context) (PSResponse, error) {
	var v PSResponse
	if err := c.getJSON(ctx, http.MethodGet, "/api/ps", nil, &v); err != nil {
		return PSResponse{}, fmt.Errorf("ollama ps: %w", err)
	}
	return v, nil
}

// Chat runs POST /api/chat and calls fn for every NDJSON line of the answer,
// in order (one line when req.Stream is false). An {"error": ...} line ends
// the call with a *StreamError; an answer that ends before its done line
// gives ErrStreamIncomplete; an error from fn ends the call (closing the
// request) and is returned wrapped. Canceling ctx closes the HTTP request at
// once, which makes Ollama stop generating.
func (c *Client) Chat(ctx context.Context, req ChatRequest, fn func(ChatResponse) error) error {
	resp, err := c.do(ctx, http.MethodPost, "/api/chat", req)
	if err != nil {
		return fmt.Errorf("ollama chat: %w", err)
	}
	defer resp.Body.Close()

	// A bufio.Reader rather than a Scanner: after each line it tells
	// whether the next line has already arrived (ChatResponse.More).
	// Reused across calls (4 KiB per answer was a tenth of a node's
	// allocations relaying short answers): nothing returned keeps a view
	// of its buffer, every string is copied out of the line.
	br, _ := c.lines.Get().(*bufio.Reader)
	if br == nil {
		br = bufio.NewReaderSize(resp.Body, 4<<10)
	} else {
		br.Reset(resp.Body)
	}
	defer func() {
		br.Reset(nil)
		c.lines.Put(br)
	}()
	var long []byte // a line longer than the buffer, up to MaxLineBytes
	done := false
	model := req.Model
	for {
		raw, rerr := readLine(br, &long)
		if rerr != nil && rerr != io.EOF {
			if ctx.Err() != nil {
				return fmt.Errorf("ollama chat: %w", ctx.Err())
			}
			return fmt.Errorf("ollama chat: read stream: %w", rerr)
		}
		if line := bytes.TrimSpace(raw); len(line) > 0 {
			cr, err := decodeChatLine(line, model)
			if err != nil {
				return fmt.Errorf("ollama chat: decode line: %w", err)
			}
			model = cr.Model
			if cr.Error != "" {
				return fmt.Errorf("ollama chat: %w", &StreamError{Message: cr.Error})
			}
			if rerr == nil {
				buffered, _ := br.Peek(br.Buffered())
				cr.More = bytes.IndexByte(buffered, '\n') >= 0
			}
			if err := fn(cr); err != nil {
				return fmt.Errorf("ollama chat: %w", err)
			}
			if cr.Done {
				done = true
			}
		}
		if rerr == io.EOF {
			break
		}
	}
	if !done {
		if ctx.Err() != nil {
			return fmt.Errorf("ollama chat: %w", ctx.Err())
		}
		return fmt.Errorf("ollama chat: %w", ErrStreamIncomplete)
	}
	return nil
}

// readLine reads one line, its newline included, up to MaxLineBytes
// (bufio.ErrTooLong past it). The line is valid until the next read; a
// long one is gathered in *long. At the end of the stream it returns the
// last bytes, if any, with io.EOF.
func readLine(br *bufio.Reader, long *[]byte) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != bufio.ErrBufferFull {
		return line, err
	}
	*long = append((*long)[:0], line...)
	for err == bufio.ErrBufferFull {
		line, err = br.ReadSlice('\n')
		if len(*long)+len(line) > MaxLineBytes {
			return nil, bufio.ErrTooLong
		}
		*long = append(*long, line...)
	}
	return *long, err
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// do sends one request and returns a 200 answer; any other status becomes a
// *StatusError (the body is consumed and closed).
func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	hreq, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	hreq.Header.Set("Accept", "application/x-ndjson, application/json")
	resp, err := c.httpClient().Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if isUnreachable(err) {
			return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
		}
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, statusError(resp)
	}
	return resp, nil
}

func (c *Client) getJSON(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("read answer: %w", err)
	}
	if len(b) > maxBodyBytes {
		return fmt.Errorf("answer over %d bytes", maxBodyBytes)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

func statusError(resp *http.Response) *StatusError {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
	se := &StatusError{Status: resp.StatusCode}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		se.Message = e.Error
	} else {
		se.Message = strings.TrimSpace(string(b))
		if len(se.Message) > 200 {
			se.Message = se.Message[:200]
		}
	}
	return se
}

// isUnreachable reports whether err from http.Client.Do means that no
// connection to Ollama could be made, or that it ended unanswered.
func isUnreachable(err error) bool {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	// A connection that ended before any answer (Ollama went away, or a
	// kept-alive connection it had closed) is Ollama gone too: nothing of
	// the request was answered.
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
