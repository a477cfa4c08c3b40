package testmqtt

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

// ClientCommonName is the subject common name of Certs' client certificate.
const ClientCommonName = "edged-test-client"

// Certs are a test CA and two certificates it signed, a broker's and a client's, as PEM
// files (keys unencrypted, PKCS #8) in a folder of the test's. All keys are ECDSA P-256.
type Certs struct {
	// CAFile is the CA's certificate.
	CAFile string
	// ServerCertFile and ServerKeyFile are the broker's, valid for 127.0.0.1, ::1 and
	// localhost.
	ServerCertFile string
	ServerKeyFile  string
	// ClientCertFile and ClientKeyFile are a client's, with common name
	// ClientCommonName.
	ClientCertFile string
	ClientKeyFile  string
	// Pool holds the CA certificate, for a tls.Config's RootCAs.
	Pool *x509.CertPool

	client tls.Certificate
}

// NewCerts makes a fresh CA and the certificates it signs, valid from an hour ago for a
// day. Two calls give two CAs that do not trust each other's certificates, which is how
// a test gets a wrong CA or an untrusted client certificate.
func NewCerts(t testing.TB) *Certs {
	t.Helper()
	dir := t.TempDir()
	c := &Certs{
		CAFile:         filepath.Join(dir, "ca.pem"),
		ServerCertFile: filepath.Join(dir, "server.pem"),
		ServerKeyFile:  filepath.Join(dir, "server-key.pem"),
		ClientCertFile: filepath.Join(dir, "client.pem"),
		ClientKeyFile:  filepath.Join(dir, "client-key.pem"),
		Pool:           x509.NewCertPool(),
	}
	now := time.Now()
	ca := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "edged test CA " + filepath.Base(dir)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caCert, caKey := issue(t, ca, nil, nil, c.CAFile, "")
	c.Pool.AddCert(caCert)

	issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}, caCert, caKey, c.ServerCertFile, c.ServerKeyFile)

	issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: ClientCommonName},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, caKey, c.ClientCertFile, c.ClientKeyFile)
	client, err := tls.LoadX509KeyPair(c.ClientCertFile, c.ClientKeyFile)
	if err != nil {
		t.Fatalf("load the test client certificate: %v", err)
	}
	c.client = client
	return c
}

// ClientTLS returns a client config that trusts the CA, with the client certificate
// when withCert is true.
func (c *Certs) ClientTLS(withCert bool) *tls.Config {
	cfg := &tls.Config{RootCAs: c.Pool, MinVersion: tls.VersionTLS12}
	if withCert {
		cfg.Certificates = []tls.Certificate{c.client}
	}
	return cfg
}

// issue makes a key and a certificate from tmpl, signed by parent (self-signed when
// parent is nil), and writes them as PEM to certPath and, unless empty, keyPath.
func issue(t testing.TB, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate test key: %v", err)
	}
	tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("test certificate serial: %v", err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatalf("create test certificate %s: %v", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse test certificate %s: %v", tmpl.Subject.CommonName, err)
	}
	writePEM(t, certPath, "CERTIFICATE", der)
	if keyPath != "" {
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatalf("encode test key: %v", err)
		}
		writePEM(t, keyPath, "PRIVATE KEY", kder)
	}
	return cert, key
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}
