// Package config provides edged's configuration: the typed form of the YAML file, its
// strict decoding, defaults and validation, and the embedded demo config.
//
// A config goes through four steps, each of which may fail with errors that name the
// config path, the bad value and, while decoding, the line:
//
//  1. decode: every key must be known, every value must fit its type; each source's
//     driver block (keyed by the source's type) is decoded into the config type that
//     the driver registry provides, as strictly;
//  2. defaults: keys left out keep the values of the demo config (node.name falls back
//     to the host name, mqtt.client_id to one built from the node);
//  3. validate: ranges, choices, addresses, cross-references (Validate);
//  4. ApplyProfile: settings left at 0 or auto take the hardware profile's value.
//
// Parse and Load do steps 1 to 3; the daemon calls ApplyProfile once it has resolved
// the hardware profile.
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/hwprofiles"
	"github.com/edgedrun/edged/window"
)

// demoYAML is the documented demo config; `edged run` without -c runs it.
//
//go:embed demo.yaml
var demoYAML []byte

// DemoYAML returns the text of the demo config, comments included, for `edged` to print
// as a starting point.
func DemoYAML() []byte { return bytes.Clone(demoYAML) }

// Config is one edged config file.
type Config struct {
	Node      Node     `yaml:"node"`
	HWProfile string   `yaml:"hwprofile"`
	Log       Log      `yaml:"log"`
	Runtime   Runtime  `yaml:"runtime"`
	HTTP      HTTP     `yaml:"http"`
	MQTT      MQTT     `yaml:"mqtt"`
	Models    Models   `yaml:"models"`
	Pipeline  Pipeline `yaml:"pipeline"`
	// ShutdownTimeout bounds a graceful stop: drivers stop, rings drain, the publisher
	// flushes what it holds.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// Sources are decoded from the file's `sources` list one at a time (see
	// decodeSource), because the keys of each depend on its type.
	Sources     []Source     `yaml:"-"`
	Inspections []Inspection `yaml:"inspections"`
	// ModbusDPI are inline Modbus TCP proxies that watch (and may block) the traffic
	// between the SCADA/HMI side and PLCs.
	ModbusDPI []ModbusDPI `yaml:"modbus_dpi"`
}

// Node names this box in MQTT topics and metrics: edged/v1/{site}/{line}/{node}/...
type Node struct {
	Site string `yaml:"site"`
	Line string `yaml:"line"`
	// Name defaults to the host name.
	Name string `yaml:"name"`
}

// Log settings.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// Spinning settings.
const (
	SpinningAuto = "auto" // the hardware profile decides
	SpinningOn   = "on"
	SpinningOff  = "off"
)

// Runtime holds the ONNX Runtime settings; zero values come from the hardware profile.
type Runtime struct {
	// Backend picks what runs the models: auto (ONNX Runtime where the binary has it and
	// the architecture has a library; the pure-Go interpreter on riscv64 and in builds
	// without cgo), onnxruntime, or purego.
	Backend string `yaml:"backend"`
	// ORTLibrary is the path to libonnxruntime.so. Empty means search:
	// ONNXRUNTIME_SHARED_LIBRARY_PATH, then the folder make fills, then the system.
	ORTLibrary     string `yaml:"ort_library"`
	IntraOpThreads int    `yaml:"intra_op_threads"`
	InterOpThreads int    `yaml:"inter_op_threads"`
	// Spinning is auto, on or off.
	Spinning string `yaml:"spinning"`
	// ExecutionProviders in order of preference (TensorRT, CUDA, CPU).
	ExecutionProviders []string `yaml:"execution_providers"`
}

// Inference backends (runtime.backend).
const (
	BackendAuto        = "auto"
	BackendONNXRuntime = "onnxruntime"
	BackendPureGo      = "purego"
)

// HTTP holds the admin, metrics and line page server settings.
type HTTP struct {
	// Listen is host:port.
	Listen string `yaml:"listen"`
	// AdminToken is the bearer token mutating calls and pprof need; empty refuses them.
	AdminToken string `yaml:"admin_token"`
}

// BrokerEmbedded as mqtt.broker starts an MQTT broker inside edged.
const BrokerEmbedded = "embedded"

// MQTT holds the publisher settings.
type MQTT struct {
	// Broker is BrokerEmbedded or a URL: tcp://, ssl://, tls://, mqtt://, mqtts://,
	// ws://, wss://.
	Broker string `yaml:"broker"`
	// EmbeddedListen is where the embedded broker listens, host:port.
	EmbeddedListen string `yaml:"embedded_listen"`
	// ClientID defaults to edged-{site}-{line}-{node}.
	ClientID       string   `yaml:"client_id"`
	Username       string   `yaml:"username"`
	Password       string   `yaml:"password"`
	QoS            int      `yaml:"qos"`
	KeepAlive      Duration `yaml:"keepalive"`
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// TLS applies to brokers reached over TLS (UsesTLS); TLSConfig turns it into the
	// client's settings.
	TLS BrokerTLS `yaml:"tls"`
	// Spool keeps results the broker has not acknowledged, on disk.
	Spool Spool `yaml:"spool"`
	// Format is the result payload: FormatJSON (edged's versioned JSON on
	// edged/v1/...) or FormatSparkplugB (Eclipse Sparkplug B NBIRTH/NDATA/NDEATH on
	// spBv1.0/..., for SCADA such as Ignition).
	Format string `yaml:"format"`
	// Sparkplug names the Sparkplug B edge node; used with FormatSparkplugB only.
	Sparkplug Sparkplug `yaml:"sparkplug"`
	// Breaker guards the live path to the broker: while it is open, results go to the
	// spool.
	Breaker Breaker `yaml:"breaker"`
}

// Payload formats of mqtt.format.
const (
	FormatJSON       = "json"
	FormatSparkplugB = "sparkplug_b"
)

// Sparkplug names the edge node in spBv1.0/{group_id}/{type}/{edge_node_id}. Empty
// values take the defaults: group_id the node's site, edge_node_id "{line}-{node}"
// (node names repeat across lines).
type Sparkplug struct {
	GroupID    string `yaml:"group_id"`
	EdgeNodeID string `yaml:"edge_node_id"`
}

// BrokerTLS holds the files and name for a broker reached over TLS. Empty keys take
// the usual defaults: the system's roots, no client certificate, the URL's host.
type BrokerTLS struct {
	// CAFile is a PEM bundle of the certificates that may sign the broker's.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate (PEM, intermediates after it)
	// and its unencrypted private key, for brokers that require client certificates;
	// both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name expected in the broker's certificate.
	ServerName string `yaml:"server_name"`
}

// Spool bounds the on-disk spool of results the broker has not acknowledged; they
// wait there across outages and restarts.
type Spool struct {
	// Dir holds the spool's segment files.
	Dir string `yaml:"dir"`
	// MaxBytes bounds the spool; past it the oldest segment is dropped.
	MaxBytes ByteSize `yaml:"max_bytes"`
	// SegmentBytes is the size of one segment file.
	SegmentBytes ByteSize `yaml:"segment_bytes"`
	// Fsync is when appended results are forced to disk.
	Fsync Fsync `yaml:"fsync"`
}

// Models holds the model repository settings and what a pushed model must satisfy.
type Models struct {
	// Dir is the repository root: <dir>/<name>/<version>/{model.onnx,manifest.json}.
	Dir string `yaml:"dir"`
	// TrustedKeys are the ed25519 public keys a pushed model's manifest must be signed
	// by: each a path to a PEM file (edged model keygen writes one) or inline
	// "ed25519:<base64>".
	TrustedKeys []string `yaml:"trusted_keys"`
	// AllowUnsigned accepts pushed models without a signature; a wrong signature, or
	// one by a key not trusted, is refused all the same.
	AllowUnsigned bool `yaml:"allow_unsigned"`
	// Keep is how many versions per model stay in the repository.
	Keep int `yaml:"keep"`
	// MaxSize is the largest model file a push may bring.
	MaxSize ByteSize `yaml:"max_size"`
	// Download bounds fetching a model from the URL of an MQTT push command.
	Download Download `yaml:"download"`
}

// Download tunes model downloads from the plant's model server.
type Download struct {
	// Timeout bounds a whole download.
	Timeout Duration `yaml:"timeout"`
	// StallTimeout is how long a download may receive nothing before it is resumed.
	StallTimeout Duration `yaml:"stall_timeout"`
	// Retries is how many failed attempts in a row a download survives.
	Retries int `yaml:"retries"`
}

// Pipeline holds the pipeline sizes; zero values come from the hardware profile.
type Pipeline struct {
	RingSize int `yaml:"ring_size"`
	Workers  int `yaml:"workers"`
	// MaxBatch is the most frames one inference run takes; models with a fixed batch
	// of one always run one frame.
	MaxBatch int `yaml:"max_batch"`
	// MaxWait is how long a worker holding fewer than MaxBatch frames waits for more
	// before it runs what it has.
	MaxWait Duration `yaml:"max_wait"`
	// Breaker guards the inference backend: while it is open, frames get the verdict
	// UNKNOWN with reason "degraded" and their inspection's fail-safe action.
	Breaker Breaker `yaml:"breaker"`
}

// Breaker is a circuit breaker over a sliding window: it opens when, over the last
// Window, more than FailureRatio of at least MinCalls calls failed; after OpenTimeout it
// lets HalfOpenProbes calls through, whose success closes it.
type Breaker struct {
	Window         Duration `yaml:"window"`
	FailureRatio   float64  `yaml:"failure_ratio"`
	MinCalls       int      `yaml:"min_calls"`
	OpenTimeout    Duration `yaml:"open_timeout"`
	HalfOpenProbes int      `yaml:"half_open_probes"`
}

// Backpressure policies of a source: what happens to a frame that finds its ring full.
const (
	// BackpressureBlock makes the driver wait for room: the source slows down.
	BackpressureBlock = "block"
	// BackpressureDropOldest evicts the oldest waiting frame for the new one.
	BackpressureDropOldest = "drop_oldest"
	// BackpressureDropNewest refuses the new frame.
	BackpressureDropNewest = "drop_newest"
	// BackpressureLatest keeps only the newest frame waiting: a camera whose older
	// frames are worth nothing once a newer one exists.
	BackpressureLatest = "latest"
)

// Backpressures lists the policies in the order the docs give them.
var Backpressures = []string{BackpressureBlock, BackpressureDropOldest, BackpressureDropNewest, BackpressureLatest}

// Fail-safe actions for a part whose frame got no verdict from the model.
const (
	// FailSafeDivert sends the part to manual inspection.
	FailSafeDivert = "divert"
	// FailSafeReject rejects the part.
	FailSafeReject = "reject"
	// FailSafePass lets the part go on.
	FailSafePass = "pass"
)

// FailSafes lists the fail-safe actions.
var FailSafes = []string{FailSafeDivert, FailSafeReject, FailSafePass}

// Source is one line device.
type Source struct {
	Name string `yaml:"name"`
	// Type is a driver type from the registry (drivers.Types()).
	Type string `yaml:"type"`
	// VerdictBudget is the time from capture by which the verdict is due; older frames
	// are dropped as stale.
	VerdictBudget Duration `yaml:"verdict_budget"`
	// Backpressure is what a frame that finds the source's ring full does: one of
	// Backpressures.
	Backpressure string `yaml:"backpressure"`
	// Window, when set, assembles the driver's samples into windows before
	// inference: vibration and other fast signals.
	Window *window.Config `yaml:"window"`
	// Driver is the driver's own config, decoded from the block keyed by Type: a
	// pointer made by the type's Factory.NewConfig.
	Driver any `yaml:"-"`
}

// Spec returns the settings every driver gets, whatever its type.
func (s *Source) Spec() drivers.Spec {
	return drivers.Spec{Name: s.Name, Budget: s.VerdictBudget.Std()}
}

// Inspection runs one model on the readings of one source.
type Inspection struct {
	Name string `yaml:"name"`
	// Source is the name of a source.
	Source string `yaml:"source"`
	// Model is the model's name in the repository.
	Model string `yaml:"model"`
	// Threshold is the least defect probability (softmax models, below 1) or anomaly
	// score (score models) for an NG verdict; 0 takes the manifest's.
	Threshold float64 `yaml:"threshold"`
	// FailSafe is the action a result without a model verdict (UNKNOWN) carries: one
	// of FailSafes.
	FailSafe string `yaml:"fail_safe"`
	// OnNG, OnOK and OnDivert are written to devices for each verdict: NG (and UNKNOWN
	// with fail_safe reject), OK (and UNKNOWN with fail_safe pass), and UNKNOWN with
	// fail_safe divert (OnNG when OnDivert is empty: a part nobody judged must not
	// pass as good). A write that could not land before the frame's deadline, when
	// the part has passed the gate, is not attempted.
	OnNG     []WriteAction `yaml:"on_ng"`
	OnOK     []WriteAction `yaml:"on_ok"`
	OnDivert []WriteAction `yaml:"on_divert"`
	// Alert, when set, raises and clears an alert from the inspection's scores.
	Alert *Alert `yaml:"alert"`
}

// Alert raises an alert on edged/v1/{site}/{line}/{node}/alert/{kind} when an
// inspection's anomaly score (a score model's score, a softmax model's defect
// probability) stays at or above Enter for MinDuration, and clears it when the score
// stays below Leave as long.
type Alert struct {
	Kind        string   `yaml:"kind"`
	Enter       float64  `yaml:"enter"`
	Leave       float64  `yaml:"leave"`
	MinDuration Duration `yaml:"min_duration"`
}

// Default values that no profile sets; the demo config spells each out.
const (
	defaultVerdictBudget = 500 * time.Millisecond
	defaultBackpressure  = BackpressureBlock
	defaultFailSafe      = FailSafeDivert
)

// DefaultBreaker is the breaker both the inference backend and the publisher get.
var DefaultBreaker = Breaker{
	Window:         Duration(10 * time.Second),
	FailureRatio:   0.35,
	MinCalls:       20,
	OpenTimeout:    Duration(5 * time.Second),
	HalfOpenProbes: 3,
}

// defaults returns a config holding every default. Keys left out of a file keep these.
func defaults() Config {
	return Config{
		Node:      Node{Site: "demo-site", Line: "line-1"},
		HWProfile: hwprofiles.Auto,
		Log:       Log{Level: "info", Format: "text"},
		Runtime:   Runtime{Backend: BackendAuto, Spinning: SpinningAuto},
		HTTP:      HTTP{Listen: "127.0.0.1:8080"},
		MQTT: MQTT{
			Broker:         BrokerEmbedded,
			EmbeddedListen: "127.0.0.1:1883",
			QoS:            1,
			KeepAlive:      Duration(30 * time.Second),
			ConnectTimeout: Duration(10 * time.Second),
			Format:         FormatJSON,
			Breaker:        DefaultBreaker,
			Spool: Spool{
				Dir:          "var/spool",
				MaxBytes:     256 * MiB,
				SegmentBytes: 8 * MiB,
				Fsync:        Fsync(10 * time.Millisecond),
			},
		},
		Models: Models{
			Dir:     "var/models",
			Keep:    3,
			MaxSize: GiB,
			Download: Download{
				Timeout:      Duration(10 * time.Minute),
				StallTimeout: Duration(30 * time.Second),
				Retries:      5,
			},
		},
		Pipeline:        Pipeline{MaxWait: Duration(2 * time.Millisecond), Breaker: DefaultBreaker},
		ShutdownTimeout: Duration(10 * time.Second),
	}
}

// file is the YAML shape of a config: Config with the sources kept as raw nodes.
type file struct {
	Config  `yaml:",inline"`
	Sources []yaml.Node `yaml:"sources"`
}

// Parse decodes, fills defaults into and validates a config. The error lists every
// fault found, one per line.
func Parse(b []byte) (*Config, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config is empty")
		}
		return nil, err
	}
	if err := dec.Decode(new(yaml.Node)); !errors.Is(err, io.EOF) {
		return nil, errors.New("config holds more than one YAML document")
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	var c checker
	c.check(root, reflect.TypeFor[file](), "")
	var sources []Source
	for i, n := range sourceNodes(root) {
		if s, ok := decodeSource(&c, n, i); ok {
			sources = append(sources, s)
		}
	}
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}

	// The checks passed, so this strict decode should too; it stays as the authority
	// on what yaml.v3 accepts.
	f := file{Config: defaults()}
	dec = yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	cfg := &f.Config
	cfg.Sources = sources
	cfg.fillDerived()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// sourceNodes returns the items of the top-level sources list; the checker has
// reported it if it is not a list.
func sourceNodes(root *yaml.Node) []*yaml.Node {
	if root.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "sources" {
			continue
		}
		if l := resolve(root.Content[i+1]); l != nil && l.Kind == yaml.SequenceNode {
			return l.Content
		}
		return nil
	}
	return nil
}

// decodeSource decodes sources[i]: the keys every source has into Source, and the block
// keyed by its type into the driver's config, both strictly. Faults go to c, which also
// bounds the work across all sources.
func decodeSource(c *checker, n *yaml.Node, i int) (Source, bool) {
	path := fmt.Sprintf("sources[%d]", i)
	before := len(c.errs)
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		line := 0
		if n != nil {
			line = n.Line
		}
		c.fail("%s: want a mapping with name, type and a block for the type (line %d)", path, line)
		return Source{}, false
	}
	var typeNode *yaml.Node
	for j := 0; j+1 < len(n.Content); j += 2 {
		if n.Content[j].Value == "type" {
			typeNode = resolve(n.Content[j+1])
		}
	}
	if typeNode == nil || typeNode.Kind != yaml.ScalarNode || typeNode.Value == "" {
		c.fail("%s.type: missing; known types: %s (line %d)", path, strings.Join(drivers.Types(), ", "), n.Line)
		return Source{}, false
	}
	typ := typeNode.Value
	factory, err := drivers.Lookup(typ)
	if err != nil {
		c.fail("%s.type: %w (line %d)", path, err, typeNode.Line)
		return Source{}, false
	}

	// Split the mapping into the common keys and the driver block.
	common := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
	var block *yaml.Node
	for j := 0; j+1 < len(n.Content); j += 2 {
		k, v := n.Content[j], n.Content[j+1]
		switch {
		case k.Value == typ && block != nil:
			c.fail("%s.%s: key given twice (line %d)", path, typ, k.Line)
		case k.Value == typ:
			block = v
		case k.Value != "type" && slices.Contains(drivers.Types(), k.Value):
			c.fail("%s.%s: block for another type; this source's type is %q (line %d)", path, k.Value, typ, k.Line)
		default:
			common.Content = append(common.Content, k, v)
		}
	}
	c.check(common, reflect.TypeFor[Source](), path)
	driverCfg := factory.NewConfig()
	if block != nil {
		c.check(block, reflect.TypeOf(driverCfg), path+"."+typ)
	}
	if len(c.errs) > before {
		return Source{}, false
	}

	s := Source{VerdictBudget: Duration(defaultVerdictBudget), Backpressure: defaultBackpressure}
	if err := common.Decode(&s); err != nil {
		c.fail("%s: %s", path, cleanYAMLError(err))
		return Source{}, false
	}
	if block != nil {
		if err := block.Decode(driverCfg); err != nil {
			c.fail("%s.%s: %s", path, typ, cleanYAMLError(err))
			return Source{}, false
		}
	}
	s.Driver = driverCfg
	return s, true
}

// fillDerived sets the defaults that depend on other settings or on the machine.
func (c *Config) fillDerived() {
	for i := range c.Inspections {
		in := &c.Inspections[i]
		if in.FailSafe == "" {
			in.FailSafe = defaultFailSafe
		}
		// `on_ng: []` and no on_ng at all mean the same: nothing to write.
		for _, as := range []*[]WriteAction{&in.OnNG, &in.OnOK, &in.OnDivert} {
			if len(*as) == 0 {
				*as = nil
			}
		}
	}
	for i := range c.ModbusDPI {
		c.ModbusDPI[i].fill()
	}
	if len(c.ModbusDPI) == 0 {
		c.ModbusDPI = nil
	}
	if c.Node.Name == "" {
		c.Node.Name = hostname()
	}
	if c.MQTT.ClientID == "" {
		// The broker drops a session when another client connects with its id, so the
		// id carries site and line too: node names repeat across lines.
		c.MQTT.ClientID = "edged-" + c.Node.Site + "-" + c.Node.Line + "-" + c.Node.Name
	}
}

// hostname is the first label of the host name: the rest is the network's domain, which
// does not belong in MQTT topics.
func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "edged"
	}
	h, _, _ = strings.Cut(h, ".")
	return h
}

// Load reads and parses a config file. Each error line starts with the file name.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(b)
	if err != nil {
		return nil, prefixed(path+": ", err)
	}
	return cfg, nil
}

// Default returns the demo config, parsed.
func Default() (*Config, error) {
	cfg, err := Parse(demoYAML)
	if err != nil {
		return nil, prefixed("demo config: ", err)
	}
	return cfg, nil
}

// ApplyProfile fills every setting left at 0 (or spinning auto, or no execution
// providers) from the hardware profile. A nil profile changes nothing.
func (c *Config) ApplyProfile(p *hwprofiles.Profile) {
	if p == nil {
		return
	}
	fill := func(v *int, from int) {
		if *v == 0 {
			*v = from
		}
	}
	fill(&c.Runtime.IntraOpThreads, p.Runtime.IntraOpThreads)
	fill(&c.Runtime.InterOpThreads, p.Runtime.InterOpThreads)
	if c.Runtime.Spinning == SpinningAuto || c.Runtime.Spinning == "" {
		c.Runtime.Spinning = SpinningOff
		if p.Runtime.Spinning {
			c.Runtime.Spinning = SpinningOn
		}
	}
	if len(c.Runtime.ExecutionProviders) == 0 {
		c.Runtime.ExecutionProviders = slices.Clone(p.Runtime.ExecutionProviders)
	}
	fill(&c.Pipeline.RingSize, p.Pipeline.RingSize)
	fill(&c.Pipeline.Workers, p.Pipeline.Workers)
	fill(&c.Pipeline.MaxBatch, p.Pipeline.MaxBatch)
}

// prefixed puts p before each error that err joins, keeping them joined, so that every
// line of a multi-line error carries the prefix.
func prefixed(p string, err error) error {
	if err == nil {
		return nil
	}
	// Split only what errors.Join made, whose message is its parts' messages on lines of
	// their own; an fmt.Errorf with several %w has text around them to keep.
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		parts := j.Unwrap()
		msgs := make([]string, len(parts))
		for i, e := range parts {
			msgs[i] = e.Error()
		}
		if strings.Join(msgs, "\n") == err.Error() {
			out := make([]error, len(parts))
			for i, e := range parts {
				out[i] = prefixed(p, e)
			}
			return errors.Join(out...)
		}
	}
	return fmt.Errorf("%s%w", p, err)
}
