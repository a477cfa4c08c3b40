package publish

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func sampleResult() *Result {
	return &Result{
		V:          ResultVersion,
		ID:         "6f1c2d3e4a5b69788796a5b4c3d2e1f0",
		TraceID:    "0af7651916cd43dd8448eb211c80319c",
		Node:       "jetson-07",
		Inspection: "cap-presence",
		Source:     "line3-cam1",
		Seq:        184467,
		CapturedAt: time.Date(2025, 3, 14, 9, 26, 53, 589793238, time.UTC),
		Verdict:    VerdictNG,
		Label:      "scratch",
		Score:      0.9731,
		Scores:     map[string]float64{"ok": 0.0269, "scratch": 0.9731, "dent": 0},
		Model:      ModelRef{Name: "cap-presence", Version: "3", SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
		LatencyMS:  Latency{Queue: 1.25, Infer: 7.5, Total: 11.042},
		Truth:      "scratch",
		PartID:     "P-2025-000417",
	}
}

func TestResultGolden(t *testing.T) {
	got := sampleResult().AppendJSON(nil)
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, got, "", "  "); err != nil {
		t.Fatalf("AppendJSON wrote invalid JSON %s: %v", got, err)
	}
	pretty.WriteByte('\n')
	path := filepath.Join("testdata", "result.golden.json")
	if *update {
		if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(pretty.Bytes(), want) {
		t.Errorf("payload differs from %s (go test -update rewrites it if the change is meant):\ngot:\n%s\nwant:\n%s", path, pretty.Bytes(), want)
	}
}

func TestResultRoundTrip(t *testing.T) {
	for _, r := range []*Result{sampleResult(), {V: 1, CapturedAt: time.Unix(0, 0).UTC()}} {
		var back Result
		if err := json.Unmarshal(r.AppendJSON(nil), &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(*r, back) {
			t.Errorf("decoded result differs:\n got %+v\nwant %+v", back, *r)
		}
	}
}

func TestResultCapturedAtIsUTC(t *testing.T) {
	r := sampleResult()
	r.CapturedAt = time.Date(2025, 3, 14, 11, 26, 53, 5, time.FixedZone("CET", 3600))
	var fields map[string]any
	if err := json.Unmarshal(r.AppendJSON(nil), &fields); err != nil {
		t.Fatal(err)
	}
	if got, want := fields["captured_at"], "2025-03-14T10:26:53.000000005Z"; got != want {
		t.Errorf("captured_at = %v, want %v", got, want)
	}
}

func TestResultNonFiniteScoresAreNull(t *testing.T) {
	r := sampleResult()
	r.Score = math.NaN()
	r.Scores = map[string]float64{"ok": math.Inf(1), "ng": math.Inf(-1)}
	b := r.AppendJSON(nil)
	if !json.Valid(b) {
		t.Fatalf("invalid JSON: %s", b)
	}
	for _, want := range []string{`"score":null`, `"scores":{"ng":null,"ok":null}`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("payload lacks %s: %s", want, b)
		}
	}
}

// TestAppendJSONMatchesEncodingJSON holds AppendJSON to its promise: byte for byte what
// encoding/json writes, over random results with awkward strings and numbers.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"", "a", "ok", "scratch", `q"uote`, `back\slash`, "<b>&</b>", "tab\there", "nl\n", "\x00\x01\x1f",
		"\b\f\r", "ünïcödé", "日本", "\u2028\u2029", "\xff\xfe", "emoji 🙂", "\x7f"}
	str := func() string {
		var b strings.Builder
		for range rng.IntN(4) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return b.String()
	}
	floats := []float64{0, 1, -1, 0.5, 1e-7, 1e-6, 123456789, 1e20, 1e21, 1e300, -2.5e-10, 5e-324, math.MaxFloat64, 0.1 + 0.2}
	num := func() float64 {
		if rng.IntN(2) == 0 {
			return floats[rng.IntN(len(floats))]
		}
		return rng.NormFloat64() * math.Pow(10, float64(rng.IntN(40)-20))
	}
	for i := range 2000 {
		r := &Result{
			V: rng.IntN(3), ID: str(), TraceID: str(), Node: str(), Inspection: str(), Source: str(),
			Seq:        rng.Uint64(),
			CapturedAt: time.Unix(rng.Int64N(1<<34), rng.Int64N(1e9)).UTC(),
			Verdict:    str(), Label: str(), Score: num(),
			Model:     ModelRef{Name: str(), Version: str(), SHA256: str()},
			LatencyMS: Latency{Queue: num(), Infer: num(), Total: num()},
			Truth:     str(), Reason: str(), Action: str(), PartID: str(),
		}
		if n := rng.IntN(40); n > 0 {
			r.Scores = make(map[string]float64, n)
			for range n {
				r.Scores[str()] = num()
			}
		} else if rng.IntN(2) == 0 {
			r.Scores = map[string]float64{}
		}
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.AppendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("case %d differs from encoding/json:\n got %s\nwant %s", i, got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", `"\`, "<&>", "\x00\u2028", "\xff", "日本"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("appendString(%q) = %s, encoding/json gives %s", s, got, want)
		}
	})
}

func BenchmarkResultAppendJSON(b *testing.B) {
	r := sampleResult()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = r.AppendJSON(buf[:0])
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkResultEncodingJSON(b *testing.B) {
	r := sampleResult()
	var n int
	b.ReportAllocs()
	for b.Loop() {
		out, err := json.Marshal(r)
		if err != nil {
			b.Fatal(err)
		}
		n = len(out)
	}
	b.SetBytes(int64(n))
}
