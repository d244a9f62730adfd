package cluster_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/idleclaw/idleclaw/internal/cluster"
	"github.com/idleclaw/idleclaw/internal/cluster/natstest"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA, as PEM files in dir.
type pki struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	keyDER := func(k *ecdsa.PrivateKey) []byte {
		b, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	sDER, sKey := leaf(2, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	cDER, cKey := leaf(3, "router", x509.ExtKeyUsageClientAuth)
	return pki{
		ca:         write("ca.pem", "CERTIFICATE", caDER),
		serverCert: write("server.pem", "CERTIFICATE", sDER),
		serverKey:  write("server-key.pem", "EC PRIVATE KEY", keyDER(sKey)),
		clientCert: write("client.pem", "CERTIFICATE", cDER),
		clientKey:  write("client-key.pem", "EC PRIVATE KEY", keyDER(cKey)),
	}
}

// TestTLS: routers join a network whose nats-server takes only TLS with
// client certificates, given the CA and their certificate as NATS clients
// take them; a client without a certificate is turned away.
func TestTLS(t *testing.T) {
	p := newPKI(t)
	nats := natstest.StartTLS(t, p.serverCert, p.serverKey, p.ca)
	if !strings.HasPrefix(nats.URL, "tls://") {
		t.Fatalf("URL %s", nats.URL)
	}
	cfg := func(id string) cluster.Config {
		return cluster.Config{URL: nats.URL, RouterID: id, TLSCA: p.ca, TLSCert: p.clientCert, TLSKey: p.clientKey}
	}
	a := newRouterWith(t, cfg("a"))
	b := newRouterWith(t, cfg("b"))
	serve(t, b, "m:latest", 2)
	eventually(t, "router a never saw b's node over TLS", func() bool { return a.c.NodeCount() == 1 })
	if _, _, text := chatTimes(t, a.url, "m"); text != "Echo: hi" {
		t.Fatalf("answer through a over TLS: %q", text)
	}

	// Without a client certificate the server refuses the connection.
	nc, err := natsgo.Connect(nats.URL, natsgo.RootCAs(p.ca), natsgo.Timeout(5*time.Second))
	if err == nil {
		nc.Close()
		t.Fatal("a client without a certificate connected")
	}
	// Nor does it take a client that does not trust its CA.
	nc, err = natsgo.Connect(nats.URL, natsgo.ClientCert(p.clientCert, p.clientKey), natsgo.Timeout(5*time.Second))
	if err == nil {
		nc.Close()
		t.Fatal("a client that does not know the server's CA connected")
	}
	// A certificate without its key is a configuration error.
	bad := cfg("c")
	bad.TLSKey = ""
	if _, err := cluster.New(bad, nil, nil); err == nil {
		t.Fatal("a client certificate without its key was taken")
	}
}
