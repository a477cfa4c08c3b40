//go:build cgo

package inference_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"runtime"
	"testing"

	"github.com/edgedrun/edged/drivers"
	"github.com/edgedrun/edged/drivers/sim"
	"github.com/edgedrun/edged/inference"
	"github.com/edgedrun/edged/internal/orttest"
	"github.com/edgedrun/edged/models"
	"github.com/edgedrun/edged/models/demo"
)

// The cross-architecture check (cross/test-arm64.sh) runs TestCrossOutputs natively
// with EDGED_CROSS_OUT set, then the arm64 test binary under qemu with
// EDGED_CROSS_WANT pointing at the native record: the arm64 run takes its inputs from
// that record and fails when an output differs by more than EDGED_CROSS_TOL.
const (
	envCrossOut  = "EDGED_CROSS_OUT"
	envCrossWant = "EDGED_CROSS_WANT"
	envCrossTol  = "EDGED_CROSS_TOL"
)

// crossTolerance is the default largest absolute output difference between two
// architectures: their ONNX Runtime builds pick different kernels (NEON against AVX)
// and Go fuses multiply-adds on arm64, so bit equality is not expected.
const crossTolerance = 1e-4

// crossRecord is what one run of the demo models produced, with the inputs that went
// in, so that another architecture can run exactly the same inputs.
type crossRecord struct {
	GOARCH string       `json:"goarch"`
	ORT    string       `json:"onnxruntime"`
	Models []crossModel `json:"models"`
}

type crossModel struct {
	Name    string       `json:"name"`
	Version string       `json:"version"`
	Frames  []crossFrame `json:"frames"`
}

type crossFrame struct {
	// Image holds a simulator image's gray8 pixels; Scalars a scalar model's values.
	Image   []byte             `json:"image,omitempty"`
	Width   int                `json:"width,omitempty"`
	Height  int                `json:"height,omitempty"`
	Scalars map[string]float64 `json:"scalars,omitempty"`
	// Want is the verdict the inputs were chosen or rendered for (empty: none).
	Want    string    `json:"want,omitempty"`
	Output  []float32 `json:"output"`
	Verdict string    `json:"verdict"`
	Label   string    `json:"label"`
}

// crossInputs makes the fixed inputs: simulator images from a seed never used for
// training, and scalar readings far from every limit the scalar models learnt.
func crossInputs(t *testing.T) *crossRecord {
	t.Helper()
	cfg := sim.DefaultConfig()
	cfg.Seed = 20261128
	cfg.DefectRate = 0.5
	g, err := sim.NewGenerator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w, h := g.Size()
	el := crossModel{Name: demo.Name}
	for range 12 {
		pix := make([]byte, w*h)
		truth := g.Next(pix)
		want := inference.VerdictOK
		if truth != sim.LabelOK {
			want = inference.VerdictNG
		}
		el.Frames = append(el.Frames, crossFrame{Image: pix, Width: w, Height: h, Want: want})
	}
	scalar := func(want string, kv ...any) crossFrame {
		f := crossFrame{Scalars: map[string]float64{}, Want: want}
		for i := 0; i < len(kv); i += 2 {
			f.Scalars[kv[i].(string)] = kv[i+1].(float64)
		}
		return f
	}
	ok, ng := inference.VerdictOK, inference.VerdictNG
	// ISO 10816-3 style limits: 4.5 mm/s RMS, 6 g peak, 85 C.
	vib := crossModel{Name: demo.VibISO, Frames: []crossFrame{
		scalar(ok, "vib_rms_mm_s", 1.2, "vib_peak_g", 0.8, "bearing_temp_c", 45.0),
		scalar(ok, "vib_rms_mm_s", 2.5, "vib_peak_g", 2.0, "bearing_temp_c", 60.0),
		scalar(ng, "vib_rms_mm_s", 8.0, "vib_peak_g", 2.0, "bearing_temp_c", 60.0),
		scalar(ng, "vib_rms_mm_s", 2.0, "vib_peak_g", 9.0, "bearing_temp_c", 55.0),
		scalar(ng, "vib_rms_mm_s", 2.0, "vib_peak_g", 1.5, "bearing_temp_c", 95.0),
	}}
	// The press-fit window: 8..12 kN, 4.8..5.2 mm.
	press := crossModel{Name: demo.PressFit, Frames: []crossFrame{
		scalar(ok, "force_kn", 10.0, "depth_mm", 5.0),
		scalar(ok, "force_kn", 9.0, "depth_mm", 4.9),
		scalar(ng, "force_kn", 14.0, "depth_mm", 5.0),
		scalar(ng, "force_kn", 10.0, "depth_mm", 5.5),
		scalar(ng, "force_kn", 6.0, "depth_mm", 4.5),
	}}
	// vib-anomaly's 22 window features, spread around its training mean: the outputs
	// are compared, its verdicts are not (an anomaly score has no ground truth here).
	m, _, err := demo.LoadNamed(demo.VibAnomaly)
	if err != nil {
		t.Fatal(err)
	}
	anom := crossModel{Name: demo.VibAnomaly}
	for k, c := range []float64{0, 0.5, -0.5, 2, 6} {
		f := crossFrame{Scalars: map[string]float64{}}
		for i, name := range m.Preprocess.Features {
			u := float64((i+k)%5-2) / 2
			f.Scalars[name] = float64(m.Preprocess.Mean[i]) + c*u*float64(m.Preprocess.Std[i])
		}
		anom.Frames = append(anom.Frames, f)
	}
	return &crossRecord{Models: []crossModel{el, vib, press, anom}}
}

// crossRun loads each model of in on o, infers its frames in one batch through edged's
// own pre- and post-processing, and returns the inputs with their outputs.
func crossRun(t *testing.T, o *inference.ORT, in *crossRecord) *crossRecord {
	t.Helper()
	out := &crossRecord{GOARCH: runtime.GOARCH, ORT: o.Version()}
	for _, cm := range in.Models {
		m, onnx, err := demo.LoadNamed(cm.Name)
		if err != nil {
			t.Fatal(err)
		}
		if cm.Version != "" && cm.Version != m.Version {
			t.Fatalf("model %s: the record has version %s, the bundled one is %s", cm.Name, cm.Version, m.Version)
		}
		frames, err := crossInfer(o, m, onnx, cm.Frames)
		if err != nil {
			t.Fatalf("model %s %s: %v", m.Name, m.Version, err)
		}
		out.Models = append(out.Models, crossModel{Name: m.Name, Version: m.Version, Frames: frames})
	}
	return out
}

func crossInfer(o *inference.ORT, m *models.Manifest, onnx []byte, in []crossFrame) ([]crossFrame, error) {
	pre, err := inference.NewPreprocessor(m.Preprocess)
	if err != nil {
		return nil, err
	}
	post, err := inference.NewPostprocessor(m.Postprocess, 0)
	if err != nil {
		return nil, err
	}
	s, err := o.Load(m, onnx, inference.SessionOptions{IntraOpThreads: 1})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	b, err := s.NewBatch(len(in))
	if err != nil {
		return nil, err
	}
	defer b.Close()
	for i, f := range in {
		dst, _ := b.Frame(i)
		r := &drivers.Reading{Scalars: f.Scalars}
		if f.Image != nil {
			r.Image = &drivers.Image{Format: drivers.FormatGray8, Width: f.Width, Height: f.Height, Data: f.Image}
		}
		if err := pre.FillReading(dst, r); err != nil {
			return nil, fmt.Errorf("frame %d: %w", i, err)
		}
	}
	if err := s.Run(context.Background(), b); err != nil {
		return nil, err
	}
	frames := make([]crossFrame, len(in))
	var v inference.Verdict
	for i, f := range in {
		_, o := b.Frame(i)
		if err := post.Apply(o, &v); err != nil {
			return nil, fmt.Errorf("frame %d: %w", i, err)
		}
		f.Output = append([]float32(nil), o...)
		f.Verdict, f.Label = v.Verdict, v.Label
		frames[i] = f
	}
	return frames, nil
}

// crossDiff is the largest absolute output difference between two records of the same
// inputs, and where it is; an error when the records do not hold the same frames.
type crossDiff struct {
	Max          float64
	Where        string
	VerdictFlips []string
}

func compareCross(got, want *crossRecord) (crossDiff, error) {
	var d crossDiff
	if len(got.Models) != len(want.Models) {
		return d, fmt.Errorf("%d models run, the record has %d", len(got.Models), len(want.Models))
	}
	for mi, gm := range got.Models {
		wm := want.Models[mi]
		if gm.Name != wm.Name || gm.Version != wm.Version || len(gm.Frames) != len(wm.Frames) {
			return d, fmt.Errorf("model %d: %s %s with %d frames run, the record has %s %s with %d",
				mi, gm.Name, gm.Version, len(gm.Frames), wm.Name, wm.Version, len(wm.Frames))
		}
		for fi, gf := range gm.Frames {
			wf := wm.Frames[fi]
			if len(gf.Output) != len(wf.Output) {
				return d, fmt.Errorf("model %s frame %d: %d outputs, the record has %d", gm.Name, fi, len(gf.Output), len(wf.Output))
			}
			for j := range gf.Output {
				diff := math.Abs(float64(gf.Output[j]) - float64(wf.Output[j]))
				if math.IsNaN(diff) {
					diff = math.Inf(1)
				}
				if diff > d.Max || d.Where == "" {
					d.Max = max(d.Max, diff)
					d.Where = fmt.Sprintf("model %s frame %d output %d: %g here, %g in the record", gm.Name, fi, j, gf.Output[j], wf.Output[j])
				}
			}
			if gf.Verdict != wf.Verdict {
				d.VerdictFlips = append(d.VerdictFlips, fmt.Sprintf("model %s frame %d: %s here, %s in the record", gm.Name, fi, gf.Verdict, wf.Verdict))
			}
		}
	}
	return d, nil
}

// TestCrossOutputs runs the bundled demo models on fixed inputs. On its own it checks
// the verdicts against the inputs' known answers and that a second run with fresh
// sessions gives the same outputs; the cross-architecture check also compares it
// against another architecture's record (see the constants above).
func TestCrossOutputs(t *testing.T) {
	o := orttest.Open(t)
	tol := crossTolerance
	if s := os.Getenv(envCrossTol); s != "" {
		if _, err := fmt.Sscan(s, &tol); err != nil || !(tol >= 0) {
			t.Fatalf("$%s=%q: not a tolerance (a number >= 0)", envCrossTol, s)
		}
	}
	var want *crossRecord
	if p := os.Getenv(envCrossWant); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("$%s: %v", envCrossWant, err)
		}
		want = new(crossRecord)
		if err := json.Unmarshal(b, want); err != nil {
			t.Fatalf("$%s: read %s: %v", envCrossWant, p, err)
		}
	}
	fresh := crossInputs(t)
	in := fresh
	if want != nil {
		in = want
		crossCheckRender(t, fresh, want)
	}
	got := crossRun(t, o, in)
	checkWants(t, got)

	ref, refName, limit := want, "the "+envCrossWant+" record", tol
	if want == nil {
		// The same inputs through fresh sessions in the same process: the CPU provider
		// with one thread is deterministic, so anything but equality is a bug.
		ref, refName, limit = crossRun(t, o, got), "a second run", 0
	}
	d, err := compareCross(got, ref)
	if err != nil {
		t.Fatalf("against %s: %v", refName, err)
	}
	t.Logf("cross: %s (%s, onnxruntime %s) against %s (%s, onnxruntime %s): largest output difference %.3g at %s; tolerance %g",
		got.GOARCH, "this run", got.ORT, refName, ref.GOARCH, ref.ORT, d.Max, d.Where, limit)
	if d.Max > limit {
		t.Errorf("largest output difference %.3g is over the tolerance %g (%s)", d.Max, limit, d.Where)
	}
	for _, f := range d.VerdictFlips {
		t.Errorf("verdict differs from %s: %s", refName, f)
	}

	if p := os.Getenv(envCrossOut); p != "" {
		b, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatalf("$%s: %v", envCrossOut, err)
		}
		t.Logf("cross: wrote %d models' outputs to %s", len(got.Models), p)
	}
}

// checkWants holds the verdicts to the inputs' known answers: every scalar reading was
// chosen far from its model's limits, and of the simulator images at most one may be
// judged wrong (the model's held-out accuracy is about 98%).
func checkWants(t *testing.T, r *crossRecord) {
	t.Helper()
	for _, m := range r.Models {
		wrong := 0
		for i, f := range m.Frames {
			if f.Want == "" || f.Verdict == f.Want {
				continue
			}
			wrong++
			if f.Image == nil || wrong > 1 {
				t.Errorf("model %s frame %d: verdict %s (label %s, output %v), want %s", m.Name, i, f.Verdict, f.Label, f.Output, f.Want)
			}
		}
	}
}

// crossCheckRender reports whether this architecture's simulator renders the record's
// images pixel for pixel. It only logs: the outputs are compared on the record's
// images either way, and the Go spec lets arm64 fuse multiply-adds in the renderer.
func crossCheckRender(t *testing.T, fresh, want *crossRecord) {
	t.Helper()
	if len(want.Models) == 0 || len(fresh.Models) == 0 {
		return
	}
	var differ, maxd, frames int
	for i, f := range fresh.Models[0].Frames {
		if i >= len(want.Models[0].Frames) || len(want.Models[0].Frames[i].Image) != len(f.Image) {
			t.Logf("cross: simulator image %d has another size in the record", i)
			return
		}
		frames++
		for j, p := range f.Image {
			q := want.Models[0].Frames[i].Image[j]
			if p != q {
				differ++
				maxd = max(maxd, int(math.Abs(float64(int(p)-int(q)))))
			}
		}
	}
	t.Logf("cross: the simulator renders %d images here; %d pixels differ from the record (largest difference %d levels)", frames, differ, maxd)
}
