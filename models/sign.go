package models

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Errors of Keyring.Verify, so that callers can tell a model nobody signed from one
// signed by a stranger and from one changed after it was signed.
var (
	ErrUnsigned     = errors.New("manifest is not signed")
	ErrUnknownKey   = errors.New("manifest is signed by a key that is not trusted")
	ErrBadSignature = errors.New("manifest signature does not match its content")
)

// keyIDPrefix starts both key ids and inline public keys; what follows tells them apart
// (16 hex digits against 44 base64 characters).
const keyIDPrefix = "ed25519:"

// Canonical is the bytes a signature covers: the manifest encoded with Signature and
// KeyID empty. Created is encoded in UTC so that a manifest read back from a file that
// wrote it with another offset gives the same bytes; encoding/json writes struct fields
// in declaration order and floats in their shortest exact form, so the bytes depend on
// the values alone.
func (m *Manifest) Canonical() ([]byte, error) {
	c := *m
	c.Signature, c.KeyID = "", ""
	c.Created = m.Created.UTC()
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("canonical manifest of %s %s: %w", m.Name, m.Version, err)
	}
	return b, nil
}

// Sign signs the manifest with key, setting KeyID and Signature.
func Sign(m *Manifest, key ed25519.PrivateKey) error {
	if len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("sign %s %s: private key is %d bytes, want %d", m.Name, m.Version, len(key), ed25519.PrivateKeySize)
	}
	b, err := m.Canonical()
	if err != nil {
		return err
	}
	m.KeyID = KeyID(key.Public().(ed25519.PublicKey))
	m.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(key, b))
	return nil
}

// KeyID names a public key in manifests and logs without spelling out the key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return keyIDPrefix + hex.EncodeToString(sum[:8])
}

// GenerateKey makes a new signing key pair.
func GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate ed25519 key: %w", err)
	}
	return pub, priv, nil
}

// WritePrivateKey writes key as PEM "PRIVATE KEY" (PKCS#8), readable by its owner only.
// It never overwrites a file: losing a signing key to a typo is worse than a retry.
func WritePrivateKey(path string, key ed25519.PrivateKey) error {
	if len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("write private key %s: key is %d bytes, want %d", path, len(key), ed25519.PrivateKeySize)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("write private key %s: %w", path, err)
	}
	return writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// ReadPrivateKey reads a key WritePrivateKey wrote (or openssl genpkey -algorithm ed25519).
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("read private key %s: no PEM \"PRIVATE KEY\" block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read private key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("read private key %s: a %T, not an ed25519 key", path, k)
	}
	return priv, nil
}

// WritePublicKey writes pub as PEM "PUBLIC KEY" (PKIX), for models.trusted_keys. It never
// overwrites a file.
func WritePublicKey(path string, pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("write public key %s: key is %d bytes, want %d", path, len(pub), ed25519.PublicKeySize)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return fmt.Errorf("write public key %s: %w", path, err)
	}
	return writeNew(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
}

func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("write key %s: the file exists; remove it first or pick another path", path)
		}
		return fmt.Errorf("write key: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("sync key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("close key %s: %w", path, err)
	}
	return nil
}

// ParsePublicKey reads a public key as models.trusted_keys names one: inline
// "ed25519:<base64 of the 32 raw bytes>", or the path of a PEM "PUBLIC KEY" file.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	if rest, ok := strings.CutPrefix(s, keyIDPrefix); ok {
		raw, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return nil, fmt.Errorf("public key %q: not base64: %w", s, err)
		}
		if len(raw) != ed25519.PublicKeySize {
			hint := ""
			if len(rest) == 16 {
				hint = " (that looks like a key id; give the key itself)"
			}
			return nil, fmt.Errorf("public key %q: %d bytes, an ed25519 key is %d%s", s, len(raw), ed25519.PublicKeySize, hint)
		}
		return ed25519.PublicKey(raw), nil
	}
	if s == "" {
		return nil, errors.New("public key is empty: give a PEM file path or \"ed25519:<base64>\"")
	}
	b, err := os.ReadFile(s)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("public key %s: no PEM \"PUBLIC KEY\" block", s)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", s, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key %s: a %T, not an ed25519 key", s, k)
	}
	return pub, nil
}

// Keyring is the set of keys a model's signature is checked against.
type Keyring struct {
	keys map[string]ed25519.PublicKey
}

// NewKeyring parses keys (each as ParsePublicKey takes it). No keys gives a keyring
// that trusts no one.
func NewKeyring(keys []string) (*Keyring, error) {
	k := &Keyring{keys: make(map[string]ed25519.PublicKey, len(keys))}
	for i, s := range keys {
		pub, err := ParsePublicKey(s)
		if err != nil {
			return nil, fmt.Errorf("models.trusted_keys[%d]: %w", i, err)
		}
		k.keys[KeyID(pub)] = pub
	}
	return k, nil
}

// KeyIDs are the ids of the trusted keys, for logs and status pages.
func (k *Keyring) KeyIDs() []string {
	ids := make([]string, 0, len(k.keys))
	for id := range k.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Verify checks m is signed by a trusted key.
func (k *Keyring) Verify(m *Manifest) error {
	if m.Signature == "" {
		return fmt.Errorf("model %s %s: %w", m.Name, m.Version, ErrUnsigned)
	}
	pub, ok := k.keys[m.KeyID]
	if !ok {
		return fmt.Errorf("model %s %s: key %q: %w", m.Name, m.Version, m.KeyID, ErrUnknownKey)
	}
	sig, err := base64.StdEncoding.DecodeString(m.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("model %s %s: key %s: signature is not %d bytes of base64: %w", m.Name, m.Version, m.KeyID, ed25519.SignatureSize, ErrBadSignature)
	}
	b, err := m.Canonical()
	if err != nil {
		return fmt.Errorf("model %s %s: key %s: %w: %w", m.Name, m.Version, m.KeyID, ErrBadSignature, err)
	}
	if !ed25519.Verify(pub, b, sig) {
		return fmt.Errorf("model %s %s: key %s: %w", m.Name, m.Version, m.KeyID, ErrBadSignature)
	}
	return nil
}
