package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// ChatRequest is what the gateway itself reads of a client's
// /v1/chat/completions body; the rest goes on as it came.
type ChatRequest struct {
	Model  string
	Stream bool
}

// maxModelName bounds the model a client names.
const maxModelName = 256

var errNotObject = errors.New("the body must be a JSON object")

// DecodeChatRequest reads a client's chat body: a JSON object whose
// "model", if present, is a string of at most 256 bytes and whose
// "stream", if present, is a boolean.
func DecodeChatRequest(body []byte) (ChatRequest, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) {
			return ChatRequest{}, errNotObject
		}
		return ChatRequest{}, fmt.Errorf("invalid JSON body: %s", jsonErrText(err))
	}
	if fields == nil {
		return ChatRequest{}, errNotObject
	}
	var r ChatRequest
	if raw, ok := fields["model"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &r.Model); err != nil {
			return ChatRequest{}, errors.New("model: must be a string")
		}
		if len(r.Model) > maxModelName || !utf8.ValidString(r.Model) {
			return ChatRequest{}, fmt.Errorf("model: at most %d bytes of UTF-8", maxModelName)
		}
	}
	if raw, ok := fields["stream"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &r.Stream); err != nil {
			return ChatRequest{}, errors.New("stream: must be a boolean")
		}
	}
	return r, nil
}

// jsonErrText is a decode error without Go type names.
func jsonErrText(err error) string {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Sprintf("%s at byte %d", syn.Error(), syn.Offset)
	}
	return "malformed"
}

// withModel returns body with its "model" set to model; every other key
// is kept as sent.
func withModel(body []byte, model string) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, fmt.Errorf("rewrite model: %w", err)
	}
	m, err := json.Marshal(model)
	if err != nil {
		return nil, fmt.Errorf("rewrite model: %w", err)
	}
	fields["model"] = m
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false) // the client's text as it was, not "\u003c" for "<"
	if err := enc.Encode(fields); err != nil {
		return nil, fmt.Errorf("rewrite model: %w", err)
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n")), nil
}
