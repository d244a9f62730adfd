package hostile

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// answer is what a consumer got from one chat, whatever the dialect.
type answer struct {
	Status    int
	Body      string // the body of a non-200 answer, or of a non-streamed one
	Content   string // answer text
	Reasoning string // thinking text
	Errors    []string
	Finish    string // finish_reason / done_reason
	Done      bool   // the stream ended properly ([DONE], done:true, a whole body)
	Tools     []string
	Usage     map[string]float64 // token counts and durations the answer reports
	Header    http.Header
	Bytes     int // bytes of the body read
	Elapsed   time.Duration
}

// maxAnswerRead bounds what the suite reads of one answer: the suite must
// stay bounded whatever the router sends.
const maxAnswerRead = 32 << 20

// post sends body (bytes, or a value encoded as JSON) to path.
func (r *router) post(ctx context.Context, c *http.Client, path string, body any, header map[string]string) (*http.Response, error) {
	var b []byte
	switch v := body.(type) {
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			return nil, err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.base+path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("post %s: %w", path, err)
	}
	return resp, nil
}

// chat sends a chat in one of the dialects ("v1", "openai", "ollama") and
// reads the whole answer.
func (r *router) chat(ctx context.Context, c *http.Client, dialect string, body any, header map[string]string) (answer, error) {
	path := map[string]string{"v1": "/api/chat", "openai": "/v1/chat/completions", "ollama": "/ollama/api/chat"}[dialect]
	start := time.Now()
	resp, err := r.post(ctx, c, path, body, header)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	a := answer{Status: resp.StatusCode, Header: resp.Header}
	rd := &countReader{r: io.LimitReader(resp.Body, maxAnswerRead)}
	defer func() { a.Bytes = rd.n }()
	ct := resp.Header.Get("Content-Type")
	switch {
	case resp.StatusCode != http.StatusOK || (!strings.HasPrefix(ct, "text/event-stream") && !strings.HasPrefix(ct, "application/x-ndjson")):
		b, err := io.ReadAll(rd)
		a.Body, a.Bytes, a.Elapsed = string(b), rd.n, time.Since(start)
		if err != nil {
			return a, fmt.Errorf("read answer: %w", err)
		}
		if resp.StatusCode == http.StatusOK {
			a.parseWhole(dialect, b)
		}
		return a, nil
	case dialect == "ollama":
		err = a.readNDJSON(rd)
	default:
		err = a.readSSE(dialect, rd)
	}
	a.Bytes, a.Elapsed = rd.n, time.Since(start)
	return a, err
}

type countReader struct {
	r io.Reader
	n int
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// readSSE reads a v1 or OpenAI event stream.
func (a *answer) readSSE(dialect string, r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			a.Done = true
			continue
		}
		var ev struct {
			Choices []struct {
				Delta struct {
					Content   *string `json:"content"`
					Reasoning any     `json:"reasoning"`
					ToolCall  *struct {
						Name, Status string
					} `json:"tool_call"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
			Usage map[string]float64 `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return fmt.Errorf("bad event %.200q: %w", data, err)
		}
		if ev.Usage != nil {
			a.Usage = ev.Usage
		}
		if ev.Error != nil {
			a.Errors = append(a.Errors, ev.Error.Message)
		}
		for _, ch := range ev.Choices {
			d := ch.Delta
			if ch.FinishReason != nil {
				a.Finish = *ch.FinishReason
			}
			if d.ToolCall != nil {
				a.Tools = append(a.Tools, d.ToolCall.Name+":"+d.ToolCall.Status)
			}
			switch {
			case dialect == "v1" && d.Content != nil && d.Reasoning == true:
				a.Reasoning += *d.Content
			case dialect == "openai" && d.Reasoning != nil:
				if s, ok := d.Reasoning.(string); ok {
					a.Reasoning += s
				}
			}
			if d.Content != nil && !(dialect == "v1" && d.Reasoning == true) {
				text := *d.Content
				if i := strings.Index(text, "\n\n[Error: "); dialect == "v1" && i >= 0 {
					a.Errors = append(a.Errors, strings.TrimSuffix(text[i+len("\n\n[Error: "):], "]"))
					text = text[:i]
				}
				a.Content += text
			}
		}
	}
	return sc.Err()
}

// readNDJSON reads an Ollama stream.
func (a *answer) readNDJSON(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var line struct {
			Message *struct {
				Content  string `json:"content"`
				Thinking string `json:"thinking"`
			} `json:"message"`
			Done       bool   `json:"done"`
			DoneReason string `json:"done_reason"`
			Error      string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return fmt.Errorf("bad line %.200q: %w", sc.Text(), err)
		}
		if line.Error != "" {
			a.Errors = append(a.Errors, line.Error)
		}
		if line.Message != nil {
			a.Content += line.Message.Content
			a.Reasoning += line.Message.Thinking
		}
		if line.Done {
			a.Done, a.Finish = true, line.DoneReason
			a.Usage = ollamaUsage(sc.Bytes())
		}
	}
	return sc.Err()
}

// parseWhole reads a non-streamed answer.
func (a *answer) parseWhole(dialect string, b []byte) {
	switch dialect {
	case "openai":
		var v struct {
			Choices []struct {
				Message struct {
					Content   *string `json:"content"`
					Reasoning string  `json:"reasoning"`
				} `json:"message"`
				FinishReason string `json:"finish_reason"`
			} `json:"choices"`
			Usage map[string]float64 `json:"usage"`
		}
		if json.Unmarshal(b, &v) == nil && len(v.Choices) == 1 {
			a.Usage = v.Usage
			if c := v.Choices[0].Message.Content; c != nil {
				a.Content = *c
			}
			a.Reasoning, a.Finish, a.Done = v.Choices[0].Message.Reasoning, v.Choices[0].FinishReason, true
		}
	case "ollama":
		var v struct {
			Message struct {
				Content  string `json:"content"`
				Thinking string `json:"thinking"`
			} `json:"message"`
			Done       bool   `json:"done"`
			DoneReason string `json:"done_reason"`
		}
		if json.Unmarshal(b, &v) == nil {
			a.Content, a.Reasoning, a.Finish, a.Done = v.Message.Content, v.Message.Thinking, v.DoneReason, v.Done
			a.Usage = ollamaUsage(b)
		}
	}
}

// ollamaUsage reads the counts and durations of an Ollama final line.
func ollamaUsage(b []byte) map[string]float64 {
	var v map[string]any
	if json.Unmarshal(b, &v) != nil {
		return nil
	}
	out := map[string]float64{}
	for _, k := range []string{"eval_count", "prompt_eval_count", "eval_duration", "prompt_eval_duration", "load_duration", "total_duration"} {
		if f, ok := v[k].(float64); ok {
			out[k] = f
		}
	}
	return out
}

// chatBody is a minimal chat request in any dialect: one user message.
func chatBody(dialect, model, prompt string, extra map[string]any) map[string]any {
	b := map[string]any{"model": model, "messages": []map[string]any{{"role": "user", "content": prompt}}}
	if dialect == "openai" {
		b["stream"] = true
	}
	for k, v := range extra {
		b[k] = v
	}
	return b
}
