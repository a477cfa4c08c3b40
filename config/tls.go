package config

import (
	"cmp"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
)

// tlsSchemes are the broker URL schemes that connect over TLS.
var tlsSchemes = []string{"ssl", "tls", "mqtts", "wss"}

// maxPEMFile bounds what is read of a certificate or key file: a mistyped path such
// as /dev/zero must fail, not fill memory. The largest public CA bundles are well below.
const maxPEMFile = 4 << 20

// brokerScheme returns mqtt.broker's URL scheme, lower-cased; "embedded" for the
// embedded broker and "" when the broker is not a URL.
func (m *MQTT) brokerScheme() string {
	if m.Broker == BrokerEmbedded {
		return BrokerEmbedded
	}
	u, err := url.Parse(m.Broker)
	if err != nil {
		return ""
	}
	return strings.ToLower(u.Scheme)
}

// brokerHost returns mqtt.broker's host name or IP address.
func (m *MQTT) brokerHost() string {
	u, err := url.Parse(m.Broker)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// UsesTLS reports whether mqtt.broker is reached over TLS: ssl://, tls://, mqtts://
// or wss://.
func (m *MQTT) UsesTLS() bool { return slices.Contains(tlsSchemes, m.brokerScheme()) }

// TLSConfig returns the TLS settings for the connection to mqtt.broker, for
// publish.Config.TLS: nil (and no error) when the broker is not reached over TLS
// (embedded, tcp://, mqtt://, ws://). It reads the files named under mqtt.tls; an
// error names the key, the file and what is wrong with it. Without mqtt.tls.ca_file
// the broker is verified against the system's roots.
func (m *MQTT) TLSConfig() (*tls.Config, error) {
	if !m.UsesTLS() {
		return nil, nil
	}
	c, errs := m.TLS.load(m.brokerHost())
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// Set reports whether any mqtt.tls key is set.
func (t *BrokerTLS) Set() bool { return *t != BrokerTLS{} }

// load builds the client's TLS config; each fault names its key. host is the broker's
// host, the name verified when server_name is empty.
func (t *BrokerTLS) load(host string) (*tls.Config, []error) {
	var errs []error
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Set here rather than left to the dialer, which fills it from the address
		// only on some paths: paho's proxy and websocket dialers leave it empty.
		ServerName: cmp.Or(t.ServerName, host),
	}
	if t.CAFile != "" {
		pool, err := loadCAs(t.CAFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("mqtt.tls.ca_file: %w", err))
		}
		c.RootCAs = pool
	}
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		errs = append(errs, errors.New("mqtt.tls.key_file: empty while mqtt.tls.cert_file is set; give both or neither"))
	case t.CertFile == "" && t.KeyFile != "":
		errs = append(errs, errors.New("mqtt.tls.cert_file: empty while mqtt.tls.key_file is set; give both or neither"))
	case t.CertFile != "":
		cert, err := loadKeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			errs = append(errs, err)
		} else {
			c.Certificates = []tls.Certificate{cert}
		}
	}
	return c, errs
}

// readPEMFile reads a file of PEM blocks and returns them; the error says what is wrong
// with the file, starting with its quoted name.
func readPEMFile(path string) ([]*pem.Block, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%q cannot be read: %w", path, pathErr(err))
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("%q is a directory, not a PEM file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, fmt.Errorf("%q cannot be read: %w", path, pathErr(err))
	}
	if len(b) > maxPEMFile {
		return nil, fmt.Errorf("%q is larger than %v; not a PEM file", path, ByteSize(maxPEMFile))
	}
	var blocks []*pem.Block
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		blocks = append(blocks, blk)
	}
	if len(blocks) == 0 {
		return nil, fmt.Errorf("%q is not PEM: no -----BEGIN ...----- block found", path)
	}
	return blocks, nil
}

// pathErr drops the operation and path that *fs.PathError repeats: the message names
// the file already.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// blockTypes lists the types of blocks, for messages about a file holding the wrong thing.
func blockTypes(blocks []*pem.Block) string {
	var types []string
	for _, b := range blocks {
		if !slices.Contains(types, b.Type) {
			types = append(types, b.Type)
		}
	}
	return strings.Join(types, ", ")
}

// parseCerts parses every CERTIFICATE block.
func parseCerts(path string, blocks []*pem.Block) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for _, b := range blocks {
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%q: certificate %d does not parse: %w", path, len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%q holds no certificates, only PEM blocks of type %s", path, blockTypes(blocks))
	}
	return certs, nil
}

// loadCAs reads a bundle of CA certificates.
func loadCAs(path string) (*x509.CertPool, error) {
	blocks, err := readPEMFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts(path, blocks)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// loadKeyPair reads the client certificate (with any intermediates after it) and its
// private key. Its errors name the keys, since a fault may lie in either file.
//
// The certificate's validity dates are not checked here: an edge box without a
// real-time clock boots in 1970 and learns the time later, and the broker checks them.
func loadKeyPair(certPath, keyPath string) (tls.Certificate, error) {
	certBlocks, err := readPEMFile(certPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mqtt.tls.cert_file: %w", err)
	}
	certs, err := parseCerts(certPath, certBlocks)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mqtt.tls.cert_file: %w", err)
	}
	keyBlocks, err := readPEMFile(keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mqtt.tls.key_file: %w", err)
	}
	key, err := parseKey(keyPath, keyBlocks)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("mqtt.tls.key_file: %w", err)
	}
	pub, ok := certs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return tls.Certificate{}, fmt.Errorf("mqtt.tls.key_file: %q does not match the certificate in mqtt.tls.cert_file %q (subject %q)",
			keyPath, certPath, certs[0].Subject.String())
	}
	cert := tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range certs {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}

// parseKey parses the first private key block: PKCS #8, PKCS #1 (RSA) or SEC 1 (EC).
func parseKey(path string, blocks []*pem.Block) (crypto.Signer, error) {
	for _, b := range blocks {
		if !strings.HasSuffix(b.Type, "PRIVATE KEY") {
			continue
		}
		if b.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED") {
			return nil, fmt.Errorf("%q holds an encrypted private key; edged needs it unencrypted (protect the file by its permissions)", path)
		}
		var (
			key any
			err error
		)
		switch b.Type {
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		default:
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		}
		if err != nil {
			return nil, fmt.Errorf("%q: the %s block does not parse: %w", path, b.Type, err)
		}
		switch k := key.(type) {
		case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
			return k.(crypto.Signer), nil
		}
		return nil, fmt.Errorf("%q: private key of type %T is not supported; use RSA, ECDSA or Ed25519", path, key)
	}
	return nil, fmt.Errorf("%q holds no private key, only PEM blocks of type %s", path, blockTypes(blocks))
}

// checkTLS validates mqtt.tls against mqtt.broker.
func (v *validation) checkTLS(m *MQTT) {
	t := &m.TLS
	if !t.Set() {
		return
	}
	scheme := m.brokerScheme()
	switch {
	case scheme == BrokerEmbedded:
		v.fail("mqtt.tls: set, but mqtt.broker is %s, which does not use TLS; remove mqtt.tls", BrokerEmbedded)
	case scheme != "" && !slices.Contains(tlsSchemes, scheme):
		v.fail("mqtt.tls: set, but mqtt.broker has scheme %q, which does not use TLS; use %s:// or remove mqtt.tls",
			scheme, strings.Join(tlsSchemes, "://, "))
	}
	if s := t.ServerName; s != "" && net.ParseIP(s) == nil && !hostRE.MatchString(s) {
		v.fail("mqtt.tls.server_name: %q is neither a host name nor an IP address", s)
	}
	_, errs := t.load(m.brokerHost())
	v.errs = append(v.errs, errs...)
}
