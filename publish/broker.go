package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// maxClientWritesPending is how many messages the embedded broker queues for one
// subscriber before it starts dropping them. mochi's default (8192) is reached by a
// dashboard that subscribes to every result of a busy line and reads a little slowly;
// a dropped QoS 1 message is exactly what the plant must never see.
const maxClientWritesPending = 64 * 1024

// Broker is the in-process MQTT broker behind `mqtt.broker: embedded`, for single-box
// installations and demos. It accepts every client: it is meant to listen on loopback
// or on a plant network that is already closed.
type Broker struct {
	listen  string
	log     *slog.Logger
	started atomic.Bool
	ready   chan struct{}
	addr    string        // set before ready is closed
	srv     *mochi.Server // set before ready is closed
}

// NewBroker returns a broker that will listen on listen (host:port; port 0 picks a free
// one). It does nothing until Run.
func NewBroker(listen string, log *slog.Logger) *Broker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Broker{listen: listen, log: log, ready: make(chan struct{})}
}

// Ready is closed once the listener is bound and clients can connect. If Run fails
// before that it is never closed, so wait on it together with Run's result.
func (b *Broker) Ready() <-chan struct{} { return b.ready }

// Addr is the bound address (useful when listening on port 0); empty before Ready.
func (b *Broker) Addr() string {
	select {
	case <-b.ready:
		return b.addr
	default:
		return ""
	}
}

// Run binds the listener, serves clients until ctx ends, then closes every client
// connection and returns nil. A bind failure is returned at once.
func (b *Broker) Run(ctx context.Context) error {
	if !b.started.CompareAndSwap(false, true) {
		return errors.New("embedded mqtt broker: Run called twice")
	}
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = maxClientWritesPending
	srv := mochi.New(&mochi.Options{
		Capabilities: caps,
		// mochi logs every hook, listener and client at info; only its warnings and
		// errors are news to an operator.
		Logger: slog.New(minLevelHandler{min: slog.LevelWarn, next: b.log.With("component", "mqtt-broker").Handler()}),
	})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return fmt.Errorf("embedded mqtt broker: add auth hook: %w", err)
	}
	if err := srv.AddHook(&staleAckHook{srv: srv}, nil); err != nil {
		return fmt.Errorf("embedded mqtt broker: add session hook: %w", err)
	}
	nl, err := net.Listen("tcp", b.listen)
	if err != nil {
		return fmt.Errorf("embedded mqtt broker: listen on %s: %w; set mqtt.embedded_listen to a free address, or stop the other broker using it", b.listen, err)
	}
	ln := &tcpListener{ln: nl, log: b.log.With("component", "mqtt-broker"), conns: map[net.Conn]struct{}{}}
	if err := srv.AddListener(ln); err != nil {
		_ = nl.Close()
		return fmt.Errorf("embedded mqtt broker: add listener: %w", err)
	}
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return fmt.Errorf("embedded mqtt broker: serve: %w", err)
	}
	b.addr, b.srv = ln.Address(), srv
	close(b.ready)
	b.log.Info("embedded mqtt broker listening", "addr", b.addr)

	<-ctx.Done()
	// Close disconnects every client and waits for their connection goroutines.
	_ = srv.Close()
	b.log.Info("embedded mqtt broker stopped", "addr", b.addr)
	return nil
}

// tcpListener is the broker's TCP listener. It replaces mochi's own for two reasons:
// mochi's counts a connection only once its handler runs, so a client connecting while
// the server closes races the close (and the race detector says so), while this one
// stops accepting, closes every connection it handed out and waits for their handlers
// before it returns; and mochi's logs every ended connection as a warning with an empty
// message, while here that is a debug line.
type tcpListener struct {
	ln     net.Listener
	log    *slog.Logger
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup // the accept loop and one per connection
}

var _ listeners.Listener = (*tcpListener)(nil)

func (l *tcpListener) Init(*slog.Logger) error { return nil } // bound in Run, to report bind errors well
func (l *tcpListener) ID() string              { return "tcp" }
func (l *tcpListener) Address() string         { return l.ln.Addr().String() }
func (l *tcpListener) Protocol() string        { return "tcp" }

func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	// Every wg.Add happens under mu while open, so none can race Close's Wait.
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	defer l.wg.Done()
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return // closed
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = conn.Close()
			return
		}
		l.conns[conn] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			err := establish(l.ID(), conn)
			l.log.Debug("mqtt client connection ended", "remote", conn.RemoteAddr().String(), "err", err)
			l.mu.Lock()
			delete(l.conns, conn)
			l.mu.Unlock()
		}()
	}
}

func (l *tcpListener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	_ = l.ln.Close()
	// Close every connection ourselves and wait for their handlers before asking mochi
	// to close its clients: mochi's closeListenerClients read-locks its client map twice
	// over, which deadlocks when a handler that is attaching a client asks for the write
	// lock in between.
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
	closeClients(l.ID())
}

// staleAckHook removes, before a client's session is resumed, the PUBACKs that mochi
// still holds for QoS 1 messages from that client. mochi writes the PUBACK before it
// forwards the message; when that write fails (the connection just died) it returns
// without forwarding but keeps the PUBACK, and re-sends it when the client comes back.
// The client then takes a message that no subscriber got as delivered. Without the
// stale PUBACK the client re-sends the message, still unacknowledged in its session, and
// the broker forwards it. A PUBACK that went out is deleted by mochi right after the
// write, so only failed ones are removed here.
type staleAckHook struct {
	mochi.HookBase
	srv *mochi.Server
}

func (h *staleAckHook) ID() string { return "edged-stale-puback" }

func (h *staleAckHook) Provides(b byte) bool { return b == mochi.OnSessionEstablish }

func (h *staleAckHook) OnSessionEstablish(cl *mochi.Client, _ packets.Packet) {
	old, ok := h.srv.Clients.Get(cl.ID)
	if !ok {
		return
	}
	for _, pk := range old.State.Inflight.GetAll(false) {
		if pk.FixedHeader.Type == packets.Puback && old.State.Inflight.Delete(pk.PacketID) {
			atomic.AddInt64(&h.srv.Info.Inflight, -1)
		}
	}
}

// minLevelHandler drops records below min and passes the rest on unchanged.
type minLevelHandler struct {
	min  slog.Level
	next slog.Handler
}

func (h minLevelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.next.Enabled(ctx, l)
}

func (h minLevelHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.next.Handle(ctx, r)
}

func (h minLevelHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevelHandler{min: h.min, next: h.next.WithAttrs(attrs)}
}

func (h minLevelHandler) WithGroup(name string) slog.Handler {
	return minLevelHandler{min: h.min, next: h.next.WithGroup(name)}
}
