// Package publish delivers inspection results over MQTT: the result payload, a
// publisher that queues, sends and confirms results with bounded memory and no silent
// loss, and the embedded broker used when a box runs on its own.
package publish

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/breaker"
	"github.com/edgedrun/edged/spool"
)

// ErrClosed is returned by Publish and PublishEvent once Run has begun shutting down.
var ErrClosed = errors.New("mqtt publisher closed")

// ErrNotDelivered is passed to Config.OnResult for a result that was given up on: without
// a spool, one still undelivered when Run's drain time ran out; with one, a result the
// spool failed to store (the error then also wraps the spool's).
var ErrNotDelivered = errors.New("result not delivered to the mqtt broker")

// ErrSpooled is passed to Config.OnResult for a result that went to Config.Spool instead
// of straight to the broker: during an outage, behind older spooled records, after a
// failed send, or still queued or unacknowledged at shutdown. The spool owns it from then
// on and delivers it, in order, once the broker is back, by this Run or a later one
// with the same spool; OnResult is not called for it again.
var ErrSpooled = errors.New("result spooled for later delivery to the mqtt broker")

// Status payloads on the retained status topic.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
)

const (
	// initialBackoff is the first wait after a failed connection attempt; it doubles up
	// to Config.MaxReconnectInterval.
	initialBackoff = 500 * time.Millisecond
	// stableConnection is how long a connection must have lasted for its loss to be
	// retried at once; a broker that accepts and then drops clients is retried with
	// backoff instead of in a tight loop.
	stableConnection = 10 * time.Second
	// disconnectQuiesce is how long Disconnect lets the DISCONNECT packet go out.
	disconnectQuiesce = 250 // milliseconds, as paho takes it
	// minOfflineWait is the least time given to the retained `offline` at shutdown, even
	// when the drain used up its time.
	minOfflineWait = time.Second
	// maxPooledPayload keeps one oversized result from pinning a large buffer.
	maxPooledPayload = 64 << 10
	// reconnectDrain bounds how long a reconnect for new settings waits for the
	// messages in flight to be acknowledged before it reconnects all the same.
	reconnectDrain = 2 * time.Second
	// reconnectGrace is the pause between ending a connection on purpose and making
	// the next: the broker must have read the DISCONNECT before the new connection
	// takes the session over, or it takes the old connection for lost and publishes
	// the last will. Over a network the new connection's handshakes alone take
	// longer; on loopback, and through a proxy, they need not.
	reconnectGrace = 100 * time.Millisecond
)

// errConnectionLost is the breaker's failure for a message sent on a connection that
// was lost before the broker acknowledged it.
var errConnectionLost = errors.New("mqtt connection lost before the broker acknowledged the message")

// errNotConnected is the breaker's failure for a result that arrived while there was no
// connection to send it on.
var errNotConnected = errors.New("mqtt broker not connected")

// EventVersion is the event payload version written in the v field.
const EventVersion = 1

// Event is the payload on edged/v1/{site}/{line}/{node}/event.
type Event struct {
	V    int       `json:"v"`
	ID   string    `json:"id"`
	Node string    `json:"node"`
	Kind string    `json:"kind"`
	Time time.Time `json:"time"`
	// Fields carries the event's details, encoded with encoding/json.
	Fields any `json:"fields,omitempty"`
}

// Stats are the publisher's result counts. Accepted - Acked - Spooled - Failed is what
// is still queued or in flight; a Publish call that is blocked counts as accepted until
// it returns an error, so that the difference never goes below zero.
type Stats struct {
	// Accepted counts results taken by Publish.
	Accepted uint64
	// Acked counts results the broker acknowledged (at QoS 0: written to it) that went
	// straight to it, not through the spool.
	Acked uint64
	// Failed counts results given up on: at shutdown without a spool, or refused by
	// the spool.
	Failed uint64
	// Retried counts publish attempts that failed and were queued again (without a
	// spool; with one, a failed message goes to the spool).
	Retried uint64
	// Spooled counts results that went to the spool (OnResult saw ErrSpooled).
	Spooled uint64
	// Replayed counts spool records (results and events, this run's or earlier ones')
	// the broker acknowledged.
	Replayed uint64
	// Redelivered counts spool records handed out again after a rewind: sent before,
	// not acknowledged when the connection failed.
	Redelivered uint64
}

// Publisher sends results, events and the box's status to an MQTT broker.
//
// Its life: NewPublisher (no side effects), then Run in a goroutine of its own, with
// Publish called from any number of goroutines before and while Run runs. Publish only
// queues; Run connects, keeps reconnecting with backoff, publishes with a bounded
// in-flight window, and re-sends anything that failed, so a result that Publish accepted
// is either acknowledged by the broker, handed to Config.Spool, or reported undelivered
// through Config.OnResult: never dropped in between. With a spool, what the broker has
// not acknowledged survives outages and restarts on disk and is delivered in order,
// before newer results. Delivery is at least once; consumers de-duplicate on the
// result's id.
//
// A circuit breaker (Config.Breaker) watches how sends end; when too many fail it
// keeps results off the broker (in the spool, or queued) until probes get through, and
// BreakerState reports it. Reconfigure changes the settings that may change while Run
// runs.
//
// Run's context should end after the producers have stopped: from then on Publish
// returns ErrClosed, and Run drains what is queued within Config.DrainTimeout.
type Publisher struct {
	cfg         Config
	log         *slog.Logger
	broker      string // the URL as logged: password redacted
	resultTopic string // prefix; the inspection name follows
	statusTopic string
	eventTopic  string
	alertPrefix string
	// cmdPrefix is where commands arrive: edged/v1/{site}/{line}/{node}/cmd/.
	cmdPrefix string

	queue    chan message
	mu       sync.RWMutex // orders closed against senders joining
	closed   bool
	stopping chan struct{} // closed when intake closes, to release blocked senders
	senders  sync.WaitGroup

	started   atomic.Bool
	connected atomic.Bool
	inflight  atomic.Int64
	retrying  atomic.Int64
	accepted  atomic.Uint64
	acked     atomic.Uint64
	failed    atomic.Uint64
	retried   atomic.Uint64
	spooled   atomic.Uint64
	replayed  atomic.Uint64
	redeliv   atomic.Uint64
	spooling  atomic.Bool
	// certAsked says, for the connection attempt under way or last made, whether the
	// broker asked for a client certificate during the TLS handshake and whether one
	// was sent: one of the certAsked constants. connectProblem reads it.
	certAsked atomic.Int32

	store   *sessionStore
	metrics publisherMetrics
	// spb is the Sparkplug B edge node with Config.Format sparkplug_b; nil with JSON.
	spb *spbNode

	// live holds the settings Reconfigure may change, defaults filled in; brk the
	// circuit breaker, which Reconfigure may replace. The runner takes up a change
	// when reconf says there is one.
	live       atomic.Pointer[Live]
	brk        atomic.Pointer[breaker.Breaker]
	brkMetrics *breaker.Metrics
	reconfMu   sync.Mutex // one Reconfigure at a time
	reconf     chan struct{}
	// urlCredentials: Config.Broker carries a user name, which paho sends instead of
	// Username and Password.
	urlCredentials bool
}

// Values of Publisher.certAsked.
const (
	certAskedNot      int32 = iota // no TLS, or the broker did not ask for a client certificate
	certAskedNoneSent              // the broker asked and no certificate was sent
	certAskedSent                  // the broker asked and a certificate was sent
)

// message is one MQTT message on its way out.
type message struct {
	topic    string
	payload  []byte
	qos      byte
	retained bool
	res      *Result // nil for status and events
	status   bool    // a birth message: not retried, the next connection sends its own
	// rec is the spool record id of a message read from the spool (fromSpool).
	rec       uint64
	fromSpool bool
	// brk is the breaker's call for a result or event sent live; nil until the breaker
	// let it through. Copies of the message share it.
	brk *brkCall
}

// brkCall is a message's call through the circuit breaker, reported once, by whichever
// copy of the message is settled first. Only the runner's loop touches it.
type brkCall struct {
	b    *breaker.Breaker
	done func(error)
}

// admitted reports whether m may go out live: a status message needs no call; a result
// or event needs a call not yet reported.
func (m *message) admitted() bool { return m.status || (m.brk != nil && m.brk.done != nil) }

// direct reports whether m is a result or event on its way straight to the broker: one
// the spool has not taken yet.
func (m *message) direct() bool { return !m.status && !m.fromSpool }

type publisherMetrics struct {
	published   [3]prometheus.Counter // by QoS
	errors      prometheus.Counter
	ackedDirect prometheus.Counter
	ackedSpool  prometheus.Counter
	redelivered prometheus.Counter
	spoolErrors map[string]prometheus.Counter // by operation
}

// Spool operations counted in edged_mqtt_spool_errors_total.
const (
	spoolOpAppend = "append"
	spoolOpAck    = "ack"
	spoolOpDecode = "decode"
)

var payloadPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// NewPublisher validates cfg and returns a publisher that does nothing until Run. Its
// metrics are registered with reg, which may be nil.
func NewPublisher(cfg Config, reg prometheus.Registerer, log *slog.Logger) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mqtt publisher config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	prefix := "edged/v1/" + cfg.Site + "/" + cfg.Line + "/" + cfg.Node + "/"
	p := &Publisher{
		cfg:         cfg,
		log:         log.With("component", "mqtt"),
		broker:      redact(cfg.Broker),
		resultTopic: prefix + "result/",
		statusTopic: prefix + "status",
		eventTopic:  prefix + "event",
		alertPrefix: prefix + "alert/",
		cmdPrefix:   prefix + "cmd/",
		queue:       make(chan message, cfg.QueueSize),
		stopping:    make(chan struct{}),
		store:       newSessionStore(),
		reconf:      make(chan struct{}, 1),
		brkMetrics:  cfg.BreakerMetrics,
	}
	live := cfg.Live().withDefaults()
	p.live.Store(&live)
	if u, err := url.Parse(cfg.Broker); err == nil && u.User != nil {
		p.urlCredentials = true
	}
	if cfg.Format == FormatSparkplugB {
		p.spb = newSpbNode(cfg, p.resultTopic)
	}
	published := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edged_mqtt_published_total",
		Help: "MQTT messages (results, events, status) the broker acknowledged; at QoS 0, written to it.",
	}, []string{"qos"})
	for q := range p.metrics.published {
		p.metrics.published[q] = published.WithLabelValues(strconv.Itoa(q))
	}
	p.metrics.errors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edged_mqtt_publish_errors_total",
		Help: "MQTT publish attempts that failed; the message is sent again.",
	})
	acked := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edged_mqtt_acked_total",
		Help: "Results and events the MQTT broker acknowledged, by how they went: direct from the queue, or replayed from the spool.",
	}, []string{"via"})
	p.metrics.ackedDirect = acked.WithLabelValues("direct")
	p.metrics.ackedSpool = acked.WithLabelValues("spool")
	p.metrics.redelivered = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edged_mqtt_redelivered_total",
		Help: "Spool records sent again after a connection failed before the broker acknowledged them.",
	})
	spoolErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edged_mqtt_spool_errors_total",
		Help: "Spool operations that failed: append (the message is lost and reported), ack, decode (an unreadable record is skipped).",
	}, []string{"op"})
	p.metrics.spoolErrors = map[string]prometheus.Counter{}
	for _, op := range []string{spoolOpAppend, spoolOpAck, spoolOpDecode} {
		p.metrics.spoolErrors[op] = spoolErrors.WithLabelValues(op)
	}
	collectors := []prometheus.Collector{
		published,
		p.metrics.errors,
		acked,
		p.metrics.redelivered,
		spoolErrors,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "edged_mqtt_spooling",
			Help: "1 while results go to the spool and the spool is delivered first; 0 while they go straight to the broker.",
		}, func() float64 {
			if p.spooling.Load() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "edged_mqtt_connected",
			Help: "1 while connected to the MQTT broker.",
		}, func() float64 {
			if p.connected.Load() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "edged_mqtt_queue_depth",
			Help: "Messages waiting to be sent to the MQTT broker, retries included.",
		}, func() float64 { return float64(len(p.queue)) + float64(p.retrying.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "edged_mqtt_inflight",
			Help: "Messages sent to the MQTT broker and not yet acknowledged.",
		}, func() float64 { return float64(p.inflight.Load()) }),
	}
	if p.brkMetrics == nil {
		var err error
		if p.brkMetrics, err = breaker.NewMetrics(reg); err != nil {
			return nil, fmt.Errorf("mqtt publisher: %w", err)
		}
	}
	brk, err := breaker.New(p.breakerConfig(cfg.Breaker), p.brkMetrics)
	if err != nil {
		return nil, fmt.Errorf("mqtt publisher config: mqtt.breaker: %w", err)
	}
	p.brk.Store(brk)
	if reg != nil {
		for _, c := range collectors {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register mqtt metrics: %w", err)
			}
		}
	}
	return p, nil
}

// breakerConfig is c as the publisher's breaker takes it: its name and logger are the
// publisher's.
func (p *Publisher) breakerConfig(c breaker.Config) breaker.Config {
	c.Name, c.Log = p.cfg.Breaker.Name, p.log
	return c.WithDefaults()
}

// qos is the QoS of results and events queued now.
func (p *Publisher) qos() byte { return *p.live.Load().QoS }

// statusQoS is the QoS of the status topic: at least 1, since a lost `offline` would
// leave a dead box looking alive.
func (p *Publisher) statusQoS() byte { return max(p.qos(), 1) }

// BreakerState reports the state of the circuit breaker on the live path to the broker.
func (p *Publisher) BreakerState() breaker.State { return p.brk.Load().State() }

// Reconfigure changes the settings in l while the publisher runs (or before Run). It
// validates l first and changes nothing when l is invalid; the error names the bad
// values. It is safe to call concurrently with Run, Publish and itself.
//
// What changes, and when:
//   - QoS: for results and events queued after the call; those already queued or
//     spooled keep theirs. With a spool, a change to or from QoS 2 reconnects, since
//     QoS 2 uses a clean session (see runner.sessionClean).
//   - Username, Password, KeepAlive, ConnectTimeout: a connection made with other
//     values is ended on purpose and made again promptly. Sends pause while the
//     messages in flight are acknowledged, for up to 2s; then the DISCONNECT makes the
//     broker discard the last will, so the box does not show offline. What is still
//     unacknowledged then goes the way of a lost connection's: back to the spool and
//     replayed in order, or without a spool, sent again by paho from its session
//     store. Without a connection, a pending retry is made at once.
//   - Breaker: a breaker with other settings is replaced by a new one, which starts
//     closed whatever the old one's state was; outcomes of messages sent through the
//     old one are no longer counted.
func (p *Publisher) Reconfigure(l Live) error {
	l.Breaker.Name = p.cfg.Breaker.Name
	if err := l.Validate(); err != nil {
		return fmt.Errorf("mqtt publisher reconfigure: %w", err)
	}
	l = l.withDefaults()
	p.reconfMu.Lock()
	defer p.reconfMu.Unlock()
	old := p.live.Load()
	var brk *breaker.Breaker
	if bc, cur := p.breakerConfig(l.Breaker), p.brk.Load(); bc != cur.Config() {
		var err error
		// Validated above: New fails on nothing else.
		if brk, err = breaker.New(bc, p.brkMetrics); err != nil {
			return fmt.Errorf("mqtt publisher reconfigure: mqtt.breaker: %w", err)
		}
	}
	l.Breaker = p.breakerConfig(l.Breaker)
	p.live.Store(&l)
	var changed []any
	if *l.QoS != *old.QoS {
		changed = append(changed, "qos", *l.QoS)
	}
	if l.Username != old.Username {
		changed = append(changed, "username", l.Username)
	}
	if l.Password != old.Password {
		changed = append(changed, "password", "(changed)")
	}
	if l.KeepAlive != old.KeepAlive {
		changed = append(changed, "keep_alive", l.KeepAlive)
	}
	if l.ConnectTimeout != old.ConnectTimeout {
		changed = append(changed, "connect_timeout", l.ConnectTimeout)
	}
	if brk != nil {
		prev := p.brk.Swap(brk).State()
		changed = append(changed, "breaker", "replaced; closed", "breaker_was", prev.String())
	}
	if len(changed) == 0 {
		return nil
	}
	p.log.Info("mqtt settings changed", changed...)
	select {
	case p.reconf <- struct{}{}:
	default: // the runner has one to take already, and reads the settings then
	}
	return nil
}

// ResultTopic is the topic results of inspection go to.
func (p *Publisher) ResultTopic(inspection string) string { return p.resultTopic + inspection }

// StatusTopic is the retained topic carrying StatusOnline or StatusOffline.
func (p *Publisher) StatusTopic() string { return p.statusTopic }

// EventTopic is the topic of PublishEvent.
func (p *Publisher) EventTopic() string { return p.eventTopic }

// CommandTopic is where commands with this verb reach the box.
func (p *Publisher) CommandTopic(verb string) string { return p.cmdPrefix + verb }

// AlertTopic is where alerts of a kind go: edged/v1/{site}/{line}/{node}/alert/{kind}.
func (p *Publisher) AlertTopic(kind string) string { return p.alertPrefix + kind }

// Connected reports whether the publisher holds a connection to the broker now.
func (p *Publisher) Connected() bool { return p.connected.Load() }

// Stats returns the result counts.
func (p *Publisher) Stats() Stats {
	return Stats{
		Accepted:    p.accepted.Load(),
		Acked:       p.acked.Load(),
		Failed:      p.failed.Load(),
		Retried:     p.retried.Load(),
		Spooled:     p.spooled.Load(),
		Replayed:    p.replayed.Load(),
		Redelivered: p.redeliv.Load(),
	}
}

// Publish queues r for delivery, blocking while the queue is full. It returns ctx's
// error if ctx ends first, and ErrClosed once Run is shutting down. It fills r's V, ID
// and Node when they are empty; r must not be changed after the call, since
// Config.OnResult hands it back.
func (p *Publisher) Publish(ctx context.Context, r *Result) error {
	if r == nil {
		return errors.New("publish result: nil result")
	}
	if err := checkTopicLevel(r.Inspection); err != nil {
		return fmt.Errorf("publish result %s: inspection %q %w", r.ID, r.Inspection, err)
	}
	if r.V == 0 {
		r.V = ResultVersion
	}
	if r.Node == "" {
		r.Node = p.cfg.Node
	}
	if r.ID == "" {
		r.ID = newID()
	}
	// Encode into a pooled buffer and copy out once: the payload must be its own
	// allocation, since the client keeps it until the broker acknowledges it.
	bp := payloadPool.Get().(*[]byte)
	b := r.AppendJSON((*bp)[:0])
	payload := bytes.Clone(b)
	if cap(b) <= maxPooledPayload {
		*bp = b
		payloadPool.Put(bp)
	}
	return p.enqueue(ctx, message{topic: p.resultTopic + r.Inspection, payload: payload, qos: p.qos(), res: r})
}

// PublishEvent queues an event (a model swap, a driver's health) on the event topic, as
// Publish does for results. fields is encoded with encoding/json.
func (p *Publisher) PublishEvent(ctx context.Context, kind string, fields any) error {
	if kind == "" {
		return errors.New("publish event: empty kind")
	}
	payload, err := json.Marshal(Event{
		V:      EventVersion,
		ID:     newID(),
		Node:   p.cfg.Node,
		Kind:   kind,
		Time:   time.Now().UTC(),
		Fields: fields,
	})
	if err != nil {
		return fmt.Errorf("publish event %q: encode: %w", kind, err)
	}
	return p.enqueue(ctx, message{topic: p.eventTopic, payload: payload, qos: p.qos()})
}

// PublishAlert queues an alert on AlertTopic(kind), shaped as an event (v, id, node,
// kind, time, fields), for whoever watches the line's alarms.
func (p *Publisher) PublishAlert(ctx context.Context, kind string, fields any) error {
	if kind == "" || strings.ContainsAny(kind, "/+#") {
		return fmt.Errorf("publish alert: kind %q is not one topic level", kind)
	}
	payload, err := json.Marshal(Event{
		V:      EventVersion,
		ID:     newID(),
		Node:   p.cfg.Node,
		Kind:   kind,
		Time:   time.Now().UTC(),
		Fields: fields,
	})
	if err != nil {
		return fmt.Errorf("publish alert %q: encode: %w", kind, err)
	}
	return p.enqueue(ctx, message{topic: p.alertPrefix + kind, payload: payload, qos: p.qos()})
}

func (p *Publisher) enqueue(ctx context.Context, m message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		return ErrClosed
	}
	p.senders.Add(1)
	p.mu.RUnlock()
	defer p.senders.Done()

	// Counted before the send so that Accepted never trails Acked.
	if m.res != nil {
		p.accepted.Add(1)
	}
	var err error
	select {
	case p.queue <- m:
		return nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-p.stopping:
		err = ErrClosed
	}
	if m.res != nil {
		p.accepted.Add(^uint64(0))
	}
	return err
}

// closeIntake stops Publish from queueing and waits for senders already inside it, so
// that afterwards the queue only shrinks.
func (p *Publisher) closeIntake() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	close(p.stopping)
	p.senders.Wait()
}

// Run connects to the broker and delivers queued messages until ctx ends, then drains:
// it stops intake, delivers what is queued within Config.DrainTimeout, puts the rest in
// Config.Spool or, without one, reports it through Config.OnResult, publishes the
// retained `offline` status, disconnects and returns nil. A broker that cannot be
// reached is logged once per outage and retried with backoff; Run does not fail because
// of it. Run may be called once.
//
// With a spool, Run starts by delivering what an earlier run left in it.
//
// Shutdown takes at most DrainTimeout plus the time paho needs to let go: a connection
// attempt under way finishes within Config.ConnectTimeout, a publish call stuck on a
// dead connection within Config.WriteTimeout.
func (p *Publisher) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return errors.New("mqtt publisher: Run called twice")
	}
	r := &runner{
		p:     p,
		brk:   p.brk.Load(),
		spool: p.cfg.Spool,
		// A stale report (from a client already given up) must not crowd out the
		// current client's.
		lost: make(chan lostEvent, 4),
		// Room for every message the window allows, and the last pending and exit
		// mark of each sender of a lost connection.
		sent: make(chan pending, p.cfg.MaxInflight+4),
	}
	if r.spool == nil {
		r.newClient()
		r.startSender()
	} else if n := r.spool.Len(); n > 0 {
		r.setSpooling(true, "records left by an earlier run", "records", n)
	}
	r.loop(ctx)
	r.finish()
	return nil
}

// clientOptions configures paho. Reconnection is done by runner, not by paho: paho's
// retry loops sleep without a way to stop them, so its goroutines would outlive Run by
// up to the reconnect interval, and its first-connect retry has no backoff. One
// attempt per Connect, owned and timed here, gives a Run that returns promptly and
// leaves nothing running.
//
// Without a spool one client serves every connection, so that paho's session store
// carries over. With one, each connection attempt gets a fresh client (gen numbers
// them) with a fresh, empty store: a publish that was blocked inside the client when
// its connection died can then never go out on the next connection, ahead of the
// replay of older records, and paho has nothing of its own to re-send.
//
// The broker session is persistent (clean session off), with a spool too, so that a
// plant's broker keeps the box's session across outages (see runner.sessionClean for
// the exceptions, and clean for what it says). With a spool that is safe because:
//   - paho re-sends nothing: the new client's store is empty; the spool re-sends, in
//     order, what the broker had not acknowledged;
//   - paho leaves the tokens of a lost connection uncompleted when the session is not
//     clean; nothing waits on them alone: the loop settles a lost connection's messages
//     on the client's loss report (abandon), finish waits on the offline status with a
//     timer and the loss report, and spoolRest only looks at tokens without waiting;
//   - at QoS 0 and 1 the broker keeps no state for messages it received, so a new
//     client's packet ids cannot collide with the old connection's.
//
// With Sparkplug B the will is the NDEATH carrying bdSeq, the birth/death sequence of
// the connection this client makes.
//
// The keep-alive and timeouts are l's. The credentials are read at each connection
// attempt, so that a client without a spool, which serves every connection, sends
// those Reconfigure set last.
func (p *Publisher) clientOptions(l *Live, clean bool, lost chan<- lostEvent, gen int, bdSeq uint64) *mqtt.ClientOptions {
	o := mqtt.NewClientOptions().
		AddBroker(p.cfg.Broker).
		SetClientID(p.cfg.ClientID).
		// A persistent session keeps the broker's state across reconnects. Without a
		// spool paho re-sends unacknowledged messages from the shared store. With one,
		// the spool re-sends, in order, what was not acknowledged, after a reconnect
		// and after a restart; each client's store starts empty (below), so paho
		// re-sends nothing of its own that would double every in-flight message, or
		// complete tokens as if acknowledged when it re-sends them.
		SetCleanSession(clean).
		// Without an explicit version paho retries a refused 3.1.1 connect as 3.1, and
		// the operator sees "unacceptable protocol version" instead of the real cause.
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(l.KeepAlive).
		SetPingTimeout(min(l.KeepAlive, 10*time.Second)).
		SetConnectTimeout(l.ConnectTimeout).
		SetWriteTimeout(p.cfg.WriteTimeout).
		SetWill(p.statusTopic, StatusOffline, max(*l.QoS, 1), true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			// Only the latest loss matters; runner asks the client for the state.
			select {
			case lost <- lostEvent{gen: gen, err: err}:
			default:
			}
		})
	if !p.urlCredentials {
		// paho lets credentials in the broker URL win over the options, but not over
		// a provider.
		o.SetCredentialsProvider(func() (string, string) {
			l := p.live.Load()
			return l.Username, l.Password
		})
	}
	if p.spb != nil {
		// Sparkplug B: NDEATH at QoS 1, not retained, in place of the retained status.
		o.SetBinaryWill(p.spb.deathTopic, p.spb.death(bdSeq), 1, false)
	}
	if p.cfg.Spool == nil {
		o.SetStore(p.store)
	} else {
		// Its own, empty: nothing from an earlier connection is re-sent by paho.
		o.SetStore(mqtt.NewMemoryStore())
	}
	if p.cfg.Commands != nil {
		// The subscription is renewed on every connection: a clean session drops it, and
		// each spooled connection has a client of its own. Commands the broker kept for
		// a persistent session can arrive before the subscription is renewed, while the
		// new client has no route for them yet: the default handler takes those.
		o.SetDefaultPublishHandler(p.command)
		o.SetOnConnectHandler(func(c mqtt.Client) {
			tok := c.Subscribe(p.cmdPrefix+"+", 1, p.command)
			if !tok.WaitTimeout(l.ConnectTimeout) {
				p.log.Warn("mqtt command subscription not acknowledged in time; commands may not reach the box until the next connection", "topic", p.cmdPrefix+"+")
			} else if err := tok.Error(); err != nil {
				p.log.Error("mqtt command subscription refused; commands cannot reach the box", "topic", p.cmdPrefix+"+", "err", err)
			}
		})
	}
	if p.cfg.TLS != nil {
		// A copy: cfg.TLS stays as the caller made it.
		o.SetTLSConfig(p.watchCertRequest(p.cfg.TLS))
	}
	return o
}

// sessionClean reports whether the next connection is made with a clean session. It
// is not (the session is persistent) except with a spool at QoS 2, or with a spool and
// Sparkplug B:
//   - QoS 2: the broker keeps, for the session, every QoS 2 packet id it sent PUBREC
//     for until the PUBREL comes, and must take a new PUBLISH with such an id for a
//     duplicate (MQTT 3.1.1, 4.3.3, method B): it acknowledges it and drops it. Each
//     connection's client starts with an empty store and hands out packet ids anew,
//     so its first messages could reuse ids the old connection left half done, and be
//     lost while reported delivered. A clean session drops that state at connect.
//     (Without a spool there is one client and one store across connections: paho
//     reserves the stored ids and finishes their flows, so no id is reused.)
//   - Sparkplug B requires a clean session of MQTT 3.1.1 edge nodes (Sparkplug 3.0,
//     tck-id-principles-persistence-clean-session-311); a spooled Sparkplug publisher
//     keeps the clean session it always had.
//
// Reconfigure can change the QoS while messages at the old one are still queued or
// spooled, so QoS 2 messages can go out on a persistent session, and the hazard above
// comes back: the connection after one that was persistent and carried a QoS 2 flow
// is clean too. (After a clean one nothing is left: the broker ends a clean session
// with its connection.)
func (r *runner) sessionClean() bool {
	return r.spool != nil && (r.p.qos() == 2 || r.p.spb != nil || (!r.connClean && r.connQoS2))
}

// command hands a message on the command topic to Config.Commands.
func (p *Publisher) command(_ mqtt.Client, m mqtt.Message) {
	verb, ok := strings.CutPrefix(m.Topic(), p.cmdPrefix)
	if !ok || verb == "" || strings.Contains(verb, "/") {
		return
	}
	p.cfg.Commands(verb, m.Payload())
}

// watchCertRequest returns a copy of c that records in p.certAsked whether the broker
// asked for a client certificate and whether one was sent. It chooses the certificate
// as crypto/tls does without a GetClientCertificate.
func (p *Publisher) watchCertRequest(c *tls.Config) *tls.Config {
	c = c.Clone()
	get, certs := c.GetClientCertificate, c.Certificates
	c.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		var cert *tls.Certificate
		if get != nil {
			var err error
			if cert, err = get(cri); err != nil {
				return nil, err
			}
		} else {
			for i := range certs {
				if cri.SupportsCertificate(&certs[i]) == nil {
					cert = &certs[i]
					break
				}
			}
		}
		if cert == nil {
			// crypto/tls sends an empty certificate message for "none".
			cert = new(tls.Certificate)
		}
		if len(cert.Certificate) > 0 {
			p.certAsked.Store(certAskedSent)
		} else {
			p.certAsked.Store(certAskedNoneSent)
		}
		return cert, nil
	}
	return c
}

// runner is Run's state. The loop goroutine owns it; the senders only call
// client.Publish and hand the tokens back.
//
// With a spool, runner is in one of two modes. Direct: connected, and every record of
// the spool sent; results go from the queue to the broker, as without a spool.
// Spooling: entered when the connection is lost or cannot be made, when a send fails,
// or at start when the spool is not empty; results from the queue are appended to the
// spool, and the sender publishes the spool's records, acknowledging each to the spool
// on the broker's PUBACK. Once connected with every record sent, runner goes back to
// direct. Order holds across the switches because:
//   - direct messages still out when spooling begins are settled first, oldest first:
//     acknowledged, or appended to the spool; nothing is taken from the queue and no
//     record is sent until none is left;
//   - records are sent only in spooling mode, and direct mode begins only once every
//     record has been sent: newer messages go out behind them on the same connection;
//   - a lost connection settles everything sent on it at once, oldest first (abandon):
//     unacknowledged records are rewound, direct messages appended behind them; the
//     next connection is made with a new client, so that a publish still stuck in the
//     old one can never go out on it, ahead of the replay.
//
// The circuit breaker sits on the live path: each result or event asks it before it
// goes to the sender (admit), and the breaker hears how it ended: acknowledged,
// failed, or lost with its connection; failed connection attempts, and results that
// arrive while there is no connection, count as failures too. While it refuses, nothing live goes out: with a spool the runner is spooling
// (a refusal starts it, and it returns to direct mode only with the breaker closed),
// so results go to the spool, and records wait; without one, results wait in the
// queues. Once the breaker is half-open its probes are the first records replayed (or
// without a spool, the first messages sent), and their acknowledgement closes it; the
// order rules above hold throughout, since a refused message waits in place.
type runner struct {
	p      *Publisher
	client mqtt.Client
	lost   chan lostEvent
	// gen numbers the clients (with a spool, one per connection attempt) and the
	// connections' senders; what comes from an older one is stale.
	gen int

	open        bool       // connected, as far as runner knows
	connecting  mqtt.Token // the connection attempt under way, if any
	retryTimer  *time.Timer
	backoff     time.Duration
	connectedAt time.Time
	everOpen    bool
	failures    int // consecutive failed connection attempts
	sendErrors  int // consecutive failed publishes

	// Sending happens on a goroutine of its own because paho's Publish can block for
	// up to WriteTimeout when the connection dies under it; the loop must stay free
	// to notice the loss and reconnect, which also releases the blocked call.
	sendq   chan message // to the current sender; nil when there is none
	sent    chan pending // from the senders, each in its sending order
	senders int          // sender goroutines not yet ended
	handed  int          // given to the current sender, token not yet back
	// handedMsgs are the handed messages, oldest first, so that those of a lost
	// connection can be spooled without waiting for its sender.
	handedMsgs fifo[message]
	next       message // taken from the queues, waiting for the sender, if hasNext
	hasNext    bool
	birth      bool // the birth is due on the new connection

	window    fifo[pending]
	retry     fifo[message]
	drain     *time.Timer
	drainEnds time.Time

	// With a spool only (spool is nil without one).
	spool    *spool.Spool
	spooling bool
	// rewind: a record failed or the connection was lost while records were out;
	// the spool is rewound once none is with the sender or in the window.
	rewind bool
	// direct and records count the results and events, and the spool records, that
	// are with the sender or in the window.
	direct  int
	records int
	// waitSpool: the spool had nothing to hand out at the last look, and nothing was
	// appended or rewound since.
	waitSpool bool
	// handedOut is the highest record id this run handed out; a record at or below
	// it is a redelivery.
	handedOut  uint64
	recBuf     []byte
	appendErrs int // consecutive failed appends, for the log

	// Sparkplug B only: bdSeq is the birth/death sequence of the next connection (its
	// client's will carries it; it moves on once a connection is made), connBdSeq the
	// current connection's.
	bdSeq     uint64
	connBdSeq uint64

	// brk is the breaker messages ask; blocked: it refused the last one, so nothing
	// asks again until brkTimer fires (it was open: then it is half-open) or, when it
	// was half-open with its probes out, until an outcome comes in.
	brk      *breaker.Breaker
	blocked  bool
	brkTimer *time.Timer

	// Settings: clientLive is what the current client was made with, attemptLive what
	// the connection attempt under way or last made started with, connLive what the
	// current connection was made with. reconnectDue: Reconfigure changed what the
	// connection was made with; the loop first lets what is in flight be acknowledged,
	// until drainTimer fires.
	clientLive   *Live
	attemptLive  *Live
	connLive     *Live
	reconnectDue bool
	drainTimer   *time.Timer
	drainForced  bool
	// connClean says whether the current (or last) connection had a clean session,
	// attemptClean the attempt's; connQoS2 whether a QoS 2 message went out on it.
	connClean    bool
	attemptClean bool
	connQoS2     bool
}

// lostEvent is a client's report of its lost connection.
type lostEvent struct {
	gen int
	err error
}

// pending is a sent message awaiting its acknowledgement.
type pending struct {
	msg message
	tok mqtt.Token
	mid uint16
	// resent: paho re-sent the message after a reconnect and completed its token then;
	// the acknowledgement is awaited through the store, on ackCh.
	resent bool
	ackCh  <-chan struct{}
	gen    int  // of the sender
	exit   bool // not a message: the sender of gen ended
}

// startSender starts a sender for the current client. With a spool its queue holds a
// window's worth, so that the loop hands over what it has in one go and the sender
// publishes it back to back: fewer goroutine switches per message. A connection's
// sender is let go when it is lost, with whatever it still holds, so nothing waits in
// its queue then. Without a spool one sender serves every connection, and it takes one
// message at a time, as it always did.
func (r *runner) startSender() {
	size := 0
	if r.spool != nil {
		size = r.p.cfg.MaxInflight
	}
	r.sendq = make(chan message, size)
	r.senders++
	var enc *spbConn
	if r.p.spb != nil {
		enc = &spbConn{node: r.p.spb, bdSeq: r.connBdSeq, client: r.client}
	}
	go sender(r.client, r.gen, r.sendq, r.sent, enc)
}

// sender publishes what the loop hands it, in order, until sendq is closed, and then
// says it ended. With Sparkplug B, enc encodes each message as it goes out (the seq
// is the connection's); what comes back to the loop is the message as it was handed
// over, so that a failed one is spooled as the result, not as a stale NDATA.
func sender(client mqtt.Client, gen int, sendq <-chan message, sent chan<- pending, enc *spbConn) {
	for m := range sendq {
		out := m
		if enc != nil {
			out = enc.encode(m)
		}
		tok := client.Publish(out.topic, out.qos, out.retained, out.payload)
		var mid uint16
		if t, ok := tok.(interface{ MessageID() uint16 }); ok {
			mid = t.MessageID()
		}
		sent <- pending{msg: m, tok: tok, mid: mid, gen: gen}
	}
	sent <- pending{gen: gen, exit: true}
}

func (r *runner) loop(ctx context.Context) {
	p := r.p
	done := ctx.Done()
	var deadline <-chan time.Time
	draining := false
	for {
		if draining && r.idle() {
			return
		}
		if r.reconnectDue && r.open {
			r.reconnectStep()
		}
		if r.spool != nil {
			r.spoolStep()
		}
		// A reconnect for new settings waits for the window to drain, sending nothing
		// more.
		quiet := r.reconnectDue
		room := r.window.len()+r.handed < p.cfg.MaxInflight && !quiet
		if r.open && !r.hasNext {
			switch {
			case r.birth:
				// The birth goes out on every connection, since the will may have
				// replaced it while the box was away. It does not wait for room: it
				// is small, and a full window must not keep the box looking offline.
				r.birth = false
				r.next = message{topic: p.statusTopic, payload: []byte(StatusOnline), qos: p.statusQoS(), retained: true, status: true}
				r.hasNext = true
			case room && r.retry.len() > 0:
				r.next, r.hasNext = r.retry.pop(), true
				p.retrying.Add(-1)
			case room && r.spooling && r.direct == 0 && !r.rewind && !draining && !r.blocked:
				// Draining takes nothing new from the spool: what it holds is safe
				// there, and the next run delivers it.
				r.nextRecord()
			}
		}
		if r.open && r.hasNext && !r.next.admitted() && !(r.spooling && r.next.direct()) && !quiet {
			r.admit(&r.next)
		}
		var (
			sendq    chan<- message
			nextMsg  message
			queue    <-chan message
			connDone <-chan struct{}
			retryC   <-chan time.Time
			oldest   <-chan struct{}
			ready    <-chan struct{}
			brkC     <-chan time.Time
			drainC   <-chan time.Time
		)
		switch {
		case r.open:
			switch {
			case r.hasNext && r.spooling && r.next.direct():
				// Held until the direct messages before it are settled, then spooled.
			case r.hasNext && (!r.next.admitted() || quiet):
				// Waits for the breaker, or for the reconnect.
			case r.hasNext:
				sendq, nextMsg = r.sendq, r.next
			case room && !r.spooling:
				queue = p.queue
			case r.waitSpool:
				ready = r.spool.Ready()
			}
		case r.connecting != nil:
			connDone = r.connecting.Done()
		case r.retryTimer != nil:
			retryC = r.retryTimer.C
		default:
			if r.spool != nil {
				r.gen++
				r.newClient()
			} else if r.clientOutdated() && r.window.len()+r.handed == 0 {
				// Without a spool the client keeps what is in flight across
				// connections; it is replaced only with nothing in flight.
				r.replaceClient()
			}
			// The TLS handshake of this attempt says anew whether a client
			// certificate was asked for.
			p.certAsked.Store(certAskedNot)
			r.attemptLive = p.live.Load()
			r.connecting = r.client.Connect()
			continue
		}
		if r.spooling && r.direct == 0 && !(r.hasNext && r.next.direct()) {
			queue = p.queue // to the spool, connected or not
		}
		if r.window.len() > 0 {
			if w := r.window.front(); w.resent {
				oldest = w.ackCh
			} else {
				oldest = w.tok.Done()
			}
		}
		if r.brkTimer != nil {
			brkC = r.brkTimer.C
		}
		if r.drainTimer != nil {
			drainC = r.drainTimer.C
		}

		select {
		case <-done:
			done = nil
			draining = true
			p.closeIntake()
			r.drain = time.NewTimer(p.cfg.DrainTimeout)
			r.drainEnds = time.Now().Add(p.cfg.DrainTimeout)
			deadline = r.drain.C
		case <-deadline:
			return
		case ev := <-r.lost:
			if ev.gen == r.gen {
				r.connectionLost(ev.err)
			}
		case <-connDone:
			r.connectDone()
		case <-retryC:
			r.retryTimer = nil
		case <-brkC:
			// Open for its timeout: half-open now, it takes probes.
			r.brkTimer = nil
			r.blocked = false
		case <-drainC:
			r.drainTimer = nil
			r.drainForced = true
		case <-p.reconf:
			r.reconfigured()
		case sendq <- nextMsg:
			r.next, r.hasNext = message{}, false
			r.handOver(nextMsg)
		case m := <-queue:
			if r.spooling {
				if !r.open && m.res != nil {
					// A result that could not go out live for want of a connection is a
					// failed call: under load, an outage opens the breaker within its
					// window even while reconnect attempts back off.
					r.brk.Record(errNotConnected)
				}
				r.toSpool(m)
				break
			}
			// Hand it straight on when the sender is free; otherwise hold it.
			r.direct1(m)
			// Take what else is queued while there is room, without going around
			// the loop.
			for !r.hasNext && r.window.len()+r.handed < p.cfg.MaxInflight {
				select {
				case m := <-p.queue:
					r.direct1(m)
					continue
				default:
				}
				break
			}
		case <-ready:
			r.waitSpool = false
		case pd := <-r.sent:
			r.fromSender(pd)
			// Take what else is there without going around the loop: one select per
			// message is a good part of the publisher's cost.
			for more := true; more; {
				select {
				case pd := <-r.sent:
					r.fromSender(pd)
				default:
					more = false
				}
			}
		case <-oldest:
			r.settle()
			for r.window.len() > 0 && r.frontDone() {
				r.settle()
			}
		}
		p.inflight.Store(int64(r.window.len() + r.handed))
	}
}

// fromSender takes a sender's pending message, or its end.
func (r *runner) fromSender(pd pending) {
	switch {
	case pd.exit:
		r.senders--
	case pd.gen != r.gen:
		// A connection already given up: its messages were settled then.
	default:
		r.handed--
		r.handedMsgs.pop()
		r.window.push(pd)
	}
}

// direct1 hands m to the sender if the breaker lets it through and the sender takes it
// now, and holds it as next otherwise.
func (r *runner) direct1(m message) {
	if !r.admit(&m) {
		r.next, r.hasNext = m, true
		return
	}
	select {
	case r.sendq <- m:
		r.handOver(m)
	default:
		r.next, r.hasNext = m, true
	}
}

// frontDone reports whether the oldest message in flight can be settled now.
func (r *runner) frontDone() bool {
	w := r.window.front()
	done := w.tok.Done()
	if w.resent {
		done = w.ackCh
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// handOver counts m as given to the sender.
func (r *runner) handOver(m message) {
	r.handed++
	r.handedMsgs.push(m)
	if m.qos == 2 {
		r.connQoS2 = true
	}
	switch {
	case m.fromSpool:
		r.records++
	case !m.status:
		r.direct++
	}
}

// admit asks the breaker to let m go out live, unless it needs no asking or was let
// through already; false when it refused, now or before.
func (r *runner) admit(m *message) bool {
	if m.admitted() {
		return true
	}
	if r.blocked {
		return false
	}
	done, err := r.brk.Allow()
	if err != nil {
		r.refused(err)
		return false
	}
	m.brk = &brkCall{b: r.brk, done: done}
	return true
}

// refused stops live sends after the breaker refused one: until it turns half-open
// when it was open, or until an outcome comes in when its probes are out. With a spool
// the runner spools meanwhile.
func (r *runner) refused(err error) {
	r.blocked = true
	var oe *breaker.OpenError
	if errors.As(err, &oe) && oe.State == breaker.Open {
		if r.brkTimer != nil {
			r.brkTimer.Stop()
		}
		r.brkTimer = time.NewTimer(max(time.Until(oe.Until), time.Millisecond))
	}
	if r.spool != nil && !r.spooling {
		r.setSpooling(true, "circuit breaker refused a send", "err", err)
	}
}

// outcome reports a message's end to the breaker that let it through; err nil is
// success, context.Canceled says it never went out after all. A breaker replaced
// since hears it as given up: what it says belongs to the old settings.
func (r *runner) outcome(c *brkCall, err error) {
	if c == nil || c.done == nil {
		return
	}
	if c.b != r.brk {
		err = context.Canceled
	}
	c.done(err)
	c.done = nil
	if r.blocked && r.brkTimer == nil {
		// Half-open with its probes out: this may have freed one, or decided.
		r.blocked = false
	}
}

// breakerClosed reports whether the breaker lets everything through, as direct mode
// needs.
func (r *runner) breakerClosed() bool {
	return !r.blocked && r.brk.State() == breaker.Closed
}

// newClient makes the client for the next connection attempt, with the settings now.
func (r *runner) newClient() {
	r.clientLive = r.p.live.Load()
	r.attemptClean = r.sessionClean()
	r.client = mqtt.NewClient(r.p.clientOptions(r.clientLive, r.attemptClean, r.lost, r.gen, r.bdSeq))
}

// clientOutdated reports whether the client was made with a keep-alive or connect
// timeout that Reconfigure has changed since; paho reads those only when the client
// is made. (It reads the credentials at each attempt.)
func (r *runner) clientOutdated() bool {
	l, c := r.p.live.Load(), r.clientLive
	return l.KeepAlive != c.KeepAlive || l.ConnectTimeout != c.ConnectTimeout
}

// outdated reports whether the current connection was made with settings that
// Reconfigure has changed since. A QoS change matters when it changes the kind of
// session; a clean session kept on after QoS 2 without a change (sessionClean) does
// not call for a reconnect.
func (r *runner) outdated() bool {
	l, c := r.p.live.Load(), r.connLive
	creds := !r.p.urlCredentials && (l.Username != c.Username || l.Password != c.Password)
	return creds || r.clientOutdated() || (*l.QoS != *c.QoS && r.connClean != r.sessionClean())
}

// reconfigured takes up what Reconfigure changed.
func (r *runner) reconfigured() {
	if b := r.p.brk.Load(); b != r.brk {
		r.brk = b
		r.blocked = false
		if r.brkTimer != nil {
			r.brkTimer.Stop()
			r.brkTimer = nil
		}
	}
	switch {
	case r.open:
		r.reconnectDue = r.outdated()
	case r.retryTimer != nil:
		// The next attempt is made with the new settings; they may be what the
		// broker was waiting for.
		r.retryTimer.Stop()
		r.retryTimer = nil
		r.backoff = 0
	}
	// An attempt under way is judged when it ends (connectDone).
}

// reconnectStep reconnects for new settings once nothing is in flight, or drainTimer
// has fired. The drain is for fewer messages sent twice, and for the last will: a
// broker still busy with what came before the DISCONNECT when the new connection
// comes in takes the session over from a connection it thinks was lost, and publishes
// the will.
func (r *runner) reconnectStep() {
	if r.window.len()+r.handed == 0 || r.drainForced {
		r.reconnect()
		return
	}
	if r.drainTimer == nil {
		r.drainTimer = time.NewTimer(reconnectDrain)
	}
}

func (r *runner) stopDrain() {
	if r.drainTimer != nil {
		r.drainTimer.Stop()
		r.drainTimer = nil
	}
	r.drainForced = false
}

// reconnect ends the connection on purpose and lets the loop make a new one after
// reconnectGrace. The DISCONNECT makes the broker drop the will, so the box does not
// show offline in between. What is still in flight after a drain that timed out goes the way of a lost
// connection's: with a spool back to it (abandon), reported to the breaker as given up
// rather than failed; without one, the client's session store keeps it and the next
// connection's client sends it again, while the window awaits it there.
func (r *runner) reconnect() {
	p := r.p
	inflight := r.window.len() + r.handed
	p.log.Info("mqtt reconnecting with new settings", "broker", p.broker, "inflight", inflight, "drain_timed_out", r.drainForced)
	r.reconnectDue = false
	r.stopDrain()
	r.client.Disconnect(disconnectQuiesce)
	r.open = false
	p.connected.Store(false)
	r.backoff = 0
	r.retryTimer = time.NewTimer(reconnectGrace)
	if r.spool != nil {
		if r.spooling {
			r.rewind = true
		} else {
			r.setSpooling(true, "reconnecting with new settings")
		}
		r.abandon(context.Canceled)
		return
	}
	// Disconnect has completed every token; those of messages still in the store
	// complete again when the broker acknowledges what paho sends anew.
	r.window.each(func(pd *pending) {
		if pd.resent || succeeded(pd.tok) || pd.msg.qos == 0 {
			return
		}
		if ch, waiting := p.store.waitAck(pd.mid); waiting {
			pd.resent, pd.ackCh = true, ch
		}
	})
	if r.clientOutdated() {
		r.replaceClient()
	}
}

// replaceClient gives a runner without a spool a client (and a sender for it) made
// with the settings now. The session store carries over; a message the old sender
// still holds is sent again.
func (r *runner) replaceClient() {
	if r.sendq != nil {
		close(r.sendq)
		r.sendq = nil
	}
	r.gen++ // what the old client and sender report from now on is stale
	for r.handedMsgs.len() > 0 {
		m := r.handedMsgs.pop()
		r.outcome(m.brk, context.Canceled)
		m.brk = nil
		r.retry.push(m)
		r.p.retrying.Add(1)
	}
	r.handed = 0
	r.newClient()
	r.startSender()
}

func (r *runner) idle() bool {
	return len(r.p.queue) == 0 && r.retry.len() == 0 && r.window.len() == 0 &&
		r.handed == 0 && (!r.hasNext || !r.next.direct())
}

func (r *runner) connectDone() {
	p := r.p
	tok := r.connecting
	r.connecting = nil
	if err := tok.Error(); err != nil {
		r.brk.Record(err)
		r.failures++
		if r.failures == 1 {
			// One line per outage; the attempts after it are debug noise.
			level := slog.LevelError
			if r.everOpen {
				level = slog.LevelWarn
			}
			p.log.Log(context.Background(), level, connectProblem(p.broker, err, p.certAsked.Load()),
				"client_id", p.cfg.ClientID, "retry_max_interval", p.cfg.MaxReconnectInterval)
		} else {
			p.log.Debug("mqtt connect attempt failed", "broker", p.broker, "attempt", r.failures, "err", err)
		}
		if r.spool != nil && !r.spooling {
			r.setSpooling(true, "broker unreachable")
		}
		r.retryTimer = time.NewTimer(r.nextBackoff())
		return
	}
	sessionPresent := false
	if ct, ok := tok.(*mqtt.ConnectToken); ok {
		sessionPresent = ct.SessionPresent()
	}
	args := []any{"broker", p.broker, "client_id", p.cfg.ClientID,
		"session_present", sessionPresent, "failed_attempts", r.failures, "inflight", r.window.len() + r.handed}
	if r.spool != nil {
		args = append(args, "spool_records", r.spool.Len())
	}
	p.log.Info("mqtt connected", args...)
	r.connBdSeq = r.bdSeq
	r.bdSeq = (r.bdSeq + 1) % spbMaxBdSeq
	if r.spool != nil {
		r.startSender()
	}
	r.open = true
	r.everOpen = true
	r.failures = 0
	r.connectedAt = time.Now()
	r.connLive = r.attemptLive
	r.connClean, r.connQoS2 = r.attemptClean, false
	p.connected.Store(true)
	r.birth = true
	// Settings may have changed while the attempt was under way.
	r.reconnectDue = r.outdated()
}

func (r *runner) connectionLost(err error) {
	if r.client.IsConnectionOpen() {
		return // a loss reported late, after the next connection was made
	}
	inflight := r.window.len() + r.handed
	r.markDown()
	r.p.log.Warn("mqtt connection lost; reconnecting", "broker", r.p.broker, "err", err,
		"inflight", inflight, "queued", len(r.p.queue)+r.retry.len())
	if r.retryTimer != nil || r.connecting != nil {
		return
	}
	if time.Since(r.connectedAt) >= stableConnection {
		r.backoff = 0
		return // the loop connects at once
	}
	r.retryTimer = time.NewTimer(r.nextBackoff())
}

func (r *runner) markDown() {
	r.open = false
	r.p.connected.Store(false)
	r.reconnectDue = false
	r.stopDrain()
	if r.spool == nil {
		// paho sends them again on the next connection; to the breaker they failed
		// on this one.
		r.window.each(func(pd *pending) { r.outcome(pd.msg.brk, errConnectionLost) })
		r.handedMsgs.each(func(m *message) { r.outcome(m.brk, errConnectionLost) })
		return
	}
	if r.spooling {
		// Records sent on the lost connection and not acknowledged go out again.
		r.rewind = true
	} else {
		r.setSpooling(true, "connection lost")
	}
	r.abandon(errConnectionLost)
}

// abandon settles, with a spool, everything sent on a connection that is gone: what
// the broker acknowledged is delivered, the rest goes back to the spool, oldest first:
// direct messages appended, records rewound, and reported to the breaker with why.
// Its sender is let go: a publish blocked in the old client ends within WriteTimeout,
// and what it reports then is stale.
func (r *runner) abandon(why error) {
	if r.sendq != nil {
		// What the sender has not taken would only fail on the dead client; it is in
		// handedMsgs, and settled below with the rest.
		for taken := true; taken; {
			select {
			case <-r.sendq:
			default:
				taken = false
			}
		}
		close(r.sendq)
		r.sendq = nil
	}
	r.gen++
	for r.window.len() > 0 {
		pd := r.window.pop()
		if !pd.resent && succeeded(pd.tok) {
			r.p.metrics.published[pd.msg.qos].Inc()
			r.delivered(pd.msg)
			continue
		}
		r.unsent(pd.msg, why)
	}
	for r.handedMsgs.len() > 0 {
		r.unsent(r.handedMsgs.pop(), why)
	}
	r.handed = 0
	r.p.inflight.Store(0)
}

// unsent settles a message that went out on a lost connection unacknowledged.
func (r *runner) unsent(m message, why error) {
	r.outcome(m.brk, why)
	switch {
	case m.status:
	case m.fromSpool:
		r.records--
		r.rewind = true
	default:
		r.direct--
		r.toSpool(m)
	}
}

func (r *runner) nextBackoff() time.Duration {
	limit := r.p.cfg.MaxReconnectInterval
	if r.backoff == 0 {
		r.backoff = min(initialBackoff, limit)
	} else {
		r.backoff = min(2*r.backoff, limit)
	}
	// Equal jitter: a line of boxes that lost the same broker must not all come back in
	// the same instant.
	half := r.backoff / 2
	return half + rand.N(half+1)
}

// settle handles the oldest in-flight message once its token completed or, for a
// re-sent one, once the store dropped an acknowledged message.
func (r *runner) settle() {
	w := r.window.front()
	if !w.resent {
		if err := w.tok.Error(); err != nil {
			r.sendFailed(r.window.pop().msg, err)
			return
		}
	}
	// With a spool each client's store starts empty and paho re-sends nothing, so a
	// completed token is the acknowledgement.
	if r.spool == nil && w.msg.qos > 0 {
		if ch, waiting := r.p.store.waitAck(w.mid); waiting {
			w.resent, w.ackCh = true, ch
			return
		}
	}
	m := r.window.pop().msg
	r.sendErrors = 0
	r.p.metrics.published[m.qos].Inc()
	r.delivered(m)
}

// delivered accounts for a message the broker acknowledged.
func (r *runner) delivered(m message) {
	p := r.p
	r.outcome(m.brk, nil)
	switch {
	case m.status:
	case m.fromSpool:
		r.records--
		p.replayed.Add(1)
		p.metrics.ackedSpool.Inc()
		if err := r.spool.Ack(m.rec); err != nil {
			// Dropped by the spool while in flight (it was full), most likely; the
			// broker has it all the same.
			p.metrics.spoolErrors[spoolOpAck].Inc()
			p.log.Debug("mqtt spool ack failed", "record", m.rec, "err", err)
		}
	default:
		r.direct--
		p.metrics.ackedDirect.Inc()
		if m.res != nil {
			p.acked.Add(1)
			if p.cfg.OnResult != nil {
				p.cfg.OnResult(m.res, nil)
			}
		}
	}
}

func (r *runner) sendFailed(m message, err error) {
	p := r.p
	p.metrics.errors.Inc()
	r.outcome(m.brk, err)
	m.brk = nil // sent again, it asks the breaker again
	r.sendErrors++
	args := []any{"topic", m.topic, "err", err}
	if m.res != nil {
		args = append(args, "trace_id", m.res.TraceID, "id", m.res.ID)
	}
	if m.fromSpool {
		args = append(args, "record", m.rec)
	}
	if r.sendErrors == 1 {
		p.log.Warn("mqtt publish failed; sending again", args...)
	} else {
		p.log.Debug("mqtt publish failed; sending again", args...)
	}
	switch {
	case m.status:
		// Not retried: the next connection sends its own birth.
	case r.spool == nil:
		r.retry.push(m)
		p.retrying.Add(1)
		p.retried.Add(1)
	case m.fromSpool:
		r.records--
		r.rewind = true
		if !r.spooling {
			r.setSpooling(true, "publish failed")
		}
	default:
		// The oldest direct message still out: everything before it is settled, so
		// it goes to the spool in its place.
		r.direct--
		if !r.spooling {
			r.setSpooling(true, "publish failed")
		}
		r.toSpool(m)
	}
	if r.open && !r.client.IsConnectionOpen() {
		// The connection is going down and its loss is yet to be reported; sending
		// more would only fail again. Wait a little before reconnecting, so that the
		// client has finished with the old connection.
		if r.spool != nil {
			// The client's own report will be stale by then: say it here.
			p.log.Warn("mqtt connection lost; reconnecting", "broker", p.broker, "err", err,
				"inflight", r.window.len()+r.handed, "queued", len(p.queue))
		}
		r.markDown()
		if r.retryTimer == nil && r.connecting == nil {
			r.retryTimer = time.NewTimer(r.nextBackoff())
		}
	}
}

// setSpooling switches between spooling and direct mode, with a log line saying why.
func (r *runner) setSpooling(on bool, why string, args ...any) {
	if r.spooling == on {
		return
	}
	r.spooling = on
	r.waitSpool = false
	r.p.spooling.Store(on)
	if on {
		r.p.log.Info("mqtt results go to the spool until it is delivered", append([]any{"reason", why}, args...)...)
	} else {
		r.p.log.Info("mqtt spool delivered; results go straight to the broker again", append([]any{"reason", why}, args...)...)
	}
}

// spoolStep does what the spool needs before the loop looks for work: the rewind once
// no record is out, spooling a held direct message once none before it is out, and the
// switch back to direct mode.
func (r *runner) spoolStep() {
	if r.rewind && r.records == 0 {
		if r.hasNext && r.next.fromSpool {
			r.outcome(r.next.brk, context.Canceled) // never sent
			r.next, r.hasNext = message{}, false
		}
		r.spool.Rewind()
		r.rewind = false
		r.waitSpool = false
	}
	if !r.spooling || r.direct > 0 {
		return
	}
	if r.hasNext && r.next.direct() {
		m := r.next
		r.next, r.hasNext = message{}, false
		r.outcome(m.brk, context.Canceled) // never sent
		r.toSpool(m)
	}
	// Every record is out: direct mode may begin while the last ones await their
	// PUBACK, since newer messages go out behind them on the same connection, and if
	// it fails, abandon puts the records back ahead of them. Waiting for the spool to
	// be empty instead would rarely end under a steady flow: the broker's last PUBACK
	// of a burst may come after the next burst began.
	if r.open && r.waitSpool && !r.rewind && !r.hasNext && r.breakerClosed() {
		r.setSpooling(false, "connected, every record sent", "replayed", r.p.replayed.Load(), "records_in_flight", r.records)
	}
}

// nextRecord takes the spool's next record as the next message; it sets waitSpool when
// there is none.
func (r *runner) nextRecord() {
	p := r.p
	r.waitSpool = false
	for {
		rec, ok := r.spool.Next()
		if !ok {
			r.waitSpool = true
			if r.open && !r.rewind && r.direct == 0 && r.breakerClosed() {
				r.setSpooling(false, "connected, every record sent", "replayed", p.replayed.Load(), "records_in_flight", r.records)
			}
			return
		}
		if rec.ID <= r.handedOut {
			p.redeliv.Add(1)
			p.metrics.redelivered.Inc()
		} else {
			r.handedOut = rec.ID
		}
		m, err := decodeRecord(rec.Data)
		if err != nil {
			// Damage the spool's checksum did not catch, or a record from another
			// edged version: nothing can be sent, and keeping it would block the
			// spool for good.
			p.metrics.spoolErrors[spoolOpDecode].Inc()
			p.log.Error("mqtt spool record unreadable; skipped", "record", rec.ID, "appended", rec.Appended, "err", err)
			if err := r.spool.Ack(rec.ID); err != nil {
				p.metrics.spoolErrors[spoolOpAck].Inc()
			}
			continue
		}
		m.rec, m.fromSpool = rec.ID, true
		r.next, r.hasNext = m, true
		return
	}
}

// toSpool appends a result or event to the spool and reports the result spooled; one
// the spool refuses is lost, and reported so.
func (r *runner) toSpool(m message) {
	if !m.direct() {
		return // a birth is not kept (the next connection sends its own); a record is there already
	}
	p := r.p
	err := checkRecordable(&m)
	if err == nil {
		r.recBuf = appendRecord(r.recBuf[:0], &m)
		err = r.spool.Append(r.recBuf)
	}
	if err != nil {
		p.metrics.spoolErrors[spoolOpAppend].Inc()
		r.appendErrs++
		args := []any{"topic", m.topic, "err", err}
		if m.res != nil {
			args = append(args, "trace_id", m.res.TraceID, "id", m.res.ID)
		}
		if r.appendErrs == 1 {
			p.log.Error("mqtt spool append failed; message lost", args...)
		} else {
			p.log.Debug("mqtt spool append failed; message lost", append(args, "consecutive", r.appendErrs)...)
		}
		if m.res != nil {
			p.failed.Add(1)
			if p.cfg.OnResult != nil {
				p.cfg.OnResult(m.res, fmt.Errorf("%w: spool: %w", ErrNotDelivered, err))
			}
		}
		return
	}
	r.waitSpool = false // it has something to hand out now
	if r.appendErrs > 0 {
		p.log.Info("mqtt spool append works again", "failed", r.appendErrs)
		r.appendErrs = 0
	}
	if m.res != nil {
		p.spooled.Add(1)
		if p.cfg.OnResult != nil {
			p.cfg.OnResult(m.res, ErrSpooled)
		}
	}
}

// finish runs after the loop: it stops the sender, settles the connection attempt
// under way, spools or reports what was not delivered, publishes `offline` and
// disconnects.
func (r *runner) finish() {
	p := r.p
	for _, t := range []*time.Timer{r.retryTimer, r.brkTimer, r.drainTimer} {
		if t != nil {
			t.Stop()
		}
	}
	if r.sendq != nil {
		close(r.sendq)
		r.sendq = nil
		// paho gives up a stuck publish within WriteTimeout.
		for ended := false; !ended; {
			pd := <-r.sent
			ended = pd.exit && pd.gen == r.gen
			r.fromSender(pd)
		}
	}
	if r.connecting != nil {
		// paho offers no way to abort an attempt; it ends within ConnectTimeout.
		<-r.connecting.Done()
		r.open = r.connecting.Error() == nil
	}

	if r.spool != nil {
		r.spoolRest()
	} else {
		r.giveUpRest()
	}
	p.retrying.Store(0)
	p.inflight.Store(0)

	if r.open && r.client.IsConnectionOpen() {
		wait := max(time.Until(r.drainEnds), minOfflineWait)
		var tok mqtt.Token
		offlineQoS := p.statusQoS()
		if p.spb != nil {
			offlineQoS = 1
			tok = r.client.Publish(p.spb.deathTopic, 1, false, p.spb.death(r.connBdSeq))
		} else {
			tok = r.client.Publish(p.statusTopic, offlineQoS, true, StatusOffline)
		}
		timer := time.NewTimer(wait)
		for waiting := true; waiting; {
			waiting = false
			select {
			case <-tok.Done():
				if err := tok.Error(); err != nil {
					p.log.Warn("mqtt offline status not published", "broker", p.broker, "err", err)
				} else {
					p.metrics.published[offlineQoS].Inc()
				}
			case ev := <-r.lost:
				if ev.gen != r.gen {
					waiting = true // an earlier client's
					continue
				}
				// The will says offline for us.
				p.log.Warn("mqtt connection lost while publishing the offline status", "broker", p.broker, "err", ev.err)
			case <-timer.C:
				p.log.Warn("mqtt offline status not acknowledged in time", "broker", p.broker, "wait", wait)
			}
		}
		timer.Stop()
		r.client.Disconnect(disconnectQuiesce)
		p.log.Info("mqtt disconnected", "broker", p.broker)
	}
	if r.drain != nil {
		r.drain.Stop()
	}
	for r.senders > 0 {
		// Senders of lost connections, each stuck at most WriteTimeout after its loss.
		r.fromSender(<-r.sent)
	}
	r.open = false
	p.connected.Store(false)
	p.spooling.Store(false)
}

// giveUpRest reports every result still queued or unacknowledged as not delivered.
func (r *runner) giveUpRest() {
	p := r.p
	undelivered := 0
	giveUp := func(m message) {
		r.outcome(m.brk, context.Canceled)
		if m.res == nil {
			return
		}
		undelivered++
		p.failed.Add(1)
		if p.cfg.OnResult != nil {
			p.cfg.OnResult(m.res, ErrNotDelivered)
		}
	}
	if r.hasNext {
		giveUp(r.next)
	}
	for r.window.len() > 0 {
		giveUp(r.window.pop().msg)
	}
	for r.retry.len() > 0 {
		giveUp(r.retry.pop())
	}
	for len(p.queue) > 0 {
		giveUp(<-p.queue)
	}
	if undelivered > 0 {
		p.log.Warn("mqtt results not delivered before shutdown", "count", undelivered,
			"broker", p.broker, "drain_timeout", p.cfg.DrainTimeout)
	}
}

// spoolRest appends everything still unacknowledged or queued to the spool, oldest
// first, and rewinds it, so that the spool's next user (a later run) hands out every
// unacknowledged record again.
func (r *runner) spoolRest() {
	p := r.p
	n := 0
	for r.window.len() > 0 {
		pd := r.window.pop()
		m := pd.msg
		if succeeded(pd.tok) {
			p.metrics.published[m.qos].Inc()
			r.delivered(m)
			continue
		}
		r.outcome(m.brk, context.Canceled)
		switch {
		case m.fromSpool:
			r.records-- // still in the spool; the rewind hands it out again
		case m.status:
		default:
			r.direct--
			r.toSpool(m)
			n++
		}
	}
	if r.hasNext {
		r.outcome(r.next.brk, context.Canceled)
	}
	if r.hasNext && r.next.direct() {
		r.toSpool(r.next)
		n++
	}
	r.next, r.hasNext = message{}, false
	for len(p.queue) > 0 {
		r.toSpool(<-p.queue)
		n++
	}
	r.spool.Rewind()
	if n > 0 {
		p.log.Info("mqtt messages spooled at shutdown", "count", n, "spool_records", r.spool.Len(),
			"broker", p.broker, "drain_timeout", p.cfg.DrainTimeout)
	}
}

// succeeded reports whether tok has completed without an error.
func succeeded(tok mqtt.Token) bool {
	select {
	case <-tok.Done():
		return tok.Error() == nil
	default:
		return false
	}
}

// connectProblem turns a failed connection attempt into one line that says what to
// check. paho wraps network failures as "network Error : <cause>"; the cause is what
// the operator needs. certAsked is Publisher.certAsked after the attempt.
func connectProblem(broker string, err error, certAsked int32) string {
	switch {
	case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword), errors.Is(err, packets.ErrorRefusedNotAuthorised):
		return fmt.Sprintf("mqtt broker %s refused the connection: %v; check mqtt.username and mqtt.password", broker, err)
	case errors.Is(err, packets.ErrorRefusedIDRejected):
		return fmt.Sprintf("mqtt broker %s rejected the client id: %v; check mqtt.client_id", broker, err)
	case errors.Is(err, packets.ErrorRefusedServerUnavailable):
		return fmt.Sprintf("mqtt broker %s is up but not accepting clients: %v", broker, err)
	case errors.Is(err, packets.ErrorRefusedBadProtocolVersion):
		return fmt.Sprintf("mqtt broker %s does not speak MQTT 3.1.1: %v", broker, err)
	case errors.Is(err, packets.ErrorNetworkError):
		cause := networkCause(err)
		// A broker that asked for a client certificate and then ended the connection
		// refused the certificate, or its absence, whatever the socket reported.
		switch {
		case certAsked == certAskedNoneSent && !isVerifyError(cause):
			return fmt.Sprintf("mqtt broker %s requires a client certificate and closed the connection without one (%v); set mqtt.tls.cert_file and mqtt.tls.key_file", broker, causeText(cause))
		case certAsked == certAskedSent && !isVerifyError(cause):
			return fmt.Sprintf("mqtt broker %s refused the client certificate (%v); check that mqtt.tls.cert_file is signed by a CA the broker trusts and is valid now", broker, causeText(cause))
		}
		if cause == nil {
			return fmt.Sprintf("mqtt broker %s closed the connection during the MQTT handshake; check that mqtt.broker names an MQTT port and the right scheme (tcp:// or ssl://)", broker)
		}
		if isVerifyError(cause) {
			return fmt.Sprintf("mqtt broker %s: TLS handshake failed: %v; check mqtt.tls.ca_file (the CA that signed the broker's certificate) and mqtt.tls.server_name", broker, cause)
		}
		if isTLSError(cause) {
			return fmt.Sprintf("mqtt broker %s: TLS handshake failed: %v; check the scheme (tcp:// or ssl://) and mqtt.tls", broker, cause)
		}
		return fmt.Sprintf("mqtt broker %s unreachable: %v; check mqtt.broker and that the broker is running", broker, cause)
	}
	return fmt.Sprintf("mqtt broker %s: connect failed: %v; check mqtt.broker and that the broker is running", broker, err)
}

// causeText is err's text for a hint, which a nil err (the broker closed the
// connection without an error from the socket) also gets.
func causeText(err error) string {
	if err == nil {
		return "connection closed"
	}
	return err.Error()
}

// networkCause digs the underlying error out of paho's "%w : %w" wrapping.
func networkCause(err error) error {
	for e := err; e != nil; {
		if multi, ok := e.(interface{ Unwrap() []error }); ok {
			for _, inner := range multi.Unwrap() {
				if inner != nil && !errors.Is(inner, packets.ErrorNetworkError) {
					return inner
				}
			}
			return nil
		}
		e = errors.Unwrap(e)
	}
	return nil
}

// isVerifyError reports whether err is this client's refusal of the broker's certificate.
func isVerifyError(err error) bool {
	var (
		verify  *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid)
}

func isTLSError(err error) bool {
	var (
		rec   tls.RecordHeaderError
		alert tls.AlertError
		op    *net.OpError
	)
	// crypto/tls reports an alert from the peer as a *net.OpError with Op "remote error".
	return isVerifyError(err) || errors.As(err, &rec) || errors.As(err, &alert) ||
		(errors.As(err, &op) && op.Op == "remote error")
}

// newID is 128 random bits in hex, the same form the pipeline gives results.
func newID() string {
	var b [16]byte
	_, _ = crand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// fifo is a queue on a slice that reuses its space.
type fifo[T any] struct {
	items []T
	head  int
}

func (q *fifo[T]) len() int  { return len(q.items) - q.head }
func (q *fifo[T]) push(v T)  { q.items = append(q.items, v) }
func (q *fifo[T]) front() *T { return &q.items[q.head] }
func (q *fifo[T]) pop() (v T) {
	v = q.items[q.head]
	var zero T
	q.items[q.head] = zero
	q.head++
	switch {
	case q.head == len(q.items):
		q.items, q.head = q.items[:0], 0
	case q.head >= 64 && 2*q.head >= len(q.items):
		// Move the live part down so the slice does not grow while never emptying.
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	return v
}

// each calls f on every item, oldest first.
func (q *fifo[T]) each(f func(*T)) {
	for i := q.head; i < len(q.items); i++ {
		f(&q.items[i])
	}
}
