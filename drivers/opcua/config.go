// Package opcua provides the OPC UA driver: it subscribes to a PLC's nodes and emits a
// reading on every data change (stream mode) or one inspection per edge of a
// part-present tag (trigger mode), writes verdicts back to nodes, recreates its session
// and subscription after a server restart, and raises the sampling interval while the
// pipeline asks for less.
package opcua

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/edgedrun/edged/config"
	"github.com/edgedrun/edged/drivers"
)

// Security policies, modes, auth kinds, modes and edges the config takes.
const (
	PolicyNone           = "None"
	PolicyBasic256Sha256 = "Basic256Sha256"

	ModeNone           = "None"
	ModeSign           = "Sign"
	ModeSignAndEncrypt = "SignAndEncrypt"

	AuthAnonymous = "anonymous"
	AuthUsername  = "username"

	ModeStream  = "stream"
	ModeTrigger = "trigger"

	EdgeRising = "rising"
	EdgeChange = "change"
)

// Config is the `opcua:` block of a source.
type Config struct {
	// Endpoint is the server's URL, opc.tcp://host:port/path.
	Endpoint string `yaml:"endpoint"`
	// SecurityPolicy is None or Basic256Sha256.
	SecurityPolicy string `yaml:"security_policy"`
	// SecurityMode is None (with policy None), Sign or SignAndEncrypt.
	SecurityMode string `yaml:"security_mode"`
	// CertFile and KeyFile are the client's certificate and RSA key, PEM or DER; needed
	// by Basic256Sha256.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerCertFile pins the server's certificate; empty trusts the one the endpoint
	// presents.
	ServerCertFile string `yaml:"server_cert_file"`
	// Auth is anonymous or username (with Username and Password).
	Auth     string `yaml:"auth"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// SessionTimeout is the session lifetime the server keeps without requests.
	SessionTimeout config.Duration `yaml:"session_timeout"`
	// RequestTimeout bounds each service call (read, write, subscribe).
	RequestTimeout config.Duration `yaml:"request_timeout"`
	// Reconnect is the backoff between connection attempts.
	Reconnect Backoff `yaml:"reconnect"`
	// Nodes are the values each reading carries.
	Nodes []Node `yaml:"nodes"`
	// Mode is stream (a reading per data change) or trigger (a reading per part).
	Mode string `yaml:"mode"`
	// Trigger is the part-present tag of trigger mode.
	Trigger Trigger `yaml:"trigger"`
}

// Backoff is a capped exponential backoff with jitter.
type Backoff struct {
	Min config.Duration `yaml:"min"`
	Max config.Duration `yaml:"max"`
}

// Node is one value of a reading.
type Node struct {
	// Name is the scalar's name in readings.
	Name string `yaml:"name"`
	// NodeID is the node in the server's syntax: "ns=2;s=Line1.Speed", "i=2258".
	NodeID string `yaml:"node_id"`
	// SamplingInterval is how often the server samples the node (stream mode).
	SamplingInterval config.Duration `yaml:"sampling_interval"`
	// QueueSize is how many samples the server keeps between publishes.
	QueueSize uint32 `yaml:"queue_size"`
	// Deadband is the absolute change below which the server reports nothing; 0 is off.
	Deadband float64 `yaml:"deadband"`
}

// Trigger is the tag whose edges start an inspection, in trigger mode.
type Trigger struct {
	// NodeID is the part-present tag.
	NodeID string `yaml:"node_id"`
	// PartIDNode, when set, is read with the nodes and becomes Reading.PartID.
	PartIDNode string `yaml:"part_id_node"`
	// Edge is rising (false to true) or change (any new value).
	Edge string `yaml:"edge"`
}

// Defaults and limits.
const (
	defaultSampling       = 100 * time.Millisecond
	defaultSessionTimeout = 30 * time.Second
	defaultRequestTimeout = 5 * time.Second
	defaultBackoffMin     = 200 * time.Millisecond
	defaultBackoffMax     = 10 * time.Second
	maxNodes              = 1000
	maxQueueSize          = 10000
	maxSampling           = time.Hour
	// triggerQueue is how many trigger edges wait while the pipeline is slow.
	triggerQueue = 64
)

// DefaultConfig is an anonymous, unsecured stream source; endpoint and nodes are the
// user's to give.
func DefaultConfig() *Config {
	return &Config{
		SecurityPolicy: PolicyNone,
		// The mode is left to fill: None with policy None, SignAndEncrypt with a
		// secured policy, so naming only the policy secures the channel fully.
		Auth:           AuthAnonymous,
		SessionTimeout: config.Duration(defaultSessionTimeout),
		RequestTimeout: config.Duration(defaultRequestTimeout),
		Reconnect:      Backoff{Min: config.Duration(defaultBackoffMin), Max: config.Duration(defaultBackoffMax)},
		Mode:           ModeStream,
		Trigger:        Trigger{Edge: EdgeRising},
	}
}

// fill sets the per-node defaults the YAML left at zero.
func (c *Config) fill() {
	for i := range c.Nodes {
		if c.Nodes[i].SamplingInterval == 0 {
			c.Nodes[i].SamplingInterval = config.Duration(defaultSampling)
		}
		if c.Nodes[i].QueueSize == 0 {
			c.Nodes[i].QueueSize = 1
		}
	}
	if c.SecurityPolicy == "" {
		c.SecurityPolicy = PolicyNone
	}
	if c.SecurityMode == "" {
		if c.SecurityPolicy == PolicyNone {
			c.SecurityMode = ModeNone
		} else {
			c.SecurityMode = ModeSignAndEncrypt
		}
	}
	if c.Auth == "" {
		c.Auth = AuthAnonymous
	}
	if c.Mode == "" {
		c.Mode = ModeStream
	}
	if c.Trigger.Edge == "" {
		c.Trigger.Edge = EdgeRising
	}
}

// Validate names each bad key and its value. Node defaults (sampling interval, queue
// size) are filled in first, since the YAML list items start at zero.
func (c *Config) Validate() error {
	c.fill()
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	if c.Endpoint == "" {
		bad("endpoint: missing (want opc.tcp://host:port/path)")
	} else if u, err := url.Parse(c.Endpoint); err != nil || u.Scheme != "opc.tcp" || u.Host == "" {
		bad("endpoint: %q is not an opc.tcp://host:port URL", c.Endpoint)
	}
	switch c.SecurityPolicy {
	case PolicyNone:
		if c.SecurityMode != ModeNone {
			bad("security_mode: %q does not go with security_policy None (want None)", c.SecurityMode)
		}
	case PolicyBasic256Sha256:
		if c.SecurityMode != ModeSign && c.SecurityMode != ModeSignAndEncrypt {
			bad("security_mode: %q does not go with security_policy Basic256Sha256 (want Sign or SignAndEncrypt)", c.SecurityMode)
		}
		if c.CertFile == "" {
			bad("cert_file: missing (security_policy Basic256Sha256 needs a client certificate)")
		}
		if c.KeyFile == "" {
			bad("key_file: missing (security_policy Basic256Sha256 needs the client key)")
		}
	default:
		bad("security_policy: %q is not one of None, Basic256Sha256", c.SecurityPolicy)
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		bad("cert_file/key_file: give both or neither")
	}
	switch c.Auth {
	case AuthAnonymous:
		if c.Username != "" || c.Password != "" {
			bad("auth: anonymous with a username or password set (want auth: username)")
		}
	case AuthUsername:
		if c.Username == "" {
			bad("username: missing (auth is username)")
		}
	default:
		bad("auth: %q is not one of anonymous, username", c.Auth)
	}
	if c.SessionTimeout < config.Duration(time.Second) || c.SessionTimeout > config.Duration(24*time.Hour) {
		bad("session_timeout: %v is out of range 1s..24h", time.Duration(c.SessionTimeout))
	}
	if c.RequestTimeout < config.Duration(10*time.Millisecond) || c.RequestTimeout > config.Duration(5*time.Minute) {
		bad("request_timeout: %v is out of range 10ms..5m", time.Duration(c.RequestTimeout))
	}
	if c.Reconnect.Min <= 0 {
		bad("reconnect.min: %v must be above 0", time.Duration(c.Reconnect.Min))
	}
	if c.Reconnect.Max < c.Reconnect.Min {
		bad("reconnect.max: %v is below reconnect.min %v", time.Duration(c.Reconnect.Max), time.Duration(c.Reconnect.Min))
	}

	if len(c.Nodes) == 0 {
		bad("nodes: empty (want at least one {name, node_id})")
	}
	if len(c.Nodes) > maxNodes {
		bad("nodes: %d nodes, at most %d", len(c.Nodes), maxNodes)
	}
	names := map[string]int{}
	for i, n := range c.Nodes {
		p := fmt.Sprintf("nodes[%d]", i)
		if n.Name == "" {
			bad("%s.name: missing", p)
		} else if j, dup := names[n.Name]; dup {
			bad("%s.name: %q already names nodes[%d]", p, n.Name, j)
		} else {
			names[n.Name] = i
		}
		if err := checkNodeID(n.NodeID); err != nil {
			bad("%s.node_id: %w", p, err)
		}
		if n.SamplingInterval < 0 || n.SamplingInterval > config.Duration(maxSampling) {
			bad("%s.sampling_interval: %v is out of range 0..1h", p, time.Duration(n.SamplingInterval))
		}
		if n.QueueSize > maxQueueSize {
			bad("%s.queue_size: %d is out of range 1..%d", p, n.QueueSize, maxQueueSize)
		}
		if !(n.Deadband >= 0) || math.IsInf(n.Deadband, 0) {
			bad("%s.deadband: %v must be 0 (off) or above", p, n.Deadband)
		}
	}

	switch c.Mode {
	case ModeStream:
		if c.Trigger.NodeID != "" || c.Trigger.PartIDNode != "" {
			bad("trigger: set while mode is stream (want mode: trigger)")
		}
	case ModeTrigger:
		if err := checkNodeID(c.Trigger.NodeID); err != nil {
			bad("trigger.node_id: %w", err)
		}
		if c.Trigger.PartIDNode != "" {
			if err := checkNodeID(c.Trigger.PartIDNode); err != nil {
				bad("trigger.part_id_node: %w", err)
			}
		}
		if c.Trigger.Edge != EdgeRising && c.Trigger.Edge != EdgeChange {
			bad("trigger.edge: %q is not one of rising, change", c.Trigger.Edge)
		}
	default:
		bad("mode: %q is not one of stream, trigger", c.Mode)
	}
	return errors.Join(errs...)
}

func checkNodeID(s string) error {
	if s == "" {
		return errors.New("missing (want a node id like ns=2;s=Line1.Speed)")
	}
	if _, err := ua.ParseNodeID(s); err != nil {
		return fmt.Errorf("%q is not a node id like ns=2;s=Line1.Speed or i=2258: %w", s, err)
	}
	// gopcua takes a bare word as a string id; a typo such as "ns=2;q=X" or a missing
	// "s=" would then name a node that never exists, so the identifier type is required.
	rest := s
	if strings.HasPrefix(rest, "ns=") {
		_, rest, _ = strings.Cut(rest, ";")
	}
	if len(rest) < 3 || rest[1] != '=' || !strings.ContainsRune("isgb", rune(rest[0])) {
		return fmt.Errorf("%q is not a node id like ns=2;s=Line1.Speed or i=2258 (want an i=, s=, g= or b= identifier)", s)
	}
	return nil
}

func (c *Config) securityPolicyURI() string {
	if c.SecurityPolicy == PolicyBasic256Sha256 {
		return ua.SecurityPolicyURIBasic256Sha256
	}
	return ua.SecurityPolicyURINone
}

func (c *Config) messageSecurityMode() ua.MessageSecurityMode {
	switch c.SecurityMode {
	case ModeSign:
		return ua.MessageSecurityModeSign
	case ModeSignAndEncrypt:
		return ua.MessageSecurityModeSignAndEncrypt
	}
	return ua.MessageSecurityModeNone
}

// clone copies the config so the driver keeps its own slices.
func (c *Config) clone() Config {
	cc := *c
	cc.Nodes = append([]Node(nil), c.Nodes...)
	return cc
}

func init() {
	drivers.Register("opcua", drivers.Factory{
		NewConfig: func() any { return DefaultConfig() },
		New: func(spec drivers.Spec, cfg any) (drivers.Driver, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("opcua: config is %T, not *opcua.Config", cfg)
			}
			return New(spec, c)
		},
	})
}
