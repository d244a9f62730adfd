package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/idleclaw/idleclaw/internal/wire"
)

// MaxConfigFile bounds a config file.
const MaxConfigFile = 1 << 20

// maxMapEntries bounds a model map.
const maxMapEntries = 256

// File is a gateway config file (JSON). A nil field was not given.
//
//	{
//	  "provider_url": "https://api.openai.com/v1",
//	  "provider_key": "sk-...",
//	  "network": "https://api.idleclaw.com",
//	  "models": {"gpt-4o-mini": "llama3.2:3b", "*": "llama3.2:3b"},
//	  "on_rate_limit": "retry",
//	  "quota_cooldown": "1h", "probe_every": "10m", "error_cooldown": "30s", "max_retry_wait": "10s"
//	}
type File struct {
	ProviderURL   *string           `json:"provider_url"`
	ProviderKey   *string           `json:"provider_key"`
	Network       *string           `json:"network"`
	Models        map[string]string `json:"models"`
	OnRateLimit   *string           `json:"on_rate_limit"`
	QuotaCooldown *Duration         `json:"quota_cooldown"`
	ProbeEvery    *Duration         `json:"probe_every"`
	ErrorCooldown *Duration         `json:"error_cooldown"`
	MaxRetryWait  *Duration         `json:"max_retry_wait"`
}

// Duration is a time.Duration written as "90s" in JSON, 0..24h.
type Duration time.Duration

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`a duration is a string such as "10m"`)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 || v > 24*time.Hour {
		return fmt.Errorf("invalid duration %q (0..24h, such as \"10m\")", s)
	}
	*d = Duration(v)
	return nil
}

// ParseFile decodes and checks a config file's contents.
func ParseFile(data []byte) (File, error) {
	var f File
	if len(data) > MaxConfigFile {
		return f, fmt.Errorf("config file over %d bytes", MaxConfigFile)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return File{}, fmt.Errorf("config file: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return File{}, errors.New("config file: more than one JSON value")
	}
	if f.ProviderURL != nil {
		if err := CheckBaseURL(*f.ProviderURL); err != nil {
			return File{}, fmt.Errorf("config file: provider_url: %w", err)
		}
	}
	if f.Network != nil {
		if err := CheckBaseURL(*f.Network); err != nil {
			return File{}, fmt.Errorf("config file: network: %w", err)
		}
	}
	if f.ProviderKey != nil {
		if err := checkKey(*f.ProviderKey); err != nil {
			return File{}, fmt.Errorf("config file: provider_key: %w", err)
		}
	}
	if f.OnRateLimit != nil {
		if err := checkOnRateLimit(*f.OnRateLimit); err != nil {
			return File{}, fmt.Errorf("config file: %w", err)
		}
	}
	if err := checkMap(f.Models); err != nil {
		return File{}, fmt.Errorf("config file: models: %w", err)
	}
	return f, nil
}

// LoadFile reads and checks a config file. warn is set when the file
// holds a key and others than its owner may read it.
func LoadFile(path string) (f File, warn string, err error) {
	fh, err := os.Open(path)
	if err != nil {
		return File{}, "", fmt.Errorf("read config: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, MaxConfigFile+1))
	if err != nil {
		return File{}, "", fmt.Errorf("read config %s: %w", path, err)
	}
	f, err = ParseFile(data)
	if err != nil {
		return File{}, "", fmt.Errorf("%s: %w", path, err)
	}
	if st, err := fh.Stat(); err == nil && f.ProviderKey != nil && st.Mode().Perm()&0o077 != 0 {
		warn = fmt.Sprintf("%s holds an API key and is readable by others (mode %v): chmod 600 it", path, st.Mode().Perm())
	}
	return f, warn, nil
}

// CheckBaseURL refuses a base URL that is not http(s)://host[/path].
func CheckBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q is not an http(s) base URL such as https://api.openai.com/v1", s)
	}
	return nil
}

func checkKey(k string) error {
	if len(k) > 4096 {
		return errors.New("longer than 4096 bytes")
	}
	for i := 0; i < len(k); i++ {
		if k[i] <= ' ' || k[i] >= 0x7f {
			return errors.New("holds a space or a character that is not printable ASCII")
		}
	}
	return nil
}

func checkOnRateLimit(s string) error {
	if s != "retry" && s != "fallback" {
		return fmt.Errorf("on_rate_limit %q: retry or fallback", s)
	}
	return nil
}

// ParseModelMap reads "gpt-4o-mini=llama3.2:3b,gpt-4o=qwen3:8b" (a "*"
// on the left names the default for every other model).
func ParseModelMap(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		from, to, ok := strings.Cut(item, "=")
		from, to = strings.TrimSpace(from), strings.TrimSpace(to)
		if !ok || from == "" || to == "" {
			return nil, fmt.Errorf("%q is not provider-model=network-model", item)
		}
		out[from] = to
	}
	if err := checkMap(out); err != nil {
		return nil, err
	}
	return out, nil
}

func checkMap(m map[string]string) error {
	if len(m) > maxMapEntries {
		return fmt.Errorf("more than %d entries", maxMapEntries)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "" || len(k) > 256 || strings.ContainsFunc(k, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return fmt.Errorf("provider model %q: 1..256 characters, no spaces", k)
		}
		if !wire.ValidModelName(m[k]) {
			return fmt.Errorf("network model %q (for %s) is not a valid model name", m[k], k)
		}
	}
	return nil
}
