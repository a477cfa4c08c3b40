package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgedrun/edged/alert"
	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/hwprofiles"
)

// Limits that Validate enforces; the configuration reference in the README states the same ones.
const (
	maxThreads         = 256
	maxRingSize        = 1 << 16
	maxWorkers         = 256
	maxBatch           = 1024
	maxBatchWait       = time.Second
	maxVerdictBudget   = time.Minute
	maxShutdownTimeout = 10 * time.Minute
	maxConnectTimeout  = 5 * time.Minute
	// MQTT carries the keep-alive as a 16-bit count of seconds.
	maxKeepAlive     = 65535 * time.Second
	minAdminTokenLen = 16
	// A spool holds at least two segments, so that dropping the oldest when full
	// leaves room to keep writing.
	minSegmentBytes = 64 * KiB
	maxSegmentBytes = GiB
	minSpoolBytes   = MiB
	minFsync        = time.Millisecond
	maxFsync        = 10 * time.Second
)

// nameRE is what names that end up in MQTT topics, metric labels and directory names may
// look like: no '/', '+', '#', spaces, and no leading dot (so never "." or "..").
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

const nameRule = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"

// brokerSchemes are the URL schemes the MQTT client dials.
var brokerSchemes = []string{"tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss"}

// Validate checks every setting and returns all faults joined, each naming its path and
// the bad value. Settings left at 0 or auto for the hardware profile are valid, so it
// may run before and after ApplyProfile.
func (c *Config) Validate() error {
	v := &validation{}
	v.name("node.site", c.Node.Site)
	v.name("node.line", c.Node.Line)
	v.name("node.name", c.Node.Name)
	if c.HWProfile != hwprofiles.Auto && !slices.Contains(hwprofiles.Names(), c.HWProfile) {
		v.fail("hwprofile: %q is not %s or one of %s", c.HWProfile, hwprofiles.Auto, strings.Join(hwprofiles.Names(), ", "))
	}
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "text", "json")

	v.intRange("runtime.intra_op_threads", c.Runtime.IntraOpThreads, 0, maxThreads)
	v.intRange("runtime.inter_op_threads", c.Runtime.InterOpThreads, 0, maxThreads)
	v.oneOf("runtime.spinning", c.Runtime.Spinning, SpinningAuto, SpinningOn, SpinningOff)
	v.oneOf("runtime.backend", c.Runtime.Backend, BackendAuto, BackendONNXRuntime, BackendPureGo)
	for i, ep := range c.Runtime.ExecutionProviders {
		path := fmt.Sprintf("runtime.execution_providers[%d]", i)
		if !slices.Contains(hwprofiles.Providers(), ep) {
			v.fail("%s: %q is not one of %s", path, ep, strings.Join(hwprofiles.Providers(), ", "))
		} else if slices.Index(c.Runtime.ExecutionProviders, ep) != i {
			v.fail("%s: %q is listed twice", path, ep)
		}
	}

	v.listen("http.listen", c.HTTP.Listen)
	if n := len(c.HTTP.AdminToken); n > 0 && n < minAdminTokenLen {
		// The token itself stays out of the message: errors end up in logs.
		v.fail("http.admin_token: %d characters is too short; use at least %d", n, minAdminTokenLen)
	}

	v.broker("mqtt.broker", c.MQTT.Broker)
	if c.MQTT.Broker == BrokerEmbedded {
		v.listen("mqtt.embedded_listen", c.MQTT.EmbeddedListen)
		// MQTT clients, edged's own publisher among them, must know where to connect.
		if _, port, err := net.SplitHostPort(c.MQTT.EmbeddedListen); err == nil && port == "0" {
			v.fail("mqtt.embedded_listen: %q: port 0 is not allowed; name the port MQTT clients connect to", c.MQTT.EmbeddedListen)
		}
	}
	if c.MQTT.ClientID == "" {
		v.fail("mqtt.client_id: empty")
	}
	if c.MQTT.Password != "" && c.MQTT.Username == "" {
		// MQTT sends a password only together with a user name.
		v.fail("mqtt.password: set without mqtt.username")
	}
	if q := c.MQTT.QoS; q < 0 || q > 2 {
		v.fail("mqtt.qos: %d is not one of 0, 1, 2", q)
	}
	v.durRange("mqtt.keepalive", c.MQTT.KeepAlive, 0, maxKeepAlive, true)
	v.durRange("mqtt.connect_timeout", c.MQTT.ConnectTimeout, 0, maxConnectTimeout, false)
	v.checkTLS(&c.MQTT)
	v.spool("mqtt.spool", c.MQTT.Spool)
	v.oneOf("mqtt.format", c.MQTT.Format, FormatJSON, FormatSparkplugB)
	// Empty takes the default (site; {line}-{node}), made of names checked above.
	if s := c.MQTT.Sparkplug.GroupID; s != "" {
		v.name("mqtt.sparkplug.group_id", s)
	}
	if s := c.MQTT.Sparkplug.EdgeNodeID; s != "" {
		v.name("mqtt.sparkplug.edge_node_id", s)
	}

	v.models(&c.Models)

	v.intRange("pipeline.ring_size", c.Pipeline.RingSize, 0, maxRingSize)
	v.intRange("pipeline.workers", c.Pipeline.Workers, 0, maxWorkers)
	v.intRange("pipeline.max_batch", c.Pipeline.MaxBatch, 0, maxBatch)
	v.durRange("pipeline.max_wait", c.Pipeline.MaxWait, 0, maxBatchWait, true)
	v.breaker("pipeline.breaker", c.Pipeline.Breaker)
	v.breaker("mqtt.breaker", c.MQTT.Breaker)
	v.durRange("shutdown_timeout", c.ShutdownTimeout, 0, maxShutdownTimeout, false)

	v.sources(c.Sources)
	v.inspections(c.Inspections, c.Sources)
	v.modbusDPI(c.ModbusDPI)
	return errors.Join(v.errs...)
}

// validation collects faults.
type validation struct{ errs []error }

func (v *validation) fail(format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf(format, args...))
}

func (v *validation) name(path, s string) {
	if !nameRE.MatchString(s) {
		v.fail("%s: %q is not a name: %s", path, s, nameRule)
	}
}

func (v *validation) oneOf(path, s string, choices ...string) {
	if !slices.Contains(choices, s) {
		v.fail("%s: %q is not one of %s", path, s, strings.Join(choices, ", "))
	}
}

func (v *validation) intRange(path string, n, lo, hi int) {
	if n < lo || n > hi {
		v.fail("%s: %d is out of range %d..%d", path, n, lo, hi)
	}
}

// durRange checks lo < d <= hi, or lo <= d <= hi when zeroOK.
func (v *validation) durRange(path string, d Duration, lo, hi time.Duration, zeroOK bool) {
	switch {
	case zeroOK && (d.Std() < lo || d.Std() > hi):
		v.fail("%s: %v is out of range %v..%v", path, d, lo, hi)
	case !zeroOK && (d.Std() <= lo || d.Std() > hi):
		v.fail("%s: %v is out of range (%v,%v]", path, d, lo, hi)
	}
}

// spool checks the spool's folder, sizes and sync policy.
func (v *validation) spool(path string, s Spool) {
	if s.Dir == "" {
		v.fail("%s.dir: empty", path)
	}
	if b := s.SegmentBytes; b < minSegmentBytes || b > maxSegmentBytes {
		v.fail("%s.segment_bytes: %v is out of range %v..%v", path, b, minSegmentBytes, maxSegmentBytes)
	}
	switch b := s.MaxBytes; {
	case b < minSpoolBytes:
		v.fail("%s.max_bytes: %v is below the least, %v", path, b, minSpoolBytes)
	case b/2 < s.SegmentBytes:
		v.fail("%s.max_bytes: %v is less than twice %s.segment_bytes (%v); the spool needs room for two segments", path, b, path, s.SegmentBytes)
	}
	if f := s.Fsync; f != FsyncAlways && (f.Interval() < minFsync || f.Interval() > maxFsync) {
		v.fail("%s.fsync: %v is out of range %v..%v; or write always", path, f, minFsync, maxFsync)
	}
}

// listen checks a host:port listen address. An empty host means every interface; port 0
// picks a free port, which tests use.
func (v *validation) listen(path, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.fail("%s: %q is not host:port", path, addr)
		return
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		v.fail("%s: %q has port %q, not a number 0..65535", path, addr, port)
	}
	if host != "" && net.ParseIP(host) == nil && !hostRE.MatchString(host) {
		v.fail("%s: %q has host %q, neither an IP address nor a host name", path, addr, host)
	}
}

var hostRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,62}\.?)*$`)

// broker checks mqtt.broker: "embedded" or a broker URL with a host.
func (v *validation) broker(path, b string) {
	if b == BrokerEmbedded {
		return
	}
	want := fmt.Sprintf("want %s or a URL with scheme %s", BrokerEmbedded, strings.Join(brokerSchemes, ", "))
	u, err := url.Parse(b)
	if err != nil || u.Scheme == "" {
		v.fail("%s: %q is not a URL; %s", path, b, want)
		return
	}
	if !slices.Contains(brokerSchemes, strings.ToLower(u.Scheme)) {
		v.fail("%s: %q has scheme %q; %s", path, b, u.Scheme, want)
		return
	}
	if u.Hostname() == "" {
		v.fail("%s: %q has no host", path, b)
	}
	if p := u.Port(); p != "" {
		if _, err := strconv.ParseUint(p, 10, 16); err != nil {
			v.fail("%s: %q has port %q, not a number 0..65535", path, b, p)
		}
	}
}

func (v *validation) sources(sources []Source) {
	if len(sources) == 0 {
		v.fail("sources: empty; at least one source is needed")
	}
	first := map[string]int{}
	for i, s := range sources {
		path := fmt.Sprintf("sources[%d]", i)
		v.name(path+".name", s.Name)
		if j, dup := first[s.Name]; dup {
			v.fail("%s.name: %q is already the name of sources[%d]", path, s.Name, j)
		} else {
			first[s.Name] = i
		}
		v.durRange(path+".verdict_budget", s.VerdictBudget, 0, maxVerdictBudget, false)
		v.oneOf(path+".backpressure", s.Backpressure, Backpressures...)
		v.window(path+".window", s.Window)
		v.driver(path, s)
	}
}

// driver checks that the source's driver config is the type's and runs its Validate.
func (v *validation) driver(path string, s Source) {
	f, err := drivers.Lookup(s.Type)
	if err != nil {
		v.fail("%s.type: %w", path, err)
		return
	}
	path += "." + s.Type
	want := reflect.TypeOf(f.NewConfig())
	switch {
	case s.Driver == nil:
		v.fail("%s: no driver config; set Source.Driver from the type's Factory.NewConfig", path)
		return
	case reflect.TypeOf(s.Driver) != want:
		v.fail("%s: driver config is %T, not %v", path, s.Driver, want)
		return
	}
	if d, ok := s.Driver.(interface{ Validate() error }); ok {
		if err := d.Validate(); err != nil {
			v.errs = append(v.errs, prefixed(path+".", err))
		}
	}
}

func (v *validation) inspections(ins []Inspection, sources []Source) {
	if len(ins) == 0 {
		v.fail("inspections: empty; at least one inspection is needed")
	}
	var sourceNames []string
	for _, s := range sources {
		sourceNames = append(sourceNames, s.Name)
	}
	known := strings.Join(sourceNames, ", ")
	if known == "" {
		known = "none"
	}
	first := map[string]int{}
	for i, in := range ins {
		path := fmt.Sprintf("inspections[%d]", i)
		v.name(path+".name", in.Name)
		if j, dup := first[in.Name]; dup {
			v.fail("%s.name: %q is already the name of inspections[%d]", path, in.Name, j)
		} else {
			first[in.Name] = i
		}
		if !slices.Contains(sourceNames, in.Source) {
			v.fail("%s.source: %q is not the name of a source (sources: %s)", path, in.Source, known)
		}
		// The model name is a directory in the repository.
		v.name(path+".model", in.Model)
		// A probability for softmax models, checked against (0,1) when the model is
		// loaded; any positive score for score models.
		if t := in.Threshold; math.IsNaN(t) || math.IsInf(t, 0) || t < 0 {
			v.fail("%s.threshold: %v is not a number of 0 or more", path, t)
		}
		v.oneOf(path+".fail_safe", in.FailSafe, FailSafes...)
		v.writeActions(path+".on_ng", in.OnNG, sources)
		v.writeActions(path+".on_ok", in.OnOK, sources)
		v.writeActions(path+".on_divert", in.OnDivert, sources)
		if a := in.Alert; a != nil {
			v.name(path+".alert.kind", a.Kind)
			if err := (alert.Hysteresis{Enter: a.Enter, Leave: a.Leave, MinDuration: a.MinDuration.Std()}).Validate(); err != nil {
				for _, e := range splitErrors(err) {
					v.fail("%s.alert.%v", path, e)
				}
			}
		}
	}
}

// Breaker limits.
const (
	minBreakerWindow = time.Second
	maxBreakerWindow = time.Hour
	maxOpenTimeout   = time.Hour
	maxMinCalls      = 1 << 20
	maxProbes        = 1000
)

func (v *validation) breaker(path string, b Breaker) {
	v.durRange(path+".window", b.Window, minBreakerWindow, maxBreakerWindow, true)
	if r := b.FailureRatio; math.IsNaN(r) || r <= 0 || r >= 1 {
		v.fail("%s.failure_ratio: %v is out of range (0,1)", path, r)
	}
	v.intRange(path+".min_calls", b.MinCalls, 1, maxMinCalls)
	v.durRange(path+".open_timeout", b.OpenTimeout, 10*time.Millisecond, maxOpenTimeout, true)
	v.intRange(path+".half_open_probes", b.HalfOpenProbes, 1, maxProbes)
}

// Bounds of the model settings.
const (
	maxKeep          = 100
	maxModelSize     = 64 * GiB
	maxDownload      = 24 * time.Hour
	maxDownloadStall = time.Hour
	maxRetries       = 100
)

func (v *validation) models(m *Models) {
	if m.Dir == "" {
		v.fail("models.dir: empty")
	}
	for i, k := range m.TrustedKeys {
		path := fmt.Sprintf("models.trusted_keys[%d]", i)
		switch b64, inline := strings.CutPrefix(k, "ed25519:"); {
		case strings.TrimSpace(k) == "":
			v.fail("%s: empty; give a PEM public key file or ed25519:<base64>", path)
		case inline:
			if raw, err := base64.StdEncoding.DecodeString(b64); err != nil || len(raw) != ed25519.PublicKeySize {
				v.fail("%s: %q is not ed25519:<base64 of %d bytes>", path, k, ed25519.PublicKeySize)
			}
		}
	}
	v.intRange("models.keep", m.Keep, 2, maxKeep)
	if m.MaxSize < 1 || m.MaxSize > maxModelSize {
		v.fail("models.max_size: %d is out of range 1..%d", m.MaxSize, maxModelSize)
	}
	v.durRange("models.download.timeout", m.Download.Timeout, 0, maxDownload, false)
	v.durRange("models.download.stall_timeout", m.Download.StallTimeout, 0, maxDownloadStall, false)
	v.intRange("models.download.retries", m.Download.Retries, 0, maxRetries)
}
