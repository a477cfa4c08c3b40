package dpi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy is an inline Modbus TCP proxy: clients connect to it as to the PLC; it opens one
// upstream connection to the PLC per client and forwards each ADU whole, byte for byte,
// once it has classified it.
//
// Per client connection two goroutines run, one per direction, each with a fixed buffer
// of 2*MaxADU bytes: a frame is at most MaxADU, so a partial one always fits behind the
// bytes of the frames before it. A slow or dead PLC stalls only the clients it serves
// through its own connections.
//
// What a blocked frame gets:
//   - a request is dropped and the client answered with an exception, with the
//     request's transaction id, unit and function: 01 illegal function
//     (function_not_allowed, unknown_function_code), 02 illegal data address
//     (address_out_of_range), 03 illegal data value (quantity_out_of_range,
//     malformed_pdu), 06 server busy (flood: the client is told to retry later), 0B
//     gateway target failed to respond (unit_id_not_allowed: the same answer a missing
//     unit gives, so a scan learns nothing from it);
//   - a request reusing an outstanding transaction id is dropped unanswered: an
//     exception with that id would be taken for the answer to the first request;
//   - a request with invalid_protocol_id or invalid_length closes the client: it is not
//     Modbus, or its length field cannot be trusted to find the next frame;
//   - a response is dropped (the client times out on its request, as when a PLC does
//     not answer): an exception would claim the PLC said something it did not;
//   - bytes that cannot be framed at all (ADULen fails) close the connection in either
//     direction, whatever the action: the stream cannot be resynchronised. With
//     ActionAlert the bytes buffered so far are forwarded first.
//
// A frame can show several anomalies: its own (from Parse) or a policy one (unit,
// function, write windows, map, in that order), a transaction id reuse and a flood.
// Each is counted and alerted; the frame is blocked when any of their actions is block,
// and that action is what every alert and counter of the frame carries.
type Proxy struct {
	cfg   Config
	rules *rules
	vecs  *metricVecs
	met   *metrics
	lim   *limiter
	log   *slog.Logger
	now   func() time.Time // flood windows, alert rate limits and alert times

	ready   chan struct{}
	addr    atomic.Pointer[string]
	running atomic.Bool
	clients atomic.Int64
}

// New validates cfg and returns a proxy; it has no side effects (metrics are
// registered by Run).
func New(cfg Config) (*Proxy, error) {
	cfg = withDefaults(cfg)
	r, err := compile(&cfg)
	if err != nil {
		return nil, fmt.Errorf("modbus_dpi %q: %w", cfg.Name, err)
	}
	vecs := newMetricVecs()
	return &Proxy{
		cfg:   cfg,
		rules: r,
		vecs:  vecs,
		met:   vecs.resolve(cfg.Name),
		lim:   newLimiter(cfg.AlertEvery),
		log:   cfg.Log.With("proxy", cfg.Name),
		now:   time.Now,
		ready: make(chan struct{}),
	}, nil
}

// Ready is closed once the proxy listens.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// Addr is the address the proxy listens on once Ready is closed; "" before.
func (p *Proxy) Addr() string {
	if a := p.addr.Load(); a != nil {
		return *a
	}
	return ""
}

// Run listens on cfg.Listen and serves clients until ctx ends; it then closes every
// connection, waits for their goroutines and returns nil. It runs once per Proxy.
func (p *Proxy) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return fmt.Errorf("modbus_dpi %q: already run", p.cfg.Name)
	}
	if p.cfg.Registerer != nil {
		if err := p.vecs.register(p.cfg.Registerer); err != nil {
			return fmt.Errorf("modbus_dpi %q: metrics: %w", p.cfg.Name, err)
		}
		p.met = p.vecs.resolve(p.cfg.Name)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", p.cfg.Listen)
	if err != nil {
		return fmt.Errorf("modbus_dpi %q: listen: %w", p.cfg.Name, err)
	}
	addr := ln.Addr().String()
	p.addr.Store(&addr)
	close(p.ready)
	p.log.Info("modbus proxy listening", "listen", addr, "upstream", p.cfg.Upstream)

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // before wg.Wait: a failing listener ends the connections too
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("modbus_dpi %q: accept: %w", p.cfg.Name, err)
			}
			// Out of descriptors and the like: wait and retry, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("modbus proxy accept failed", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		if p.clients.Load() >= int64(p.cfg.MaxClients) {
			c.Close()
			p.met.refused.Inc()
			continue
		}
		p.clients.Add(1)
		p.met.clients.Inc()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				p.clients.Add(-1)
				p.met.clients.Dec()
			}()
			p.serve(ctx, c)
		}()
	}
}

// conn is one client and its upstream connection.
type conn struct {
	p        *Proxy
	client   net.Conn
	upstream net.Conn
	remote   string // ip:port, for alerts
	ip       string // the alert rate limit key
	rule     *clientRule
	txns     txTable
	reqFlood window // owned by the request goroutine
	excFlood window // owned by the response goroutine
	closer   sync.Once
	req      pipe
	resp     pipe
	// Exception answers to blocked requests, gathered by the request goroutine over
	// one read and written at once: a flood of blocked frames costs one write per
	// read, not one per frame. A read holds at most len(buf)/8 frames (the shortest
	// ADU is 8 bytes).
	exc  [(2*MaxADU/8 + 1) * excLen]byte
	nexc int
}

func (p *Proxy) serve(ctx context.Context, client net.Conn) {
	remote := client.RemoteAddr().String()
	ap, _ := netip.ParseAddrPort(remote)
	ip := ap.Addr().Unmap()
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	up, err := d.DialContext(ctx, "tcp", p.cfg.Upstream)
	if err != nil {
		client.Close()
		if ctx.Err() == nil {
			p.met.dials.Inc()
			p.log.Warn("modbus proxy cannot reach the plc; client closed", "client", remote, "upstream", p.cfg.Upstream, "err", err)
		}
		return
	}
	now := p.now()
	c := &conn{
		p:        p,
		client:   client,
		upstream: up,
		remote:   remote,
		ip:       ip.String(),
		rule:     p.rules.forClient(ip),
		reqFlood: newWindow(p.cfg.FloodRequests, p.cfg.FloodWindow, now),
		excFlood: newWindow(p.cfg.FloodExceptions, p.cfg.FloodWindow, now),
	}
	c.req = pipe{c: c, dir: Request, src: client, dst: up}
	c.resp = pipe{c: c, dir: Response, src: up, dst: client}
	p.log.Debug("modbus client connected", "client", remote)
	stop := context.AfterFunc(ctx, c.close)
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.pump(Response)
	}()
	c.pump(Request)
	<-done
	c.close()
	p.log.Debug("modbus client closed", "client", remote)
}

// close closes both sides; the goroutines blocked on them return.
func (c *conn) close() {
	c.closer.Do(func() {
		c.client.Close()
		c.upstream.Close()
	})
}

// verdict is what becomes of one frame.
type verdict uint8

const (
	forward verdict = iota
	drop
	closeConn
)

// pipe is one direction of a connection: its buffer and the frames in it.
type pipe struct {
	c        *conn
	dir      Direction
	src, dst net.Conn
	buf      [2 * MaxADU]byte
	start    int // first byte not yet classified
	end      int // end of the bytes read
	fs, fe   int // frames classified to forward, not yet written
}

// flush writes the frames waiting to be forwarded.
func (pp *pipe) flush() bool {
	if pp.fe > pp.fs {
		if err := pp.c.write(pp.dst, pp.buf[pp.fs:pp.fe]); err != nil {
			return false
		}
	}
	pp.fs, pp.fe = pp.start, pp.start
	return true
}

// pump reads frames in one direction, classifies them and forwards the ones that pass.
// Frames that pass one after another are written together.
func (c *conn) pump(dir Direction) {
	pp := &c.req
	if dir == Response {
		pp = &c.resp
	}
	halfClose := false
	defer func() {
		if !halfClose {
			c.close()
		}
	}()
	idle := c.p.cfg.IdleTimeout
	for {
		pp.fs, pp.fe = pp.start, pp.start
		for {
			rest := pp.buf[pp.start:pp.end]
			n, err := ADULen(rest)
			if err != nil {
				if dir == Request {
					c.flushExceptions()
				}
				c.unframable(pp, rest, err)
				return
			}
			if n == 0 || n > len(rest) {
				break
			}
			var v verdict
			if dir == Request {
				v = c.request(rest[:n])
			} else {
				v = c.response(rest[:n])
			}
			switch v {
			case forward:
				if pp.fe != pp.start {
					// A dropped frame lies between: write what came before it.
					if !pp.flush() {
						return
					}
				}
				pp.fe = pp.start + n
			case closeConn:
				pp.flush()
				if dir == Request {
					c.flushExceptions()
				}
				return
			}
			pp.start += n
		}
		if !pp.flush() || (dir == Request && !c.flushExceptions()) {
			return
		}
		if pp.start == pp.end {
			pp.start, pp.end = 0, 0
		} else if pp.start > 0 {
			pp.end = copy(pp.buf[:], pp.buf[pp.start:pp.end])
			pp.start = 0
		}
		if dir == Request {
			// Silence from the client, not from the PLC, is what ends a connection:
			// a client may wait long for a slow PLC.
			c.client.SetReadDeadline(time.Now().Add(idle))
		}
		n, err := pp.src.Read(pp.buf[pp.end:])
		pp.end += n
		if err != nil {
			if dir == Request && errors.Is(err, io.EOF) {
				// The client has sent everything; let the PLC answer what is in
				// flight, for at most the idle timeout.
				if tc, ok := c.upstream.(*net.TCPConn); ok && tc.CloseWrite() == nil {
					c.upstream.SetReadDeadline(time.Now().Add(idle))
					halfClose = true
					return
				}
			}
			var ne net.Error
			if dir == Request && errors.As(err, &ne) && ne.Timeout() {
				c.p.log.Info("modbus client idle; closed", "client", c.remote, "idle_timeout", idle)
			}
			return
		}
	}
}

// write writes b whole; a peer that takes nothing for the idle timeout is dead.
func (c *conn) write(dst net.Conn, b []byte) error {
	dst.SetWriteDeadline(time.Now().Add(c.p.cfg.IdleTimeout))
	_, err := dst.Write(b)
	return err
}

// finding is one anomaly of a frame.
type finding struct {
	class  Class
	reason string
}

// request classifies one request ADU and records it as outstanding when it goes on.
func (c *conn) request(adu []byte) verdict {
	p := c.p
	p.met.frames[Request].Inc()
	f, cls, reason := ParseReason(adu, Request)
	var found [3]finding
	k := 0
	if cls != "" {
		found[k] = finding{cls, reason}
		k++
	} else if pc := p.rules.checkRequest(c.rule, &f); pc != "" {
		found[k] = finding{pc, policyReason(pc)}
		k++
	}
	if c.txns.outstanding(f.TxID) {
		found[k] = finding{TransactionIDReuse, "transaction id of a request still outstanding"}
		k++
	}
	if c.reqFlood.hit(p.now()) {
		found[k] = finding{Flood, "requests above flood_requests per flood_window"}
		k++
	}
	blocker := c.judge(&f, found[:k], nil)
	if blocker == "" {
		t := txn{id: f.TxID, function: f.Function, table: f.Table, address: f.Address, quantity: f.Quantity, parsed: cls == ""}
		if cls != "" {
			// Parse may have stopped before the function: take it from the wire,
			// and check the answer for nothing more than its function.
			t.function = adu[7]
			t.table, t.address, t.quantity = TableNone, 0, 0
		}
		if c.txns.add(t) {
			p.met.forgotten.Inc()
		}
		return forward
	}
	switch blocker {
	case InvalidProtocolID, InvalidLength:
		return closeConn
	case TransactionIDReuse:
		return drop
	}
	if c.nexc+excLen > len(c.exc) && !c.flushExceptions() {
		return closeConn
	}
	b := c.exc[c.nexc : c.nexc+excLen]
	b[0], b[1] = adu[0], adu[1] // transaction id
	b[2], b[3] = 0, 0
	b[4], b[5] = 0, 3
	b[6] = f.Unit
	b[7] = f.Function | 0x80
	b[8] = blockException(blocker)
	c.nexc += excLen
	return drop
}

// excLen is an exception ADU's length.
const excLen = MBAPLen + 2

// flushExceptions writes the exception answers gathered so far.
func (c *conn) flushExceptions() bool {
	if c.nexc == 0 {
		return true
	}
	err := c.write(c.client, c.exc[:c.nexc])
	c.nexc = 0
	return err == nil
}

// blockException is the exception a request blocked for class is answered with.
func blockException(class Class) byte {
	switch class {
	case FunctionNotAllowed, UnknownFunctionCode:
		return 0x01
	case AddressOutOfRange:
		return 0x02
	case UnitIDNotAllowed:
		return 0x0B
	case Flood:
		return 0x06
	}
	return 0x03 // quantity_out_of_range, malformed_pdu
}

func policyReason(c Class) string {
	switch c {
	case UnitIDNotAllowed:
		return "unit id not in units"
	case FunctionNotAllowed:
		return "function not allowed to this client"
	case AddressOutOfRange:
		return "range starts outside the register map"
	case QuantityOutOfRange:
		return "range runs past the end of the register map"
	}
	return ""
}

// response classifies one response ADU against the request it answers.
func (c *conn) response(adu []byte) verdict {
	p := c.p
	p.met.frames[Response].Inc()
	f, cls, reason := ParseReason(adu, Response)
	t, ok := c.txns.take(f.TxID)
	var found [3]finding
	k := 0
	if cls != "" {
		found[k] = finding{cls, reason}
		k++
	}
	switch {
	case !ok:
		found[k] = finding{UnsolicitedResponse, "no outstanding request with this transaction id"}
		k++
	case f.Function&0x7F != t.function&0x7F:
		found[k] = finding{FunctionCodeConflict, "function differs from the request's"}
		k++
	case cls == "" && t.parsed && !f.Exception && !rangeAnswers(&t, &f):
		found[k] = finding{MalformedPDU, "response range or size differs from the request's"}
		k++
	}
	if f.Exception && c.excFlood.hit(p.now()) {
		found[k] = finding{Flood, "exception responses above flood_exceptions per flood_window"}
		k++
	}
	var req *txn
	if ok {
		req = &t
	}
	if c.judge(&f, found[:k], req) != "" {
		return drop
	}
	return forward
}

// rangeAnswers reports whether response f carries what request t asked for: as many
// registers or bits as were read, the range that was written.
func rangeAnswers(t *txn, f *Frame) bool {
	switch t.function {
	case 1, 2:
		return f.Quantity == (t.quantity+7)/8*8
	case 3, 4, 23:
		return f.Quantity == t.quantity
	case 5, 6, 15, 16, 22:
		return f.Address == t.address && f.Quantity == t.quantity
	}
	return true
}

// judge counts and alerts the findings of frame f and returns the class that blocks it,
// "" when it goes on. req is the request a response answers, nil if none.
func (c *conn) judge(f *Frame, found []finding, req *txn) Class {
	if len(found) == 0 {
		return ""
	}
	var blocker Class
	for _, fd := range found {
		if blocker == "" && c.p.rules.actions[c.p.rules.classIdx[fd.class]] == ActionBlock {
			blocker = fd.class
		}
	}
	act := ActionAlert
	if blocker != "" {
		act = ActionBlock
	}
	fn := f.Function
	if len(f.ADU) > MBAPLen {
		fn = f.ADU[MBAPLen] // set even where Parse stopped early
	}
	for _, fd := range found {
		c.report(fd, act, f.Dir, f.ADU, f.Unit, fn, f, req)
	}
	return blocker
}

// unframable handles bytes whose MBAP header cannot frame an ADU: counted and alerted,
// forwarded as they are with ActionAlert; the caller then closes the connection.
func (c *conn) unframable(pp *pipe, rest []byte, err error) {
	reason := err.Error()
	var fe *FrameError
	if errors.As(err, &fe) {
		reason = fe.Reason
	}
	act := c.p.rules.actions[c.p.rules.classIdx[InvalidLength]]
	var unit, fn uint8
	if len(rest) > MBAPLen {
		unit, fn = rest[6], rest[7]
	}
	c.report(finding{InvalidLength, reason}, act, pp.dir, rest, unit, fn, nil, nil)
	if act == ActionAlert && pp.flush() {
		c.write(pp.dst, rest)
	}
}

// report counts one anomaly and sends its alert unless the rate limit holds it back.
func (c *conn) report(fd finding, act Action, dir Direction, adu []byte, unit, fn uint8, f *Frame, req *txn) {
	p := c.p
	ai := 0
	if act == ActionBlock {
		ai = 1
	}
	p.met.anomalies[p.rules.classIdx[fd.class]][ai].Inc()
	now := p.now()
	ok, suppressed := p.lim.allow(fd.class, c.ip, now)
	if !ok {
		return
	}
	a := Alert{
		Proxy:      p.cfg.Name,
		Class:      string(fd.class),
		Severity:   string(fd.class.Severity()),
		Action:     string(act),
		Client:     c.remote,
		Unit:       unit,
		Function:   fn,
		Table:      TableNone.String(),
		Direction:  dir.String(),
		Reason:     fd.reason,
		Excerpt:    excerpt(adu),
		Time:       now,
		Suppressed: suppressed,
	}
	switch {
	case req != nil:
		a.Table, a.Address, a.Quantity = req.table.String(), req.address, req.quantity
	case f != nil && dir == Request:
		a.Table, a.Address, a.Quantity = f.Table.String(), f.Address, f.Quantity
	}
	p.log.Warn("modbus anomaly", "class", a.Class, "severity", a.Severity, "action", a.Action,
		"client", a.Client, "direction", a.Direction, "unit", a.Unit, "function", a.Function,
		"table", a.Table, "address", a.Address, "quantity", a.Quantity, "reason", a.Reason,
		"excerpt", a.Excerpt, "suppressed", a.Suppressed)
	if p.cfg.Alerts != nil {
		p.cfg.Alerts(a)
	}
}
