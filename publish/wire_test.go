package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgedrun/edged/spool"
)

// checkFirstCopyOrder fails the test when a result arrives for the first time after a
// later result of its inspection arrived; duplicates of earlier results are fine.
func checkFirstCopyOrder(t testing.TB, where string, n int, at func(int) (id, inspection string, seq uint64)) (dups int) {
	t.Helper()
	seen := map[string]bool{}
	last := map[string]uint64{}
	for i := range n {
		id, insp, seq := at(i)
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		if seq < last[insp] {
			t.Errorf("%s: %s seq %d arrived for the first time after seq %d (message %d of %d)", where, insp, seq, last[insp], i, n)
		}
		last[insp] = max(last[insp], seq)
	}
	return dups
}

// persistentSub is a QoS 1 subscriber with a persistent session (clean session off, a
// fixed client id) that reconnects by itself, as a dashboard or MES would: a broker that
// keeps its session queues what it misses while away.
type persistentSub struct {
	client mqtt.Client
	lost   chan error
	cancel context.CancelFunc
	done   chan struct{}
	up     atomic.Bool

	mu       sync.Mutex
	got      []wirePub // in arrival order
	sessions []bool    // session present, per connection
}

func startPersistentSub(t testing.TB, broker, filter string) *persistentSub {
	t.Helper()
	s := &persistentSub{lost: make(chan error, 1), done: make(chan struct{})}
	opts := mqtt.NewClientOptions().
		AddBroker(broker).
		SetClientID(uniqueID("persistent-sub")).
		SetCleanSession(false).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectTimeout(2 * time.Second).
		SetOrderMatters(true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case s.lost <- err:
			default:
			}
		})
	opts.SetDefaultPublishHandler(s.receive)
	s.client = mqtt.NewClient(opts)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.run(ctx, filter)
	t.Cleanup(s.stop)
	waitFor(t, "the subscriber connected", s.up.Load)
	return s
}

func (s *persistentSub) receive(_ mqtt.Client, m mqtt.Message) {
	var r Result
	if err := json.Unmarshal(m.Payload(), &r); err != nil {
		return
	}
	s.mu.Lock()
	s.got = append(s.got, wirePub{id: r.ID, inspection: r.Inspection, seq: r.Seq, dup: m.Duplicate()})
	s.mu.Unlock()
}

func (s *persistentSub) run(ctx context.Context, filter string) {
	defer close(s.done)
	for ctx.Err() == nil {
		tok := s.client.Connect()
		<-tok.Done() // bounded by the connect timeout
		if tok.Error() == nil && ctx.Err() == nil {
			ct, _ := tok.(*mqtt.ConnectToken)
			s.mu.Lock()
			s.sessions = append(s.sessions, ct != nil && ct.SessionPresent())
			s.mu.Unlock()
			// Subscribing again is harmless with a session present, and needed without.
			st := s.client.Subscribe(filter, 1, s.receive)
			<-st.Done()
			if st.Error() == nil {
				s.up.Store(true)
				select {
				case <-s.lost:
				case <-ctx.Done():
				}
				s.up.Store(false)
			}
		}
		if s.client.IsConnectionOpen() {
			s.client.Disconnect(100)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *persistentSub) stop() {
	s.cancel()
	<-s.done
}

func (s *persistentSub) received() []wirePub {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]wirePub(nil), s.got...)
}

func (s *persistentSub) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[string]struct{}, len(s.got))
	for _, g := range s.got {
		seen[g.id] = struct{}{}
	}
	return len(seen)
}

func (s *persistentSub) sessionFlags() []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]bool(nil), s.sessions...)
}

// openSpool opens a spool in a fresh folder (unless o.Dir is set), with its metrics on
// a registry of its own, closed when the test ends.
func openSpool(t testing.TB, o spool.Options) (*spool.Spool, *prometheus.Registry) {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.Log == nil {
		o.Log = testLog(t)
	}
	reg := prometheus.NewRegistry()
	o.Registerer = reg
	sp, err := spool.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sp.Close(); err != nil {
			t.Errorf("close spool: %v", err)
		}
	})
	return sp, reg
}

// outcomes records what OnResult said about each result.
type outcomes struct {
	mu    sync.Mutex
	by    map[string][]error
	calls int
}

func newOutcomes() *outcomes { return &outcomes{by: map[string][]error{}} }

func (o *outcomes) onResult(r *Result, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.by[r.ID] = append(o.by[r.ID], err)
	o.calls++
}

// check wants exactly one call per result, each with nil or ErrSpooled, and returns
// how many were spooled.
func (o *outcomes) check(t testing.TB, results []*Result) (spooled int) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range results {
		errs := o.by[r.ID]
		switch {
		case len(errs) != 1:
			t.Errorf("result %s (%s seq %d): OnResult called %d times: %v", r.ID, r.Inspection, r.Seq, len(errs), errs)
		case errors.Is(errs[0], ErrSpooled):
			spooled++
		case errs[0] != nil:
			t.Errorf("result %s: OnResult(%v), want nil or ErrSpooled", r.ID, errs[0])
		}
	}
	if o.calls != len(results) {
		t.Errorf("OnResult called %d times for %d results", o.calls, len(results))
	}
	return spooled
}

// publishPaced publishes results at rate per second, in bursts every 5ms, and returns
// when all are accepted.
func publishPaced(t testing.TB, p *running, results []*Result, rate float64, published *atomic.Int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	for i, r := range results {
		if due := start.Add(time.Duration(float64(i) / rate * float64(time.Second))); time.Until(due) > 5*time.Millisecond {
			time.Sleep(time.Until(due))
		}
		if err := p.Publish(ctx, r); err != nil {
			return fmt.Errorf("Publish result %d: %w", i, err)
		}
		published.Add(1)
	}
	return nil
}

// logLines counts the lines of a captured log that contain s.
func logLines(l *logBuffer, s string) int { return strings.Count(l.String(), s) }

// sortedKeys is for stable failure messages.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
