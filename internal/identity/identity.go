// Package identity owns a node's cryptographic identity: an Ed25519 key
// kept in a file only its owner can read, the node id derived from the
// public key, and the challenge a router sends and the node signs when it
// registers (docs/protocol.md §2.3). The router verifies the signature, so
// that a node id that derives from a key can only be used by the holder of
// that key, and the record the router keeps of a node follows the key.
package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// IDPrefix starts every node id derived from a key. Keyless nodes may not
// announce an id of this form.
const IDPrefix = "key-"

// NonceSize is the size of a router's challenge.
const NonceSize = 32

// Errors callers branch on.
var (
	ErrPermissions = errors.New("identity file is readable by others")
	ErrBadKey      = errors.New("not an Ed25519 public key")
)

// Key is a node's private key. Safe for concurrent use.
type Key struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
}

// New makes a fresh key.
func New() (*Key, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate identity key: %w", err)
	}
	return &Key{priv: priv, pub: pub}, nil
}

// DefaultPath is where a node keeps its key: $XDG_CONFIG_HOME/idleclaw,
// else ~/.config/idleclaw, file node.key. env looks up the environment.
func DefaultPath(env func(string) string) (string, error) {
	if d := env("XDG_CONFIG_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "idleclaw", "node.key"), nil
	}
	home := env("HOME")
	if home == "" {
		return "", errors.New("identity: neither XDG_CONFIG_HOME nor HOME is set; pass --identity FILE")
	}
	return filepath.Join(home, ".config", "idleclaw", "node.key"), nil
}

// LoadOrCreate reads the key at path, or makes one there (directory 0700,
// file 0600) when there is none; created reports which. A key file that
// others may read is refused (ErrPermissions), as ssh refuses one.
func LoadOrCreate(path string) (k *Key, created bool, err error) {
	k, err = Load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, false, err
	}
	k, err = New()
	if err != nil {
		return nil, false, err
	}
	if err := k.Save(path); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// Load reads a key saved by Save.
func Load(path string) (*Key, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read identity %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("read identity %s: %w (mode %04o; run chmod 600 %s)", path, ErrPermissions, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read identity %s: %w", path, err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("read identity %s: not a PEM private key", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read identity %s: %w", path, err)
	}
	priv, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("read identity %s: not an Ed25519 key", path)
	}
	return &Key{priv: priv, pub: priv.Public().(ed25519.PublicKey)}, nil
}

// Save writes the key (PKCS#8 in PEM, as openssl reads it) with mode 0600,
// creating the directory with 0700. It never replaces an existing file.
func (k *Key) Save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("save identity: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	return nil
}

// Public is the key's public half, as the register frame carries it.
func (k *Key) Public() string { return EncodePublic(k.pub) }

// NodeID is the node id derived from the key.
func (k *Key) NodeID() string { return IDOf(k.pub) }

// Sign signs a router's challenge for the router the node dialed (its
// host, as in the URL) and the node id it registers.
func (k *Key) Sign(nonce []byte, host, nodeID string) string {
	return base64.StdEncoding.EncodeToString(ed25519.Sign(k.priv, message(nonce, host, nodeID)))
}

// EncodePublic is the text form of a public key: "ed25519:" and the key in
// standard base64.
func EncodePublic(pub ed25519.PublicKey) string {
	return "ed25519:" + base64.StdEncoding.EncodeToString(pub)
}

// ParsePublic reads EncodePublic's form, and only it: base64 that leaves
// bits of its last character unused is refused unless they are zero, so
// that one key has one spelling.
func ParsePublic(s string) (ed25519.PublicKey, error) {
	b64, ok := strings.CutPrefix(s, "ed25519:")
	if !ok || len(b64) != base64.StdEncoding.EncodedLen(ed25519.PublicKeySize) {
		return nil, ErrBadKey
	}
	b, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, ErrBadKey
	}
	return ed25519.PublicKey(b), nil
}

// IDOf derives the node id of a public key: IDPrefix and the first 26
// base32 characters (130 bits) of its SHA-256.
func IDOf(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return IDPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))[:26]
}

// Verify checks a node's signature of a challenge.
func Verify(pub ed25519.PublicKey, nonce []byte, host, nodeID, sig string) bool {
	b, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(b) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(pub, message(nonce, host, nodeID), b)
}

// NewNonce makes a router's challenge.
func NewNonce() ([]byte, error) {
	n := make([]byte, NonceSize)
	if _, err := rand.Read(n); err != nil {
		return nil, fmt.Errorf("identity nonce: %w", err)
	}
	return n, nil
}

// message is what a node signs: a fixed context (so that the signature is
// good for nothing else), the nonce, the router host the node dialed (so
// that a router cannot relay another router's challenge to the node
// unnoticed, where routers check it), and the node id.
func message(nonce []byte, host, nodeID string) []byte {
	m := []byte("idleclaw node identity v1\x00")
	m = append(m, nonce...)
	m = append(m, 0)
	m = append(m, strings.ToLower(host)...)
	m = append(m, 0)
	return append(m, nodeID...)
}
