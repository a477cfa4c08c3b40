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
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrClosed is returned by Publish and PublishEvent once Run has begun shutting down.
var ErrClosed = errors.New("mqtt publisher closed")

// ErrNotDelivered is passed to Config.OnResult for a result that Run gave up on when its
// drain time ran out.
var ErrNotDelivered = errors.New("result not delivered to the mqtt broker before shutdown")

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
)

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

// Stats are the publisher's result counts. Accepted - Acked - Failed is what is still
// queued or in flight; a Publish call that is blocked counts as accepted until it
// returns an error, so that the difference never goes below zero.
type Stats struct {
	// Accepted counts results taken by Publish.
	Accepted uint64
	// Acked counts results the broker acknowledged (at QoS 0: written to it).
	Acked uint64
	// Failed counts results given up on at shutdown.
	Failed uint64
	// Retried counts publish attempts that failed and were queued again.
	Retried uint64
}

// Publisher sends results, events and the box's status to an MQTT broker.
//
// Its life: NewPublisher (no side effects), then Run in a goroutine of its own, with
// Publish called from any number of goroutines before and while Run runs. Publish only
// queues; Run connects, keeps reconnecting with backoff, publishes with a bounded
// in-flight window, and re-sends anything that failed, so a result that Publish accepted
// is either acknowledged by the broker or reported undelivered through Config.OnResult:
// never dropped in between. Delivery is at least once; consumers de-duplicate on the
// result's id.
//
// Run's context should end after the producers have stopped: from then on Publish
// returns ErrClosed, and Run drains what is queued within Config.DrainTimeout.
type Publisher struct {
	cfg         Config
	qos         byte
	statusQoS   byte
	log         *slog.Logger
	broker      string // the URL as logged: password redacted
	resultTopic string // prefix; the inspection name follows
	statusTopic string
	eventTopic  string

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

	store   *sessionStore
	metrics publisherMetrics
}

// message is one MQTT message on its way out.
type message struct {
	topic    string
	payload  []byte
	qos      byte
	retained bool
	res      *Result // nil for status and events
	status   bool    // a birth message: not retried, the next connection sends its own
}

type publisherMetrics struct {
	published [3]prometheus.Counter // by QoS
	errors    prometheus.Counter
}

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
		qos:         *cfg.QoS,
		statusQoS:   max(*cfg.QoS, 1),
		log:         log.With("component", "mqtt"),
		broker:      redact(cfg.Broker),
		resultTopic: prefix + "result/",
		statusTopic: prefix + "status",
		eventTopic:  prefix + "event",
		queue:       make(chan message, cfg.QueueSize),
		stopping:    make(chan struct{}),
		store:       newSessionStore(),
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
	collectors := []prometheus.Collector{
		published,
		p.metrics.errors,
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
	if reg != nil {
		for _, c := range collectors {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register mqtt metrics: %w", err)
			}
		}
	}
	return p, nil
}

// ResultTopic is the topic results of inspection go to.
func (p *Publisher) ResultTopic(inspection string) string { return p.resultTopic + inspection }

// StatusTopic is the retained topic carrying StatusOnline or StatusOffline.
func (p *Publisher) StatusTopic() string { return p.statusTopic }

// EventTopic is the topic of PublishEvent.
func (p *Publisher) EventTopic() string { return p.eventTopic }

// Connected reports whether the publisher holds a connection to the broker now.
func (p *Publisher) Connected() bool { return p.connected.Load() }

// Stats returns the result counts.
func (p *Publisher) Stats() Stats {
	return Stats{
		Accepted: p.accepted.Load(),
		Acked:    p.acked.Load(),
		Failed:   p.failed.Load(),
		Retried:  p.retried.Load(),
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
	return p.enqueue(ctx, message{topic: p.resultTopic + r.Inspection, payload: payload, qos: p.qos, res: r})
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
	return p.enqueue(ctx, message{topic: p.eventTopic, payload: payload, qos: p.qos})
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
// it stops intake, delivers what is queued within Config.DrainTimeout, reports the rest
// through Config.OnResult, publishes the retained `offline` status, disconnects and
// returns nil. A broker that cannot be reached is logged once per outage and retried
// with backoff; Run does not fail because of it. Run may be called once.
//
// Shutdown takes at most DrainTimeout plus the time paho needs to let go: a connection
// attempt under way finishes within Config.ConnectTimeout, a publish call stuck on a
// dead connection within Config.WriteTimeout.
func (p *Publisher) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return errors.New("mqtt publisher: Run called twice")
	}
	r := &runner{
		p:          p,
		lost:       make(chan error, 1),
		sendq:      make(chan message),
		sent:       make(chan pending, p.cfg.MaxInflight+1),
		senderDone: make(chan struct{}),
	}
	r.client = mqtt.NewClient(p.clientOptions(r.lost))
	go r.sender()
	r.loop(ctx)
	r.finish()
	return nil
}

// clientOptions configures paho. Reconnection is done by runner, not by paho: paho's
// retry loops sleep without a way to stop them, so its goroutines would outlive Run by
// up to the reconnect interval, and its first-connect retry has no backoff. One
// attempt per Connect, owned and timed here, gives a Run that returns promptly and
// leaves nothing running.
func (p *Publisher) clientOptions(lost chan<- error) *mqtt.ClientOptions {
	o := mqtt.NewClientOptions().
		AddBroker(p.cfg.Broker).
		SetClientID(p.cfg.ClientID).
		SetUsername(p.cfg.Username).
		SetPassword(p.cfg.Password).
		// A persistent session keeps the broker's state across reconnects and lets
		// paho re-send unacknowledged messages from the store.
		SetCleanSession(false).
		SetStore(p.store).
		// Without an explicit version paho retries a refused 3.1.1 connect as 3.1, and
		// the operator sees "unacceptable protocol version" instead of the real cause.
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(p.cfg.KeepAlive).
		SetPingTimeout(min(p.cfg.KeepAlive, 10*time.Second)).
		SetConnectTimeout(p.cfg.ConnectTimeout).
		SetWriteTimeout(p.cfg.WriteTimeout).
		SetWill(p.statusTopic, StatusOffline, p.statusQoS, true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			// Only the latest loss matters; runner asks the client for the state.
			select {
			case lost <- err:
			default:
			}
		})
	if p.cfg.TLS != nil {
		o.SetTLSConfig(p.cfg.TLS)
	}
	return o
}

// runner is Run's state. The loop goroutine owns it; the sender goroutine only calls
// client.Publish and hands the tokens back.
type runner struct {
	p      *Publisher
	client mqtt.Client
	lost   chan error

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
	sendq      chan message // to the sender
	sent       chan pending // from the sender, in sending order
	senderDone chan struct{}
	handed     int     // given to the sender, token not yet back
	next       message // taken from the queues, waiting for the sender, if hasNext
	hasNext    bool
	birth      bool // the birth is due on the new connection

	window    fifo[pending]
	retry     fifo[message]
	drain     *time.Timer
	drainEnds time.Time
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
}

// sender publishes what the loop hands it, in order, until sendq is closed.
func (r *runner) sender() {
	defer close(r.senderDone)
	for m := range r.sendq {
		tok := r.client.Publish(m.topic, m.qos, m.retained, m.payload)
		var mid uint16
		if t, ok := tok.(interface{ MessageID() uint16 }); ok {
			mid = t.MessageID()
		}
		r.sent <- pending{msg: m, tok: tok, mid: mid}
	}
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
		room := r.window.len()+r.handed < p.cfg.MaxInflight
		if r.open && !r.hasNext {
			switch {
			case r.birth:
				// The birth goes out on every connection, since the will may have
				// replaced it while the box was away. It does not wait for room: it
				// is small, and a full window must not keep the box looking offline.
				r.birth = false
				r.next = message{topic: p.statusTopic, payload: []byte(StatusOnline), qos: p.statusQoS, retained: true, status: true}
				r.hasNext = true
			case room && r.retry.len() > 0:
				r.next, r.hasNext = r.retry.pop(), true
				p.retrying.Add(-1)
			}
		}
		var (
			sendq    chan<- message
			nextMsg  message
			queue    <-chan message
			connDone <-chan struct{}
			retryC   <-chan time.Time
			oldest   <-chan struct{}
		)
		switch {
		case r.open:
			if r.hasNext {
				sendq, nextMsg = r.sendq, r.next
			} else if room {
				queue = p.queue
			}
		case r.connecting != nil:
			connDone = r.connecting.Done()
		case r.retryTimer != nil:
			retryC = r.retryTimer.C
		default:
			r.connecting = r.client.Connect()
			continue
		}
		if r.window.len() > 0 {
			if w := r.window.front(); w.resent {
				oldest = w.ackCh
			} else {
				oldest = w.tok.Done()
			}
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
		case err := <-r.lost:
			r.connectionLost(err)
		case <-connDone:
			r.connectDone()
		case <-retryC:
			r.retryTimer = nil
		case sendq <- nextMsg:
			r.next, r.hasNext = message{}, false
			r.handed++
		case m := <-queue:
			// Hand it straight on when the sender is free; otherwise hold it.
			select {
			case r.sendq <- m:
				r.handed++
			default:
				r.next, r.hasNext = m, true
			}
		case pd := <-r.sent:
			r.handed--
			r.window.push(pd)
		case <-oldest:
			r.settle()
		}
		p.inflight.Store(int64(r.window.len() + r.handed))
	}
}

func (r *runner) idle() bool {
	return len(r.p.queue) == 0 && r.retry.len() == 0 && r.window.len() == 0 &&
		r.handed == 0 && (!r.hasNext || r.next.status)
}

func (r *runner) connectDone() {
	p := r.p
	tok := r.connecting
	r.connecting = nil
	if err := tok.Error(); err != nil {
		r.failures++
		if r.failures == 1 {
			// One line per outage; the attempts after it are debug noise.
			level := slog.LevelError
			if r.everOpen {
				level = slog.LevelWarn
			}
			p.log.Log(context.Background(), level, connectProblem(p.broker, err),
				"client_id", p.cfg.ClientID, "retry_max_interval", p.cfg.MaxReconnectInterval)
		} else {
			p.log.Debug("mqtt connect attempt failed", "broker", p.broker, "attempt", r.failures, "err", err)
		}
		r.retryTimer = time.NewTimer(r.nextBackoff())
		return
	}
	sessionPresent := false
	if ct, ok := tok.(*mqtt.ConnectToken); ok {
		sessionPresent = ct.SessionPresent()
	}
	p.log.Info("mqtt connected", "broker", p.broker, "client_id", p.cfg.ClientID,
		"session_present", sessionPresent, "failed_attempts", r.failures, "inflight", r.window.len()+r.handed)
	r.open = true
	r.everOpen = true
	r.failures = 0
	r.connectedAt = time.Now()
	p.connected.Store(true)
	r.birth = true
}

func (r *runner) connectionLost(err error) {
	if r.client.IsConnectionOpen() {
		return // a loss reported late, after the next connection was made
	}
	r.markDown()
	r.p.log.Warn("mqtt connection lost; reconnecting", "broker", r.p.broker, "err", err,
		"inflight", r.window.len()+r.handed, "queued", len(r.p.queue)+r.retry.len())
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
	if w.msg.qos > 0 {
		if ch, waiting := r.p.store.waitAck(w.mid); waiting {
			w.resent, w.ackCh = true, ch
			return
		}
	}
	m := r.window.pop().msg
	r.sendErrors = 0
	r.p.metrics.published[m.qos].Inc()
	if m.res != nil {
		r.p.acked.Add(1)
		if r.p.cfg.OnResult != nil {
			r.p.cfg.OnResult(m.res, nil)
		}
	}
}

func (r *runner) sendFailed(m message, err error) {
	p := r.p
	p.metrics.errors.Inc()
	r.sendErrors++
	args := []any{"topic", m.topic, "err", err}
	if m.res != nil {
		args = append(args, "trace_id", m.res.TraceID, "id", m.res.ID)
	}
	if r.sendErrors == 1 {
		p.log.Warn("mqtt publish failed; sending again", args...)
	} else {
		p.log.Debug("mqtt publish failed; sending again", args...)
	}
	if !m.status {
		r.retry.push(m)
		p.retrying.Add(1)
		p.retried.Add(1)
	}
	if r.open && !r.client.IsConnectionOpen() {
		// The connection is going down and its loss is yet to be reported; sending
		// more would only fail again. Wait a little before reconnecting, so that the
		// client has finished with the old connection.
		r.markDown()
		if r.retryTimer == nil && r.connecting == nil {
			r.retryTimer = time.NewTimer(r.nextBackoff())
		}
	}
}

// finish runs after the loop: it stops the sender, settles the connection attempt
// under way, reports what was not delivered, publishes `offline` and disconnects.
func (r *runner) finish() {
	p := r.p
	if r.retryTimer != nil {
		r.retryTimer.Stop()
	}
	close(r.sendq)
	for r.handed > 0 {
		// paho gives up a stuck publish within WriteTimeout.
		r.window.push(<-r.sent)
		r.handed--
	}
	<-r.senderDone
	if r.connecting != nil {
		// paho offers no way to abort an attempt; it ends within ConnectTimeout.
		<-r.connecting.Done()
		r.open = r.connecting.Error() == nil
	}

	undelivered := 0
	giveUp := func(m message) {
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
	p.retrying.Store(0)
	p.inflight.Store(0)
	for len(p.queue) > 0 {
		giveUp(<-p.queue)
	}
	if undelivered > 0 {
		p.log.Warn("mqtt results not delivered before shutdown", "count", undelivered,
			"broker", p.broker, "drain_timeout", p.cfg.DrainTimeout)
	}

	if r.open && r.client.IsConnectionOpen() {
		wait := max(time.Until(r.drainEnds), minOfflineWait)
		tok := r.client.Publish(p.statusTopic, p.statusQoS, true, StatusOffline)
		timer := time.NewTimer(wait)
		select {
		case <-tok.Done():
			if err := tok.Error(); err != nil {
				p.log.Warn("mqtt offline status not published", "broker", p.broker, "err", err)
			} else {
				p.metrics.published[p.statusQoS].Inc()
			}
		case err := <-r.lost:
			// The will says offline for us.
			p.log.Warn("mqtt connection lost while publishing the offline status", "broker", p.broker, "err", err)
		case <-timer.C:
			p.log.Warn("mqtt offline status not acknowledged in time", "broker", p.broker, "wait", wait)
		}
		timer.Stop()
		r.client.Disconnect(disconnectQuiesce)
		p.log.Info("mqtt disconnected", "broker", p.broker)
	}
	if r.drain != nil {
		r.drain.Stop()
	}
	r.markDown()
}

// connectProblem turns a failed connection attempt into one line that says what to
// check. paho wraps network failures as "network Error : <cause>"; the cause is what
// the operator needs.
func connectProblem(broker string, err error) string {
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
		if cause == nil {
			return fmt.Sprintf("mqtt broker %s closed the connection during the MQTT handshake; check that mqtt.broker names an MQTT port and the right scheme (tcp:// or ssl://)", broker)
		}
		if isTLSError(cause) {
			return fmt.Sprintf("mqtt broker %s: TLS handshake failed: %v; check the scheme (tcp:// or ssl://) and the broker's certificate", broker, cause)
		}
		return fmt.Sprintf("mqtt broker %s unreachable: %v; check mqtt.broker and that the broker is running", broker, cause)
	}
	return fmt.Sprintf("mqtt broker %s: connect failed: %v; check mqtt.broker and that the broker is running", broker, err)
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

func isTLSError(err error) bool {
	var (
		rec     tls.RecordHeaderError
		verify  *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
		alert   tls.AlertError
	)
	return errors.As(err, &rec) || errors.As(err, &verify) || errors.As(err, &unknown) ||
		errors.As(err, &host) || errors.As(err, &invalid) || errors.As(err, &alert)
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
