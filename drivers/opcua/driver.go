package opcua

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"
	"github.com/gopcua/opcua/uacp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/drivers"
)

// The driver owns reconnection. gopcua's AutoReconnect (v0.8.0) does bring a
// subscription back after a server restart (checked against node-opcua), but it retries
// at a fixed interval without jitter, says nothing while down except through a state
// channel that stalls the client when not drained, keeps the endpoint's certificate
// and security it saw at the first connect (a reinstalled PLC with a new certificate
// never comes back), and tears the channel down on any ServiceFault anyway. So the
// client runs with AutoReconnect off; a dead session (the client's state leaves
// Connected, the publish loop reports an error, or a liveness read fails) is closed,
// and Run connects afresh after a capped, jittered backoff: endpoints, node check,
// subscription, with Health reporting each step.

// livenessEvery is how long the driver waits without a notification before it reads
// the server's state to tell a quiet line from a hung server.
const livenessEvery = 2 * time.Second

// applyEvery limits how often a pressure change is pushed to the server.
const applyEvery = 250 * time.Millisecond

// maxSlow is the most the sampling interval is stretched by SlowDown answers alone.
const maxSlow = 16

// Driver is one OPC UA source.
type Driver struct {
	spec    drivers.Spec
	cfg     Config
	nodeIDs []*ua.NodeID
	trigID  *ua.NodeID
	partID  *ua.NodeID
	m       *metrics

	// client is the connected client while a session is up; Write uses it.
	mu     sync.RWMutex
	client *opcua.Client
	types  map[string]ua.TypeID // data type of each written node, read once

	// sampling is the sampling interval of the fastest node as last asked of the
	// server, in nanoseconds: the configured one, or longer under pressure.
	sampling atomic.Int64
}

var (
	_ drivers.Driver       = (*Driver)(nil)
	_ drivers.Writer       = (*Driver)(nil)
	_ drivers.WriteChecker = (*Driver)(nil)
	_ drivers.Prober       = (*Driver)(nil)
)

// New builds an OPC UA driver for a source; it connects to nothing until Run or Probe.
func New(spec drivers.Spec, cfg *Config) (*Driver, error) {
	if spec.Name == "" {
		return nil, errors.New("opcua: source name is empty")
	}
	if cfg == nil {
		return nil, fmt.Errorf("opcua: source %q: nil config", spec.Name)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("opcua: source %q: %w", spec.Name, err)
	}
	d := &Driver{spec: spec, cfg: cfg.clone(), types: map[string]ua.TypeID{}}
	for _, n := range d.cfg.Nodes {
		id, _ := ua.ParseNodeID(n.NodeID) // checked by Validate
		d.nodeIDs = append(d.nodeIDs, id)
	}
	if d.cfg.Mode == ModeTrigger {
		d.trigID, _ = ua.ParseNodeID(d.cfg.Trigger.NodeID)
		if d.cfg.Trigger.PartIDNode != "" {
			d.partID, _ = ua.ParseNodeID(d.cfg.Trigger.PartIDNode)
		}
	}
	d.m = newMetrics(spec.Name)
	d.sampling.Store(int64(d.baseSampling()))
	return d, nil
}

func (d *Driver) log() *slog.Logger {
	l := d.spec.Log
	if l == nil {
		l = slog.Default()
	}
	return l.With("source", d.spec.Name, "driver", "opcua")
}

// baseSampling is the configured sampling interval of the fastest node.
func (d *Driver) baseSampling() time.Duration {
	min := time.Duration(d.cfg.Nodes[0].SamplingInterval)
	for _, n := range d.cfg.Nodes[1:] {
		min = minDur(min, time.Duration(n.SamplingInterval))
	}
	return min
}

// configError marks a fault of the config found against the server (an unknown node,
// a node that is not a number, rejected credentials): retrying cannot mend it.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// Run keeps a session with the server until ctx ends, then returns nil. A config fault
// found at the first connect is returned; later faults are retried with backoff.
func (d *Driver) Run(ctx context.Context, e drivers.Emitter) error {
	log := d.log()
	d.m.register(d.spec.Registerer, d.spec.Name, log)
	bo := backoff{min: time.Duration(d.cfg.Reconnect.Min), max: time.Duration(d.cfg.Reconnect.Max)}
	connected := false
	up := func() {
		if connected {
			d.m.reconnects.Inc()
		}
		connected = true
		bo.reset()
		e.Health(true, nil)
	}
	for {
		err := d.session(ctx, e, log, up)
		if ctx.Err() != nil {
			return nil
		}
		e.Health(false, err)
		var ce *configError
		if !connected && errors.As(err, &ce) {
			return err
		}
		wait := bo.next()
		log.Warn("opc ua session down; reconnecting", "endpoint", d.cfg.Endpoint, "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// session runs one connection from dial to its end, calling up once its subscription
// works; the error says why it ended (nil when ctx ended).
func (d *Driver) session(ctx context.Context, e drivers.Emitter, log *slog.Logger, up func()) error {
	c, err := d.connect(ctx)
	if err != nil {
		return err
	}
	defer d.closeClient(c)

	ids := d.checkIDs()
	values, err := d.readValues(ctx, c, ids)
	if err != nil {
		return err
	}
	if err := d.check(ids, values); err != nil {
		return err
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	notifs := make(chan *opcua.PublishNotificationData, 8)
	params := &opcua.SubscriptionParameters{Interval: d.publishInterval(d.baseSampling())}
	params.MaxKeepAliveCount = keepAliveCount(params.Interval)
	sub, err := c.Subscribe(sctx, params, notifs)
	if err != nil {
		return fmt.Errorf("opcua: source %q: subscribe at %s: %w", d.spec.Name, d.cfg.Endpoint, err)
	}

	d.mu.Lock()
	d.client = c
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.client = nil
		d.mu.Unlock()
	}()

	if d.cfg.Mode == ModeTrigger {
		return d.runTrigger(sctx, c, sub, notifs, e, log, values, up)
	}
	return d.runStream(sctx, c, sub, notifs, e, log, values, up)
}

// checkIDs lists the nodes a connect reads: the reading's nodes, then the trigger and
// part id tags.
func (d *Driver) checkIDs() []*ua.NodeID {
	ids := append([]*ua.NodeID(nil), d.nodeIDs...)
	if d.trigID != nil {
		ids = append(ids, d.trigID)
	}
	if d.partID != nil {
		ids = append(ids, d.partID)
	}
	return ids
}

// nameOf names the node at index i of checkIDs for errors.
func (d *Driver) nameOf(i int) string {
	if i < len(d.cfg.Nodes) {
		return fmt.Sprintf("node %q (%s)", d.cfg.Nodes[i].Name, d.cfg.Nodes[i].NodeID)
	}
	i -= len(d.cfg.Nodes)
	if i == 0 && d.trigID != nil {
		return fmt.Sprintf("trigger.node_id %s", d.cfg.Trigger.NodeID)
	}
	return fmt.Sprintf("trigger.part_id_node %s", d.cfg.Trigger.PartIDNode)
}

func (d *Driver) readValues(ctx context.Context, c *opcua.Client, ids []*ua.NodeID) ([]*ua.DataValue, error) {
	req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnSource}
	for _, id := range ids {
		req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: id, AttributeID: ua.AttributeIDValue})
	}
	rctx, cancel := context.WithTimeout(ctx, time.Duration(d.cfg.RequestTimeout))
	defer cancel()
	res, err := c.Read(rctx, req)
	if err != nil {
		return nil, fmt.Errorf("opcua: source %q: read %d nodes at %s: %w", d.spec.Name, len(ids), d.cfg.Endpoint, err)
	}
	if len(res.Results) != len(ids) {
		return nil, fmt.Errorf("opcua: source %q: read %d nodes at %s: got %d results", d.spec.Name, len(ids), d.cfg.Endpoint, len(res.Results))
	}
	return res.Results, nil
}

// check reports the first node whose read failed or whose value cannot be a scalar,
// as a config fault.
func (d *Driver) check(ids []*ua.NodeID, values []*ua.DataValue) error {
	for i, v := range values {
		if v == nil {
			return &configError{fmt.Errorf("opcua: source %q: %s: no result", d.spec.Name, d.nameOf(i))}
		}
		if v.Status != ua.StatusOK && !isUncertain(v.Status) {
			return &configError{fmt.Errorf("opcua: source %q: %s: %w", d.spec.Name, d.nameOf(i), v.Status)}
		}
		if i < len(d.nodeIDs) || (d.trigID != nil && i == len(d.nodeIDs)) {
			if _, err := toFloat(v.Value); err != nil {
				return &configError{fmt.Errorf("opcua: source %q: %s %w", d.spec.Name, d.nameOf(i), err)}
			}
		}
	}
	return nil
}

func isUncertain(s ua.StatusCode) bool { return s&0xC0000000 == 0x40000000 }

// Probe connects, reads every node and the trigger tags, and reports the first bad
// one by name.
func (d *Driver) Probe(ctx context.Context) error {
	c, err := d.connect(ctx)
	if err != nil {
		return err
	}
	defer d.closeClient(c)
	ids := d.checkIDs()
	values, err := d.readValues(ctx, c, ids)
	if err != nil {
		return err
	}
	return d.check(ids, values)
}

// connect dials the endpoint, opens the secure channel with the configured policy and
// activates a session.
func (d *Driver) connect(ctx context.Context) (*opcua.Client, error) {
	policy := d.cfg.SecurityPolicy + "/" + d.cfg.SecurityMode
	rt := time.Duration(d.cfg.RequestTimeout)
	opts := []opcua.Option{
		opcua.AutoReconnect(false),
		opcua.RequestTimeout(rt),
		opcua.DialTimeout(rt),
		opcua.SessionTimeout(time.Duration(d.cfg.SessionTimeout)),
		opcua.ApplicationName("edged"),
		opcua.ApplicationURI("urn:edged:opcua:" + d.spec.Name),
		opcua.SessionName("edged " + d.spec.Name),
	}
	if d.cfg.CertFile != "" {
		cert, key, err := loadKeyPair(d.cfg.CertFile, d.cfg.KeyFile)
		if err != nil {
			return nil, &configError{fmt.Errorf("opcua: source %q: %w", d.spec.Name, err)}
		}
		opts = append(opts, opcua.Certificate(cert), opcua.PrivateKey(key))
	}

	dctx, cancel := context.WithTimeout(ctx, rt)
	defer cancel()
	eps, err := opcua.GetEndpoints(dctx, d.cfg.Endpoint, opcua.DialTimeout(rt), opcua.RequestTimeout(rt), opcua.AutoReconnect(false))
	if err != nil {
		return nil, fmt.Errorf("opcua: source %q: endpoint %s: %w", d.spec.Name, d.cfg.Endpoint, err)
	}
	ep, err := opcua.SelectEndpoint(eps, d.cfg.securityPolicyURI(), d.cfg.messageSecurityMode())
	if err != nil {
		return nil, &configError{fmt.Errorf("opcua: source %q: endpoint %s offers no security_policy %s: %w", d.spec.Name, d.cfg.Endpoint, policy, err)}
	}
	if d.cfg.ServerCertFile != "" {
		pinned, err := loadCert(d.cfg.ServerCertFile)
		if err != nil {
			return nil, &configError{fmt.Errorf("opcua: source %q: server_cert_file: %w", d.spec.Name, err)}
		}
		if string(pinned) != string(ep.ServerCertificate) {
			return nil, &configError{fmt.Errorf("opcua: source %q: endpoint %s presents a certificate other than server_cert_file %s", d.spec.Name, d.cfg.Endpoint, d.cfg.ServerCertFile)}
		}
	}
	tokenType := ua.UserTokenTypeAnonymous
	if d.cfg.Auth == AuthUsername {
		tokenType = ua.UserTokenTypeUserName
		opts = append(opts, opcua.AuthUsername(d.cfg.Username, d.cfg.Password))
	} else {
		opts = append(opts, opcua.AuthAnonymous())
	}
	opts = append(opts, opcua.SecurityFromEndpoint(ep, tokenType))

	c, err := opcua.NewClient(d.cfg.Endpoint, opts...)
	if err != nil {
		return nil, &configError{fmt.Errorf("opcua: source %q: client for %s: %w", d.spec.Name, d.cfg.Endpoint, err)}
	}
	cctx, ccancel := context.WithTimeout(ctx, 2*rt)
	defer ccancel()
	if err := c.Connect(cctx); err != nil {
		d.closeClient(c)
		if rejected(err) {
			return nil, &configError{fmt.Errorf("opcua: source %q: %s refused the session with security_policy %s, auth %s (check cert_file/key_file, the server's trust list and the credentials): %w", d.spec.Name, d.cfg.Endpoint, policy, d.cfg.Auth, err)}
		}
		return nil, fmt.Errorf("opcua: source %q: connect to %s with security_policy %s: %w", d.spec.Name, d.cfg.Endpoint, policy, err)
	}
	return c, nil
}

// rejected reports whether the server refused the client's certificate or identity,
// which retrying will not change.
func rejected(err error) bool {
	var sc ua.StatusCode
	if !errors.As(err, &sc) {
		var ue *uacp.Error
		if !errors.As(err, &ue) {
			return false
		}
		sc = ua.StatusCode(ue.ErrorCode)
	}
	switch sc {
	case ua.StatusBadSecurityChecksFailed, ua.StatusBadCertificateInvalid, ua.StatusBadCertificateUntrusted,
		ua.StatusBadCertificateUseNotAllowed, ua.StatusBadCertificateURIInvalid, ua.StatusBadCertificateTimeInvalid,
		ua.StatusBadCertificateRevoked, ua.StatusBadCertificateIssuerRevocationUnknown, ua.StatusBadCertificateRevocationUnknown,
		ua.StatusBadIdentityTokenInvalid, ua.StatusBadIdentityTokenRejected, ua.StatusBadUserAccessDenied,
		ua.StatusBadSecurityPolicyRejected, ua.StatusBadSecurityModeRejected, ua.StatusBadApplicationSignatureInvalid:
		return true
	}
	return false
}

// closeClient ends the session and the channel; a dead server gets a short wait.
func (d *Driver) closeClient(c *opcua.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), minDur(time.Second, time.Duration(d.cfg.RequestTimeout)))
	defer cancel()
	_ = c.Close(ctx)
}

// alive reports whether the session still answers.
func (d *Driver) alive(ctx context.Context, c *opcua.Client) error {
	if s := c.State(); s != opcua.Connected {
		return fmt.Errorf("opcua: source %q: connection to %s lost (%s)", d.spec.Name, d.cfg.Endpoint, s)
	}
	rctx, cancel := context.WithTimeout(ctx, time.Duration(d.cfg.RequestTimeout))
	defer cancel()
	_, err := c.Read(rctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{
		NodeID: ua.NewNumericNodeID(0, 2259), AttributeID: ua.AttributeIDValue, // Server_ServerStatus_State
	}}})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("opcua: source %q: %s does not answer: %w", d.spec.Name, d.cfg.Endpoint, err)
	}
	return nil
}

// publishInterval is the subscription's publishing interval for a sampling interval:
// never below 10 ms, which no PLC keeps up with anyway.
func (d *Driver) publishInterval(sampling time.Duration) time.Duration {
	return max(sampling, 10*time.Millisecond)
}

// keepAliveCount makes the server send a keep-alive about every second on a quiet
// line, so a hung server shows within the liveness window.
func keepAliveCount(interval time.Duration) uint32 {
	n := uint32(time.Second / interval)
	return max(n, 1)
}

// handleError decides whether a publish error ends the session.
func (d *Driver) handleError(err error) error {
	if errors.Is(err, ua.StatusBadTimeout) || errors.Is(err, ua.StatusBadNoSubscription) {
		return nil
	}
	return fmt.Errorf("opcua: source %q: subscription at %s: %w", d.spec.Name, d.cfg.Endpoint, err)
}

// Write sets a node's value, converted to the node's data type.
func (d *Driver) Write(ctx context.Context, w drivers.Write) error {
	if err := d.CheckWrite(w); err != nil {
		return err
	}
	id, _ := ua.ParseNodeID(w.Target)
	d.mu.RLock()
	c := d.client
	d.mu.RUnlock()
	if c == nil {
		return fmt.Errorf("opcua: source %q: write %s: not connected to %s", d.spec.Name, w.Target, d.cfg.Endpoint)
	}
	typ, err := d.dataType(ctx, c, id, w.Target)
	if err != nil {
		return err
	}
	v, err := convert(w.Value, typ)
	if err != nil {
		return fmt.Errorf("opcua: source %q: write %s: %w", d.spec.Name, w.Target, err)
	}
	res, err := c.Write(ctx, &ua.WriteRequest{NodesToWrite: []*ua.WriteValue{{
		NodeID:      id,
		AttributeID: ua.AttributeIDValue,
		Value:       &ua.DataValue{EncodingMask: ua.DataValueValue, Value: v},
	}}})
	if err != nil {
		return fmt.Errorf("opcua: source %q: write %v to %s: %w", d.spec.Name, w.Value, w.Target, err)
	}
	if len(res.Results) != 1 {
		return fmt.Errorf("opcua: source %q: write %v to %s: got %d results", d.spec.Name, w.Value, w.Target, len(res.Results))
	}
	if s := res.Results[0]; s != ua.StatusOK {
		return fmt.Errorf("opcua: source %q: write %v to %s: %w", d.spec.Name, w.Value, w.Target, s)
	}
	return nil
}

// CheckWrite checks the target is a node id and the value a kind Write takes.
func (d *Driver) CheckWrite(w drivers.Write) error {
	if err := checkNodeID(w.Target); err != nil {
		return fmt.Errorf("opcua: source %q: write target: %w", d.spec.Name, err)
	}
	if err := checkWriteValue(w.Value); err != nil {
		return fmt.Errorf("opcua: source %q: write %s: %w", d.spec.Name, w.Target, err)
	}
	return nil
}

// dataType reads a node's DataType once. Servers whose DataType is not a built-in
// type (an abstract Number, an enumeration, or gopcua's own server, which gives every
// variable the VariableNode type) are answered with the type of the current value.
func (d *Driver) dataType(ctx context.Context, c *opcua.Client, id *ua.NodeID, target string) (ua.TypeID, error) {
	key := id.String()
	d.mu.RLock()
	t, ok := d.types[key]
	d.mu.RUnlock()
	if ok {
		return t, nil
	}
	res, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{
		{NodeID: id, AttributeID: ua.AttributeIDDataType},
		{NodeID: id, AttributeID: ua.AttributeIDValue},
	}})
	if err != nil {
		return 0, fmt.Errorf("opcua: source %q: write %s: read its data type: %w", d.spec.Name, target, err)
	}
	if len(res.Results) != 2 {
		return 0, fmt.Errorf("opcua: source %q: write %s: read its data type: got %d results", d.spec.Name, target, len(res.Results))
	}
	dt, val := res.Results[0], res.Results[1]
	if val.Status != ua.StatusOK && !isUncertain(val.Status) {
		return 0, fmt.Errorf("opcua: source %q: write %s: %w", d.spec.Name, target, val.Status)
	}
	found := false
	if dt.Status == ua.StatusOK && dt.Value != nil {
		if nid, ok := dt.Value.Value().(*ua.NodeID); ok {
			t, found = builtinType(nid)
		}
	}
	if !found && val.Value != nil && val.Value.ArrayLength() <= 0 {
		t, found = val.Value.Type(), val.Value.Type() != ua.TypeIDNull
	}
	if !found || !writable(t) {
		return 0, fmt.Errorf("opcua: source %q: write %s: node type %s is not writable (want a number, Boolean or String)", d.spec.Name, target, typeName(t))
	}
	d.mu.Lock()
	d.types[key] = t
	d.mu.Unlock()
	return t, nil
}

// loadKeyPair reads the client certificate and RSA key, each PEM or DER.
func loadKeyPair(certFile, keyFile string) ([]byte, *rsa.PrivateKey, error) {
	cert, err := loadCert(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("cert_file: %w", err)
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("key_file: %w", err)
	}
	der := b
	if blk, _ := pem.Decode(b); blk != nil {
		der = blk.Bytes
	}
	var key *rsa.PrivateKey
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		key = k
	} else if k8, err8 := x509.ParsePKCS8PrivateKey(der); err8 == nil {
		rk, ok := k8.(*rsa.PrivateKey)
		if !ok {
			return nil, nil, fmt.Errorf("key_file: %s holds a %T, OPC UA needs an RSA key", keyFile, k8)
		}
		key = rk
	} else {
		return nil, nil, fmt.Errorf("key_file: %s is not an RSA private key (PKCS#1 or PKCS#8, PEM or DER): %w", keyFile, err)
	}
	x, err := x509.ParseCertificate(cert)
	if err != nil {
		return nil, nil, fmt.Errorf("cert_file: %s: %w", certFile, err)
	}
	if pub, ok := x.PublicKey.(*rsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, nil, fmt.Errorf("key_file: %s does not match cert_file %s", keyFile, certFile)
	}
	return cert, key, nil
}

// loadCert reads a certificate, PEM or DER, and returns its DER bytes.
func loadCert(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	der := b
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s holds a PEM %q block, not a CERTIFICATE", path, blk.Type)
		}
		der = blk.Bytes
	}
	if _, err := x509.ParseCertificate(der); err != nil {
		return nil, fmt.Errorf("%s is not an X.509 certificate: %w", path, err)
	}
	return der, nil
}

// backoff is capped exponential with jitter: each wait is drawn from the upper half of
// the current step, so many boxes restarting with one PLC do not retry in step.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	half := b.cur / 2
	return half + rand.N(half+1)
}

func (b *backoff) reset() { b.cur = 0 }

func minDur(a, b time.Duration) time.Duration { return min(a, b) }

// metrics are the driver's own counters, labelled with the source. New makes them
// unregistered (it has no side effects); the first Run registers them, and a second
// source on the same registry shares the first one's vectors.
type metrics struct {
	once          sync.Once
	vecs          []*prometheus.CounterVec
	notifications prometheus.Counter
	reconnects    prometheus.Counter
	overflow      prometheus.Counter
	unread        prometheus.Counter
}

func newMetrics(source string) *metrics {
	vec := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"source"})
	}
	m := &metrics{vecs: []*prometheus.CounterVec{
		vec("edged_opcua_notifications_total", "Data change notifications received from the OPC UA server."),
		vec("edged_opcua_reconnects_total", "OPC UA sessions re-established after a loss."),
		vec("edged_opcua_trigger_overflow_total", "Triggered parts dropped because the inspection queue was full."),
		vec("edged_opcua_trigger_unread_total", "Triggered parts not inspected because their nodes could not be read."),
	}}
	m.bind(source)
	return m
}

func (m *metrics) bind(source string) {
	m.notifications = m.vecs[0].WithLabelValues(source)
	m.reconnects = m.vecs[1].WithLabelValues(source)
	m.overflow = m.vecs[2].WithLabelValues(source)
	m.unread = m.vecs[3].WithLabelValues(source)
}

// register puts the counters on reg once; what the driver counted before stays with
// the unregistered ones.
func (m *metrics) register(reg prometheus.Registerer, source string, log *slog.Logger) {
	m.once.Do(func() {
		if reg == nil {
			return
		}
		for i, v := range m.vecs {
			err := reg.Register(v)
			if err == nil {
				continue
			}
			var are prometheus.AlreadyRegisteredError
			existing, ok := v, false
			if errors.As(err, &are) {
				existing, ok = are.ExistingCollector.(*prometheus.CounterVec)
			}
			if !ok {
				log.Warn("opc ua metrics not registered: a different collector holds their names", "err", err)
				return
			}
			m.vecs[i] = existing
		}
		m.bind(source)
	})
}
