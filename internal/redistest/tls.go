package redistest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a throw-away certificate authority for one test, and the server
// certificate it signed for 127.0.0.1, ::1 and localhost. Both are made
// with Go's crypto/x509 (no openssl binary needed) and written as PEM files
// in a temporary directory. A CA is immutable and safe for concurrent use.
type CA struct {
	pem      []byte
	pool     *x509.CertPool
	caFile   string
	certFile string
	keyFile  string
}

// NewTestCA generates an ECDSA P-256 CA and a server certificate (server
// and client authentication, valid from an hour ago for a day). Pass it as
// Options.TLS.
func NewTestCA(tb testing.TB) *CA {
	tb.Helper()
	dir := tb.TempDir()
	now := time.Now()

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("redistest: CA key: %v", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "redistest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatalf("redistest: CA certificate: %v", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		tb.Fatalf("redistest: parse CA certificate: %v", err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("redistest: server key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatalf("redistest: server certificate: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("redistest: marshal server key: %v", err)
	}

	ca := &CA{
		pem:      pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pool:     x509.NewCertPool(),
		caFile:   filepath.Join(dir, "ca.crt"),
		certFile: filepath.Join(dir, "server.crt"),
		keyFile:  filepath.Join(dir, "server.key"),
	}
	ca.pool.AddCert(caCert)
	files := []struct {
		path string
		data []byte
	}{
		{ca.caFile, ca.pem},
		{ca.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})},
		{ca.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})},
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			tb.Fatalf("redistest: write %s: %v", filepath.Base(f.path), err)
		}
	}
	return ca
}

// CertPool returns a new pool holding the CA certificate.
func (ca *CA) CertPool() *x509.CertPool { return ca.pool.Clone() }

// PEM returns the CA certificate, PEM-encoded.
func (ca *CA) PEM() []byte { return append([]byte(nil), ca.pem...) }

// CAFile is the path of the CA certificate (PEM).
func (ca *CA) CAFile() string { return ca.caFile }

// CertFile is the path of the server certificate (PEM).
func (ca *CA) CertFile() string { return ca.certFile }

// KeyFile is the path of the server's private key (PEM, PKCS #8).
func (ca *CA) KeyFile() string { return ca.keyFile }

// ClientConfig returns a new client TLS configuration that trusts the CA
// (TLS 1.2 or later). The server name is taken from the dialled address.
func (ca *CA) ClientConfig() *tls.Config {
	return &tls.Config{RootCAs: ca.CertPool(), MinVersion: tls.VersionTLS12}
}
