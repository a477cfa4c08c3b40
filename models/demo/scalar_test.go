package demo_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"slices"
	"testing"

	"go.uber.org/goleak"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/internal/orttest"
	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/demo"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scalarModel is what a line engineer relies on when naming a bundled scalar model:
// the value names, the labels, and the rule the model stands in for.
type scalarModel struct {
	name     string
	features []string
	labels   []string
	// rule is the ground truth the model was trained on: true means NG.
	rule func(x []float64) bool
	// lo, hi bound the random readings: around the limits, with OK and NG readings
	// both plentiful. margin is how far from a limit a reading must be for its verdict
	// to be held to the rule.
	lo, hi, margin []float64
	// cases are readings well inside a zone, a margin or more from every limit.
	cases []scalarCase
}

type scalarCase struct {
	why    string
	values []float64
	ng     bool
}

var scalarModels = []scalarModel{
	{
		name:     demo.VibISO,
		features: []string{"vib_rms_mm_s", "vib_peak_g", "bearing_temp_c"},
		labels:   []string{"ok", "alarm"},
		rule:     func(x []float64) bool { return x[0] >= 4.5 || x[1] >= 6 || x[2] >= 85 },
		lo:       []float64{0, 0, 20},
		hi:       []float64{8, 9, 100},
		margin:   []float64{0.25, 0.3, 2},
		cases: []scalarCase{
			{"new machine, zone A", []float64{0.8, 0.4, 35}, false},
			{"zone B, warm bearing", []float64{2.2, 1.5, 60}, false},
			{"zone C, below the alarm", []float64{3.8, 3.0, 72}, false},
			{"zone C, velocity 0.5 under C/D", []float64{4.0, 2.0, 55}, false},
			{"cold start", []float64{1.5, 1.0, 21}, false},
			{"zone D by velocity", []float64{5.2, 2.5, 60}, true},
			{"zone D, severe unbalance", []float64{9.5, 4.0, 70}, true},
			{"bearing impacts only", []float64{2.0, 7.0, 60}, true},
			{"hot bearing only", []float64{2.0, 1.5, 92}, true},
			{"every limit passed", []float64{11, 9, 105}, true},
		},
	},
	{
		name:     demo.PressFit,
		features: []string{"force_kn", "depth_mm"},
		labels:   []string{"ok", "ng"},
		rule:     func(x []float64) bool { return x[0] < 8 || x[0] > 12 || x[1] < 4.8 || x[1] > 5.2 },
		lo:       []float64{6, 4.6},
		hi:       []float64{14, 5.4},
		margin:   []float64{0.2, 0.02},
		cases: []scalarCase{
			{"nominal", []float64{10, 5.0}, false},
			{"low force, shallow", []float64{8.6, 4.88}, false},
			{"high force, deep", []float64{11.4, 5.12}, false},
			{"low force, deep", []float64{8.6, 5.12}, false},
			{"loose fit", []float64{6.0, 5.0}, true},
			{"oversize part", []float64{14.0, 5.0}, true},
			{"stopped short", []float64{10.0, 4.6}, true},
			{"over-travel", []float64{10.0, 5.4}, true},
			{"stopped short on an obstruction", []float64{15.0, 4.5}, true},
		},
	},
}

// scalarSession is a bundled scalar model loaded through the real ONNX Runtime with
// edged's own pre- and post-processing.
type scalarSession struct {
	m    *models.Manifest
	sess inference.Session
	pre  *inference.Preprocessor
	post *inference.Postprocessor
}

func openScalar(t *testing.T, o *inference.ORT, sm scalarModel) *scalarSession {
	t.Helper()
	m, onnx, err := demo.LoadNamed(sm.name)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := o.Load(m, onnx, inference.SessionOptions{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sess.Close(); err != nil {
			t.Errorf("close %s session: %v", sm.name, err)
		}
	})
	pre, err := inference.NewPreprocessor(m.Preprocess)
	if err != nil {
		t.Fatal(err)
	}
	post, err := inference.NewPostprocessor(m.Postprocess, 0)
	if err != nil {
		t.Fatal(err)
	}
	return &scalarSession{m: m, sess: sess, pre: pre, post: post}
}

// run judges readings in one batch and returns the verdicts.
func (s *scalarSession) run(t *testing.T, sm scalarModel, rows [][]float64) []inference.Verdict {
	t.Helper()
	b, err := s.sess.NewBatch(len(rows))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i, row := range rows {
		// Like a Modbus or OPC UA source: a map of named values, with more in it than
		// the model takes, in no particular order.
		r := &drivers.Reading{Scalars: map[string]float64{"line_speed_m_min": 12}}
		for j, f := range sm.features {
			r.Scalars[f] = row[j]
		}
		in, _ := b.Frame(i)
		if err := s.pre.FillReading(in, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.sess.Run(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	vs := make([]inference.Verdict, len(rows))
	for i := range rows {
		_, out := b.Frame(i)
		if err := s.post.Apply(out, &vs[i]); err != nil {
			t.Fatal(err)
		}
	}
	return vs
}

func TestScalarModelManifests(t *testing.T) {
	for _, sm := range scalarModels {
		t.Run(sm.name, func(t *testing.T) {
			m, onnx, err := demo.LoadNamed(sm.name)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Validate(); err != nil {
				t.Error(err)
			}
			sum := sha256.Sum256(onnx)
			if got := hex.EncodeToString(sum[:]); got != m.SHA256 || int64(len(onnx)) != m.Size {
				t.Errorf("model.onnx: sha256 %s, %d bytes; manifest says %s, %d bytes", got, len(onnx), m.SHA256, m.Size)
			}
			p := m.Preprocess
			if p.Kind != models.PreprocessScalars || !slices.Equal(p.Features, sm.features) {
				t.Errorf("preprocess %+v, want kind %q features %v", p, models.PreprocessScalars, sm.features)
			}
			q := m.Postprocess
			if !slices.Equal(q.Labels, sm.labels) || !slices.Equal(q.OKLabels, []string{"ok"}) || q.Threshold != 0.5 {
				t.Errorf("postprocess %+v, want labels %v, ok_labels [ok], threshold 0.5", q, sm.labels)
			}
			n := int64(len(sm.features))
			if in := m.Inputs[0]; in.Name != "features" || !slices.Equal(in.Shape, []int64{-1, n}) {
				t.Errorf("input %+v, want features [-1 %d]", in, n)
			}
			if out := m.Outputs[0]; out.Name != "logits" || !slices.Equal(out.Shape, []int64{-1, int64(len(sm.labels))}) {
				t.Errorf("output %+v, want logits [-1 %d]", out, len(sm.labels))
			}
			if m.Description == "" {
				t.Error("manifest has no description")
			}
		})
	}
}

// TestScalarModelVerdicts runs readings on both sides of every limit, each well away
// from it, and wants the rule's verdict.
func TestScalarModelVerdicts(t *testing.T) {
	o := orttest.Open(t)
	for _, sm := range scalarModels {
		t.Run(sm.name, func(t *testing.T) {
			s := openScalar(t, o, sm)
			rows := make([][]float64, len(sm.cases))
			for i, c := range sm.cases {
				if got := sm.rule(c.values); got != c.ng {
					t.Fatalf("case %q %v: the rule says NG=%v, the case %v", c.why, c.values, got, c.ng)
				}
				if nearLimit(sm, c.values) {
					t.Fatalf("case %q %v is within %v of a limit; cases must be clear of them", c.why, c.values, sm.margin)
				}
				rows[i] = c.values
			}
			vs := s.run(t, sm, rows)
			for i, c := range sm.cases {
				want, label := inference.VerdictOK, "ok"
				if c.ng {
					want, label = inference.VerdictNG, sm.labels[1]
				}
				if v := vs[i]; v.Verdict != want || v.Label != label || v.Score < 0.9 {
					t.Errorf("%s %v: verdict %s %s score %.3f, want %s %s with a score of 0.9 or more",
						c.why, c.values, v.Verdict, v.Label, v.Score, want, label)
				}
			}
			// One reading alone gives what it gave inside the batch.
			one := s.run(t, sm, rows[:1])
			if one[0].Verdict != vs[0].Verdict || one[0].Score-vs[0].Score > 1e-5 || vs[0].Score-one[0].Score > 1e-5 {
				t.Errorf("batch of 1: %+v, in the batch: %+v", one[0], vs[0])
			}
		})
	}
}

// TestScalarModelsFollowRule draws readings uniformly around the limits and holds
// every one clear of them to the rule.
func TestScalarModelsFollowRule(t *testing.T) {
	o := orttest.Open(t)
	for _, sm := range scalarModels {
		t.Run(sm.name, func(t *testing.T) {
			s := openScalar(t, o, sm)
			rng := rand.New(rand.NewPCG(20261128, uint64(len(sm.features))))
			const batch, batches = 500, 4
			var clear, clearNG, wrong int
			for range batches {
				rows := make([][]float64, batch)
				for i := range rows {
					rows[i] = make([]float64, len(sm.features))
					for j := range rows[i] {
						rows[i][j] = sm.lo[j] + rng.Float64()*(sm.hi[j]-sm.lo[j])
					}
				}
				vs := s.run(t, sm, rows)
				for i, row := range rows {
					if nearLimit(sm, row) {
						continue
					}
					clear++
					if sm.rule(row) {
						clearNG++
					}
					if ng := vs[i].Verdict == inference.VerdictNG; ng != sm.rule(row) {
						wrong++
						if wrong <= 5 {
							t.Errorf("%v: verdict %s (score %.3f), the rule says NG=%v", row, vs[i].Verdict, vs[i].Score, sm.rule(row))
						}
					}
				}
			}
			t.Logf("%d of %d readings clear of the limits by %v (%d OK, %d NG by the rule); %d verdicts differ from the rule",
				clear, batch*batches, sm.margin, clear-clearNG, clearNG, wrong)
			if clearNG < batch*batches/5 || clear-clearNG < batch*batches/5 {
				t.Errorf("%d OK and %d NG readings clear of the limits: too few of one kind to test", clear-clearNG, clearNG)
			}
		})
	}
}

// nearLimit reports whether moving each value by up to its margin can change the
// rule's verdict. The limits on any one value are farther apart than twice its margin,
// so the corners and edge midpoints of that box find every change.
func nearLimit(sm scalarModel, x []float64) bool {
	base := sm.rule(x)
	y := make([]float64, len(x))
	combos := 1
	for range x {
		combos *= 3
	}
	for c := range combos {
		k := c
		for j := range x {
			y[j] = x[j] + float64(k%3-1)*sm.margin[j]
			k /= 3
		}
		if sm.rule(y) != base {
			return true
		}
	}
	return false
}
