package modbus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gmb "github.com/goburrow/modbus"

	"github.com/edgedrun/edged/drivers"
)

// maxSlowDown is how far backpressure may stretch the poll interval.
const maxSlowDown = 16

// Driver polls one Modbus TCP device.
type Driver struct {
	spec   drivers.Spec
	cfg    Config
	points []point
	plan   []Request
	ops    []readOp // one per request of the plan, made once so polls allocate less
	link   *link

	interval atomic.Int64 // the current poll interval in ns, for RateHz
	nominal  atomic.Int64 // the configured poll interval in ns; Reconfigure changes it

	metricsOnce sync.Once
	metrics     atomic.Pointer[metrics]
}

// Interface guards.
var (
	_ drivers.Driver       = (*Driver)(nil)
	_ drivers.Writer       = (*Driver)(nil)
	_ drivers.WriteChecker = (*Driver)(nil)
	_ drivers.Prober       = (*Driver)(nil)
)

// New builds a Modbus driver for a source; it connects to nothing until Run.
func New(spec drivers.Spec, cfg *Config) (*Driver, error) {
	if spec.Name == "" {
		return nil, errors.New("modbus: source name is empty")
	}
	if cfg == nil {
		return nil, fmt.Errorf("modbus: source %q: nil config", spec.Name)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("modbus: source %q: %w", spec.Name, err)
	}
	d := &Driver{spec: spec, cfg: *cfg}
	d.cfg.Registers = append([]Register(nil), cfg.Registers...)
	regs := expand(d.cfg.Registers)
	d.points = compile(regs, d.cfg.ByteOrder, d.cfg.WordOrder)
	d.plan = Plan(regs, d.cfg.MaxGap)
	d.ops = make([]readOp, len(d.plan))
	for i := range d.plan {
		o := &d.ops[i]
		o.q, o.points, o.label = &d.plan[i], d.points, readLabel(d.plan[i].Function)
		o.call, o.use = o.read, o.decode
	}
	d.link = newLink(byte(d.cfg.UnitID), d.cfg.Timeout.Std())
	d.interval.Store(int64(d.cfg.PollInterval))
	d.nominal.Store(int64(d.cfg.PollInterval))
	return d, nil
}

var _ drivers.Reconfigurer = (*Driver)(nil)

// Reconfigure takes a changed config while the driver runs: a new poll_interval
// applies from the next poll. Any other change takes a restart; those keys are
// returned.
func (d *Driver) Reconfigure(cfg any) (restart []string, err error) {
	c, ok := cfg.(*Config)
	if !ok {
		return nil, fmt.Errorf("modbus: source %q: config is %T, not *modbus.Config", d.spec.Name, cfg)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("modbus: source %q: %w", d.spec.Name, err)
	}
	old := d.cfg
	for _, k := range []struct {
		key     string
		changed bool
	}{
		{"address", c.Address != old.Address},
		{"unit_id", c.UnitID != old.UnitID},
		{"timeout", c.Timeout != old.Timeout},
		{"max_gap", c.MaxGap != old.MaxGap},
		{"byte_order", c.ByteOrder != old.ByteOrder},
		{"word_order", c.WordOrder != old.WordOrder},
		{"backoff_min", c.BackoffMin != old.BackoffMin},
		{"backoff_max", c.BackoffMax != old.BackoffMax},
		{"registers", !reflect.DeepEqual(c.Registers, old.Registers)},
	} {
		if k.changed {
			restart = append(restart, k.key)
		}
	}
	d.nominal.Store(int64(c.PollInterval))
	return restart, nil
}

// Requests is the plan each poll follows.
func (d *Driver) Requests() []Request { return append([]Request(nil), d.plan...) }

// RateHz is the poll rate now: the configured one, or less under backpressure.
func (d *Driver) RateHz() float64 {
	return float64(time.Second) / float64(d.interval.Load())
}

func (d *Driver) logger() *slog.Logger {
	base := d.spec.Log
	if base == nil {
		base = slog.Default()
	}
	return base.With("source", d.spec.Name, "driver", "modbus", "address", d.cfg.Address)
}

// Run polls the device until ctx ends, then returns nil. A timeout, a broken
// connection or an answer out of step drops the connection and reconnects with capped
// exponential backoff; an exception answer is logged and counted, and polling goes on.
func (d *Driver) Run(ctx context.Context, e drivers.Emitter) error {
	d.registerMetrics()
	log := d.logger()
	defer d.link.close()

	// Since Go 1.23 a stopped or reset timer delivers no stale tick, so no draining.
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	wait := func(until time.Time) bool {
		if w := time.Until(until); w > 0 {
			timer.Reset(w)
			select {
			case <-ctx.Done():
				timer.Stop()
				return false
			case <-timer.C:
			}
		}
		return ctx.Err() == nil
	}

	const (
		unknown = iota
		up
		down
	)
	state := unknown
	fault := func(err error) {
		if state != down {
			state = down
			log.Warn("modbus device down", "err", err)
			e.Health(false, fmt.Errorf("source %q: %w", d.spec.Name, err))
		} else {
			log.Debug("modbus device still down", "err", err)
		}
	}
	var (
		seq      uint64
		attempt  int
		slow     = 1
		lastExc  string
		interval = time.Duration(d.nominal.Load())
		next     = time.Now()
		dial     = true // the poll's connection is dropped on every fault
	)
	log.Info("modbus polling started", "requests", len(d.plan), "registers", len(d.points), "poll_interval", interval)
	for {
		if !wait(next) {
			return nil
		}
		if dial {
			if err := d.link.dial(ctx, d.cfg.Address); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				fault(fmt.Errorf("connect %s: %w", d.cfg.Address, err))
				next = time.Now().Add(d.backoff(attempt))
				attempt++
				continue
			}
			log.Debug("modbus connected")
			dial = false
		}

		start := time.Now()
		r := drivers.AcquireReading()
		if r.Scalars == nil {
			r.Scalars = make(map[string]float64, len(d.points))
		}
		err := d.poll(ctx, r.Scalars)
		if ctx.Err() != nil {
			r.Release()
			return nil
		}
		var exc *ExceptionError
		switch {
		case errors.As(err, &exc):
			r.Release()
			// The device answered, so the connection is fine: it stays up and the
			// poll is tried again at the usual pace.
			if msg := err.Error(); msg != lastExc {
				lastExc = msg
				log.Warn("modbus device refused a read", "err", err)
			}
			if state != up {
				state = up
				e.Health(true, nil)
			}
			attempt = 0
			next = start.Add(interval)
			continue
		case errors.Is(err, errNotConnected):
			// A write dropped the connection (its ctx ended mid-request): connect
			// again now; if the device is really gone, that fails and says so.
			r.Release()
			dial, next = true, time.Now()
			continue
		case err != nil:
			r.Release()
			dial = true
			fault(err)
			next = time.Now().Add(d.backoff(attempt))
			attempt++
			continue
		}
		attempt, lastExc = 0, ""
		if state != up {
			if state == down {
				log.Info("modbus device up again")
			}
			state = up
			e.Health(true, nil)
		}
		seq++
		r.Source, r.Seq, r.CapturedAt = d.spec.Name, seq, start
		if d.spec.Budget > 0 {
			r.Deadline = start.Add(d.spec.Budget)
		}
		p := e.Emit(ctx, r)

		// The pace: the configured interval, no faster than the pipeline's rate
		// limit, and doubled for as long as the pipeline asks to slow down.
		base := time.Duration(d.nominal.Load())
		if p.MaxRateHz > 0 {
			base = max(base, time.Duration(float64(time.Second)/p.MaxRateHz))
		}
		if p.SlowDown() {
			slow = min(slow*2, maxSlowDown)
		} else {
			slow = 1
		}
		if iv := base * time.Duration(slow); iv != interval {
			log.Debug("modbus poll interval changed", "poll_interval", iv, "occupancy", p.Occupancy, "max_rate_hz", p.MaxRateHz)
			interval = iv
			d.interval.Store(int64(iv))
		}
		next = start.Add(interval)
	}
}

// backoff is the wait before reconnect try n: doubling from backoff_min up to
// backoff_max, then a random part of it taken off so devices restarted together are
// not hit together.
func (d *Driver) backoff(n int) time.Duration {
	lo, hi := d.cfg.BackoffMin.Std(), d.cfg.BackoffMax.Std()
	w := lo
	for i := 0; i < n && w < hi; i++ {
		w *= 2
	}
	w = min(w, hi)
	return w/2 + rand.N(w/2+1)
}

// readOp is one planned request with what reads it and what decodes its answer.
type readOp struct {
	q      *Request
	points []point
	label  string
	out    map[string]float64 // the poll's values; set before each poll
	call   func(gmb.Client) ([]byte, error)
	use    func([]byte) error
}

func (o *readOp) read(c gmb.Client) ([]byte, error) { return read(c, o.q) }
func (o *readOp) decode(data []byte) error          { return decodeResponse(o.q, o.points, data, o.out) }

func readLabel(fn Function) string {
	switch fn {
	case Coil:
		return "read_coil"
	case Discrete:
		return "read_discrete"
	case Input:
		return "read_input"
	}
	return "read_holding"
}

// poll reads every planned request into out.
func (d *Driver) poll(ctx context.Context, out map[string]float64) error {
	for i := range d.ops {
		o := &d.ops[i]
		o.out = out
		err := d.link.do(ctx, o.call, o.use)
		o.out = nil
		d.count(o.label, err)
		if err != nil {
			return fmt.Errorf("read %s: %w", o.q, err)
		}
	}
	return nil
}

func read(c gmb.Client, q *Request) ([]byte, error) {
	switch q.Function {
	case Coil:
		return c.ReadCoils(q.Address, q.Quantity)
	case Discrete:
		return c.ReadDiscreteInputs(q.Address, q.Quantity)
	case Input:
		return c.ReadInputRegisters(q.Address, q.Quantity)
	default:
		return c.ReadHoldingRegisters(q.Address, q.Quantity)
	}
}

// Probe reads every planned request once on a connection of its own and names each
// range the device refuses.
func (d *Driver) Probe(ctx context.Context) error {
	l := newLink(byte(d.cfg.UnitID), d.cfg.Timeout.Std())
	defer l.close()
	if err := l.dial(ctx, d.cfg.Address); err != nil {
		return fmt.Errorf("source %q: connect %s: %w", d.spec.Name, d.cfg.Address, err)
	}
	scratch := make(map[string]float64, len(d.points))
	var errs []error
	for i := range d.plan {
		q := &d.plan[i]
		err := l.do(ctx, func(c gmb.Client) ([]byte, error) { return read(c, q) },
			func(data []byte) error { return decodeResponse(q, d.points, data, scratch) })
		if err != nil {
			errs = append(errs, fmt.Errorf("source %q: read %s: %w", d.spec.Name, q, err))
			if !l.connected() {
				break // the connection is gone; the other ranges would only repeat it
			}
		}
	}
	return errors.Join(errs...)
}

// target is a parsed write target.
type target struct {
	fn      Function
	address uint16
	typ     Type
}

func (d *Driver) parseTarget(s string) (target, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return target{}, errors.New(`want "coil:<address>", "holding:<address>" or "holding:<address>:<type>"`)
	}
	t := target{fn: Function(parts[0]), typ: Uint16}
	switch t.fn {
	case Coil:
		t.typ = Bool
		if len(parts) == 3 && parts[2] != string(Bool) {
			return target{}, fmt.Errorf("type %q is not bool; a coil is one bit", parts[2])
		}
	case Holding:
		if len(parts) == 3 {
			t.typ = Type(parts[2])
			if t.typ.words() == 0 {
				return target{}, fmt.Errorf("type %q is not int16, uint16, int32, uint32, float32 or float64", parts[2])
			}
		}
	default:
		return target{}, fmt.Errorf("%q cannot be written; coil and holding can", parts[0])
	}
	a, err := strconv.Atoi(parts[1])
	if err != nil || a < 0 || a > 65535 {
		return target{}, fmt.Errorf("address %q is not 0..65535", parts[1])
	}
	if w := max(t.typ.words(), 1); a+w-1 > 65535 {
		return target{}, fmt.Errorf("address %d leaves no room for the %d registers of a %s", a, w, t.typ)
	}
	t.address = uint16(a)
	return t, nil
}

// number reads a write's value as a number; bools are 0 and 1.
func number(v any) (float64, error) {
	switch x := v.(type) {
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	case int64:
		return float64(x), nil
	case int:
		return float64(x), nil
	case float64:
		return x, nil
	case string:
		if b, err := strconv.ParseBool(x); err == nil {
			return number(b)
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil {
			return 0, fmt.Errorf("value %q is not a number", x)
		}
		return f, nil
	}
	return 0, fmt.Errorf("value %v is a %T, not a bool, number or string", v, v)
}

// prepare checks a write and returns the call that makes it.
func (d *Driver) prepare(w drivers.Write) (func(gmb.Client) ([]byte, error), string, error) {
	t, err := d.parseTarget(w.Target)
	if err != nil {
		return nil, "", err
	}
	v, err := number(w.Value)
	if err != nil {
		return nil, "", err
	}
	if t.fn == Coil {
		if v != 0 && v != 1 {
			return nil, "", fmt.Errorf("value %v is not a coil state (true, false, 0 or 1)", w.Value)
		}
		state := uint16(0)
		if v == 1 {
			state = 0xFF00
		}
		return func(c gmb.Client) ([]byte, error) { return c.WriteSingleCoil(t.address, state) }, "write_coil", nil
	}
	b, err := encodeValue(t.typ, d.cfg.ByteOrder, d.cfg.WordOrder, v)
	if err != nil {
		return nil, "", fmt.Errorf("value %v: %w", w.Value, err)
	}
	if len(b) == 2 {
		word := binary.BigEndian.Uint16(b)
		return func(c gmb.Client) ([]byte, error) { return c.WriteSingleRegister(t.address, word) }, "write_holding", nil
	}
	return func(c gmb.Client) ([]byte, error) {
		return c.WriteMultipleRegisters(t.address, uint16(len(b)/2), b)
	}, "write_holding", nil
}

// CheckWrite checks a write's target and value without the device.
func (d *Driver) CheckWrite(w drivers.Write) error {
	if _, _, err := d.prepare(w); err != nil {
		return fmt.Errorf("source %q: write %s: %w", d.spec.Name, w.Target, err)
	}
	return nil
}

// Write sets a coil or holding register on the poll's connection. It waits for the
// request in flight, not for the rest of the poll, and fails at once while the device
// is not connected.
func (d *Driver) Write(ctx context.Context, w drivers.Write) error {
	call, fn, err := d.prepare(w)
	if err != nil {
		return fmt.Errorf("source %q: write %s: %w", d.spec.Name, w.Target, err)
	}
	err = d.link.do(ctx, call, nil)
	d.count(fn, err)
	if err != nil {
		return fmt.Errorf("source %q: write %s: %w", d.spec.Name, w.Target, err)
	}
	return nil
}

// link is the driver's one connection to the device, shared by polls and writes one
// request at a time. Requests take turns in arrival order (a channel's waiting senders
// are served first come, first served), so a write waits for at most the request in
// flight, not for the rest of a poll.
type link struct {
	token  chan struct{}
	tr     transport
	client gmb.Client
	dialer net.Dialer
}

func newLink(unit byte, timeout time.Duration) *link {
	// goburrow's TCP handler is used as the packager only: it numbers transactions and
	// frames the PDUs; the transport is ours.
	h := gmb.NewTCPClientHandler("")
	h.SlaveId = unit
	l := &link{token: make(chan struct{}, 1), dialer: net.Dialer{Timeout: timeout}}
	l.tr.timeout = timeout
	l.client = gmb.NewClient2(h, &l.tr)
	return l
}

func (l *link) acquire(ctx context.Context) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	select {
	case l.token <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *link) release() { <-l.token }

func (l *link) connected() bool {
	l.token <- struct{}{}
	defer l.release()
	return l.tr.conn != nil
}

func (l *link) dial(ctx context.Context, addr string) error {
	c, err := l.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	if err := l.acquire(ctx); err != nil {
		c.Close()
		return err
	}
	defer l.release()
	l.tr.attach(ctx, c)
	return nil
}

// close drops the connection. Whoever holds the token has a deadline, so the wait
// for it is bounded.
func (l *link) close() {
	l.token <- struct{}{}
	defer l.release()
	l.closeHeld()
}

func (l *link) closeHeld() { l.tr.detach() }

// do makes one request. Any failure other than an exception answer drops the
// connection: after a timeout or a cancel the answer may still come and would be
// taken for the next request's, and after a mismatched or malformed answer the
// stream cannot be trusted. use sees the response data before the next request may
// overwrite it.
func (l *link) do(ctx context.Context, call func(gmb.Client) ([]byte, error), use func([]byte) error) error {
	if err := l.acquire(ctx); err != nil {
		return fmt.Errorf("%w: %w", errCancelled, err)
	}
	defer l.release()
	if l.tr.conn == nil {
		return errNotConnected
	}
	l.tr.ctx = ctx
	data, err := call(l.client)
	l.tr.ctx = nil
	if err != nil {
		err = classify(err)
		if _, ok := err.(*ExceptionError); !ok {
			l.closeHeld()
		}
		return err
	}
	if use != nil {
		if err := use(data); err != nil {
			l.closeHeld()
			return err
		}
	}
	return nil
}
