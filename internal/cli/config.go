package cli

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// maxConfigBytes bounds a --config file.
const maxConfigBytes = 1 << 20

// applyConfigFile sets, from the file at path, every flag not given on the
// command line or by its environment twin. A line is `key = value` or
// `key=value` (key a flag name, with or without its dashes; value optionally
// in double quotes); blank lines and lines starting with # are skipped. An
// unknown key, a key given twice or a bad value is an error naming the
// line.
func (f *flags) applyConfigFile(path string) error {
	file, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read --config: %w", err)
	}
	defer file.Close()
	data, err := io.ReadAll(io.LimitReader(file, maxConfigBytes+1))
	if err != nil {
		return fmt.Errorf("read --config %s: %w", path, err)
	}
	if len(data) > maxConfigBytes {
		return fmt.Errorf("--config %s: larger than %d bytes", path, maxConfigBytes)
	}
	seen := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	sc.Buffer(make([]byte, 0, 4096), maxConfigBytes)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		at := func(format string, a ...any) error {
			return fmt.Errorf("%s:%d: "+format, append([]any{path, n}, a...)...)
		}
		key, value, ok := strings.Cut(line, "=")
		key = strings.TrimLeft(strings.TrimSpace(key), "-")
		if !ok || key == "" {
			return at("want key = value, have %q", line)
		}
		value = strings.TrimSpace(value)
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
			uq, err := strconv.Unquote(value)
			if err != nil {
				return at("%s: bad quoted value %s", key, value)
			}
			value = uq
		}
		fl := f.Lookup(key)
		if fl == nil || key == "config" || len(key) == 1 {
			return at("unknown key %q (keys are the flags of idleclaw %s, without their dashes)", key, strings.TrimPrefix(f.Name(), "idleclaw "))
		}
		if first, dup := seen[key]; dup {
			return at("%s is set already, on line %d", key, first)
		}
		seen[key] = n
		if f.given[key] {
			continue // the command line and the environment win
		}
		if err := fl.Value.Set(value); err != nil {
			return at("invalid %s %q: %v", key, value, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read --config %s: %w", path, err)
	}
	return nil
}
