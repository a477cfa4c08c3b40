package pipeline

import (
	"sync"
	"testing"

	"github.com/edgedrun/edged/drivers"
)

func TestRingFIFOAndBounds(t *testing.T) {
	r := NewRing(4)
	for i := range 4 {
		if ok, _ := r.Push(&drivers.Reading{Seq: uint64(i)}); !ok {
			t.Fatalf("push %d refused below capacity", i)
		}
	}
	if ok, occ := r.Push(&drivers.Reading{Seq: 99}); ok || occ != 1 {
		t.Fatalf("push into a full ring: ok=%v occupancy=%v", ok, occ)
	}
	for i := range 4 {
		x, more := r.Pop()
		if x == nil || !more || x.Seq != uint64(i) {
			t.Fatalf("pop %d: got %+v more=%v", i, x, more)
		}
	}
	if x, more := r.Pop(); x != nil || !more {
		t.Fatalf("pop from an empty open ring: %v %v", x, more)
	}
	r.Push(&drivers.Reading{Seq: 5})
	r.Close()
	if ok, _ := r.Push(&drivers.Reading{}); ok {
		t.Fatal("push after close accepted")
	}
	if x, _ := r.Pop(); x == nil || x.Seq != 5 {
		t.Fatalf("a closed ring must still drain, got %v", x)
	}
	if x, more := r.Pop(); x != nil || more {
		t.Fatalf("closed and empty: got %v more=%v", x, more)
	}
}

// Many producers and consumers: every accepted reading comes out exactly once.
func TestRingConcurrent(t *testing.T) {
	const producers, per = 4, 5000
	r := NewRing(64)
	var wg sync.WaitGroup
	accepted := make([][]uint64, producers)
	for p := range producers {
		wg.Go(func() {
			for i := range per {
				if ok, _ := r.Push(&drivers.Reading{Source: string(rune('a' + p)), Seq: uint64(i)}); ok {
					accepted[p] = append(accepted[p], uint64(i))
				}
			}
		})
	}
	var mu sync.Mutex
	got := map[string][]uint64{}
	var cons sync.WaitGroup
	for range 3 {
		cons.Go(func() {
			for {
				x, more := r.Pop()
				if x != nil {
					mu.Lock()
					got[x.Source] = append(got[x.Source], x.Seq)
					mu.Unlock()
					continue
				}
				if !more {
					return
				}
				<-r.Ready()
			}
		})
	}
	wg.Wait()
	r.Close()
	cons.Wait()
	for p := range producers {
		src := string(rune('a' + p))
		seen := map[uint64]bool{}
		for _, s := range got[src] {
			if seen[s] {
				t.Fatalf("producer %s: seq %d delivered twice", src, s)
			}
			seen[s] = true
		}
		if len(got[src]) != len(accepted[p]) {
			t.Fatalf("producer %s: %d accepted, %d delivered", src, len(accepted[p]), len(got[src]))
		}
	}
}

func BenchmarkRingPushPop(b *testing.B) {
	r := NewRing(1024)
	x := &drivers.Reading{}
	b.ReportAllocs()
	for b.Loop() {
		r.Push(x)
		r.Pop()
	}
}
