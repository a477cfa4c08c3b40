package sim

import (
	"bytes"
	"fmt"
	"math"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newGen(t testing.TB, mod func(*Config)) *Generator {
	t.Helper()
	cfg := DefaultConfig()
	if mod != nil {
		mod(cfg)
	}
	g, err := NewGenerator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestGeneratorDeterministic(t *testing.T) {
	a := newGen(t, func(c *Config) { c.Seed = 42; c.DefectRate = 0.5 })
	b := newGen(t, func(c *Config) { c.Seed = 42; c.DefectRate = 0.5 })
	other := newGen(t, func(c *Config) { c.Seed = 43; c.DefectRate = 0.5 })
	ba, bb, bo := make([]byte, 128*128), make([]byte, 128*128), make([]byte, 128*128)
	same := 0
	for i := range 100 {
		la, lb := a.Next(ba), b.Next(bb)
		other.Next(bo)
		if la != lb || !bytes.Equal(ba, bb) {
			t.Fatalf("image %d: same seed gave different images (labels %s, %s)", i, la, lb)
		}
		if bytes.Equal(ba, bo) {
			same++
		}
	}
	if same > 0 {
		t.Errorf("seeds 42 and 43 gave %d identical images of 100", same)
	}
}

func TestGeneratorLabelShares(t *testing.T) {
	const n = 2000
	for _, rate := range []float64{0, 0.1, 0.5, 1} {
		t.Run(fmt.Sprint(rate), func(t *testing.T) {
			g := newGen(t, func(c *Config) { c.DefectRate = rate; c.Width, c.Height = 32, 32 })
			buf := make([]byte, 32*32)
			counts := map[string]int{}
			for range n {
				counts[g.Next(buf)]++
			}
			share := 1 - float64(counts[LabelOK])/n
			// Four standard deviations of the binomial share: deterministic for a seed,
			// and loose enough to hold for any.
			tol := 4 * math.Sqrt(rate*(1-rate)/n)
			if math.Abs(share-rate) > tol {
				t.Errorf("defect share %.4f, want %.2f±%.4f (counts %v)", share, rate, tol, counts)
			}
			if rate == 0 {
				return
			}
			per := float64(n) * rate / float64(len(DefectLabels))
			for _, l := range DefectLabels {
				if math.Abs(float64(counts[l])-per) > 4*math.Sqrt(per)+1 {
					t.Errorf("%s: %d images, want about %.0f (counts %v)", l, counts[l], per, counts)
				}
			}
		})
	}
}

func TestGeneratorDefectSubset(t *testing.T) {
	g := newGen(t, func(c *Config) { c.DefectRate = 1; c.Defects = []string{LabelDarkSpot} })
	buf := make([]byte, 128*128)
	for range 200 {
		if l := g.Next(buf); l != LabelDarkSpot {
			t.Fatalf("label %q with defects [dark_spot] at rate 1", l)
		}
	}
}

// TestDefectsVisible renders each defect on many cells and checks it darkens enough
// pixels enough for a camera to see; without it a generator bug could silently emit
// "defective" cells that look good.
func TestDefectsVisible(t *testing.T) {
	g := newGen(t, nil)
	draws := map[string]func(){
		LabelCrack:        g.crack,
		LabelDarkSpot:     g.darkSpot,
		LabelBrokenFinger: g.brokenFinger,
	}
	for _, l := range DefectLabels {
		minDark := math.MaxInt
		for range 500 {
			g.layout()
			for i := range g.light {
				g.light[i] = 1
			}
			draws[l]()
			dark := 0
			for _, v := range g.light {
				if v < 0.8 {
					dark++
				}
			}
			minDark = min(minDark, dark)
		}
		if minDark < 6 {
			t.Errorf("%s: some cell has only %d pixels darkened by 20%% or more", l, minDark)
		}
	}
}

func TestGeneratorSizes(t *testing.T) {
	for _, sz := range [][2]int{{32, 32}, {33, 47}, {128, 96}, {256, 256}} {
		g := newGen(t, func(c *Config) { c.Width, c.Height, c.DefectRate = sz[0], sz[1], 1 })
		buf := make([]byte, sz[0]*sz[1])
		for range 50 {
			g.Next(buf)
		}
	}
}

func TestGeneratorShortBuffer(t *testing.T) {
	g := newGen(t, nil)
	defer func() {
		if recover() == nil {
			t.Error("Next with a short buffer did not panic")
		}
	}()
	g.Next(make([]byte, 10))
}

func TestGeneratorNoAllocs(t *testing.T) {
	g := newGen(t, func(c *Config) { c.DefectRate = 0.5 })
	buf := make([]byte, 128*128)
	if a := testing.AllocsPerRun(100, func() { g.Next(buf) }); a != 0 {
		t.Errorf("Next allocates %.1f times per image", a)
	}
}

func TestNewGeneratorRejectsBadConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Width = 8
	if _, err := NewGenerator(cfg); err == nil {
		t.Error("width 8 accepted")
	}
	if _, err := NewGenerator(nil); err == nil {
		t.Error("nil config accepted")
	}
}

func BenchmarkRender(b *testing.B) {
	for _, sz := range []int{64, 128, 256} {
		b.Run(fmt.Sprintf("%dx%d", sz, sz), func(b *testing.B) {
			g := newGen(b, func(c *Config) { c.Width, c.Height, c.DefectRate = sz, sz, 0.5 })
			buf := make([]byte, sz*sz)
			b.ReportAllocs()
			b.SetBytes(int64(sz * sz))
			for b.Loop() {
				g.Next(buf)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "images/s")
		})
	}
}
