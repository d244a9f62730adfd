package identity

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreatePermissions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cfg", "idleclaw", "node.key")
	k, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("first run: %v created=%v", err, created)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	di, _ := os.Stat(filepath.Dir(path))
	if di.Mode().Perm() != 0o700 {
		t.Errorf("key directory mode %04o, want 0700", di.Mode().Perm())
	}
	// The second run loads the same key, and the id follows it.
	k2, created, err := LoadOrCreate(path)
	if err != nil || created || k2.NodeID() != k.NodeID() || k2.Public() != k.Public() {
		t.Fatalf("second run: %v created=%v id %s vs %s", err, created, k2.NodeID(), k.NodeID())
	}
	// A key others can read is refused, as ssh does.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreate(path); !errors.Is(err, ErrPermissions) {
		t.Errorf("a 0644 key: %v, want ErrPermissions", err)
	}
	// A corrupt file is an error, never silently replaced.
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreate(path); err == nil || !strings.Contains(err.Error(), "PEM") {
		t.Errorf("a corrupt key: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "garbage" {
		t.Error("the corrupt file was overwritten")
	}
}

func TestSignVerify(t *testing.T) {
	k, _ := New()
	other, _ := New()
	nonce, _ := NewNonce()
	pub, err := ParsePublic(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	sig := k.Sign(nonce, "Router.Example:443", k.NodeID())
	if !Verify(pub, nonce, "router.example:443", k.NodeID(), sig) {
		t.Fatal("a good signature was refused")
	}
	nonce2 := bytes.Clone(nonce)
	nonce2[0] ^= 1
	for name, ok := range map[string]bool{
		"other nonce":   Verify(pub, nonce2, "router.example:443", k.NodeID(), sig),
		"other router":  Verify(pub, nonce, "evil.example:443", k.NodeID(), sig),
		"other node id": Verify(pub, nonce, "router.example:443", other.NodeID(), sig),
		"other key":     Verify(ed25519.PublicKey(mustParse(t, other.Public())), nonce, "router.example:443", k.NodeID(), sig),
		"not base64":    Verify(pub, nonce, "router.example:443", k.NodeID(), "%%%"),
		"short":         Verify(pub, nonce, "router.example:443", k.NodeID(), "AAAA"),
	} {
		if ok {
			t.Errorf("%s: verified", name)
		}
	}
	if id := k.NodeID(); !strings.HasPrefix(id, IDPrefix) || len(id) != len(IDPrefix)+26 || id == other.NodeID() {
		t.Errorf("node id %q", id)
	}
}

func mustParse(t *testing.T, s string) ed25519.PublicKey {
	t.Helper()
	p, err := ParsePublic(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func FuzzParsePublic(f *testing.F) {
	k, _ := New()
	f.Add(k.Public())
	f.Add("ed25519:")
	f.Add("ed25519:" + strings.Repeat("A", 44))
	f.Add("rsa:AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		pub, err := ParsePublic(s)
		if err != nil {
			return
		}
		if len(pub) != ed25519.PublicKeySize || EncodePublic(pub) != s {
			t.Fatalf("ParsePublic(%q) = %x, which encodes as %q", s, pub, EncodePublic(pub))
		}
	})
}

func FuzzVerify(f *testing.F) {
	k, _ := New()
	nonce, _ := NewNonce()
	f.Add(nonce, "h", "id", k.Sign(nonce, "h", "id"))
	f.Add([]byte{}, "", "", "")
	pub, err := ParsePublic(k.Public())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, n []byte, host, id, sig string) {
		_ = Verify(pub, n, host, id, sig) // never panics, whatever a node sends
	})
}
