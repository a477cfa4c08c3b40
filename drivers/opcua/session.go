package opcua

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/edgedrun/edged/drivers"
)

// level is how far the pipeline's pressure stretches the sampling: minIv is the
// shortest interval MaxRateHz allows, slow the factor SlowDown answers built up.
type level struct {
	minIv time.Duration
	slow  int
}

func (l level) next(p drivers.Pressure) level {
	n := level{slow: l.slow}
	if p.MaxRateHz > 0 {
		n.minIv = time.Duration(float64(time.Second) / p.MaxRateHz)
	}
	if p.SlowDown() {
		n.slow = min(max(n.slow, 1)*2, maxSlow)
	} else if n.slow > 1 {
		n.slow /= 2
	}
	return n
}

// interval is node sampling interval base under this level.
func (l level) interval(base time.Duration) time.Duration {
	return max(base*time.Duration(max(l.slow, 1)), l.minIv)
}

// coalesce is the least time between two stream readings under this level.
func (l level) coalesce(base time.Duration) time.Duration {
	if l.slow > 1 {
		return max(l.minIv, base*time.Duration(l.slow))
	}
	return l.minIv
}

// near reports whether two intervals differ by less than a tenth, so a rate
// controller's small steps do not turn into a service call each.
func near(a, b time.Duration) bool {
	d := a - b
	if d < 0 {
		d = -d
	}
	return d*10 < max(a, b)
}

// streamItems makes the monitored items of the stream mode's nodes under level l; the
// client handle is the node's index.
func (d *Driver) streamItems(l level) []*ua.MonitoredItemCreateRequest {
	items := make([]*ua.MonitoredItemCreateRequest, len(d.cfg.Nodes))
	for i := range d.cfg.Nodes {
		items[i] = &ua.MonitoredItemCreateRequest{
			ItemToMonitor:       &ua.ReadValueID{NodeID: d.nodeIDs[i], AttributeID: ua.AttributeIDValue, DataEncoding: &ua.QualifiedName{}},
			MonitoringMode:      ua.MonitoringModeReporting,
			RequestedParameters: d.params(i, l),
		}
	}
	return items
}

func (d *Driver) params(i int, l level) *ua.MonitoringParameters {
	n := d.cfg.Nodes[i]
	p := &ua.MonitoringParameters{
		ClientHandle:     uint32(i),
		SamplingInterval: float64(l.interval(time.Duration(n.SamplingInterval))) / float64(time.Millisecond),
		QueueSize:        n.QueueSize,
		DiscardOldest:    true,
		Filter:           ua.NewExtensionObject(nil),
	}
	if n.Deadband > 0 {
		p.Filter = ua.NewExtensionObject(&ua.DataChangeFilter{
			Trigger:       ua.DataChangeTriggerStatusValue,
			DeadbandType:  uint32(ua.DeadbandTypeAbsolute),
			DeadbandValue: n.Deadband,
		})
	}
	return p
}

// monitor creates items and returns their ids; a refused item is a config fault
// naming its node.
func (d *Driver) monitor(ctx context.Context, sub *opcua.Subscription, items []*ua.MonitoredItemCreateRequest, name func(i int) string) ([]uint32, error) {
	rctx, cancel := context.WithTimeout(ctx, time.Duration(d.cfg.RequestTimeout))
	defer cancel()
	res, err := sub.Monitor(rctx, ua.TimestampsToReturnBoth, items...)
	if err != nil {
		return nil, fmt.Errorf("opcua: source %q: create monitored items at %s: %w", d.spec.Name, d.cfg.Endpoint, err)
	}
	if len(res.Results) != len(items) {
		return nil, fmt.Errorf("opcua: source %q: create %d monitored items at %s: got %d results", d.spec.Name, len(items), d.cfg.Endpoint, len(res.Results))
	}
	ids := make([]uint32, len(items))
	for i, r := range res.Results {
		if r.StatusCode != ua.StatusOK {
			return nil, &configError{fmt.Errorf("opcua: source %q: monitor %s: %w", d.spec.Name, name(i), r.StatusCode)}
		}
		ids[i] = r.MonitoredItemID
	}
	return ids, nil
}

// runStream emits a reading holding every node's latest value on each data change.
func (d *Driver) runStream(ctx context.Context, c *opcua.Client, sub *opcua.Subscription, notifs <-chan *opcua.PublishNotificationData, e drivers.Emitter, log *slog.Logger, values []*ua.DataValue, up func()) error {
	n := len(d.cfg.Nodes)
	vals := make([]float64, n)
	for i := range n {
		vals[i], _ = toFloat(values[i].Value)
	}
	base := d.baseSampling()
	applied := level{slow: 1}
	ids, err := d.monitor(ctx, sub, d.streamItems(applied), d.nameOf)
	if err != nil {
		return err
	}
	d.sampling.Store(int64(base))
	up()
	log.Info("opc ua subscription up", "endpoint", d.cfg.Endpoint, "mode", ModeStream, "nodes", n, "policy", d.cfg.SecurityPolicy)

	var (
		want      = applied
		seq       uint64
		dirty     = true // the values read at connect are the first reading
		lastEmit  time.Time
		lastApply time.Time
		live      = newLiveness()
		seen      = make([]bool, n)
		timer     = time.NewTimer(time.Hour)
		timerOn   bool
	)
	timer.Stop()
	defer timer.Stop()
	tick := time.NewTicker(applyEvery)
	defer tick.Stop()

	emit := func() {
		now := time.Now()
		r := drivers.AcquireReading()
		if r.Scalars == nil {
			r.Scalars = make(map[string]float64, n)
		}
		for i, node := range d.cfg.Nodes {
			r.Scalars[node.Name] = vals[i]
		}
		seq++
		r.Source, r.Seq, r.CapturedAt = d.spec.Name, seq, now
		if d.spec.Budget > 0 {
			r.Deadline = now.Add(d.spec.Budget)
		}
		dirty = false
		p := e.Emit(ctx, r)
		lastEmit = time.Now()
		want = want.next(p)
	}
	flush := func() {
		if !dirty || ctx.Err() != nil {
			return
		}
		if iv := want.coalesce(base); iv > 0 {
			if wait := iv - time.Since(lastEmit); wait > 0 {
				if !timerOn {
					timer.Reset(wait)
					timerOn = true
				}
				return
			}
		}
		emit()
	}
	apply := func() error {
		if near(want.interval(base), applied.interval(base)) {
			applied = want
			return nil
		}
		lastApply = time.Now()
		var err error
		ids, err = d.resample(ctx, sub, ids, want, log)
		if err != nil {
			return err
		}
		applied = want
		d.sampling.Store(int64(applied.interval(base)))
		log.Debug("opc ua sampling interval changed", "interval", applied.interval(base), "max_rate_hz_interval", want.minIv, "slow", want.slow)
		return nil
	}

	flush()
	for {
		select {
		case <-ctx.Done():
			return nil
		case pn := <-notifs:
			dcn, err := live.dataChange(d, pn)
			if err != nil {
				return err
			}
			if dcn == nil {
				continue
			}
			clear(seen)
			for _, it := range dcn.MonitoredItems {
				h := int(it.ClientHandle)
				if it == nil || h < 0 || h >= n || it.Value == nil {
					continue
				}
				d.m.notifications.Inc()
				if it.Value.Status != ua.StatusOK && !isUncertain(it.Value.Status) {
					log.Debug("opc ua node reports a bad status; keeping its last value", "node", d.cfg.Nodes[h].NodeID, "status", it.Value.Status)
					continue
				}
				f, err := toFloat(it.Value.Value)
				if err != nil {
					log.Warn("opc ua node value is not a number; keeping its last value", "node", d.cfg.Nodes[h].NodeID, "err", err)
					continue
				}
				// A node's second value in one publish is a later sample: the
				// reading of the first goes out before it is overwritten.
				if seen[h] {
					flush()
					clear(seen)
				}
				vals[h] = f
				seen[h] = true
				dirty = true
			}
			flush()
		case <-timer.C:
			timerOn = false
			flush()
		case <-tick.C:
			if err := live.check(ctx, d, c); err != nil {
				return err
			}
		}
		if want != applied && time.Since(lastApply) >= applyEvery {
			if err := apply(); err != nil {
				return err
			}
		}
	}
}

// resample moves the monitored items to level l's sampling intervals by creating them
// anew and then deleting the old ones, so no change goes unseen in between. It does
// not use ModifyMonitoredItems or ModifySubscription: gopcua's own server and some
// PLCs answer them with a ServiceFault, and gopcua v0.8.0 (reconnecting on its own
// off) takes any ServiceFault as the end of the connection.
func (d *Driver) resample(ctx context.Context, sub *opcua.Subscription, ids []uint32, l level, log *slog.Logger) ([]uint32, error) {
	fresh, err := d.monitor(ctx, sub, d.streamItems(l), d.nameOf)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, time.Duration(d.cfg.RequestTimeout))
	defer cancel()
	if _, err := sub.Unmonitor(rctx, ids...); err != nil {
		return nil, fmt.Errorf("opcua: source %q: delete monitored items at %s: %w", d.spec.Name, d.cfg.Endpoint, err)
	}
	log.Debug("opc ua monitored items created again", "sampling_interval", l.interval(d.baseSampling()))
	return fresh, nil
}

// edge is one trigger edge waiting for its inspection.
type edge struct{ at time.Time }

// trigger queue size on the server: pulses shorter than a publishing interval still
// reach the driver as separate samples.
const triggerItemQueue = 16

// runTrigger starts one inspection per trigger edge: the nodes and the part id are
// read in one Read, so they belong to the part. Edges wait in a bounded queue while
// the pipeline is slow; a full queue drops the edge and counts it.
func (d *Driver) runTrigger(ctx context.Context, c *opcua.Client, sub *opcua.Subscription, notifs <-chan *opcua.PublishNotificationData, e drivers.Emitter, log *slog.Logger, values []*ua.DataValue, up func()) error {
	item := &ua.MonitoredItemCreateRequest{
		ItemToMonitor:  &ua.ReadValueID{NodeID: d.trigID, AttributeID: ua.AttributeIDValue, DataEncoding: &ua.QualifiedName{}},
		MonitoringMode: ua.MonitoringModeReporting,
		RequestedParameters: &ua.MonitoringParameters{
			ClientHandle:     0,
			SamplingInterval: float64(d.baseSampling()) / float64(time.Millisecond),
			QueueSize:        triggerItemQueue,
			DiscardOldest:    true,
			Filter:           ua.NewExtensionObject(nil),
		},
	}
	if _, err := d.monitor(ctx, sub, []*ua.MonitoredItemCreateRequest{item}, func(int) string {
		return "trigger.node_id " + d.cfg.Trigger.NodeID
	}); err != nil {
		return err
	}
	prev, _ := toFloat(values[len(d.nodeIDs)].Value)
	up()
	log.Info("opc ua subscription up", "endpoint", d.cfg.Endpoint, "mode", ModeTrigger, "trigger", d.cfg.Trigger.NodeID, "policy", d.cfg.SecurityPolicy)

	edges := make(chan edge, triggerQueue)
	var wg sync.WaitGroup
	defer wg.Wait()
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.inspect(ictx, c, e, edges, log)
	}()

	tick := time.NewTicker(applyEvery)
	defer tick.Stop()
	live := newLiveness()
	for {
		select {
		case <-ctx.Done():
			return nil
		case pn := <-notifs:
			dcn, err := live.dataChange(d, pn)
			if err != nil {
				return err
			}
			if dcn != nil {
				prev = d.edges(dcn, prev, edges, log)
			}
		case <-tick.C:
			if err := live.check(ctx, d, c); err != nil {
				return err
			}
		}
	}
}

// edges queues an inspection for each trigger edge in a notification and returns the
// trigger's last value. The queue never blocks the notifications: when it is full the
// edge is counted and logged, and dropped.
func (d *Driver) edges(dcn *ua.DataChangeNotification, prev float64, edges chan<- edge, log *slog.Logger) float64 {
	for _, it := range dcn.MonitoredItems {
		if it == nil || it.ClientHandle != 0 || it.Value == nil {
			continue
		}
		d.m.notifications.Inc()
		if it.Value.Status != ua.StatusOK && !isUncertain(it.Value.Status) {
			continue
		}
		f, err := toFloat(it.Value.Value)
		if err != nil {
			log.Warn("opc ua trigger value is not a number or bool", "node", d.cfg.Trigger.NodeID, "err", err)
			continue
		}
		fire := f != prev
		if d.cfg.Trigger.Edge == EdgeRising {
			fire = prev == 0 && f != 0
		}
		prev = f
		if !fire {
			continue
		}
		select {
		case edges <- edge{at: time.Now()}:
		default:
			d.m.overflow.Inc()
			log.Warn("opc ua trigger edge dropped: inspections queue full", "queue", cap(edges))
		}
	}
	return prev
}

// inspect reads the nodes and the part id for each edge as it comes, so the values are
// that part's even while the pipeline is behind, and hands the readings to a second
// goroutine that emits them: a blocked emit never delays the read of the next part.
// Readings waiting for the pipeline are bounded by the queue; a full queue drops the
// part, counted and logged like a dropped edge.
func (d *Driver) inspect(ctx context.Context, c *opcua.Client, e drivers.Emitter, edges <-chan edge, log *slog.Logger) {
	ready := make(chan *drivers.Reading, cap(edges))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case r := <-ready:
				e.Emit(ctx, r)
			}
		}
	}()
	defer func() {
		wg.Wait()
		for {
			select {
			case r := <-ready:
				r.Release()
			default:
				return
			}
		}
	}()
	ids := append([]*ua.NodeID(nil), d.nodeIDs...)
	if d.partID != nil {
		ids = append(ids, d.partID)
	}
	var seq uint64
	for {
		var ed edge
		select {
		case <-ctx.Done():
			return
		case ed = <-edges:
		}
		values, err := d.readValues(ctx, c, ids)
		if err != nil {
			if ctx.Err() == nil {
				d.m.unread.Inc()
				log.Warn("opc ua inspection read failed; part not inspected", "err", err)
			}
			continue
		}
		r := drivers.AcquireReading()
		if r.Scalars == nil {
			r.Scalars = make(map[string]float64, len(d.nodeIDs))
		}
		bad := false
		for i, node := range d.cfg.Nodes {
			v := values[i]
			f, err := toFloat(v.Value)
			if v.Status != ua.StatusOK && !isUncertain(v.Status) {
				err = v.Status
			}
			if err != nil {
				log.Warn("opc ua inspection node unreadable; part not inspected", "node", node.NodeID, "err", err)
				bad = true
				break
			}
			r.Scalars[node.Name] = f
		}
		if bad {
			d.m.unread.Inc()
			r.Release()
			continue
		}
		if d.partID != nil {
			r.PartID = partIDString(values[len(d.nodeIDs)].Value)
		}
		seq++
		r.Source, r.Seq, r.CapturedAt = d.spec.Name, seq, ed.at
		if d.spec.Budget > 0 {
			r.Deadline = ed.at.Add(d.spec.Budget)
		}
		select {
		case ready <- r:
		default:
			d.m.overflow.Inc()
			log.Warn("opc ua part dropped: inspections queue full", "part_id", r.PartID, "queue", cap(ready))
			r.Release()
		}
	}
}

// liveness tells a session that has gone quiet from one whose server is gone: a
// notification or a successful read within livenessEvery shows the session alive.
type liveness struct{ lastSeen, lastAlive time.Time }

func newLiveness() *liveness {
	now := time.Now()
	return &liveness{lastSeen: now, lastAlive: now}
}

// dataChange unwraps one publish: the data change it carries, nil for anything else,
// or the error that ends the session.
func (l *liveness) dataChange(d *Driver, pn *opcua.PublishNotificationData) (*ua.DataChangeNotification, error) {
	if pn.Error != nil {
		return nil, d.handleError(pn.Error)
	}
	l.lastSeen = time.Now()
	dcn, _ := pn.Value.(*ua.DataChangeNotification)
	return dcn, nil
}

// check runs on every tick: the client must still be connected, and a session quiet
// for livenessEvery must answer a read.
func (l *liveness) check(ctx context.Context, d *Driver, c *opcua.Client) error {
	if s := c.State(); s != opcua.Connected {
		return fmt.Errorf("opcua: source %q: connection to %s lost (%s)", d.spec.Name, d.cfg.Endpoint, s)
	}
	if time.Since(l.lastSeen) >= livenessEvery && time.Since(l.lastAlive) >= livenessEvery {
		l.lastAlive = time.Now()
		return d.alive(ctx, c)
	}
	return nil
}
