package jsonscan

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestStr(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{`"Hel"`, "Hel", true},
		{`  ""`, "", true},
		{`"a\nb \"q\" \u00e9\u003c\/\\\b\f\r\t"`, "a\nb \"q\" é</\\\b\f\r\t", true},
		{`"\u0000"`, "\x00", true},
		{`"héllo 😀"`, "héllo 😀", true},
		{"\"\xef\xbf\xbd\"", "\ufffd", true}, // a real U+FFFD is kept
		{`"\ud83d\ude00"`, "", false},        // surrogates: left to encoding/json
		{`"\udfff"`, "", false},
		{"\"\xff\"", "", false},    // invalid UTF-8: encoding/json substitutes
		{"\"\\n\xff\"", "", false}, // also after an escape
		{"\"a\tb\"", "", false},    // raw control character
		{"\"\\\x01\"", "", false},
		{`"\x41"`, "", false},
		{`"\u12"`, "", false},
		{`"\u12G4"`, "", false},
		{`"abc`, "", false},
		{`"abc\"`, "", false},
		{`"abc\`, "", false},
		{`null`, "", false},
		{`1`, "", false},
		{``, "", false},
	} {
		p := New([]byte(tc.in))
		got, ok := p.Str()
		if ok != tc.ok || got != tc.want {
			t.Errorf("Str(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestStrKnown(t *testing.T) {
	const known = "assistant"
	for _, in := range []string{`"assistant"`, `"assist\u0061nt"`} {
		p := New([]byte(in))
		got, ok := p.StrKnown(known)
		if !ok || got != known {
			t.Errorf("StrKnown(%s) = %q, %v", in, got, ok)
		}
	}
	p := New([]byte(`"user"`))
	if got, ok := p.StrKnown(known); !ok || got != "user" {
		t.Errorf("StrKnown(user) = %q, %v", got, ok)
	}
	data := []byte(`"assistant"`)
	if n := testing.AllocsPerRun(100, func() {
		p := New(data)
		if s, _ := p.StrKnown(known); s != known {
			t.Fatal(s)
		}
	}); n != 0 {
		t.Errorf("StrKnown of the known value allocates %v times", n)
	}
}

func TestInt(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{`0`, 0, true},
		{`-0`, 0, true},
		{` 42,`, 42, true},
		{`-17}`, -17, true},
		{`9223372036854775807`, 1<<63 - 1, true},
		{`-9223372036854775808`, -1 << 63, true},
		{`9223372036854775808`, 0, false},
		{`-9223372036854775809`, 0, false},
		{`18446744073709551616`, 0, false},
		{`99999999999999999999`, 0, false},
		{`01`, 0, false},
		{`-01`, 0, false},
		{`00`, 0, false},
		{`+1`, 0, false},
		{`-`, 0, false},
		{`1.0`, 0, false},
		{`1.5`, 0, false},
		{`1e3`, 0, false},
		{`1E3`, 0, false},
		{`"1"`, 0, false},
		{`null`, 0, false},
		{``, 0, false},
	} {
		p := New([]byte(tc.in))
		got, ok := p.Int()
		if ok != tc.ok || got != tc.want {
			t.Errorf("Int(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestBool(t *testing.T) {
	for _, tc := range []struct {
		in       string
		want, ok bool
	}{
		{`true`, true, true},
		{` false`, false, true},
		{`null`, false, false},
		{`tru`, false, false},
		{`"true"`, false, false},
		{`1`, false, false},
	} {
		p := New([]byte(tc.in))
		got, ok := p.Bool()
		if ok != tc.ok || got != tc.want {
			t.Errorf("Bool(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestObject reads objects holding one string field "s" and one integer
// field "n".
func TestObject(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{}`, true},
		{` { } `, true},
		{`{"s":"x","n":1}`, true},
		{"\t{ \"n\" :\r\n-2 , \"s\" : \"\" }\n", true},
		{`{"s":"x",}`, false},
		{`{"s":"x" "n":1}`, false},
		{`{"s" "x"}`, false},
		{`{s:"x"}`, false},
		{`{"\u0073":"x"}`, false}, // escaped key
		{`{"ſ":"x"}`, false},      // non-ASCII key
		{"{\"s\x01\":\"x\"}", false},
		{`{"other":"x"}`, false},
		{`{"s":"x"`, false},
		{`{"s":"x"}x`, false},
		{`{"s":"x"}{}`, false},
		{`[]`, false},
		{``, false},
	} {
		p := New([]byte(tc.in))
		ok := p.Object(func(key []byte) bool {
			switch string(key) {
			case "s":
				_, ok := p.Str()
				return ok
			case "n":
				_, ok := p.Int()
				return ok
			}
			return false
		}) && p.End()
		if ok != tc.ok {
			t.Errorf("Object(%q) = %v, want %v", tc.in, ok, tc.ok)
		}
		if ok && !json.Valid([]byte(tc.in)) {
			t.Errorf("Object accepted invalid JSON %q", tc.in)
		}
	}
}

// FuzzStr checks that a string Str accepts is valid JSON and decodes as
// encoding/json decodes it:
//
//	go test -run='^$' -fuzz=FuzzStr -fuzztime=30s ./internal/jsonscan/
func FuzzStr(f *testing.F) {
	for _, s := range []string{`"Hel"`, `""`, `"a\nb \"q\" \u00e9\u003c\/"`, `"\ud83d\ude00"`,
		"\"\xff\"", `"\u0000"`, `"😀"`, `"a\`, ` "x" `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := New(data)
		fast, ok := p.Str()
		// SkipStr accepts exactly what Str accepts, and stops at the same place.
		q := New(data)
		if skipped := q.SkipStr(); skipped != ok || (ok && q.i != p.i) {
			t.Fatalf("SkipStr(%q) = %v at %d, Str %v at %d", data, skipped, q.i, ok, p.i)
		}
		if !ok || !p.End() {
			return
		}
		var slow string
		if err := json.Unmarshal(data, &slow); err != nil {
			t.Fatalf("Str accepted what encoding/json refuses (%v): %q", err, data)
		}
		if fast != slow {
			t.Fatalf("Str(%q) = %q, encoding/json %q", data, fast, slow)
		}
	})
}

// FuzzInt checks that an integer Int accepts is valid JSON and decodes as
// encoding/json decodes it into an int64, and that Int accepts every
// integer that encoding/json does:
//
//	go test -run='^$' -fuzz=FuzzInt -fuzztime=30s ./internal/jsonscan/
func FuzzInt(f *testing.F) {
	for _, s := range []string{`0`, `-0`, `42`, `9223372036854775807`, `-9223372036854775808`,
		`9223372036854775808`, `01`, `1.0`, `1e3`, `-`, ` 7 `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := New(data)
		fast, ok := p.Int()
		ok = ok && p.End()
		var slow int64
		err := json.Unmarshal(data, &slow)
		switch {
		case ok && err != nil:
			t.Fatalf("Int accepted what encoding/json refuses (%v): %q", err, data)
		case ok && fast != slow:
			t.Fatalf("Int(%q) = %d, encoding/json %d", data, fast, slow)
		case !ok && err == nil && !isNull(data):
			// encoding/json leaves an int64 alone on null; anything
			// else it decodes is a plain integer Int must take.
			t.Fatalf("Int refused %q, which encoding/json decodes as %d", data, slow)
		}
	})
}

// isNull reports whether data, which encoding/json decoded, is null.
func isNull(data []byte) bool {
	return string(bytes.TrimSpace(data)) == "null"
}
