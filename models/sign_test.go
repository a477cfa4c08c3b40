package models_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgedrun/edged/models"
)

// testKey is a fixed key, so that fuzzing and failures are reproducible.
func testKey(seed byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	return priv.Public().(ed25519.PublicKey), priv
}

func inlineKey(pub ed25519.PublicKey) string {
	return "ed25519:" + base64.StdEncoding.EncodeToString(pub)
}

func keyring(t testing.TB, pubs ...ed25519.PublicKey) *models.Keyring {
	t.Helper()
	var keys []string
	for _, p := range pubs {
		keys = append(keys, inlineKey(p))
	}
	k, err := models.NewKeyring(keys)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signedDemo is the demo manifest with golden frames, signed by key seed 1.
func signedDemo(t testing.TB) *models.Manifest {
	t.Helper()
	m, err := models.ParseManifest(demoManifestBytes(t))
	if err != nil {
		t.Fatal(err)
	}
	m.Golden = []models.Golden{{Input: []float32{0.1, -2.5, 3e-7}, Output: []float32{1, 0, 0, 0}, Tolerance: 0.01}}
	_, priv := testKey(1)
	if err := models.Sign(m, priv); err != nil {
		t.Fatal(err)
	}
	return m
}

// roundTrip is what happens to a manifest between the signer and the box: written as
// a file, read back.
func roundTrip(t testing.TB, m *models.Manifest) *models.Manifest {
	t.Helper()
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got, err := models.ParseManifest(b)
	if err != nil {
		t.Fatalf("signed manifest does not parse: %v\n%s", err, b)
	}
	return got
}

func TestSignVerifyRoundTrip(t *testing.T) {
	pub, _ := testKey(1)
	m := signedDemo(t)
	if want := models.KeyID(pub); m.KeyID != want {
		t.Errorf("key id %q, want %q", m.KeyID, want)
	}
	if !strings.HasPrefix(m.KeyID, "ed25519:") || len(m.KeyID) != len("ed25519:")+16 {
		t.Errorf("key id %q is not ed25519: and 16 hex digits", m.KeyID)
	}
	k := keyring(t, pub)
	if err := k.Verify(m); err != nil {
		t.Fatalf("freshly signed: %v", err)
	}
	if err := k.Verify(roundTrip(t, m)); err != nil {
		t.Fatalf("after encode and parse: %v", err)
	}
}

// TestVerifyCreatedOffset: a manifest whose time was written with another offset, or
// with a monotonic reading, signs and verifies as the same instant.
func TestVerifyCreatedOffset(t *testing.T) {
	pub, priv := testKey(1)
	m := signedDemo(t)
	m.Created = time.Now() // carries a monotonic reading and the local zone
	if err := models.Sign(m, priv); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	utc := m.Created.UTC().Format(time.RFC3339Nano)
	shifted := m.Created.In(time.FixedZone("plant", 5*3600+1800)).Format(time.RFC3339Nano)
	b = bytes.Replace(b, []byte(m.Created.Format(time.RFC3339Nano)), []byte(shifted), 1)
	got, err := models.ParseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Created.Format(time.RFC3339Nano) == utc {
		t.Fatalf("the test did not shift the offset: %s", b)
	}
	if err := keyring(t, pub).Verify(got); err != nil {
		t.Errorf("created %s (signed as %s): %v", got.Created.Format(time.RFC3339Nano), utc, err)
	}
}

func TestVerifyRefusesChanges(t *testing.T) {
	pub, _ := testKey(1)
	k := keyring(t, pub)
	for _, tc := range []struct {
		name   string
		change func(m *models.Manifest)
	}{
		{"threshold", func(m *models.Manifest) { m.Postprocess.Threshold = 0.51 }},
		{"a label", func(m *models.Manifest) { m.Postprocess.Labels[1] = "crak" }},
		{"ok labels", func(m *models.Manifest) { m.Postprocess.OKLabels = append(m.Postprocess.OKLabels, "crack") }},
		{"sha256", func(m *models.Manifest) { m.SHA256 = strings.Repeat("0", 64) }},
		{"sha256 case", func(m *models.Manifest) { m.SHA256 = strings.ToUpper(m.SHA256) }},
		{"size", func(m *models.Manifest) { m.Size++ }},
		{"version", func(m *models.Manifest) { m.Version = "1.0.1" }},
		{"name", func(m *models.Manifest) { m.Name = "el-defect2" }},
		{"a golden input", func(m *models.Manifest) { m.Golden[0].Input[1] = -2.4 }},
		{"a golden output", func(m *models.Manifest) { m.Golden[0].Output[0] = 0.9 }},
		{"golden tolerance", func(m *models.Manifest) { m.Golden[0].Tolerance = 1 }},
		{"golden dropped", func(m *models.Manifest) { m.Golden = nil }},
		{"mean", func(m *models.Manifest) { m.Preprocess.Mean[0] = 0.5 }},
		{"input shape", func(m *models.Manifest) { m.Inputs[0].Shape[2] = 32 }},
		{"created", func(m *models.Manifest) { m.Created = m.Created.Add(time.Nanosecond) }},
		{"description", func(m *models.Manifest) { m.Description += "." }},
		{"signature flipped", func(m *models.Manifest) {
			sig, _ := base64.StdEncoding.DecodeString(m.Signature)
			sig[10] ^= 1
			m.Signature = base64.StdEncoding.EncodeToString(sig)
		}},
		{"signature not base64", func(m *models.Manifest) { m.Signature = "!!" + m.Signature[2:] }},
		{"signature short", func(m *models.Manifest) { m.Signature = m.Signature[:40] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := roundTrip(t, signedDemo(t))
			tc.change(m)
			err := k.Verify(roundTrip(t, m))
			if !errors.Is(err, models.ErrBadSignature) {
				t.Fatalf("Verify: %v; want ErrBadSignature", err)
			}
			for _, w := range []string{m.Name, m.Version, m.KeyID} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

func TestVerifyUnsignedAndUnknownKey(t *testing.T) {
	pub1, _ := testKey(1)
	pub2, priv2 := testKey(2)

	m := signedDemo(t)
	m.Signature, m.KeyID = "", ""
	if err := keyring(t, pub1).Verify(m); !errors.Is(err, models.ErrUnsigned) || !strings.Contains(err.Error(), "el-defect 1.0.0") {
		t.Errorf("unsigned: %v; want ErrUnsigned naming the model", err)
	}

	m = signedDemo(t)
	if err := models.Sign(m, priv2); err != nil {
		t.Fatal(err)
	}
	err := keyring(t, pub1).Verify(m)
	if !errors.Is(err, models.ErrUnknownKey) || !strings.Contains(err.Error(), models.KeyID(pub2)) {
		t.Errorf("signed by an untrusted key: %v; want ErrUnknownKey naming %s", err, models.KeyID(pub2))
	}
	if err := keyring(t).Verify(m); !errors.Is(err, models.ErrUnknownKey) {
		t.Errorf("empty keyring: %v; want ErrUnknownKey", err)
	}
	if err := keyring(t, pub1, pub2).Verify(m); err != nil {
		t.Errorf("second of two trusted keys: %v", err)
	}

	// A signature by key 2 claiming to be by key 1 is a bad signature, not a pass.
	m.KeyID = models.KeyID(pub1)
	if err := keyring(t, pub1, pub2).Verify(m); !errors.Is(err, models.ErrBadSignature) {
		t.Errorf("key id of another trusted key: %v; want ErrBadSignature", err)
	}
}

// TestCanonicalIgnoresSignature: signing changes only Signature and KeyID, and the
// bytes signed are those of the manifest without them.
func TestCanonicalIgnoresSignature(t *testing.T) {
	m := signedDemo(t)
	a, err := m.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	m.Signature, m.KeyID = "", ""
	b, err := m.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("canonical bytes depend on the signature:\n%s\n%s", a, b)
	}
	if bytes.Contains(a, []byte("signature")) || bytes.Contains(a, []byte("key_id")) {
		t.Errorf("canonical bytes hold the signature fields: %s", a)
	}
	pub, _ := testKey(1)
	if !ed25519.Verify(pub, a, mustB64(t, signedDemo(t).Signature)) {
		t.Error("signature is not over Canonical()")
	}
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignRefusesShortKey(t *testing.T) {
	m := signedDemo(t)
	if err := models.Sign(m, ed25519.PrivateKey(make([]byte, 10))); err == nil || !strings.Contains(err.Error(), "10 bytes") {
		t.Errorf("Sign with a 10-byte key: %v", err)
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	pub, priv, err := models.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	privPath, pubPath := filepath.Join(dir, "model.key"), filepath.Join(dir, "model.pub")
	if err := models.WritePrivateKey(privPath, priv); err != nil {
		t.Fatal(err)
	}
	if err := models.WritePublicKey(pubPath, pub); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{privPath: 0o600, pubPath: 0o644} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		// The umask may take bits away, never add them.
		if got := fi.Mode().Perm(); got&^want != 0 {
			t.Errorf("%s: mode %v, want at most %v", path, got, want)
		}
	}
	for path, typ := range map[string]string{privPath: "-----BEGIN PRIVATE KEY-----", pubPath: "-----BEGIN PUBLIC KEY-----"} {
		if b, _ := os.ReadFile(path); !bytes.HasPrefix(b, []byte(typ)) {
			t.Errorf("%s starts %q, want %q", path, b[:min(len(b), 30)], typ)
		}
	}

	gotPriv, err := models.ReadPrivateKey(privPath)
	if err != nil || !gotPriv.Equal(priv) {
		t.Fatalf("ReadPrivateKey: %v, same key %v", err, gotPriv.Equal(priv))
	}
	for _, s := range []string{pubPath, inlineKey(pub)} {
		got, err := models.ParsePublicKey(s)
		if err != nil || !got.Equal(pub) {
			t.Errorf("ParsePublicKey(%q): %v, same key %v", s, err, got.Equal(pub))
		}
	}

	// A key written, read back and used signs what a keyring of the public file trusts.
	m := signedDemo(t)
	if err := models.Sign(m, gotPriv); err != nil {
		t.Fatal(err)
	}
	k, err := models.NewKeyring([]string{pubPath})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Verify(roundTrip(t, m)); err != nil {
		t.Errorf("keyring of %s: %v", pubPath, err)
	}

	// Never overwrite: a second keygen to the same path must not lose the first key.
	_, other, _ := models.GenerateKey()
	if err := models.WritePrivateKey(privPath, other); err == nil || !strings.Contains(err.Error(), privPath) {
		t.Errorf("overwrite of %s: %v; want an error naming it", privPath, err)
	}
	if err := models.WritePublicKey(pubPath, other.Public().(ed25519.PublicKey)); err == nil || !strings.Contains(err.Error(), pubPath) {
		t.Errorf("overwrite of %s: %v; want an error naming it", pubPath, err)
	}
	if again, _ := models.ReadPrivateKey(privPath); !again.Equal(priv) {
		t.Error("the private key file changed")
	}
}

func TestKeyFilesRefused(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pub, priv := testKey(3)
	privPath := filepath.Join(dir, "real.key")
	if err := models.WritePrivateKey(privPath, priv); err != nil {
		t.Fatal(err)
	}
	pubPath := filepath.Join(dir, "real.pub")
	if err := models.WritePublicKey(pubPath, pub); err != nil {
		t.Fatal(err)
	}
	// An RSA public key, as openssl writes one: PEM PUBLIC KEY, but not ed25519.
	rsaPub := write("rsa.pub", "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAL/2JHeGvKRCUAz3pGfy6iUwlvHSvVy/\nYP20XXqeVdCM+Bow5EbD1rcd6nsaz8nAurcDWQHcDuZnLwEnvDNcMsECAwEAAQ==\n-----END PUBLIC KEY-----\n")

	for _, tc := range []struct {
		key  string
		want []string
	}{
		{"", []string{"empty"}},
		{"ed25519:", []string{"0 bytes"}},
		{"ed25519:" + models.KeyID(pub)[8:], []string{"key id"}},
		{"ed25519:not base64!", []string{"not base64"}},
		{"ed25519:" + base64.StdEncoding.EncodeToString(pub[:31]), []string{"31 bytes"}},
		{filepath.Join(dir, "missing.pub"), []string{"missing.pub", "no such file"}},
		{write("garbage.pub", "hello"), []string{"garbage.pub", "no PEM"}},
		{privPath, []string{"real.key", `no PEM "PUBLIC KEY"`}},
		{rsaPub, []string{"rsa.pub", "not an ed25519 key"}},
	} {
		_, err := models.ParsePublicKey(tc.key)
		if err == nil {
			t.Errorf("ParsePublicKey(%q) accepted", tc.key)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ParsePublicKey(%q): %q does not contain %q", tc.key, err, w)
			}
		}
	}

	if _, err := models.ReadPrivateKey(pubPath); err == nil || !strings.Contains(err.Error(), "real.pub") {
		t.Errorf("ReadPrivateKey of a public key: %v", err)
	}
	if _, err := models.ReadPrivateKey(write("bad.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")); err == nil || !strings.Contains(err.Error(), "bad.key") {
		t.Errorf("ReadPrivateKey of a broken key: %v", err)
	}

	_, err := models.NewKeyring([]string{inlineKey(pub), pubPath, "ed25519:AAAA"})
	if err == nil || !strings.Contains(err.Error(), "trusted_keys[2]") {
		t.Errorf("NewKeyring with a bad third key: %v; want an error naming entry 2", err)
	}
}

// FuzzVerifyManifest: any manifest ParseManifest accepts, signed, written out and read
// back, verifies; and the signature does not carry over to another manifest.
func FuzzVerifyManifest(f *testing.F) {
	f.Add(demoManifestBytes(f))
	signed, err := json.Marshal(signedDemo(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(signed)
	f.Add(bytes.Replace(demoManifestBytes(f), []byte(`"2026-11-27T21:28:33Z"`), []byte(`"2026-11-27T23:28:33.123456789+02:00"`), 1))
	f.Add(bytes.Replace(demoManifestBytes(f), []byte(`"description"`), []byte(`"golden":[{"input":[1e-45,3.4e38],"output":[-0],"tolerance":0}],"description"`), 1))
	f.Add(bytes.Replace(demoManifestBytes(f), []byte(`"2026-11-27T21:28:33Z"`), []byte(`"0000-01-01T00:00:00+23:59"`), 1))
	f.Add(bytes.Replace(demoManifestBytes(f), []byte(`"2026-11-27T21:28:33Z"`), []byte(`"9999-12-31T23:59:59-01:00"`), 1))
	pub, priv := testKey(1)
	k := keyring(f, pub)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := models.ParseManifest(b)
		if err != nil {
			return
		}
		// Whatever it came with is checked, never trusted blindly.
		if err := k.Verify(m); err != nil && !errors.Is(err, models.ErrUnsigned) && !errors.Is(err, models.ErrUnknownKey) && !errors.Is(err, models.ErrBadSignature) {
			t.Fatalf("Verify of outside bytes: %v, not one of the three errors", err)
		}
		if err := models.Sign(m, priv); err != nil {
			t.Fatalf("sign a valid manifest: %v", err)
		}
		back := roundTrip(t, m)
		if err := k.Verify(back); err != nil {
			t.Fatalf("signed, encoded and parsed: %v", err)
		}
		back.Size++
		if err := k.Verify(back); !errors.Is(err, models.ErrBadSignature) {
			t.Fatalf("size changed after signing: %v", err)
		}
	})
}

// FuzzParsePublicKey feeds it trusted_keys entries from a config file.
func FuzzParsePublicKey(f *testing.F) {
	pub, _ := testKey(1)
	f.Add(inlineKey(pub))
	f.Add("ed25519:")
	f.Add("ed25519:" + models.KeyID(pub))
	f.Add("ed25519:====")
	f.Fuzz(func(t *testing.T, s string) {
		if !strings.HasPrefix(s, "ed25519:") {
			return // a path: reading files the fuzzer names is not the point
		}
		k, err := models.ParsePublicKey(s)
		if err != nil {
			if k != nil {
				t.Fatal("key and error both returned")
			}
			return
		}
		if len(k) != ed25519.PublicKeySize {
			t.Fatalf("accepted %d bytes as a key", len(k))
		}
	})
}
