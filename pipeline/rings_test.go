package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/edgedrun/edged/drivers"
)

// ring is the method set SPSC and MPMC share, so one table drives both.
type ring[T any] interface {
	TryPush(v T) bool
	TryPop() (T, bool)
	Push(ctx context.Context, v T) error
	Pop(ctx context.Context) (T, error)
	Len() int
	Cap() int
	Ready() <-chan struct{}
	Room() <-chan struct{}
	Close()
	Closed() bool
}

var (
	_ ring[int] = (*SPSC[int])(nil)
	_ ring[int] = (*MPMC[int])(nil)
)

type ringCtor[T any] struct {
	name string
	new  func(capacity int) ring[T]
	// multi is set for rings that allow several producers and consumers.
	multi bool
}

func ringCtors[T any]() []ringCtor[T] {
	return []ringCtor[T]{
		{name: "spsc", new: func(n int) ring[T] { return NewSPSC[T](n) }},
		{name: "mpmc", new: func(n int) ring[T] { return NewMPMC[T](n) }, multi: true},
	}
}

// testBound caps every wait in these tests; reaching it means a lost wake-up or a deadlock.
const testBound = 20 * time.Second

// eventually polls cond, yielding in between, and fails the test if it stays false. It is
// for waiting until a goroutine has reached a known state, not for ordering events.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

// receive fails the test if ch yields nothing within testBound.
func receive[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testBound):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

// gates exposes a ring's waiter counts so tests can tell that a goroutine is blocked.
func gates[T any](r ring[T]) (ready, room *ringGate) {
	switch q := r.(type) {
	case *SPSC[T]:
		return &q.ready, &q.room
	case *MPMC[T]:
		return &q.ready, &q.room
	}
	panic(fmt.Sprintf("unknown ring %T", r))
}

// unreported is how many popped slots Len may still count: SPSC reports pops in batches.
func unreported[T any](r ring[T]) int {
	if q, ok := r.(*SPSC[T]); ok {
		return int(q.batch) - 1
	}
	return 0
}

func TestRingCapacityRounding(t *testing.T) {
	cases := []struct{ in, want int }{
		{-7, 2}, {0, 2}, {1, 2}, {2, 2}, {3, 4}, {4, 4}, {5, 8},
		{1000, 1024}, {1024, 1024}, {1025, 2048},
	}
	for _, k := range ringCtors[int]() {
		for _, c := range cases {
			if got := k.new(c.in).Cap(); got != c.want {
				t.Errorf("%s: capacity %d rounds to %d, want %d", k.name, c.in, got, c.want)
			}
		}
	}
}

func TestRingCapacityTooLargePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("capacity beyond the position range did not panic")
		}
	}()
	ringSize(maxRingCap + 1)
}

func TestRingLayoutSeparatesIndices(t *testing.T) {
	var s SPSC[*drivers.Reading]
	var m MPMC[*drivers.Reading]
	cases := []struct {
		name   string
		offs   []uintptr // in field order; each must start a new cache line's worth
		before uintptr   // bytes of padding ahead of the first field
		size   uintptr
	}{
		{"spsc", []uintptr{unsafe.Offsetof(s.buf), unsafe.Offsetof(s.head), unsafe.Offsetof(s.tail), unsafe.Offsetof(s.ready), unsafe.Offsetof(s.room)}, unsafe.Offsetof(s.buf), unsafe.Sizeof(s)},
		{"mpmc", []uintptr{unsafe.Offsetof(m.buf), unsafe.Offsetof(m.enq), unsafe.Offsetof(m.deq), unsafe.Offsetof(m.ready), unsafe.Offsetof(m.room)}, unsafe.Offsetof(m.buf), unsafe.Sizeof(m)},
	}
	for _, c := range cases {
		if c.before < cacheLine {
			t.Errorf("%s: only %d bytes before the slice header", c.name, c.before)
		}
		for i := 1; i < len(c.offs); i++ {
			if gap := c.offs[i] - c.offs[i-1]; gap < cacheLine {
				t.Errorf("%s: fields %d and %d are %d bytes apart", c.name, i-1, i, gap)
			}
		}
		if tail := c.size - c.offs[len(c.offs)-1]; tail < cacheLine {
			t.Errorf("%s: last field has %d bytes to the end", c.name, tail)
		}
	}
}

func TestRingFullEmptyEdges(t *testing.T) {
	for _, k := range ringCtors[uint64]() {
		for _, capacity := range []int{2, 4, 64} {
			t.Run(fmt.Sprintf("%s/%d", k.name, capacity), func(t *testing.T) {
				r := k.new(capacity)
				if _, ok := r.TryPop(); ok || r.Len() != 0 {
					t.Fatalf("new ring: pop ok=%v len=%d", ok, r.Len())
				}
				for i := range capacity {
					if !r.TryPush(uint64(i)) {
						t.Fatalf("push %d refused below capacity", i)
					}
					if r.Len() != i+1 {
						t.Fatalf("len %d after %d pushes", r.Len(), i+1)
					}
				}
				if r.TryPush(99) {
					t.Fatal("push into a full ring accepted")
				}
				if r.Len() != r.Cap() {
					t.Fatalf("full: len %d cap %d", r.Len(), r.Cap())
				}
				for i := range capacity {
					v, ok := r.TryPop()
					if !ok || v != uint64(i) {
						t.Fatalf("pop %d: got %d ok=%v", i, v, ok)
					}
				}
				if v, ok := r.TryPop(); ok {
					t.Fatalf("pop from an empty ring: %d", v)
				}
				if r.Len() != 0 || r.Closed() {
					t.Fatalf("drained: len %d closed %v", r.Len(), r.Closed())
				}
			})
		}
	}
}

func TestRingWrapsAroundInOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, k := range ringCtors[uint64]() {
		for _, capacity := range []int{2, 8, 1024} {
			r := k.new(capacity)
			var next, want uint64
			for next < uint64(50*capacity)+10_000 {
				for range rng.IntN(capacity) + 1 {
					if !r.TryPush(next) {
						break
					}
					next++
				}
				for range rng.IntN(capacity) + 1 {
					v, ok := r.TryPop()
					if !ok {
						break
					}
					if v != want {
						t.Fatalf("%s/%d: popped %d, want %d", k.name, capacity, v, want)
					}
					want++
				}
				if got, n := r.Len(), int(next-want); got < n || got > n+unreported(r) {
					t.Fatalf("%s/%d: len %d, want %d (+%d unreported)", k.name, capacity, got, n, unreported(r))
				}
			}
		}
	}
}

func TestRingPopClearsSlot(t *testing.T) {
	for _, k := range ringCtors[*drivers.Reading]() {
		r := k.new(4)
		for i := range 6 { // past the first lap, so a cleared slot is not just a fresh one
			if !r.TryPush(&drivers.Reading{Seq: uint64(i)}) {
				t.Fatalf("%s: push %d refused", k.name, i)
			}
			if _, ok := r.TryPop(); !ok {
				t.Fatalf("%s: pop %d failed", k.name, i)
			}
		}
		switch q := r.(type) {
		case *SPSC[*drivers.Reading]:
			for i, v := range q.buf {
				if v != nil {
					t.Errorf("spsc: slot %d still holds %+v", i, v)
				}
			}
		case *MPMC[*drivers.Reading]:
			for i := range q.buf {
				if v := q.buf[i].val; v != nil {
					t.Errorf("mpmc: slot %d still holds %+v", i, v)
				}
			}
		}
	}
}

func TestRingCloseDrainsThenFails(t *testing.T) {
	ctx := context.Background()
	for _, k := range ringCtors[uint64]() {
		t.Run(k.name, func(t *testing.T) {
			r := k.new(4)
			for i := range 3 {
				if err := r.Push(ctx, uint64(i)); err != nil {
					t.Fatalf("push %d: %v", i, err)
				}
			}
			r.Close()
			r.Close() // idempotent
			if !r.Closed() {
				t.Fatal("Closed is false after Close")
			}
			if r.TryPush(7) {
				t.Fatal("TryPush accepted after Close")
			}
			if err := r.Push(ctx, 7); !errors.Is(err, ErrClosed) {
				t.Fatalf("Push after Close: %v, want ErrClosed", err)
			}
			if r.Len() != 3 {
				t.Fatalf("len %d after Close, want 3", r.Len())
			}
			for i := range 3 {
				v, err := r.Pop(ctx)
				if err != nil || v != uint64(i) {
					t.Fatalf("drain %d: got %d, %v", i, v, err)
				}
			}
			for range 2 {
				if _, err := r.Pop(ctx); !errors.Is(err, ErrClosed) {
					t.Fatalf("Pop on a closed empty ring: %v, want ErrClosed", err)
				}
			}
			if _, ok := r.TryPop(); ok {
				t.Fatal("TryPop succeeded on a closed empty ring")
			}
		})
	}
}

// blockWaiters starts n goroutines that block on one side of r (side "pop": r is empty;
// "push": r is filled first), waits until all are counted as waiting, and returns the
// channel their errors arrive on and the gate they wait at.
func blockWaiters(t *testing.T, ctx context.Context, r ring[uint64], side string, n int) (<-chan error, *ringGate) {
	t.Helper()
	ready, room := gates(r)
	g := ready
	if side == "push" {
		g = room
		for r.TryPush(0) {
		}
	}
	errs := make(chan error, n)
	for range n {
		go func() {
			if side == "pop" {
				_, err := r.Pop(ctx)
				errs <- err
				return
			}
			errs <- r.Push(ctx, 1)
		}()
	}
	eventually(t, "the waiters to block", func() bool { return int(g.waiters.Load()) == n })
	return errs, g
}

func TestRingCloseWakesBlocked(t *testing.T) {
	ctx := context.Background()
	for _, k := range ringCtors[uint64]() {
		for _, side := range []string{"pop", "push"} {
			t.Run(k.name+"/"+side, func(t *testing.T) {
				waiters := 1
				if k.multi {
					waiters = 4 // each woken waiter must pass the close on
				}
				r := k.new(2)
				errs, _ := blockWaiters(t, ctx, r, side, waiters)
				r.Close()
				for range waiters {
					if err := receive(t, "a woken waiter", errs); !errors.Is(err, ErrClosed) {
						t.Errorf("woken by Close: %v, want ErrClosed", err)
					}
				}
			})
		}
	}
}

// Close may land between a producer's check and its push. Whatever a push reported as
// accepted must still come out of the ring, and Pop must not report ErrClosed before it has.
func TestRingCloseRacingPushesLosesNothing(t *testing.T) {
	ctx := context.Background()
	for _, k := range ringCtors[uint64]() {
		t.Run(k.name, func(t *testing.T) {
			producers := 1
			if k.multi {
				producers = 4
			}
			for round := range 50 {
				r := k.new(8)
				accepted := make([]int, producers)
				var wg sync.WaitGroup
				for p := range producers {
					wg.Go(func() {
						for seq := 0; ; seq++ {
							var err error
							if seq%2 == 0 {
								err = r.Push(ctx, encode(p, seq))
							} else if !r.TryPush(encode(p, seq)) {
								if r.Closed() {
									err = ErrClosed
								} else {
									seq-- // full: try the same value again
									runtime.Gosched()
									continue
								}
							}
							if err != nil {
								return
							}
							accepted[p]++
						}
					})
				}
				took := 0
				closeAfter := 1 + round*7
				for {
					_, err := r.Pop(ctx)
					if errors.Is(err, ErrClosed) {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					if took++; took == closeAfter {
						r.Close()
					}
				}
				wg.Wait()
				sum := 0
				for _, n := range accepted {
					sum += n
				}
				if took != sum {
					t.Fatalf("round %d: producers had %d pushes accepted, consumer took %d", round, sum, took)
				}
			}
		})
	}
}

func TestRingProgressWakesBlocked(t *testing.T) {
	ctx := context.Background()
	for _, k := range ringCtors[uint64]() {
		for _, side := range []string{"pop", "push"} {
			t.Run(k.name+"/"+side, func(t *testing.T) {
				waiters := 1
				if k.multi {
					waiters = 4 // one signal per change must still reach every waiter
				}
				r := k.new(4)
				errs, _ := blockWaiters(t, ctx, r, side, waiters)
				for i := range waiters {
					if side == "pop" {
						if !r.TryPush(uint64(i)) {
							t.Fatalf("push %d refused", i)
						}
					} else if _, ok := r.TryPop(); !ok {
						t.Fatalf("pop %d found the ring empty", i)
					}
				}
				for range waiters {
					if err := receive(t, "a woken waiter", errs); err != nil {
						t.Errorf("woken by the other side: %v", err)
					}
				}
			})
		}
	}
}

func TestRingCancelBlocked(t *testing.T) {
	for _, k := range ringCtors[uint64]() {
		for _, side := range []string{"pop", "push"} {
			t.Run(k.name+"/"+side, func(t *testing.T) {
				r := k.new(2)
				ctx, cancel := context.WithCancel(context.Background())
				errs, g := blockWaiters(t, ctx, r, side, 1)
				cancel()
				if err := receive(t, "the cancelled waiter", errs); !errors.Is(err, context.Canceled) {
					t.Fatalf("cancelled: %v, want context.Canceled", err)
				}
				if g.waiters.Load() != 0 {
					t.Fatalf("a cancelled waiter is still counted: %d", g.waiters.Load())
				}
				// The ring is unchanged: a cancelled push left nothing, a cancelled pop took
				// nothing, and work that needs no waiting still succeeds on a done context.
				if side == "push" {
					if r.Len() != r.Cap() {
						t.Fatalf("len %d after a cancelled push, want %d", r.Len(), r.Cap())
					}
					if _, err := r.Pop(ctx); err != nil {
						t.Fatalf("pop with an element there on a done context: %v", err)
					}
					return
				}
				if r.Len() != 0 {
					t.Fatalf("len %d after a cancelled pop", r.Len())
				}
				if err := r.Push(ctx, 5); err != nil {
					t.Fatalf("push with room on a done context: %v", err)
				}
			})
		}
	}
}

func TestRingWatchTokens(t *testing.T) {
	for _, k := range ringCtors[uint64]() {
		t.Run(k.name, func(t *testing.T) {
			r := k.new(2)
			// The first Ready and Room each carry a token: the caller may have looked at the
			// ring before it was counted as a watcher.
			receive(t, "the first Ready token", r.Ready())
			receive(t, "the first Room token", r.Room())
			r.TryPush(1)
			receive(t, "Ready after a push", r.Ready())
			r.TryPush(2)
			r.TryPop()
			receive(t, "Room after a pop", r.Room())
			r.Close()
			receive(t, "Ready after Close", r.Ready())
			receive(t, "Room after Close", r.Room())
		})
	}
}

// countWaitingProducer does what Push does before it parks on a full ring, without
// parking: it counts a producer among the room waiters and makes its last look. The test
// can then play the consumer and see whether the token that would wake Push is left.
func countWaitingProducer[T any](t *testing.T, r ring[T], v T) {
	t.Helper()
	var pushed bool
	switch q := r.(type) {
	case *SPSC[T]:
		q.room.waiters.Add(1)
		pushed = q.pushWaiting(v)
	case *MPMC[T]:
		q.room.waiters.Add(1)
		pushed = q.pushWaiting(v)
	}
	if pushed {
		t.Fatal("the waiting producer's last look pushed into a full ring")
	}
}

// woken takes the room gate's token if one was left.
func woken(g *ringGate) bool {
	select {
	case <-g.ch:
		return true
	default:
		return false
	}
}

// A producer waiting for room is woken by the pop that leaves roomWakeAt slots free, not
// before, so that it pushes a burst per wake-up instead of one element.
func TestRingRoomWakeThreshold(t *testing.T) {
	for _, k := range ringCtors[uint64]() {
		for _, capacity := range []int{2, 4, 8, 16, 64, 1024} {
			t.Run(fmt.Sprintf("%s/%d", k.name, capacity), func(t *testing.T) {
				r := k.new(capacity)
				_, room := gates(r)
				for r.TryPush(0) {
				}
				countWaitingProducer(t, r, 1)
				wakeAt := int(roomWakeAt(capacity))
				if want := max(capacity/4, 1); wakeAt != want {
					t.Fatalf("threshold %d, want %d", wakeAt, want)
				}
				for popped := 1; popped <= wakeAt; popped++ {
					if _, ok := r.TryPop(); !ok {
						t.Fatalf("pop %d found the ring empty", popped)
					}
					if got := woken(room); got != (popped == wakeAt) {
						t.Fatalf("after %d pops: woken %v, want a wake-up at %d free slots", popped, got, wakeAt)
					}
				}
				// The woken producer's next look finds the room reported, SPSC's batched
				// pops included.
				if !r.TryPush(1) {
					t.Fatal("the woken producer found the ring still full")
				}
				room.waiters.Add(-1)
			})
		}
	}
}

// A consumer that stops with fewer than roomWakeAt slots freed leaves the producer waiting,
// as a full ring would (nothing else wakes it: no timer, no other pop); the pop that
// reaches the threshold, whenever the consumer comes back to make it, wakes it.
func TestRingRoomWakeBelowThresholdWaits(t *testing.T) {
	for _, k := range ringCtors[uint64]() {
		for _, capacity := range []int{8, 64} {
			t.Run(fmt.Sprintf("%s/%d", k.name, capacity), func(t *testing.T) {
				r := k.new(capacity)
				_, room := gates(r)
				for r.TryPush(0) {
				}
				countWaitingProducer(t, r, 1)
				wakeAt := int(roomWakeAt(capacity))
				for range wakeAt - 1 {
					r.TryPop()
				}
				if woken(room) {
					t.Fatalf("woken with %d of the %d free slots the threshold asks for", wakeAt-1, wakeAt)
				}
				r.TryPop()
				if !woken(room) {
					t.Fatal("the pop that reached the threshold did not wake the producer")
				}
				room.waiters.Add(-1)
			})
		}
	}
}

// A consumer that finds the ring empty wakes a waiting producer whatever the threshold: it
// is about to wait itself, and nothing else would let the producer in. With the threshold
// checked on every pop a producer cannot really be waiting at an empty ring, so the rule
// is a backstop; here the count is set by hand.
func TestRingRoomWakeOnEmpty(t *testing.T) {
	for _, k := range ringCtors[uint64]() {
		t.Run(k.name, func(t *testing.T) {
			r := k.new(64)
			_, room := gates(r)
			room.waiters.Add(1)
			defer room.waiters.Add(-1)
			if _, ok := r.TryPop(); ok {
				t.Fatal("popped from an empty ring")
			}
			if !woken(room) {
				t.Fatal("a pop that found the ring empty did not wake the waiting producer")
			}
			if _, ok := r.TryPop(); ok || !woken(room) {
				t.Fatal("a second empty pop did not wake it again")
			}
		})
	}
}

// The pipeline's case: a producer waits in Push on a full ring; a worker pops k elements,
// fewer than the threshold, then, as the pipeline's workers do, pops until TryPop fails
// and waits on Ready. The producer must get in, and the worker must then be woken for its
// element.
func TestRingBlockedPushGetsInAfterPartialDrain(t *testing.T) {
	ctx := context.Background()
	for _, k := range ringCtors[uint64]() {
		for capacity := 2; capacity <= 8; capacity++ {
			for _, pops := range slices.Compact([]int{0, 1, int(roomWakeAt(ringSize(capacity))) - 1}) {
				t.Run(fmt.Sprintf("%s/cap%d/pops%d", k.name, capacity, pops), func(t *testing.T) {
					r := k.new(capacity)
					_, room := gates(r)
					var want uint64
					for r.TryPush(want) {
						want++
					}
					const last = 1 << 20
					errs := make(chan error, 1)
					go func() { errs <- r.Push(ctx, last) }()
					eventually(t, "the producer to wait", func() bool { return room.waiters.Load() == 1 })
					var got []uint64
					for range pops {
						v, ok := r.TryPop()
						if !ok {
							t.Fatal("the full ring was empty")
						}
						got = append(got, v)
					}
					for len(got) <= int(want) {
						if v, ok := r.TryPop(); ok {
							got = append(got, v)
							continue
						}
						receive(t, "the waiting producer's element", r.Ready())
					}
					if err := receive(t, "the producer's Push", errs); err != nil {
						t.Fatalf("Push: %v", err)
					}
					for i, v := range got[:want] {
						if v != uint64(i) {
							t.Fatalf("popped %v, want 0..%d then %d", got, want-1, last)
						}
					}
					if got[want] != last {
						t.Fatalf("popped %v, want 0..%d then %d", got, want-1, last)
					}
				})
			}
		}
	}
}

// producerMode and consumerMode pick how the property test's goroutines reach the ring.
type producerMode int

const (
	pushBlocking producerMode = iota // Push
	pushSelect                       // TryPush, then select on Room
	pushEvict                        // TryPush, and on full TryPop the oldest and retry
)

type consumerMode int

const (
	popBlocking consumerMode = iota // Pop
	popSelect                       // TryPop, then select on Ready
)

// encode packs a producer and its sequence number into one value, so a consumer can check
// order per producer and the test can account for every value.
func encode(p, seq int) uint64   { return uint64(p)<<32 | uint64(seq) }
func decode(v uint64) (int, int) { return int(v >> 32), int(v & 0xffffffff) }

// streamCheck records what one goroutine took from the ring and checks each producer's
// values arrive in increasing order. It is used by one goroutine only.
type streamCheck struct {
	last [][]int // per producer, sequence numbers in the order taken
	err  error
}

func newStreamCheck(producers int) *streamCheck {
	return &streamCheck{last: make([][]int, producers)}
}

func (s *streamCheck) take(v uint64) {
	p, seq := decode(v)
	if p >= len(s.last) {
		if s.err == nil {
			s.err = fmt.Errorf("value %#x names producer %d of %d", v, p, len(s.last))
		}
		return
	}
	if l := s.last[p]; len(l) > 0 && seq <= l[len(l)-1] && s.err == nil {
		s.err = fmt.Errorf("producer %d: %d taken after %d", p, seq, l[len(l)-1])
	}
	s.last[p] = append(s.last[p], seq)
}

func TestRingPropertyNoLossNoDupFIFO(t *testing.T) {
	scenarios := []struct {
		name      string
		multi     bool // needs MPMC
		producers int
		consumers int
		pm        producerMode
		cm        consumerMode
		cases     int
		maxPer    int // per producer
		maxCap    int // capacities are drawn from 2..maxCap, 1024 if zero
	}{
		{"1p1c/blocking", false, 1, 1, pushBlocking, popBlocking, 12, 20_000, 0},
		{"1p1c/select", false, 1, 1, pushSelect, popSelect, 12, 20_000, 0},
		{"8p1c/blocking", true, 8, 1, pushBlocking, popBlocking, 8, 4_000, 0},
		{"8p1c/select", true, 8, 1, pushSelect, popSelect, 8, 4_000, 0},
		{"4p4c/blocking", true, 4, 4, pushBlocking, popBlocking, 8, 6_000, 0},
		{"4p4c/select", true, 4, 4, pushSelect, popSelect, 8, 6_000, 0},
		{"4p-evict/1c", true, 4, 1, pushEvict, popBlocking, 8, 6_000, 0},
		{"4p-evict/2c-select", true, 4, 2, pushEvict, popSelect, 8, 6_000, 0},
		// The pipeline's shape: drivers wait in Push, a worker pops until TryPop fails and
		// then waits on Ready. Small rings keep producers waiting for room most of the time,
		// so every wake-up rule is exercised, the room threshold of one slot (2 and 4 slots)
		// included.
		{"1p1c/push-blocking/pop-select/small", false, 1, 1, pushBlocking, popSelect, 16, 4_000, 8},
		{"4p1c/push-blocking/pop-select/small", true, 4, 1, pushBlocking, popSelect, 16, 2_000, 8},
		{"4p2c/blocking/small", true, 4, 2, pushBlocking, popBlocking, 16, 2_000, 8},
	}
	for _, k := range ringCtors[uint64]() {
		for si, sc := range scenarios {
			if sc.multi && !k.multi {
				continue
			}
			t.Run(k.name+"/"+sc.name, func(t *testing.T) {
				seed := uint64(si + 1)
				rng := rand.New(rand.NewPCG(seed, 0x5eed))
				for c := range sc.cases {
					maxCap := sc.maxCap
					if maxCap == 0 {
						maxCap = 1024
					}
					capacity := 2 + rng.IntN(maxCap-1)
					counts := make([]int, sc.producers)
					for p := range counts {
						counts[p] = 1 + rng.IntN(sc.maxPer)
					}
					if err := runRingProperty(k.new(capacity), counts, sc.consumers, sc.pm, sc.cm); err != nil {
						t.Fatalf("seed %d case %d (capacity %d, counts %v): %v", seed, c, capacity, counts, err)
					}
				}
			})
		}
	}
}

// runRingProperty pushes counts[p] values from producer p, pops them with consumers
// goroutines, and checks that every value was taken exactly once, by a consumer or by an
// evicting producer, and that everyone took each producer's values in order.
func runRingProperty(r ring[uint64], counts []int, consumers int, pm producerMode, cm consumerMode) error {
	ctx, cancel := context.WithTimeout(context.Background(), testBound)
	defer cancel()
	checks := make([]*streamCheck, len(counts)+consumers)
	for i := range checks {
		checks[i] = newStreamCheck(len(counts))
	}
	errs := make(chan error, len(counts)+consumers)

	var producers sync.WaitGroup
	for p, n := range counts {
		evicted := checks[p]
		producers.Go(func() {
			for seq := range n {
				v := encode(p, seq)
				switch pm {
				case pushBlocking:
					if err := r.Push(ctx, v); err != nil {
						errs <- fmt.Errorf("producer %d: %w", p, err)
						return
					}
				case pushSelect:
					for !r.TryPush(v) {
						select {
						case <-r.Room():
						case <-ctx.Done():
							errs <- fmt.Errorf("producer %d waiting for room: %w", p, ctx.Err())
							return
						}
					}
				case pushEvict:
					for !r.TryPush(v) {
						if old, ok := r.TryPop(); ok {
							evicted.take(old)
						}
					}
				}
			}
		})
	}

	var consumersWG sync.WaitGroup
	for c := range consumers {
		took := checks[len(counts)+c]
		consumersWG.Go(func() {
			for {
				switch cm {
				case popBlocking:
					v, err := r.Pop(ctx)
					if errors.Is(err, ErrClosed) {
						return
					}
					if err != nil {
						errs <- fmt.Errorf("consumer %d: %w", c, err)
						return
					}
					took.take(v)
				case popSelect:
					if v, ok := r.TryPop(); ok {
						took.take(v)
						continue
					}
					if r.Closed() && r.Len() == 0 {
						return
					}
					select {
					case <-r.Ready():
					case <-ctx.Done():
						errs <- fmt.Errorf("consumer %d waiting for elements: %w", c, ctx.Err())
						return
					}
				}
			}
		})
	}

	producers.Wait()
	r.Close()
	consumersWG.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}

	seen := make([][]uint8, len(counts))
	for p, n := range counts {
		seen[p] = make([]uint8, n)
	}
	for _, s := range checks {
		if s.err != nil {
			return s.err
		}
		for p, seqs := range s.last {
			for _, seq := range seqs {
				if seq >= counts[p] {
					return fmt.Errorf("producer %d: sequence %d was never pushed", p, seq)
				}
				seen[p][seq]++
			}
		}
	}
	for p := range seen {
		for seq, n := range seen[p] {
			if n != 1 {
				return fmt.Errorf("producer %d seq %d taken %d times", p, seq, n)
			}
		}
	}
	if pm != pushEvict && consumers == 1 {
		// A lone consumer that nobody evicts from must see every producer's values back to
		// back: sequence numbers with no gaps.
		for p, seqs := range checks[len(counts)].last {
			if len(seqs) != counts[p] {
				return fmt.Errorf("producer %d: consumer took %d of %d", p, len(seqs), counts[p])
			}
		}
	}
	if r.Len() != 0 {
		return fmt.Errorf("len %d after draining", r.Len())
	}
	return nil
}

func TestRingFastPathDoesNotAllocate(t *testing.T) {
	ctx := context.Background()
	reading := &drivers.Reading{Source: "line3"}
	for _, k := range ringCtors[*drivers.Reading]() {
		r := k.new(8)
		cases := []struct {
			name string
			op   func()
		}{
			{"TryPush/TryPop", func() {
				r.TryPush(reading)
				r.TryPop()
			}},
			{"Push/Pop", func() {
				if err := r.Push(ctx, reading); err != nil {
					t.Fatal(err)
				}
				if _, err := r.Pop(ctx); err != nil {
					t.Fatal(err)
				}
			}},
			{"Len/Cap/Closed", func() { _, _, _ = r.Len(), r.Cap(), r.Closed() }},
		}
		for _, c := range cases {
			if n := testing.AllocsPerRun(1000, c.op); n != 0 {
				t.Errorf("%s %s: %v allocations per run", k.name, c.name, n)
			}
		}
	}
}
