package opcua

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
	"gopkg.in/yaml.v3"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
)

func TestConfigValidate(t *testing.T) {
	good := func() *Config {
		c := DefaultConfig()
		c.Endpoint = "opc.tcp://plc1:4840/ua"
		c.Nodes = []Node{{Name: "speed", NodeID: "ns=2;s=Line1.Speed"}}
		return c
	}
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		want string // "" means valid
	}{
		{"defaults", func(c *Config) {}, ""},
		{"trigger", func(c *Config) {
			c.Mode = ModeTrigger
			c.Trigger = Trigger{NodeID: "ns=2;s=PartPresent", PartIDNode: "ns=2;s=PartID", Edge: EdgeChange}
		}, ""},
		{"secured", func(c *Config) {
			c.SecurityPolicy, c.SecurityMode, c.CertFile, c.KeyFile = PolicyBasic256Sha256, ModeSign, "c.pem", "k.pem"
			c.Auth, c.Username, c.Password = AuthUsername, "op", "pw"
		}, ""},
		{"no endpoint", func(c *Config) { c.Endpoint = "" }, "endpoint: missing"},
		{"http endpoint", func(c *Config) { c.Endpoint = "http://plc1:4840" }, `endpoint: "http://plc1:4840" is not an opc.tcp`},
		{"bad policy", func(c *Config) { c.SecurityPolicy = "Basic128Rsa15" }, `security_policy: "Basic128Rsa15" is not one of`},
		{"mode with None", func(c *Config) { c.SecurityMode = ModeSign }, `security_mode: "Sign" does not go with security_policy None`},
		{"None mode with Basic256Sha256", func(c *Config) {
			c.SecurityPolicy, c.SecurityMode, c.CertFile, c.KeyFile = PolicyBasic256Sha256, ModeNone, "c", "k"
		}, `security_mode: "None" does not go with security_policy Basic256Sha256`},
		{"secured without cert", func(c *Config) { c.SecurityPolicy, c.SecurityMode = PolicyBasic256Sha256, ModeSignAndEncrypt }, "cert_file: missing"},
		{"cert without key", func(c *Config) { c.CertFile = "c.pem" }, "cert_file/key_file: give both"},
		{"bad auth", func(c *Config) { c.Auth = "kerberos" }, `auth: "kerberos" is not one of`},
		{"username without name", func(c *Config) { c.Auth = AuthUsername }, "username: missing"},
		{"anonymous with password", func(c *Config) { c.Password = "pw" }, "auth: anonymous with a username or password"},
		{"session timeout", func(c *Config) { c.SessionTimeout = config.Duration(time.Millisecond) }, "session_timeout: 1ms is out of range"},
		{"request timeout", func(c *Config) { c.RequestTimeout = 0 }, "request_timeout: 0s is out of range"},
		{"backoff", func(c *Config) { c.Reconnect.Max = config.Duration(time.Millisecond) }, "reconnect.max: 1ms is below reconnect.min"},
		{"no nodes", func(c *Config) { c.Nodes = nil }, "nodes: empty"},
		{"node without name", func(c *Config) { c.Nodes[0].Name = "" }, "nodes[0].name: missing"},
		{"duplicate name", func(c *Config) { c.Nodes = append(c.Nodes, Node{Name: "speed", NodeID: "i=2258"}) }, `nodes[1].name: "speed" already names nodes[0]`},
		{"bad node id", func(c *Config) { c.Nodes[0].NodeID = "ns=x;s=Speed" }, `nodes[0].node_id: "ns=x;s=Speed" is not a node id`},
		{"sampling", func(c *Config) { c.Nodes[0].SamplingInterval = config.Duration(-time.Second) }, "nodes[0].sampling_interval: -1s is out of range"},
		{"queue", func(c *Config) { c.Nodes[0].QueueSize = 1 << 20 }, "nodes[0].queue_size: 1048576 is out of range"},
		{"deadband", func(c *Config) { c.Nodes[0].Deadband = -1 }, "nodes[0].deadband: -1 must be 0"},
		{"bad mode", func(c *Config) { c.Mode = "poll" }, `mode: "poll" is not one of stream, trigger`},
		{"trigger in stream", func(c *Config) { c.Trigger.NodeID = "ns=2;s=P" }, "trigger: set while mode is stream"},
		{"trigger without node", func(c *Config) { c.Mode = ModeTrigger }, "trigger.node_id: missing"},
		{"bad edge", func(c *Config) { c.Mode, c.Trigger = ModeTrigger, Trigger{NodeID: "ns=2;s=P", Edge: "falling"} }, `trigger.edge: "falling" is not one of`},
		{"bad part id", func(c *Config) {
			c.Mode, c.Trigger = ModeTrigger, Trigger{NodeID: "ns=2;s=P", PartIDNode: "ns=2;q=Part", Edge: EdgeRising}
		}, "trigger.part_id_node:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.edit(c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tc.want != "" && err == nil:
				t.Errorf("Validate: nil, want %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("Validate: %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// A config as a user writes it decodes strictly, fills the node defaults and passes.
func TestConfigYAML(t *testing.T) {
	const src = `
endpoint: opc.tcp://127.0.0.1:4840/edged
security_policy: Basic256Sha256
security_mode: SignAndEncrypt
cert_file: /etc/edged/opcua/client.crt.pem
key_file: /etc/edged/opcua/client.key.pem
auth: username
username: edged
password: secret
session_timeout: 1m
request_timeout: 3s
reconnect: {min: 500ms, max: 30s}
mode: trigger
trigger: {node_id: "ns=2;s=Line1.PartPresent", part_id_node: "ns=2;s=Line1.PartID"}
nodes:
  - {name: force, node_id: "ns=2;s=Line1.Force", sampling_interval: 50ms, deadband: 0.5}
  - {name: depth, node_id: "ns=2;s=Line1.Depth"}
`
	f, err := drivers.Lookup("opcua")
	if err != nil {
		t.Fatal(err)
	}
	c := f.NewConfig().(*Config)
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Nodes[1].SamplingInterval != config.Duration(100*time.Millisecond) || c.Nodes[1].QueueSize != 1 {
		t.Errorf("node defaults: %+v", c.Nodes[1])
	}
	if c.Trigger.Edge != EdgeRising || time.Duration(c.Reconnect.Max) != 30*time.Second {
		t.Errorf("trigger %+v reconnect %+v", c.Trigger, c.Reconnect)
	}
	if _, err := f.New(drivers.Spec{Name: "press"}, c); err != nil {
		t.Errorf("New: %v", err)
	}
}

// TestSecurityModeFollowsPolicy: naming only a secured policy secures the channel
// fully, and no policy means no security, as the README says.
func TestSecurityModeFollowsPolicy(t *testing.T) {
	for _, tc := range []struct{ src, mode string }{
		{"endpoint: opc.tcp://127.0.0.1:4840\nnodes: [{name: a, node_id: \"i=1\"}]\n", ModeNone},
		{"endpoint: opc.tcp://127.0.0.1:4840\nsecurity_policy: Basic256Sha256\ncert_file: c\nkey_file: k\nnodes: [{name: a, node_id: \"i=1\"}]\n", ModeSignAndEncrypt},
		{"endpoint: opc.tcp://127.0.0.1:4840\nsecurity_policy: Basic256Sha256\nsecurity_mode: Sign\ncert_file: c\nkey_file: k\nnodes: [{name: a, node_id: \"i=1\"}]\n", ModeSign},
	} {
		f, err := drivers.Lookup("opcua")
		if err != nil {
			t.Fatal(err)
		}
		c := f.NewConfig().(*Config)
		dec := yaml.NewDecoder(strings.NewReader(tc.src))
		dec.KnownFields(true)
		if err := dec.Decode(c); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("%q: %v", tc.src, err)
		}
		if c.SecurityMode != tc.mode {
			t.Errorf("%q: security_mode %q, want %q", tc.src, c.SecurityMode, tc.mode)
		}
	}
}

func TestGenerateCertificate(t *testing.T) {
	dir := t.TempDir()
	cp, kp := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := GenerateCertificate(cp, kp, []string{"box1", "127.0.0.1"}, "urn:edged:box1", 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(kp)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(cp)
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("certificate is not PEM")
	}
	x, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(x.URIs) != 1 || x.URIs[0].String() != "urn:edged:box1" {
		t.Errorf("URI SANs %v", x.URIs)
	}
	if len(x.DNSNames) != 1 || x.DNSNames[0] != "box1" || len(x.IPAddresses) != 1 || !x.IPAddresses[0].IsLoopback() {
		t.Errorf("SANs %v %v", x.DNSNames, x.IPAddresses)
	}
	if _, _, err := loadKeyPair(cp, kp); err != nil {
		t.Errorf("driver cannot load the pair: %v", err)
	}
	// A key that is not the certificate's is refused before any connection.
	cp2, kp2 := filepath.Join(dir, "c2.pem"), filepath.Join(dir, "k2.pem")
	if err := GenerateCertificate(cp2, kp2, nil, "urn:edged:other", time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadKeyPair(cp, kp2); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched pair: %v", err)
	}
	if err := GenerateCertificate(cp, kp, nil, "no uri", time.Hour); err == nil {
		t.Error("an application URI without a scheme was taken")
	}
}

func TestConvert(t *testing.T) {
	for _, tc := range []struct {
		v    any
		typ  string
		want any
		err  string
	}{
		{true, "Boolean", true, ""},
		{int64(0), "Boolean", false, ""},
		{int64(2), "Boolean", nil, "does not fit type Boolean"},
		{int64(-5), "Int16", int16(-5), ""},
		{int64(70000), "Int16", nil, "out of range -32768..32767"},
		{float64(3), "UInt32", uint32(3), ""},
		{2.5, "Int32", nil, "not a whole number"},
		{int64(-1), "UInt64", nil, "out of range"},
		{"42", "Byte", uint8(42), ""},
		{1.5, "Float", float32(1.5), ""},
		{1e300, "Float", nil, "out of range for type Float"},
		{int64(7), "Double", float64(7), ""},
		{"NG", "String", "NG", ""},
		{0.25, "String", "0.25", ""},
		{"x", "Double", nil, `value "x"`},
	} {
		tid := typeByName(tc.typ)
		got, err := convert(tc.v, tid)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("convert(%v, %s) error %v, want %q", tc.v, tc.typ, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("convert(%v, %s): %v", tc.v, tc.typ, err)
			continue
		}
		if got.Value() != tc.want {
			t.Errorf("convert(%v, %s) = %v (%T), want %v (%T)", tc.v, tc.typ, got.Value(), got.Value(), tc.want, tc.want)
		}
	}
}

func typeByName(name string) ua.TypeID {
	for t := ua.TypeIDBoolean; t <= ua.TypeIDByteString; t++ {
		if typeName(t) == name {
			return t
		}
	}
	panic("no type " + name)
}
