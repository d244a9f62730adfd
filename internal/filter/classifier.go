package filter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Classifier is an optional judge of what the patterns cannot catch
// (toxicity, prompt injection): a model or a service. None is required.
// The router asks it about a consumer's messages before dispatch, and
// about a node's answer while it streams — off the event path: tokens go
// on while it thinks, and its verdict ends the stream at the next chunk.
type Classifier interface {
	// Allow reports whether text may pass. kind says what text is. It
	// must return when ctx ends, and bound its own time: the router asks
	// with the request's context (HTTPClassifier: Timeout).
	Allow(ctx context.Context, kind Kind, text string) (bool, error)
}

// DefaultClassifierTimeout bounds one verdict of an HTTPClassifier whose
// Timeout is not set.
const DefaultClassifierTimeout = 5 * time.Second

// Kind says what a classified text is.
type Kind string

// Kinds of classified text.
const (
	KindPrompt Kind = "prompt" // the consumer's own messages, before dispatch
	KindAnswer Kind = "answer" // a node's answer (and thinking) so far
)

// HTTPClassifier is a Classifier behind an HTTP endpoint: it POSTs
// {"kind":"prompt"|"answer","text":"..."} and expects 200 with
// {"allowed":true|false}. Anything else is an error.
type HTTPClassifier struct {
	URL     string
	Client  *http.Client  // nil: a client keeping up to 64 idle connections to the classifier
	Timeout time.Duration // one verdict; 0: DefaultClassifierTimeout
}

// classifierClient is HTTPClassifier's default client: the router asks
// for a verdict on every stream at once, and http.DefaultClient keeps only
// 2 idle connections per host, so most verdicts would dial anew.
var classifierClient = func() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &http.Client{Transport: tr}
}()

// maxVerdictBytes bounds how much of the classifier's answer is read.
const maxVerdictBytes = 64 << 10

// Allow implements Classifier.
func (c *HTTPClassifier) Allow(ctx context.Context, kind Kind, text string) (bool, error) {
	body, err := json.Marshal(struct {
		Kind Kind   `json:"kind"`
		Text string `json:"text"`
	}{kind, text})
	if err != nil {
		return false, fmt.Errorf("classify: encode: %w", err)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultClassifierTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("classify: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	client := c.Client
	if client == nil {
		client = classifierClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, fmt.Errorf("classify: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("classify: status %d", resp.StatusCode)
	}
	var v struct {
		Allowed *bool `json:"allowed"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxVerdictBytes)).Decode(&v); err != nil {
		return false, fmt.Errorf("classify: decode verdict: %w", err)
	}
	if v.Allowed == nil {
		return false, errors.New("classify: verdict has no \"allowed\"")
	}
	return *v.Allowed, nil
}
