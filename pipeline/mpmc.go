package pipeline

import (
	"context"
	"sync/atomic"
)

// MPMC is a bounded FIFO that any number of goroutines may push to and pop from at once:
// Dmitry Vyukov's bounded MPMC queue. Each slot carries a sequence number that says whose
// turn it is (a producer's on lap k, or the consumer's), and producers and consumers claim
// positions with a CAS on their shared index, so there are no locks and no allocation per
// operation.
//
// It is not lock-free in the strict sense: a producer that has claimed a slot but not yet
// filled it (for instance because it was preempted in between) holds up the consumers at
// that slot, which see the ring as empty until it finishes, even if later slots are full;
// likewise a consumer stopped mid-pop can make producers see the ring as full. Nothing is
// lost or reordered by this, and the stalled goroutine wakes waiters by the usual rules
// (see ringGate) when it finishes.
//
// Elements from one producer come out in the order it pushed them. Among several
// consumers, each sees any one producer's elements in that order.
type MPMC[T any] struct {
	_    [cacheLine]byte
	buf  []mpmcSlot[T]
	mask uint64
	// wakeAt is how many free slots a pop must leave to wake a producer (roomWakeAt).
	wakeAt uint64
	_      [cacheLine - 40]byte

	// enq is the next position producers will claim, with ringClosedBit once closed.
	enq atomic.Uint64
	_   [cacheLine - 8]byte
	// deq is the next position consumers will claim.
	deq atomic.Uint64
	_   [cacheLine - 8]byte

	ready ringGate // consumers wait here for elements
	room  ringGate // producers wait here for free slots
}

// mpmcSlot is free for the producer of position p when seq == p, and holds that producer's
// element for the consumer of position p when seq == p+1. The consumer hands it to the
// producer of the next lap by setting seq = p+len(buf).
type mpmcSlot[T any] struct {
	seq atomic.Uint64
	val T
}

// NewMPMC returns an empty ring of at least capacity slots, rounded up to a power of two
// and at least 2. It panics if capacity is beyond what positions can address.
func NewMPMC[T any](capacity int) *MPMC[T] {
	n := ringSize(capacity)
	q := &MPMC[T]{buf: make([]mpmcSlot[T], n), mask: uint64(n - 1), wakeAt: roomWakeAt(n)}
	for i := range q.buf {
		q.buf[i].seq.Store(uint64(i))
	}
	q.ready.init()
	q.room.init()
	return q
}

// Cap is the number of slots.
func (q *MPMC[T]) Cap() int { return len(q.buf) }

// Len is the number of elements waiting, counting those whose producers have claimed a slot
// and are still filling it; it is exact only while nobody is pushing or popping.
func (q *MPMC[T]) Len() int {
	d := q.deq.Load()
	e := q.enq.Load() &^ ringClosedBit
	return clampLen(d, e, uint64(len(q.buf)))
}

// Closed reports whether Close has been called.
func (q *MPMC[T]) Closed() bool { return q.enq.Load()&ringClosedBit != 0 }

// Close stops further pushes; elements already in the ring can still be popped. It is safe
// to call more than once and from any goroutine. A push that claimed its slot before Close
// still completes and its element is delivered.
func (q *MPMC[T]) Close() {
	if q.enq.Or(ringClosedBit)&ringClosedBit != 0 {
		return
	}
	q.ready.wake()
	q.room.wake()
}

// Ready returns a channel that receives a token when elements may be waiting or the ring
// was closed. Tokens can be stale: after one arrives, TryPop may still find the ring empty.
// From the first call on, every push offers a token (a failed non-blocking send while one
// is already buffered); a ring only ever drained with Pop does not pay that.
func (q *MPMC[T]) Ready() <-chan struct{} { return q.ready.watch() }

// Room returns a channel that receives a token by the rules that wake a producer waiting
// in Push (see ringGate): once a quarter of the ring is free, when a pop finds the ring
// empty, and on Close. Tokens can be stale: after one arrives, TryPush may still find the
// ring full. From the first call on, every pop offers a token, except while a producer
// waiting in Push has asked to be woken only further on (until).
func (q *MPMC[T]) Room() <-chan struct{} { return q.room.watch() }

// TryPush appends v unless the ring is full or closed. It never blocks or allocates; when
// other producers push at the same moment it may back off for some microseconds (see
// contendPause).
func (q *MPMC[T]) TryPush(v T) bool {
	ok, _ := q.push(v, 0)
	return ok
}

// push is TryPush for a caller that has counted itself self times among the room waiters.
// When it finds the ring full, it also returns the position it found taken.
func (q *MPMC[T]) push(v T, self int32) (ok bool, full uint64) {
	pos := q.enq.Load()
	for lost := 0; ; lost++ {
		if pos&ringClosedBit != 0 {
			q.room.wakeIfWaiting(self) // pass the close on to the next waiting producer
			return false, 0
		}
		s := &q.buf[pos&q.mask]
		switch d := int64(s.seq.Load() - pos); {
		case d == 0:
			if !q.enq.CompareAndSwap(pos, pos+1) {
				contended(lost)
				pos = q.enq.Load()
				continue
			}
			s.val = v
			s.seq.Store(pos + 1)
			q.ready.wakeIfWaiting(0)
			if q.room.waiters.Load() > self && q.buf[(pos+1)&q.mask].seq.Load() == pos+1 {
				// The next slot is free too, and a token collapsed into ours may have been
				// meant for another producer. Looking at the slot rather than at deq keeps
				// producers off the consumers' line.
				q.room.wake()
			}
			return true, 0
		case d < 0:
			// The slot still holds the previous lap's element: full.
			return false, pos
		default:
			// Another producer took pos first; back off before catching up, as for a
			// failed CAS.
			contended(lost)
			pos = q.enq.Load()
		}
	}
}

// TryPop takes the oldest element unless the ring is empty. The slot is cleared so the ring
// does not keep what it held alive. It never blocks or allocates; like TryPush, it may
// back off for some microseconds when other consumers pop at the same moment.
func (q *MPMC[T]) TryPop() (v T, ok bool) { return q.pop(0) }

// pop is TryPop for a caller that has counted itself self times among the ready waiters.
func (q *MPMC[T]) pop(self int32) (v T, ok bool) {
	pos := q.deq.Load()
	for lost := 0; ; lost++ {
		s := &q.buf[pos&q.mask]
		switch d := int64(s.seq.Load() - (pos + 1)); {
		case d == 0:
			if !q.deq.CompareAndSwap(pos, pos+1) {
				contended(lost)
				pos = q.deq.Load()
				continue
			}
			v = s.val
			var zero T
			s.val = zero
			s.seq.Store(pos + q.mask + 1)
			if q.room.waiters.Load() > 0 && q.deq.Load() >= q.room.until.Load() {
				// Enough is free since a producer found the ring full. deq rather than
				// pos+1: of several consumers finishing out of order, the last to finish
				// then counts the slots all of them freed (see ringGate).
				q.room.wake()
			}
			if q.ready.waiters.Load() > self &&
				(q.buf[(pos+1)&q.mask].seq.Load() == pos+2 || q.Closed()) {
				// The next element is there too, or the ring is closed and other consumers
				// must find out; a token collapsed into ours may have been meant for them.
				q.ready.wake()
			}
			return v, true
		case d < 0:
			// Not filled yet: empty, or its producer is still writing it and will wake
			// waiters when done. A producer waiting for room is woken whatever the
			// threshold: the consumer is about to wait itself, or to stop, and nothing
			// else would let the producer in.
			if q.room.waiters.Load() > 0 {
				q.room.wake()
			}
			if q.ready.waiters.Load() > self && q.drained() {
				q.ready.wake() // pass the close on to the next waiting consumer
			}
			return v, false
		default:
			// Another consumer took pos first; back off before catching up.
			contended(lost)
			pos = q.deq.Load()
		}
	}
}

// drained reports whether the ring is closed and every claimed position was popped. The
// closed bit freezes enq, so once true it stays true.
func (q *MPMC[T]) drained() bool {
	e := q.enq.Load()
	return e&ringClosedBit != 0 && q.deq.Load() >= e&^ringClosedBit
}

// Push appends v, waiting for a free slot. It returns ErrClosed if the ring is or becomes
// closed first, and ctx.Err() if ctx ends first; a slot that is free at once is taken even
// if ctx has already ended. It does not allocate.
func (q *MPMC[T]) Push(ctx context.Context, v T) error {
	for i := 0; ; i++ {
		if ok, _ := q.push(v, 0); ok {
			return nil
		}
		if q.Closed() {
			return ErrClosed
		}
		if i == ringSpins {
			break
		}
		backoff(ringPushYields)
	}
	q.room.waiters.Add(1)
	defer q.room.waiters.Add(-1)
	for {
		if q.pushWaiting(v) {
			return nil
		}
		if q.Closed() {
			return ErrClosed
		}
		if err := q.room.await(ctx); err != nil {
			return err
		}
	}
}

// pushWaiting is push for a producer counted once among the room waiters. If the ring is
// full it asks to be woken once consumers have freed wakeAt slots counting from the
// position it found taken (at least Cap: every slot starts out free for the first lap).
// Every value stored in until came from a position some producer found taken, which is at
// most the producers' index at any later time, so until never asks for more than wakeAt
// free slots; storing it late, or over another producer's, can only wake someone early.
func (q *MPMC[T]) pushWaiting(v T) bool {
	ok, full := q.push(v, 1)
	if !ok && full != 0 {
		q.room.until.Store(full - uint64(len(q.buf)) + q.wakeAt)
	}
	return ok
}

// Pop takes the oldest element, waiting for one. It returns ErrClosed once the ring is
// closed and drained, and ctx.Err() if ctx ends first; an element that is there at once is
// returned even if ctx has already ended. It does not allocate.
func (q *MPMC[T]) Pop(ctx context.Context) (T, error) {
	for i := 0; ; i++ {
		if v, ok := q.pop(0); ok {
			return v, nil
		}
		if q.drained() {
			var zero T
			return zero, ErrClosed
		}
		if i == ringSpins {
			break
		}
		backoff(ringPopYields)
	}
	q.ready.waiters.Add(1)
	defer q.ready.waiters.Add(-1)
	for {
		if v, ok := q.pop(1); ok {
			return v, nil
		}
		if q.drained() {
			var zero T
			return zero, ErrClosed
		}
		if err := q.ready.await(ctx); err != nil {
			var zero T
			return zero, err
		}
	}
}
