package drivers

import "testing"

func TestReadingPool(t *testing.T) {
	for _, n := range []int{1, 1000, 1024, 1025, 64 * 64, 128 * 128, 3 << 20} {
		r := AcquireReading()
		buf := r.SetImage(FormatGray8, n, 1, n)
		if len(buf) != n || r.Image == nil || len(r.Image.Data) != n || r.Image.Width != n {
			t.Fatalf("n=%d: buffer %d, image %+v", n, len(buf), r.Image)
		}
		if c := cap(buf); c < n || c&(c-1) != 0 && c > 1<<maxBufShift {
			t.Fatalf("n=%d: capacity %d", n, c)
		}
		r.Source, r.Seq, r.TraceID = "s", 7, "t"
		r.Scalars = map[string]float64{"x": 1}
		r.Release()
		if r.Image != nil || r.Source != "" || r.Seq != 0 || len(r.Scalars) != 0 {
			t.Fatalf("released reading keeps state: %+v", r)
		}
	}
}

func TestReleaseTwicePanics(t *testing.T) {
	r := AcquireReading()
	r.Release()
	defer func() {
		if recover() == nil {
			t.Error("second Release did not panic")
		}
	}()
	r.Release()
}

func TestReleaseUnpooledIsNoop(t *testing.T) {
	r := &Reading{Image: &Image{Data: []byte{1}}}
	r.Release()
	r.Release()
	if r.Image == nil {
		t.Error("an unpooled reading was cleared")
	}
}

func TestReadingPoolAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items on purpose")
	}
	cycle := func() {
		r := AcquireReading()
		r.SetImage(FormatGray8, 128, 128, 128*128)
		r.Release()
	}
	cycle()
	if n := testing.AllocsPerRun(1000, cycle); n > 0 {
		t.Errorf("%v allocations per reading", n)
	}
}
