package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgedrun/edged/models"
)

const modelUsage = `usage: edged model COMMAND [flags]

  keygen -out DIR [-name NAME]      make a signing key pair: DIR/NAME.key (keep it
                                    off the boxes) and DIR/NAME.pub (list it in
                                    models.trusted_keys)
  sign -key KEY -manifest FILE -model FILE [-out FILE]
                                    write the model's size and sha256 into the
                                    manifest and sign it
  verify -manifest FILE [-model FILE] -trust KEY[,KEY]
                                    check a manifest's signature (and the model
                                    file against it) as a box does
  push TARGET -manifest FILE (-model FILE | -model-url URL) [-stage]
                                    push a model to boxes and wait until each has
                                    swapped (or refused)
  activate TARGET -name NAME -version VERSION
                                    make an installed version the active one
  rollback TARGET -name NAME        go back to the version active before
  list TARGET                       the boxes' models, versions and swap history

TARGET is either boxes by their admin API, -box URL[,URL...] -token TOKEN (the
model file is uploaded to each), or a fleet through the MQTT broker, -broker URL
-site SITE -line LINE [-nodes A,B] [-canary A,B | -canary-count N]: the boxes of
the line that are online are sent a command with -model-url, the address of the
model file on the plant's model server, and each downloads it itself.
`

func cmdModel(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, modelUsage)
		return errUsage
	}
	switch args[0] {
	case "keygen":
		return modelKeygen(args[1:])
	case "sign":
		return modelSign(args[1:])
	case "verify":
		return modelVerify(args[1:])
	case "push", "activate", "rollback", "list":
		return modelRemote(args[0], args[1:])
	case "-h", "--help", "help":
		fmt.Print(modelUsage)
		return nil
	default:
		fmt.Fprintf(os.Stderr, "edged model: unknown command %q\n\n%s", args[0], modelUsage)
		return errUsage
	}
}

func modelKeygen(args []string) error {
	fs := flag.NewFlagSet("edged model keygen", flag.ContinueOnError)
	out := fs.String("out", "", "folder for NAME.key and NAME.pub (required)")
	name := fs.String("name", "model-signing", "file name of the pair, without extension")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	if err := models.CheckName(*name); err != nil {
		return fmt.Errorf("-name: %w", err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	priv, pub := filepath.Join(*out, *name+".key"), filepath.Join(*out, *name+".pub")
	for _, p := range []string{priv, pub} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s exists; a new key would orphan every model signed with the old one: remove it first if you mean it", p)
		}
	}
	pk, sk, err := models.GenerateKey()
	if err != nil {
		return err
	}
	if err := models.WritePrivateKey(priv, sk); err != nil {
		return err
	}
	if err := models.WritePublicKey(pub, pk); err != nil {
		return err
	}
	fmt.Printf("wrote %s (private: keep it on the signing host only) and %s\n", priv, pub)
	fmt.Printf("key id %s\n", models.KeyID(pk))
	fmt.Printf("trust it on the boxes with models.trusted_keys: [%s] or the file's path\n", inlineKey(pk))
	return nil
}

func inlineKey(pub []byte) string {
	return "ed25519:" + base64Std(pub)
}

func modelSign(args []string) error {
	fs := flag.NewFlagSet("edged model sign", flag.ContinueOnError)
	key := fs.String("key", "", "private key file from edged model keygen (required)")
	manifest := fs.String("manifest", "", "manifest to sign (required)")
	model := fs.String("model", "", "the model file the manifest describes (required)")
	out := fs.String("out", "", "where to write the signed manifest (default: over -manifest)")
	version := fs.String("version", "", "set the manifest's version first")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *key == "" || *manifest == "" || *model == "" || fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	if *out == "" {
		*out = *manifest
	}
	sk, err := models.ReadPrivateKey(*key)
	if err != nil {
		return err
	}
	m, err := readManifestLoose(*manifest)
	if err != nil {
		return err
	}
	if *version != "" {
		m.Version = *version
	}
	size, sum, err := hashFile(*model)
	if err != nil {
		return err
	}
	m.Size, m.SHA256 = size, sum
	if m.Created.IsZero() {
		m.Created = time.Now().UTC().Truncate(time.Second)
	}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("%s: %w", *manifest, err)
	}
	if err := models.Sign(m, sk); err != nil {
		return err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(*out, func(w io.Writer) error { _, err := w.Write(append(b, '\n')); return err }); err != nil {
		return err
	}
	fmt.Printf("signed %s %s (%d bytes, sha256 %s) with key %s: %s\n", m.Name, m.Version, m.Size, m.SHA256, m.KeyID, *out)
	return nil
}

func modelVerify(args []string) error {
	fs := flag.NewFlagSet("edged model verify", flag.ContinueOnError)
	manifest := fs.String("manifest", "", "signed manifest (required)")
	model := fs.String("model", "", "model file to check against the manifest's size and sha256")
	trust := fs.String("trust", "", "comma-separated trusted public keys: PEM files or ed25519:<base64> (required)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *manifest == "" || *trust == "" || fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	b, err := os.ReadFile(*manifest)
	if err != nil {
		return err
	}
	m, err := models.ParseManifest(b)
	if err != nil {
		return fmt.Errorf("%s: %w", *manifest, err)
	}
	ring, err := models.NewKeyring(splitList(*trust))
	if err != nil {
		return fmt.Errorf("-trust: %w", err)
	}
	if err := ring.Verify(m); err != nil {
		return err
	}
	if *model != "" {
		size, sum, err := hashFile(*model)
		if err != nil {
			return err
		}
		if size != m.Size || !strings.EqualFold(sum, m.SHA256) {
			return fmt.Errorf("%s: %d bytes with sha256 %s; the manifest says %d bytes with sha256 %s", *model, size, sum, m.Size, m.SHA256)
		}
	}
	fmt.Printf("%s %s: signature by %s is good", m.Name, m.Version, m.KeyID)
	if *model != "" {
		fmt.Printf("; %s matches", *model)
	}
	fmt.Println()
	return nil
}

// readManifestLoose reads a manifest to be signed: strict about unknown keys, but the
// size and sha256 may still be missing, since sign fills them in.
func readManifestLoose(path string) (*models.Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m models.Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &m, nil
}

func hashFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("read %s: %w", path, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

var errNoTarget = errors.New("name the boxes: -box URL -token TOKEN, or a fleet: -broker URL -site SITE -line LINE")
