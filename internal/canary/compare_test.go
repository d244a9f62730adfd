package canary

import (
	"fmt"
	"testing"
)

func TestAgree(t *testing.T) {
	story := "Once upon a time, there was a little girl named Lily. She loved to play outside."
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{story, story, true},
		{story, "Once upon a time, there was a little girl named Lily. She liked to run.", true}, // parts after 8 words
		{story, "once upon a time there was a little girl named Lily!", true},                    // case, punctuation, spacing
		{story, "Once upon a time, there was a big dog named Max.", false},
		{story, "Buy cheap watches at example.com now", false},
		{story, "", false},
		{"", "", true},
		{"Paris.", "Paris", true},
		{"Paris", "Paris is the capital of France and the largest city of it", false}, // one word vs a long answer
		{"The answer is 42.", "The answer is 43.", false},
	} {
		if got := agree(tc.a, tc.b); got != tc.want {
			t.Errorf("agree(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := agree(tc.b, tc.a); got != tc.want {
			t.Errorf("agree is not symmetric for %q, %q", tc.a, tc.b)
		}
	}
}

func TestVerdicts(t *testing.T) {
	honest := "Once upon a time, there was a little girl named Lily who loved flowers."
	honest2 := "Once upon a time, there was a little girl named Lily who loved the sun."
	liar := "Once there lived a king in a castle by the sea."
	for _, tc := range []struct {
		name    string
		answers map[string]string
		trusted map[string]bool
		want    string
	}{
		{"two honest, one liar", map[string]string{"a": honest, "b": honest2, "c": liar}, nil, "map[a:true b:true c:false]"},
		{"two that disagree: no verdict", map[string]string{"a": honest, "c": liar}, nil, "map[]"},
		{"two that agree", map[string]string{"a": honest, "b": honest2}, nil, "map[a:true b:true]"},
		{"a trusted reference decides alone", map[string]string{"t": honest, "c": liar}, map[string]bool{"t": true}, "map[c:false]"},
		{"trusted: the honest agree", map[string]string{"t": honest, "a": honest2, "c": liar}, map[string]bool{"t": true}, "map[a:true c:false]"},
		{"a tie of groups: no verdict", map[string]string{"a": honest, "b": honest2, "c": liar, "d": liar}, nil, "map[]"},
		{"one node: no verdict", map[string]string{"a": honest}, nil, "map[]"},
		{"three liars that differ, two honest", map[string]string{"a": honest, "b": honest2, "x": "spam one two three four five six", "y": liar, "z": "zzz"}, nil,
			"map[a:true b:true x:false y:false z:false]"},
	} {
		if got := fmt.Sprint(verdicts(tc.answers, tc.trusted)); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestParams(t *testing.T) {
	for s, want := range map[string]float64{"8B": 8e9, "7.6b": 7.6e9, "260K": 260e3, "": 0, "x": 0, "1.5M": 1.5e6, "70B": 70e9, "-1B": 0} {
		if got := params(s); got != want {
			t.Errorf("params(%q) = %v, want %v", s, got, want)
		}
	}
}

func FuzzAgree(f *testing.F) {
	f.Add("Once upon a time", "Once upon a time")
	f.Add("", "x")
	f.Fuzz(func(t *testing.T, a, b string) {
		if agree(a, b) != agree(b, a) {
			t.Fatalf("not symmetric: %q %q", a, b)
		}
		if !agree(a, a) {
			t.Fatalf("%q does not agree with itself", a)
		}
	})
}
