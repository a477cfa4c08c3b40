package pipeline

import (
	"context"
	"sync/atomic"
)

// SPSC is a bounded lock-free FIFO for exactly one producing goroutine and one consuming
// goroutine; Len, Cap, Ready, Room, Close and Closed may be called from anywhere. With more
// than one producer or consumer it corrupts its contents: use MPMC there.
//
// Slots are allocated once by NewSPSC. Each side owns one index on its own cache line and
// keeps a private copy of the other side's index, refreshing it only when the copy says the
// ring is full (producer) or empty (consumer), so in a steady stream the two sides rarely
// touch each other's lines.
//
// Every push publishes its element at once. Pops are reported to the producer in batches of
// up to Cap/16 (at most 64), and at once when the ring runs empty or when a waiting
// producer is to be woken (see the wake rules on ringGate): an atomic store costs a locked
// instruction, which is most of what a pop would otherwise cost. So a producer that only
// calls TryPush can see the ring full while up to that many slots are free, and Len can
// count them as still taken. The batch never exceeds roomWakeAt, so slots held back this
// way never keep a waiting producer out past the wake threshold.
type SPSC[T any] struct {
	_    [cacheLine]byte
	buf  []T
	mask uint64
	// batch is how many pops the consumer may make before it must tell the producer.
	batch uint64
	// wakeAt is how many free slots a pop must leave to wake a producer (roomWakeAt).
	wakeAt uint64
	_      [cacheLine - 48]byte

	// Consumer's line. head is the position up to which slots are free for the producer;
	// the consumer advances it in batches (see pop). Below it are the consumer's private
	// copies: the next position to pop, the head it last published, and its last look at
	// tail.
	head      atomic.Uint64
	next      uint64
	published uint64
	tailSeen  uint64
	_         [cacheLine - 32]byte

	// Producer's line. tail is the next position to fill, with ringClosedBit once closed;
	// tailNext is the producer's private copy and headSeen its last look at head.
	tail     atomic.Uint64
	tailNext uint64
	headSeen uint64
	_        [cacheLine - 24]byte

	ready ringGate // consumers wait here for elements
	room  ringGate // producers wait here for free slots
}

// NewSPSC returns an empty ring of at least capacity slots, rounded up to a power of two
// and at least 2. It panics if capacity is beyond what positions can address.
func NewSPSC[T any](capacity int) *SPSC[T] {
	n := ringSize(capacity)
	q := &SPSC[T]{
		buf:    make([]T, n),
		mask:   uint64(n - 1),
		batch:  min(max(uint64(n)/16, 1), 64),
		wakeAt: roomWakeAt(n),
	}
	q.ready.init()
	q.room.init()
	return q
}

// Cap is the number of slots.
func (q *SPSC[T]) Cap() int { return len(q.buf) }

// Len is the number of elements waiting, counting slots the consumer has emptied but not
// yet reported; it is exact only while neither side is moving.
func (q *SPSC[T]) Len() int {
	h := q.head.Load()
	t := q.tail.Load() &^ ringClosedBit
	return clampLen(h, t, uint64(len(q.buf)))
}

// Closed reports whether Close has been called.
func (q *SPSC[T]) Closed() bool { return q.tail.Load()&ringClosedBit != 0 }

// Close stops further pushes; elements already in the ring can still be popped. It is safe
// to call more than once and from any goroutine.
func (q *SPSC[T]) Close() {
	if q.tail.Or(ringClosedBit)&ringClosedBit != 0 {
		return
	}
	q.ready.wake()
	q.room.wake()
}

// Ready returns a channel that receives a token when elements may be waiting or the ring
// was closed. Tokens can be stale: after one arrives, TryPop may still find the ring empty.
// From the first call on, every push offers a token (a failed non-blocking send while one
// is already buffered); a ring only ever drained with Pop does not pay that.
func (q *SPSC[T]) Ready() <-chan struct{} { return q.ready.watch() }

// Room returns a channel that receives a token by the rules that wake a producer waiting
// in Push (see ringGate): once a quarter of the ring is free, when a pop finds the ring
// empty, and on Close. Tokens can be stale: after one arrives, TryPush may still find the
// ring full. From the first call on, every pop reads the producer's index to count the
// free slots.
func (q *SPSC[T]) Room() <-chan struct{} { return q.room.watch() }

// TryPush appends v unless the ring is full or closed. It never blocks or allocates.
func (q *SPSC[T]) TryPush(v T) bool { return q.push(v, 0) }

// push is TryPush for a caller that has counted itself self times among the room waiters.
func (q *SPSC[T]) push(v T, self int32) bool {
	t := q.tailNext
	if t-q.headSeen > q.mask {
		q.headSeen = q.head.Load()
		if t-q.headSeen > q.mask {
			return false
		}
	}
	i := t & q.mask
	q.buf[i] = v
	// A CAS rather than a store so that Close, which sets ringClosedBit in the same word,
	// either lands first and refuses this element, or lands after and lets the consumer
	// drain it. Neither loses an element that was reported pushed. A plain store and a
	// separate closed flag would save nothing on amd64, where a sequentially consistent
	// store is a locked XCHG that costs what this CAS does, and a flag read after
	// publishing could no longer refuse an element the consumer may already have taken.
	if !q.tail.CompareAndSwap(t, t+1) {
		var zero T
		q.buf[i] = zero
		q.room.wakeIfWaiting(self) // closed: pass that on to any other watcher
		return false
	}
	q.tailNext = t + 1
	q.ready.wakeIfWaiting(0)
	return true
}

// TryPop takes the oldest element unless the ring is empty. The slot is cleared so the ring
// does not keep what it held alive. It never blocks or allocates.
func (q *SPSC[T]) TryPop() (v T, ok bool) { return q.pop(0) }

// pop is TryPop for a caller that has counted itself self times among the ready waiters.
// With a single consumer there is nobody to pass a token on to, except the close.
func (q *SPSC[T]) pop(self int32) (v T, ok bool) {
	n := q.next
	if n == q.tailSeen {
		t := q.tail.Load()
		q.tailSeen = t &^ ringClosedBit
		if n == q.tailSeen {
			// Empty: report every pop, and wake a producer whatever the threshold, since
			// this consumer is about to wait itself, or to stop.
			q.publish()
			if q.room.waiters.Load() > 0 {
				q.room.wake()
			}
			if t&ringClosedBit != 0 {
				q.ready.wakeIfWaiting(self)
			}
			return v, false
		}
	}
	i := n & q.mask
	v = q.buf[i]
	var zero T
	q.buf[i] = zero
	q.next = n + 1
	// Reading the waiter count without publishing first is safe: a producer counts itself
	// before its last look at head, so if this load misses it, it saw every pop published
	// so far, and those not yet published number fewer than batch, which is at most
	// wakeAt; the next pop, or the empty check above, sees it.
	if q.room.waiters.Load() > 0 && q.free() >= q.wakeAt {
		q.publish()
		q.room.wake()
	} else if q.next-q.published >= q.batch {
		q.publish()
	}
	return v, true
}

// free counts the slots free after the consumer's pops, published or not. pop calls it
// only while a producer is counted waiting: while the producer waits in Push, tail does
// not move and its line stays put; only a producer that selects on Room makes every pop
// read a line it keeps writing.
func (q *SPSC[T]) free() uint64 {
	return uint64(len(q.buf) - clampLen(q.next, q.tail.Load()&^ringClosedBit, uint64(len(q.buf))))
}

// publish tells the producer about every slot popped so far.
func (q *SPSC[T]) publish() {
	if q.published == q.next {
		return
	}
	q.published = q.next
	q.head.Store(q.next)
}

// drained reports whether the ring is closed and every pushed element was popped. Once
// true it stays true. Only the consumer may call it: it reads the consumer's private
// position.
func (q *SPSC[T]) drained() bool {
	t := q.tail.Load()
	return t&ringClosedBit != 0 && q.next == t&^ringClosedBit
}

// Push appends v, waiting for a free slot. It returns ErrClosed if the ring is or becomes
// closed first, and ctx.Err() if ctx ends first; a slot that is free at once is taken even
// if ctx has already ended. It does not allocate.
func (q *SPSC[T]) Push(ctx context.Context, v T) error {
	for i := 0; ; i++ {
		if q.push(v, 0) {
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

// pushWaiting is push for the producer once it is counted among the room waiters. Unlike
// MPMC's, it records nothing: a consumer that sees the producer waiting counts the free
// slots from tail, which does not move while the only producer waits.
func (q *SPSC[T]) pushWaiting(v T) bool { return q.push(v, 1) }

// Pop takes the oldest element, waiting for one. It returns ErrClosed once the ring is
// closed and drained, and ctx.Err() if ctx ends first; an element that is there at once is
// returned even if ctx has already ended. It does not allocate.
func (q *SPSC[T]) Pop(ctx context.Context) (T, error) {
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
