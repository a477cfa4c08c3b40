package opcua

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"time"
)

// GenerateCertificate writes a self-signed client certificate and its RSA 2048 key as
// PEM files (the key with mode 0600), for security_policy Basic256Sha256. OPC UA
// servers match the certificate's URI SAN against the client's application URI, so
// appURI goes there (and becomes the driver's application URI); hosts become DNS or IP
// SANs. The server must then trust the certificate (its trust list, or its operator
// accepting it once).
func GenerateCertificate(certPath, keyPath string, hosts []string, appURI string, validFor time.Duration) error {
	if certPath == "" || keyPath == "" {
		return errors.New("opcua cert: certificate and key paths are required")
	}
	if validFor <= 0 {
		return fmt.Errorf("opcua cert: validity %v must be above 0", validFor)
	}
	u, err := url.Parse(appURI)
	if err != nil || u.Scheme == "" {
		return fmt.Errorf("opcua cert: application URI %q is not a URI like urn:edged:line1", appURI)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("opcua cert: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return fmt.Errorf("opcua cert: serial number: %w", err)
	}
	now := time.Now()
	tmpl := x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "edged", Organization: []string{"edged"}},
		NotBefore:    now.Add(-time.Hour), // tolerate a PLC whose clock is a little behind
		NotAfter:     now.Add(validFor),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment |
			x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("opcua cert: create certificate: %w", err)
	}
	if err := writePEM(keyPath, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key), 0o600); err != nil {
		return err
	}
	return writePEM(certPath, "CERTIFICATE", der, 0o644)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("opcua cert: %w", err)
	}
	// An existing file keeps its mode through O_TRUNC; a key must not stay readable.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("opcua cert: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: typ, Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("opcua cert: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("opcua cert: write %s: %w", path, err)
	}
	return nil
}
