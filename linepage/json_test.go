package linepage

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/edgedrun/edged/publish"
)

// FuzzResultEvent checks that whatever a model's labels, a source's names or a broken
// score hold, the result event is valid JSON that decodes to the same values.
func FuzzResultEvent(f *testing.F) {
	f.Add("r1", "surface", "cam1", "scratch", "P1", "1.0.0", 0.5)
	f.Add("", "</script><script>", "a\"b\\c", "\n\r\t\x00\x1f", "\u2028\u2029", "\xff\xfe", math.NaN())
	f.Add("é", "日本", "😀", "a&b<c>", "", "", math.Inf(1))
	f.Add("x", "y", "z", "w", "v", "u", 1e-9)
	f.Fuzz(func(t *testing.T, id, inspection, source, label, part, version string, score float64) {
		r := &publish.Result{ID: id, Inspection: inspection, Source: source, Label: label, PartID: part,
			Score: score, Verdict: "NG", Seq: 7, CapturedAt: time.Unix(1700000000, 5).UTC(),
			Model: publish.ModelRef{Name: "m", Version: version}, LatencyMS: publish.Latency{Total: score}}
		b := appendResult(nil, r, id)
		if strings.ContainsAny(string(b), "\n\r<>") || strings.Contains(string(b), "\u2028") {
			t.Fatalf("event %q breaks an SSE line or could close a script element", b)
		}
		var got struct {
			ID, Inspection, Source, Label, Image string
			PartID                               string `json:"part_id"`
			Score                                *float64
			Model                                struct{ Version string }
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("event %q is not JSON: %v", b, err)
		}
		// encoding/json is the reference: each invalid byte becomes one U+FFFD.
		valid := func(s string) string {
			b, _ := json.Marshal(s)
			var out string
			_ = json.Unmarshal(b, &out)
			return out
		}
		if got.ID != valid(id) || got.Inspection != valid(inspection) || got.Source != valid(source) ||
			got.Label != valid(label) || got.PartID != valid(part) || got.Model.Version != valid(version) || got.Image != valid(id) {
			t.Fatalf("event %q decodes to %+v", b, got)
		}
		if finite := !math.IsNaN(score) && !math.IsInf(score, 0); finite != (got.Score != nil) || (finite && *got.Score != score) {
			t.Fatalf("score %v written as %q", score, b)
		}
	})
}
